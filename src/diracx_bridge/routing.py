"""Adapter or legacy service? The one place that decides, per call.

DIRAC 9.1 decides in ``ClientSelector`` with one global switch per service and ignores
``/DiracX/DisabledVOs``, so a user of a disabled VO is sent to DiracX without a token. The
bridge replaces the selector DIRAC's ``Client`` uses (see :mod:`diracx_bridge.activation`) with
:func:`select`, which decides from:

1. the URL: an explicit ``dips://``/``https://`` URL always goes to legacy, as in DIRAC;
2. the service switch ``/DiracX/FutureClientEnabled/<System>/<Service>`` (or its deprecated
   name ``LegacyClientEnabled``): off means legacy, exactly DIRAC's own path;
3. the caller (:mod:`diracx_bridge.identity`): a host certificate, a delegated identity or an
   in-memory proxy go to legacy, because DiracX 0.7.0 has no way to act as them;
4. the caller's VO: legacy when it is in ``/DiracX/DisabledVOs``, or not in the service's
   ``/DiracX/Bridge/<System>/<Service>/VOs`` when that list is set.

Otherwise the call goes to the service's adapter; inside it, methods DiracX cannot serve go to
legacy when ``/DiracX/Bridge/<System>/<Service>/LegacyFallback`` allows it, and otherwise answer
a clear ``S_ERROR`` (:class:`diracx_bridge.adapters.base.Adapter`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from diracx_bridge import settings as cs
from diracx_bridge.identity import Caller, CallerKind, resolve_caller
from diracx_bridge.log import logger

#: "<System>/<Service>" -> "module:Class" of its adapter. Services not listed here keep DIRAC's
#: own FutureClient if the client class has one, else every method is "not served".
ADAPTERS: dict[str, str] = {
    "WorkloadManagement/JobMonitoring": "diracx_bridge.adapters.job_monitoring:JobMonitoringAdapter",
}


@dataclass(frozen=True)
class Route:
    """The decision for one call, with the reason (logged at debug level, shown by ``status``)."""

    use_diracx: bool
    reason: str
    service: cs.ServiceSettings | None = None
    bridge: cs.BridgeSettings | None = None
    caller: Caller | None = None


_deprecation_lock = threading.Lock()
_deprecations_warned: set[str] = set()


def _warn_deprecated(option: str) -> None:
    with _deprecation_lock:
        if option in _deprecations_warned:
            return
        _deprecations_warned.add(option)
    logger().warn(
        f"{option} is deprecated: rename it to {option.replace('LegacyClientEnabled', 'FutureClientEnabled')}"
    )


def decide(
    url: str, client_kwargs: Mapping[str, Any], *, read: cs.OptionReader | None = None, caller: Caller | None = None
) -> Route:
    """The route of a call to ``url`` by a client built with ``client_kwargs``."""
    if not url or url.startswith(("dip", "http")) or url.count("/") != 1:
        return Route(False, "explicit URL")
    service = cs.service_settings(url, read)
    if not service.enabled:
        return Route(False, f"/DiracX/FutureClientEnabled/{url} is off", service)
    if service.enabled_by and "LegacyClientEnabled" in service.enabled_by:
        _warn_deprecated(service.enabled_by)
    bridge = cs.bridge_settings(read)
    caller = caller or resolve_caller(client_kwargs)
    if caller.kind is not CallerKind.PROXY:
        return Route(False, f"caller uses a {caller.kind.value} identity, which DiracX 0.7.0 cannot act as", service)
    if caller.vo and caller.vo in bridge.disabled_vos:
        return Route(False, f"VO {caller.vo} is in /DiracX/DisabledVOs", service, bridge, caller)
    if service.vos is not None and caller.vo not in service.vos:
        return Route(
            False,
            f"VO {caller.vo} is not in /DiracX/Bridge/{url}/VOs ({', '.join(sorted(service.vos))})",
            service,
            bridge,
            caller,
        )
    return Route(True, f"{service.enabled_by} is on", service, bridge, caller)


_adapter_classes: dict[str, type | None] = {}


def adapter_class(service: str) -> type | None:
    if service not in _adapter_classes:
        target = ADAPTERS.get(service)
        cls = None
        if target:
            module, _, name = target.partition(":")
            cls = getattr(importlib.import_module(module), name)
        _adapter_classes[service] = cls
    return _adapter_classes[service]


def legacy_client(url: str, https_client: Any, client_kwargs: Mapping[str, Any]) -> Any:
    """The DISET or HTTPS client DIRAC would build for ``url`` had its switch been off."""
    from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceURL
    from DIRAC.Core.DISET.RPCClient import RPCClient
    from DIRAC.Core.Tornado.Client.TornadoClient import TornadoClient

    kwargs = dict(client_kwargs)
    try:
        complete = url if url.startswith(("http", "dip")) else getServiceURL(url)
        if complete.startswith("http"):
            return (https_client or TornadoClient)(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - DIRAC's own selector falls back to DISET the same way
        logger().debug("could not resolve the service URL, using DISET", f"{url}: {exc!r}")
    return RPCClient(url, **kwargs)


def select(
    original: Callable[..., Any],
    url: str,
    *args: Any,
    httpsClient: Any = None,
    diracxClient: Any = None,
    **kwargs: Any,
) -> Any:
    """Drop-in replacement of DIRAC's ``RPCClientSelector``, installed by the activation."""
    try:
        route = decide(url, kwargs)
    except Exception as exc:  # noqa: BLE001 - a routing bug must not break legacy DIRAC
        logger().exception("routing failed, using the legacy service", f"{url}: {exc!r}")
        route = Route(False, "routing error")

    if not route.use_diracx:
        if route.service is None or not route.service.enabled:
            # DIRAC's own selector, untouched: explicit URLs, switch off.
            return original(url, *args, httpsClient=httpsClient, diracxClient=diracxClient, **kwargs)
        logger().debug(f"{url}: legacy service", route.reason)
        return legacy_client(url, httpsClient, kwargs)

    logger().debug(f"{url}: DiracX", route.reason)

    def legacy() -> Any:
        return legacy_client(url, httpsClient, kwargs)

    cls = adapter_class(url)
    if cls is None:
        if isinstance(diracxClient, type):
            return diracxClient()  # DIRAC's own FutureClient (JobStateUpdate in 9.1), now with VO routing
        from diracx_bridge.adapters.base import UnservedService

        return UnservedService(route, legacy, url, kwargs)
    return cls(route, legacy, url, kwargs)
