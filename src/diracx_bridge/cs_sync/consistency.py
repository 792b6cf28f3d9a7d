"""The DisabledVOs / FutureClientEnabled rule of diracx issue #200.

DIRAC 9.1 mints no DiracX token for a VO listed in /DiracX/DisabledVOs, but
``useLegacyAdapter`` routes *every* user of a FutureClientEnabled service to DiracX, whatever
their VO: users of a disabled VO then fail with "No diracx token in the proxy file". diracx
0.7.0's cs-sync refuses that combination only when the flag is the literal ``True``; DIRAC reads
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

from diracx_bridge.cs_sync.errors import ConsistencyError, Problem
from diracx_bridge.cs_sync.report import Kind, Report
from diracx_bridge.settings import parse_bool


def disabled_vos(diracx_section: Mapping[str, Any]) -> list[str]:
    value = diracx_section.get("DisabledVOs", "")
    if not isinstance(value, str):
        return []
    return [vo.strip() for vo in value.split(",") if vo.strip()]


def enabled_future_clients(diracx_section: Mapping[str, Any], report: Report | None = None) -> list[tuple[str, str]]:
    """(CS path, value) of the ``/DiracX/FutureClientEnabled/<System>/<Service>`` flags DIRAC reads as true.

    Entries at another depth are never read by DIRAC's ``useLegacyAdapter``: they are reported
    (they usually are a typo for the intended service) instead of being counted.
    """
    enabled: list[tuple[str, str]] = []
    systems = diracx_section.get("FutureClientEnabled", {})
    base = "/DiracX/FutureClientEnabled"
    if not isinstance(systems, Mapping):
        if report is not None:
            report.add(base, "an option where DIRAC reads <System>/<Service> sections: ignored", Kind.WARNING)
        return enabled
    for system, services in systems.items():
        if not isinstance(services, Mapping):
            if report is not None:
                report.add(f"{base}/{system}", "DIRAC only reads FutureClientEnabled/<System>/<Service>", Kind.WARNING)
            continue
        for service, flag in services.items():
            path = f"{base}/{system}/{service}"
            if isinstance(flag, Mapping):
                if report is not None:
                    report.add(path, "DIRAC only reads FutureClientEnabled/<System>/<Service>", Kind.WARNING)
                continue
            if parse_bool(flag):
                enabled.append((path, flag))
    return enabled


def check_disabled_vos(diracx_section: Mapping[str, Any], report: Report | None = None) -> None:
    """Raise :class:`ConsistencyError` when a disabled VO would be routed to DiracX without tokens."""
    vos = disabled_vos(diracx_section)
    enabled = enabled_future_clients(diracx_section, report)
    if not vos or not enabled:
        return
    services = ", ".join(path.removeprefix("/DiracX/FutureClientEnabled/") for path, _ in enabled)
    bridge = diracx_section.get("Bridge", {})
    if isinstance(bridge, Mapping) and parse_bool(bridge.get("ClientsRouteDisabledVOs")):
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
