"""Adapter or legacy service? The one place that decides, per call.

DIRAC 9.1 decides in ``ClientSelector`` with one global switch per service and ignores
``/DiracX/DisabledVOs``, so a user of a disabled VO is sent to DiracX without a token. The
bridge replaces the selector DIRAC's ``Client`` uses (see :mod:`diracx_bridge.activation`) with
:func:`select`, which decides from:

1. the URL: an explicit ``dips://``/``https://`` URL always goes to legacy, as in DIRAC;
2. the service switch, asked of DIRAC's own ``useLegacyAdapter`` (looked up at call time in
   ``DIRAC.Core.Tornado.Client.ClientSelector``, where DIRAC's selector and DIRAC's comparison
   tests find it; it reads ``/DiracX/FutureClientEnabled/<System>/<Service>``), or the deprecated
   ``/DiracX/LegacyClientEnabled/...``: off means legacy, exactly DIRAC's own path;
3. the caller (:mod:`diracx_bridge.identity`): identities DiracX cannot act as (a host
   certificate, a delegated identity, an in-memory proxy; :mod:`diracx_bridge.capabilities`) go
   to legacy;
4. the caller's VO: legacy when it is in ``/DiracX/DisabledVOs``, or not in the service's
   ``/DiracX/Bridge/<System>/<Service>/VOs`` when that list is set.

Otherwise the call goes to the service's adapter (:func:`diracx_bridge.adapters.adapter_for`);
inside it, methods DiracX cannot serve go to legacy when
``/DiracX/Bridge/<System>/<Service>/LegacyFallback`` allows it, and otherwise answer a clear
``S_ERROR`` (:class:`diracx_bridge.adapters.Adapter`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from diracx_bridge import capabilities
from diracx_bridge import settings as cs
from diracx_bridge.adapters import Route, UnservedService, adapter_for
from diracx_bridge.identity import Caller, resolve_caller
from diracx_bridge.log import logger

__all__ = ["Route", "decide", "legacy_client", "legacy_transfer_client", "select", "select_transfer", "switched_on"]

_deprecation_lock = threading.Lock()
_deprecations_warned: set[str] = set()


def _warn_deprecated(option: str) -> None:
    with _deprecation_lock:
        if option in _deprecations_warned:
            return
        _deprecations_warned.add(option)
    logger().warn(f"{option} is deprecated: rename it to {option.replace(cs.DEPRECATED_SWITCH, cs.SWITCH)}")


def _dirac_says_on(service: str) -> bool:
    """DIRAC's own switch, looked up at call time so that a patched ``useLegacyAdapter`` is obeyed."""
    import DIRAC.Core.Tornado.Client.ClientSelector as selector_module

    return bool(selector_module.useLegacyAdapter(service))


def switched_on(service: cs.ServiceSettings, *, read: cs.OptionReader | None = None) -> tuple[bool, str]:
    """Whether ``service`` is switched to DiracX, and the reason in words.

    DIRAC's ``useLegacyAdapter`` decides (it reads ``/DiracX/FutureClientEnabled/...``, and tests
    patch it), unless ``read`` is given (a CS other than this process's: tests, ``status`` for a
    file), where the CS alone decides. The deprecated option name, which DIRAC no longer reads, is
    honoured on top, with a warning.
    """
    if service.enabled_by and not service.deprecated and (read is not None or _dirac_says_on(service.name)):
        return True, f"{service.enabled_by} is on"
    if read is None and _dirac_says_on(service.name):
        return True, f"DIRAC's useLegacyAdapter('{service.name}') is true"
    if service.deprecated:
        _warn_deprecated(service.enabled_by or "")
        return True, f"{service.enabled_by} is on (deprecated name)"
    return False, f"{cs.switch_option(service.name)} is off"


def decide(
    url: str, client_kwargs: Mapping[str, Any], *, read: cs.OptionReader | None = None, caller: Caller | None = None
) -> Route:
    """The route of a call to ``url`` by a client built with ``client_kwargs``."""
    if not url or url.startswith(("dip", "http")) or url.count("/") != 1:
        return Route(False, "explicit URL")
    service = cs.service_settings(url, read)
    on, why = switched_on(service, read=read)
    if not on:
        return Route(False, why, service)
    bridge = cs.bridge_settings(read)
    caller = caller or resolve_caller(client_kwargs)
    if caller.kind.value not in capabilities.IDENTITIES:
        return Route(False, capabilities.cannot_act_as(caller.kind.value), service, switched_on=True)
    if caller.vo and caller.vo in bridge.disabled_vos:
        return Route(False, f"VO {caller.vo} is in /DiracX/DisabledVOs", service, bridge, caller, switched_on=True)
    if service.vos is not None and caller.vo not in service.vos:
        listed = ", ".join(sorted(service.vos))
        reason = f"VO {caller.vo} is not in /DiracX/Bridge/{url}/VOs ({listed})"
        return Route(False, reason, service, bridge, caller, switched_on=True)
    return Route(True, why, service, bridge, caller, switched_on=True)


