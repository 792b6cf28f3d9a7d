"""``diracx-bridge status``: what the bridge will do here, and why.

An administrator switching a service on, or a user wondering why a call went where it went,
needs to see the decision the routing takes for them: whether the bridge is active in DIRAC
processes, the ``/DiracX`` settings it reads, and for each service the route the current proxy
gets, with its reason. ``--check`` also asks DiracX whether it is up.
"""

from __future__ import annotations

import argparse
from typing import Any

from diracx_bridge import capabilities, routing
from diracx_bridge import settings as cs
from diracx_bridge.adapters import registry


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="show the bridge's settings and the route of each service")
    parser.add_argument("--proxy", help="decide for this proxy file (default: DIRAC's default proxy location)")
    parser.add_argument("--check", action="store_true", help="also check that DiracX answers")
    parser.set_defaults(func=run)


def _services() -> list[str]:
    """The services with an adapter, plus every service with a switch set in the CS."""
    names = set(registry().adapters)
    names.update(entry.service for entry in cs.switch_entries() if entry.service)
    return sorted(names)


def run(args: argparse.Namespace) -> int:
    import DIRAC

    DIRAC.initialize(require_auth=False)
    from diracx_bridge import activation
    from diracx_bridge.identity import resolve_caller

    # What every DIRAC process does at its first extension lookup (idempotent): the report then
    # shows the same hooks and routing a DIRAC command would get in this environment.
    activation.activate()
    read = cs.dirac_reader()
    bridge = cs.bridge_settings(read)
    state = activation.status()
    print("diracx-bridge")
    active = "no (DIRACX_BRIDGE_DISABLE is set)" if state["disabled"] else "yes" if state["active"] else "no"
    print(f"  active in DIRAC processes : {active}")
    if state["error"]:
        print(f"  activation problem        : {state['error']}")
    print("  hooks into DIRAC          :")
    for label, hook_state in sorted(state["hooks"].items()):
        module, _, name = label.rpartition(".")
        note = "replaced when DIRAC loads the module" if hook_state == "pending" else hook_state
        print(f"    {module}.{name}: {note}")
    print(f"  /DiracX/URL               : {bridge.url or '(not set)'}")
    print(f"  /DiracX/DisabledVOs       : {', '.join(sorted(bridge.disabled_vos)) or '(none)'}")
    print(f"  timeouts (connect/read)   : {bridge.connect_timeout:g} s / {bridge.read_timeout:g} s")
    print(f"  retries / search page     : {bridge.read_retries} / {bridge.search_page_size} rows")

    kwargs = {"proxyLocation": args.proxy} if args.proxy else {}
    caller = resolve_caller(kwargs)
    print(f"\ncaller: {caller.describe()}" + (f", VO {caller.vo}" if caller.vo else ""))
    if caller.problem:
        print(f"  ({caller.problem})")

    properties = _properties(caller)
    print("\nservice routes:")
    for name in _services():
        print("\n".join(_service_report(name, kwargs, caller, properties, read)))

    for problem in registry().problems:
        print(f"  adapter problem: {problem}")
    for entry in cs.switch_entries():
        if entry.service is None:
            print(f"  ignored: {entry.path} (DIRAC reads only {cs.SWITCH}/<System>/<Service>)")

    if args.check:
        return _check(bridge)
    return 0


def _service_report(
    name: str, kwargs: dict[str, Any], caller: Any, properties: list[str], read: cs.OptionReader
) -> list[str]:
    """The route ``name`` takes for ``caller`` and why, then what its adapter says of such a caller."""
    route = routing.decide(name, kwargs, caller=caller)
    svc = cs.service_settings(name, read)
    where = "DiracX" if route.use_diracx else "legacy"
    cls = registry().adapters.get(name)
    adapter = "no adapter" if cls is None else f"adapter {cls.__module__}.{cls.__name__}"
    not_served = sorted(cls.not_served()) if cls is not None else []
    if not_served:
        adapter += f"; not served by {capabilities.NAME}: {', '.join(not_served)}"
    extras = [adapter]
    if svc.legacy_fallback:
        extras.append("LegacyFallback")
    if svc.vos is not None:
        extras.append(f"VOs: {', '.join(sorted(svc.vos)) or 'none'}")
    if svc.shadow_rate > 0 and not route.use_diracx:
        shadowed = routing.shadow_route(name, route, kwargs) is not None
        vos = f" of {', '.join(sorted(svc.shadow_vos))}" if svc.shadow_vos is not None else ""
        extras.append(f"shadow {svc.shadow_rate:.2%}{vos} ({'this caller is' if shadowed else 'not this caller'})")
    lines = [f"  {name:<40} -> {where:<6}  ({route.reason}; {'; '.join(extras)})"]
    if cls is not None and route.switched_on:
        lines += [f"      - {note}" for note in cls.caller_notes(caller, properties)]
    return lines


def _properties(caller: Any) -> list[str]:
    """The properties of the caller's DIRAC group (what the adapters' notes for the caller depend on)."""
    if not caller.group:
        return []
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    return list(Registry.getPropertiesForGroup(caller.group, []))


def _check(bridge: cs.BridgeSettings) -> int:
    import httpx

    if not bridge.url:
        print("\nDiracX check: /DiracX/URL is not set")
        return 1
    try:
        response = httpx.get(f"{bridge.url}/api/health/ready", timeout=bridge.connect_timeout, verify=_verify(bridge))
    except httpx.HTTPError as exc:
        print(f"\nDiracX check: {bridge.url} unreachable ({type(exc).__name__}: {exc})")
        return 1
    print(f"\nDiracX check: {bridge.url} answered {response.status_code} {response.text.strip()[:80]}")
    _check_routes(bridge)
    return 0 if response.status_code == 200 else 1


def _check_routes(bridge: cs.BridgeSettings) -> None:
    """Whether the server has every route the adapters use (its OpenAPI document; no token needed)."""
    import httpx

    assert bridge.url is not None
    try:
        response = httpx.get(
            f"{bridge.url}{capabilities.OPENAPI_PATH}", timeout=bridge.read_timeout, verify=_verify(bridge)
        )
        found = capabilities.from_openapi(bridge.url, response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        found, why = None, f"{type(exc).__name__}"
    else:
        why = f"HTTP {response.status_code}" if found is None else ""
    caps = found or capabilities.table(bridge.url, f"{capabilities.OPENAPI_PATH} unavailable: {why}")
    print(f"DiracX routes: {len(caps.routes)}, from {caps.source}")
    for service, cls in sorted(registry().adapters.items()):
        lacking = {name: caps.missing(uses) for name, uses in cls.served().items() if caps.missing(uses)}
        for name, missing in sorted(lacking.items()):
            print(f"  {service}.{name} is not served: the server has no {', '.join(map(str, missing))}")


def _verify(bridge: cs.BridgeSettings) -> Any:
    from diracx_bridge import tls

    return tls.verify_for(bridge.url or "")
