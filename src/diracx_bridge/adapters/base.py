"""What every adapter shares: the session, the per-method fallback, and the error contract.

An adapter instance stands where DIRAC's ``Client._getRPC`` would put a DISET ``RPCClient``:
DIRAC calls ``getattr(adapter, method)(*args)`` and expects an ``S_OK``/``S_ERROR`` dict back.
So an adapter:

* answers every method name: the ones it implements, and for any other one (a method DiracX
  0.7.0 cannot serve, or an extension's ``export_*``) either the legacy service's answer, when
  the admin allows the fallback, or an ``S_ERROR`` naming the method and the option to set;
  never ``AttributeError``, never ``NotImplementedError``;
* never raises into DIRAC: methods are wrapped with DIRACCommon's ``convertToReturnValue``,
  and the bridge's own exceptions carry their ``S_ERROR`` (see :mod:`diracx_bridge.errors`).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from DIRACCommon.Core.Utilities.ReturnValues import convertToReturnValue

from diracx_bridge import errors
from diracx_bridge.adapters.convert import check_types
from diracx_bridge.log import logger
from diracx_bridge.routing import Route
from diracx_bridge.session import DiracXSession, get_session

T = TypeVar("T")


def over_the_wire(value: Any) -> Any:
    """``value`` as a DISET call delivers it: through DIRAC's own encoder and back.

    DIRAC 9 encodes RPC arguments and answers as JSON (``MixedEncode``): tuples arrive as lists,
    integer dictionary keys as strings, datetimes intact. Running the adapter's arguments and
    answers through the same round trip makes them indistinguishable from the legacy ones;
    client classes then apply their usual fix-ups (``strToIntDict``) to both alike.
    """
    fast = _flat_over_the_wire(value)
    if fast is not _NOT_FLAT:
        return fast
    from DIRAC.Core.Utilities import MixedEncode

    return MixedEncode.decode(MixedEncode.encode(value))[0]


_NOT_FLAT = object()
_SCALARS = (str, int, float, type(None))


def _scalar(value: object) -> bool:
    """A value JSON gives back unchanged (bool is an int, and JSON keeps it; floats if finite)."""
    return isinstance(value, _SCALARS) and not (isinstance(value, float) and not math.isfinite(value))


def _flat_item(item: Any) -> Any:
    if isinstance(item, dict):
        if "__dCls" in item or not all(type(k) is str and _scalar(v) for k, v in item.items()):
            return _NOT_FLAT
        return dict(item)
    return item if _scalar(item) else _NOT_FLAT


def _flat_over_the_wire(value: Any) -> Any:
    """The JSON round trip of the common flat answers, without the JSON (measured: -0.5 ms per 200 jobs).

    Only shapes whose round trip is known exactly: scalars, lists of scalars, and dictionaries with
    str or (non-bool) int keys whose values are scalars or such dictionaries with str keys. Int keys
    become str, as JSON makes them; anything else (datetimes, tuples, nested lists, keys DIRAC's
    decoder treats specially) takes the real round trip.
    """
    if _scalar(value):
        return value
    if isinstance(value, list):
        return list(value) if all(_scalar(v) for v in value) else _NOT_FLAT
    if not isinstance(value, dict):
        return _NOT_FLAT
    out: dict[str, Any] = {}
    for key, item in value.items():
        converted = _flat_item(item)
        if converted is _NOT_FLAT or isinstance(key, bool) or not isinstance(key, (str, int)) or key == "__dCls":
            return _NOT_FLAT
        out[str(key)] = converted
    # 1 and "1" as keys: the round trip keeps one of them.
    return out if len(out) == len(value) else _NOT_FLAT


def adapted(func: Callable[..., T]) -> Callable[..., dict[str, Any]]:
    """Make an adapter method behave like the DISET call it replaces.

    Arguments and answer go through the wire encoding (:func:`over_the_wire`); the arguments are
    checked as the DISET handler checks them (the adapter's ``TYPES``, then the call signature);
    the method runs under DIRACCommon's ``convertToReturnValue``, so it returns
    ``S_OK``/``S_ERROR`` and never raises; the result carries DISET's ``rpcStub``, so DIRAC's
    failover (RMS ForwardDISET) can replay a failed call, which goes through the routing again.
    """
    converted = convertToReturnValue(func)
    name = func.__name__
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(self: Adapter, *args: Any) -> dict[str, Any]:
        try:
            wire_args = over_the_wire(list(args))
        except Exception as exc:  # noqa: BLE001 - what DISET answers for an unencodable argument
            return errors.BridgeError(f"Cannot serialize the arguments of {name}: {exc!r}", code=0).result
        refusal = _refuse_arguments(self, name, signature, wire_args)
        if refusal is not None:
            result = refusal.result
            result["rpcStub"] = self._rpc_stub(name, list(args))
            return result
        result: dict[str, Any] = converted(self, *wire_args)  # type: ignore[assignment]
        if result["OK"]:
            try:
                result["Value"] = over_the_wire(result["Value"])
            except Exception as exc:  # noqa: BLE001 - an adapter bug must still answer, not raise
                result = errors.BridgeError(f"Cannot serialize the answer of {name}: {exc!r}", code=0).result
        elif result.pop("ExecInfo", None) is not None:
            # A bug in the bridge, not a DiracX answer: keep it diagnosable, but secret-free. The live
            # exception (ExecInfo) goes, as DISET strips it: its text is the unredacted message.
            result["Message"] = errors.redact(result["Message"])
            logger().error(f"diracx-bridge bug in {func.__qualname__}", result["Message"])
        result["rpcStub"] = self._rpc_stub(name, list(args))  # DISET stubs the caller's own arguments
        return result

    return wrapper


def _refuse_arguments(
    adapter: Adapter, name: str, signature: inspect.Signature, args: list[Any]
) -> errors.BridgeError | None:
    """DISET's refusals, before the method runs: its type check, then a call that cannot bind."""
    try:
        if name in adapter.TYPES:
            check_types(name, args, adapter.TYPES)
        signature.bind(adapter, *args)
    except errors.BridgeError as exc:
        return exc
    except TypeError as exc:
        # The handler calls export_<name>(*args) and answers the TypeError this way.
        return errors.BridgeError(f"Server error while serving {name}: {exc}", code=0)
    return None


class Adapter:
    """Base of the adapters; ``SERVICE`` is the ``<System>/<Service>`` it stands for."""

    SERVICE: ClassVar[str] = ""
    #: The legacy handler's ``types_<method>`` lists, checked before each adapted method runs.
    TYPES: ClassVar[dict[str, list[Any]]] = {}
    #: Legacy methods known to have no DiracX 0.7.0 equivalent (documentation and ``status``).
    NOT_SERVED: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, route: Route, legacy: Callable[[], Any], url: str = "", client_kwargs: Any = None) -> None:
        self._route = route
        self._legacy_factory = legacy
        self._url = url or self.SERVICE
        self._client_kwargs = dict(client_kwargs or {})

    def _rpc_stub(self, method: str, args: list[Any]) -> list[Any]:
        """DISET's ``[[service, kwargs], method, args]``: what ``executeRPCStub`` replays."""
        kwargs = {k: v for k, v in self._client_kwargs.items() if k != "useCertificates"}
        kwargs.setdefault("skipCACheck", False)
        # As BaseClient.__setKeepAliveLapse: absent or unparsable -> 150, 0 -> 0, otherwise at least 150.
        try:
            lapse = max(0, int(kwargs.get("keepAliveLapse", 1)))
        except (TypeError, ValueError):
            lapse = 1
        kwargs["keepAliveLapse"] = max(150, lapse) if lapse else 0
        return [[self._url, kwargs], method, list(args)]

    @property
    def session(self) -> DiracXSession:
        route = self._route
        assert route.bridge is not None and route.caller is not None and route.caller.proxy_path is not None
        if not route.bridge.url:
            raise errors.ConfigurationError(
                f"/DiracX/URL is not set, but /DiracX/FutureClientEnabled/{self.SERVICE} is on: ask the "
                "administrators to set it, or to turn the service's switch off"
            )
        if route.caller.problem and "no proxy" in route.caller.problem:
            raise errors.CredentialsNotFound(
                f"{route.caller.problem}: run dirac-proxy-init -g <your group> to create one"
            )
        return get_session(route.bridge.url, route.caller.proxy_path, route.bridge)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._unserved(name)

    def _unserved(self, method: str) -> Callable[..., Any]:
        service = self.SERVICE or (self._route.service.name if self._route.service else "?")
        if self._route.service is not None and self._route.service.legacy_fallback:
            logger().debug(f"{service}.{method}: not served by DiracX, using the legacy service")
            return getattr(self._legacy_factory(), method)

        def not_served(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
            known = "is not served by DiracX 0.7.0" if method in self.NOT_SERVED else "has no DiracX equivalent"
            return errors.NotServed(
                f"{service}.{method} {known} yet. To send it to the legacy service, set "
                f"/DiracX/Bridge/{service}/LegacyFallback = yes; or turn "
                f"/DiracX/FutureClientEnabled/{service} off"
            ).result

        return not_served

    @adapted
    def ping(self) -> dict[str, Any]:
        """DIRAC's ``ping`` on a service, answered by DiracX's health probe."""
        self.session.request("GET", "/api/health/live", idempotent=True, action="ping")
        return {"name": self.SERVICE, "backend": "DiracX", "url": self._route.bridge.url if self._route.bridge else ""}


class UnservedService(Adapter):
    """A service switched to DiracX for which the bridge has no adapter: nothing is served.

    DIRAC 9.1 recurses ~250 levels (about 6 s of DISET calls) per call in this situation; here
    every call answers the fallback or a clear ``S_ERROR`` at once.
    """
