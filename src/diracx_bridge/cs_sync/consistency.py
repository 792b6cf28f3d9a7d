"""The DisabledVOs / FutureClientEnabled rule of diracx issue #200.

DIRAC 9.1 mints no DiracX token for a VO listed in /DiracX/DisabledVOs, but
``useLegacyAdapter`` routes *every* user of a FutureClientEnabled service to DiracX, whatever
their VO: users of a disabled VO then fail with "No diracx token in the proxy file". diracx's
own cs-sync refuses that combination only when the flag is the literal ``True``; DIRAC reads
``yes``, ``y``, ``true`` and ``1`` as true, so this check uses DIRAC's own rule (``parse_bool``).

diracx-bridge routes the users of a disabled VO to the legacy services, so an installation whose
DIRAC clients *all* run the bridge can use both options together: its admins say so with
``/DiracX/Bridge/ClientsRouteDisabledVOs = yes``, and the refusal becomes a reported warning.
It stays a refusal by default because DIRAC 9.1 clients without the bridge (worker nodes,
pilots, other hosts) would still fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diracx_bridge import settings
from diracx_bridge.cs_sync.errors import ConsistencyError, Problem
from diracx_bridge.cs_sync.report import Kind, Report


def enabled_future_clients(diracx_section: Mapping[str, Any], report: Report | None = None) -> list[tuple[str, str]]:
    """(CS path, value) of the ``/DiracX/FutureClientEnabled/<System>/<Service>`` flags DIRAC reads as true.

    Entries at another depth are never read by DIRAC's ``useLegacyAdapter``: they are reported
    (they usually are a typo for the intended service) instead of being counted. The deprecated
    name is DIRAC's no longer, so it does not count here.
    """
    enabled: list[tuple[str, str]] = []
    prefix = f"{settings.SECTION}/{settings.SWITCH}"
    for entry in settings.switch_entries(diracx_section):
        if not entry.path.startswith(prefix):
            continue
        if entry.service is None:
            if report is not None:
                report.add(entry.path, f"DIRAC only reads {settings.SWITCH}/<System>/<Service>: ignored", Kind.WARNING)
        elif entry.on:
            enabled.append((entry.path, entry.value))
    return enabled


def check_disabled_vos(diracx_section: Mapping[str, Any], report: Report | None = None) -> None:
    """Raise :class:`ConsistencyError` when a disabled VO would be routed to DiracX without tokens."""
    options = settings.bridge_settings(settings.tree_reader(diracx_section))
    vos = sorted(options.disabled_vos)
    enabled = enabled_future_clients(diracx_section, report)
    if not vos or not enabled:
        return
    services = ", ".join(path.removeprefix(f"{settings.SECTION}/{settings.SWITCH}/") for path, _ in enabled)
    if options.clients_route_disabled_vos:
        if report is not None:
            report.add(
                "/DiracX/DisabledVOs",
                f"lists {', '.join(vos)} while {services} use DiracX: accepted because "
                "/DiracX/Bridge/ClientsRouteDisabledVOs says every DIRAC client runs diracx-bridge, which keeps "
                "these VOs on the legacy services; a client without the bridge would send their users to DiracX "
                "without a token",
                Kind.WARNING,
            )
        return
    problems = [
        Problem(
            "/DiracX/DisabledVOs",
            f"lists {', '.join(vos)}, but {services} "
            f"{'is' if len(enabled) == 1 else 'are'} routed to DiracX for every VO: users of "
            f"{', '.join(vos)} get no DiracX token in their proxy and these calls fail with "
            "'No diracx token in the proxy file' in DIRAC clients without diracx-bridge. If every DIRAC client "
            "of this installation runs diracx-bridge (which keeps disabled VOs on the legacy services), say so "
            "with /DiracX/Bridge/ClientsRouteDisabledVOs = yes",
        )
    ]
    problems += [Problem(path, f"set to {flag!r}, which DIRAC reads as true") for path, flag in enabled]
    raise ConsistencyError(problems)