def shadow_route(url: str, route: Route, client_kwargs: Mapping[str, Any]) -> Route | None:
    """The route a shadow comparison of this legacy-answered call would take, or None (not shadowed).

    Shadow mode (``/DiracX/Bridge/<System>/<Service>/Shadow``) applies to calls the legacy service
    answers, by callers DiracX could answer: a proxy of a VO that is not disabled, in ``ShadowVOs``
    when that list is set, of a service with an adapter that declares reads.
    """
    service = route.service
    if service is None or service.shadow_rate <= 0:
        return None
    adapter = adapter_for(url)
    if adapter is None or not adapter.READS:
        return None
    bridge = route.bridge or cs.bridge_settings()
    caller = route.caller or resolve_caller(client_kwargs)
    if not bridge.url or caller.kind.value not in capabilities.IDENTITIES or caller.vo in bridge.disabled_vos:
        return None
    if service.shadow_vos is not None and caller.vo not in service.shadow_vos:
        return None
    return Route(True, f"shadow of {url} at {service.shadow_rate:g}", service, bridge, caller, switched_on=True)


def shadowed(client: Any, url: str, route: Route, client_kwargs: Mapping[str, Any]) -> Any:
    """``client`` itself, or wrapped so that shadow mode samples its reads. Never raises."""
    try:
        shadow = shadow_route(url, route, client_kwargs)
        if shadow is None:
            return client
        from diracx_bridge.shadow import ShadowedClient

        return ShadowedClient(
            client,
            adapter=adapter_for(url),  # type: ignore[arg-type]
            route=shadow,
            url=url,
            client_kwargs=dict(client_kwargs),
            rate=shadow.service.shadow_rate,  # type: ignore[union-attr]
            settings=cs.shadow_settings(),
        )
    except Exception as exc:  # noqa: BLE001 - shadow mode must never cost the caller its call
        logger().debug("shadow mode not applied", f"{url}: {exc!r}")
        return client


def legacy_client(url: str, https_client: Any, client_kwargs: Mapping[str, Any]) -> Any:
    """The DISET or HTTPS client DIRAC would build for ``url`` had its switch been off."""
    from DIRAC.Core.DISET.RPCClient import RPCClient

    return _legacy(url, https_client, client_kwargs, RPCClient)


def _legacy(url: str, https_client: Any, client_kwargs: Mapping[str, Any], diset_class: type) -> Any:
    """DIRAC's selector's choice, switch off: the HTTPS client for an ``https`` service, else ``diset_class``."""
    from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceURL
    from DIRAC.Core.Tornado.Client.TornadoClient import TornadoClient

    kwargs = dict(client_kwargs)
    try:
        complete = url if url.startswith(("http", "dip")) else getServiceURL(url)
        if complete.startswith("http"):
            return (https_client or TornadoClient)(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - DIRAC's own selector falls back to DISET the same way
        logger().debug("could not resolve the service URL, using DISET", f"{url}: {exc!r}")
    return diset_class(url, **kwargs)


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
        route = Route(False, "routing error", switched_on=True)  # legacy, without DIRAC's selector

    if not route.use_diracx:
        if not route.switched_on:
            # DIRAC's own selector, untouched: explicit URLs, switch off.
            client = original(url, *args, httpsClient=httpsClient, diracxClient=diracxClient, **kwargs)
        else:
            logger().debug(f"{url}: legacy service", route.reason)
            client = legacy_client(url, httpsClient, kwargs)
        return shadowed(client, url, route, kwargs)

    logger().debug(f"{url}: DiracX", route.reason)

    def legacy() -> Any:
        return legacy_client(url, httpsClient, kwargs)

    cls = adapter_for(url)
    if cls is None:
        if isinstance(diracxClient, type):
            return diracxClient()  # DIRAC's own FutureClient (JobStateUpdate in 9.1), now with VO routing
        return UnservedService(route, legacy, url, kwargs)
    return cls(route, legacy, url, kwargs)


def legacy_transfer_client(url: str, https_client: Any, client_kwargs: Mapping[str, Any]) -> Any:
    """The DISET (or HTTPS) transfer client DIRAC would build for ``url`` had its switch been off."""
    from DIRAC.Core.DISET.TransferClient import TransferClient

    return _legacy(url, https_client, client_kwargs, TransferClient)


def select_transfer(original: Callable[..., Any], url: str, *args: Any, **kwargs: Any) -> Any:
    """DIRAC's ``TransferClientSelector`` without its dead end: a switched-on service gets the legacy transfer client.

    DIRAC's selector raises ``NotImplementedError`` for a switched-on service (it has no DiracX
    transfer client). The bridge serves DiracX transfers above the transfer client (the
    SandboxStoreClient hooks, :mod:`diracx_bridge.sandbox_client`), so a transfer that still gets
    here is one routed to legacy (a disabled VO, a host identity, a fallback): it gets the legacy
    service, as with the switch off.
    """
    try:
        on = bool(url) and not url.startswith(("dip", "http")) and url.count("/") == 1 and _dirac_says_on(url)
    except Exception as exc:  # noqa: BLE001 - a routing bug must not break legacy DIRAC
        logger().exception("routing failed, using the legacy service", f"{url}: {exc!r}")
        on = True
    if not on:
        return original(url, *args, **kwargs)
    kwargs.pop("diracxClient", None)
    https_client = kwargs.pop("httpsClient", None)
    logger().debug(f"{url}: legacy transfer service", "the bridge moves DiracX sandboxes above the transfer client")
    return legacy_transfer_client(url, https_client, kwargs)
