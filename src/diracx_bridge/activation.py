"""How the bridge switches itself on inside an unchanged DIRAC process.

DIRAC discovers its extensions through the ``dirac`` entry-point group: the first time anything
asks for them (``extensionsByPriority``: every ``dirac-*`` script before its ``main``, every
``@createClient`` client class when it is defined, every service and agent at start-up), DIRAC
imports each entry point and calls it. The bridge registers :func:`extension_metadata` there,
so installing the package is all an administrator does; no DIRAC file is edited, and
``pip uninstall diracx-bridge`` (or ``DIRACX_BRIDGE_DISABLE=1`` in the environment) restores
DIRAC's own behaviour exactly.

Why this hook rather than the alternatives: a ``.pth`` file would run in every Python process
of the environment (pip, pytest, unrelated tools), before DIRAC is even importable; asking
admins to add an import to their scripts defeats "unchanged scripts". DIRAC's extension
discovery runs exactly in DIRAC processes, early enough, and is DIRAC's documented extension
point. The bridge declares a priority below DIRAC's, ships no ``*System`` packages, scripts or
CS defaults, so DIRAC's module, script and template lookups never pick anything of it.

What :func:`activate` installs (once per process, idempotently):

* DIRAC's ``RPCClientSelector`` (in ``DIRAC.Core.Base.Client``, where every ``Client`` looks it
  up, and in ``ClientSelector``) becomes :func:`diracx_bridge.routing.select`;
* the proxy/token hooks of :mod:`diracx_bridge.proxy_token_exchange.hooks` (token in
  ``dirac-proxy-init`` without making proxy creation depend on DiracX, the ProxyManager's
  exchange cache), each installed independently so one failing does not block the others;
* the SandboxStoreClient hooks of :mod:`diracx_bridge.sandbox_client`: its upload and download
  methods and its transfer selector, replaced on the class when DIRAC imports its module (the same
  meta-path finder as the proxy hooks; nothing imported before), because ``SandboxStoreClient`` is
  not a ``Client`` and the RPC selector never sees its transfers.

This module runs inside DIRAC's own start-up: it must never raise, and must stay cheap.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any

#: Below DIRAC's own priority (0): the bridge overrides no DIRAC module, script or CS default.
PRIORITY = -100

_lock = threading.Lock()


def _sandbox_hooks() -> tuple[Any, ...]:
    """Declared in :mod:`diracx_bridge.sandbox_client`; their replacements load when DIRAC imports the module."""
    from diracx_bridge.sandbox_client import HOOKS

    return HOOKS


_state: dict[str, Any] = {"active": False, "error": None}


def extension_metadata() -> dict[str, Any]:
    """DIRAC's extension metadata for the bridge; switching the bridge on is the side effect."""
    activate()
    return {"priority": PRIORITY, "setups": {}}


def disabled_by_environment() -> bool:
    return os.environ.get("DIRACX_BRIDGE_DISABLE", "").strip().lower() in {"1", "y", "yes", "true"}


def activate() -> bool:
    """Install the bridge's hooks into DIRAC; True if they are in place. Never raises."""
    if _state["active"] or disabled_by_environment():
        return bool(_state["active"])
    with _lock:
        if _state["active"]:
            return True
        try:
            _install_selector()
        except Exception as exc:  # noqa: BLE001 - DIRAC must keep working whatever happens here
            _state["error"] = repr(exc)
            # gLogger may not be configured this early: stderr is the one channel sure to be seen.
            sys.stderr.write(f"diracx-bridge: not activated ({exc!r}); DIRAC runs without it\n")
            return False
        _state["active"] = True
        try:
            from diracx_bridge.proxy_token_exchange import hooks

            hooks.install()
        except Exception as exc:  # noqa: BLE001 - routing stays active even if these fail
            _state["error"] = f"proxy hooks: {exc!r}"
            sys.stderr.write(f"diracx-bridge: proxy/token hooks not installed ({exc!r})\n")
        try:
            from diracx_bridge.proxy_token_exchange import hooks

            hooks.install(_sandbox_hooks())
        except Exception as exc:  # noqa: BLE001 - the rest stays active; SandboxStoreClient stays DIRAC's
            _state["error"] = f"SandboxStoreClient hooks: {exc!r}"
            sys.stderr.write(f"diracx-bridge: SandboxStoreClient hooks not installed ({exc!r})\n")
        return True


def status() -> dict[str, Any]:
    from diracx_bridge.proxy_token_exchange import hooks

    return {
        "active": _state["active"],
        "error": _state["error"],
        "disabled": disabled_by_environment(),
        "hooks": hooks.status(),
    }


def _install_selector() -> None:
    import DIRAC.Core.Base.Client as client_module
    import DIRAC.Core.Tornado.Client.ClientSelector as selector_module

    from diracx_bridge import routing

    original = getattr(selector_module.RPCClientSelector, "__diracx_bridge_original__", None)
    original = original or selector_module.RPCClientSelector
    bridged = functools.partial(routing.select, original)
    bridged.__diracx_bridge_original__ = original  # type: ignore[attr-defined]
    selector_module.RPCClientSelector = bridged
    client_module.RPCClientSelector = bridged


def deactivate() -> None:
    """Put DIRAC's own selector back (tests, and ``DIRACX_BRIDGE_DISABLE`` set at run time)."""
    with _lock:
        import DIRAC.Core.Base.Client as client_module
        import DIRAC.Core.Tornado.Client.ClientSelector as selector_module

        original = getattr(client_module.RPCClientSelector, "__diracx_bridge_original__", None)
        if original is not None:
            selector_module.RPCClientSelector = original
            client_module.RPCClientSelector = original
        from diracx_bridge.proxy_token_exchange import hooks

        hooks.uninstall()
        try:
            hooks.uninstall(_sandbox_hooks())
        except Exception as exc:  # noqa: BLE001 - deactivation must not raise either
            sys.stderr.write(f"diracx-bridge: SandboxStoreClient hooks not removed ({exc!r})\n")
        _state["active"] = False
