"""What every adapter shares: the route it was given, the session, the legacy surface, the error contract.

An adapter instance stands where DIRAC's ``Client._getRPC`` would put a DISET ``RPCClient``:
DIRAC calls ``getattr(adapter, method)(*args)`` and expects an ``S_OK``/``S_ERROR`` dict back.
So an adapter answers every method name, as the legacy service would:

* a method it serves (decorated with :func:`adapted`): from DiracX, after DISET's own argument
  checks, when the DiracX server has the routes the method ``uses``;
* a method of the legacy service it does not serve (listed in ``TYPES``, the handler's
  ``types_<method>`` lists), or one whose routes the server lacks: DISET's argument type check
  first, as the legacy service would run it, then the legacy service's answer when
  ``/DiracX/Bridge/<System>/<Service>/LegacyFallback`` allows it, else a clear ``S_ERROR``
  (:class:`~diracx_bridge.errors.NotServed`) naming the method and the option to set;
* a name the legacy service does not have either: the legacy answer, ``Unknown method <name>``;

never ``AttributeError``, never ``NotImplementedError``, and never an exception: methods run
under DIRACCommon's ``convertToReturnValue``, and the bridge's exceptions carry their
``S_ERROR`` (see :mod:`diracx_bridge.errors`). Every answer carries DISET's ``rpcStub``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar, overload

from DIRACCommon.Core.Utilities import DErrno
from DIRACCommon.Core.Utilities.ReturnValues import convertToReturnValue

from diracx_bridge import capabilities, errors
from diracx_bridge.adapters._convert import check_types
from diracx_bridge.adapters._wire import over_the_wire
from diracx_bridge.capabilities import Endpoint
from diracx_bridge.identity import Caller
from diracx_bridge.log import logger
from diracx_bridge.session import DiracXSession, get_session
from diracx_bridge.settings import BridgeSettings, ServiceSettings

T = TypeVar("T")

#: Attribute marking an adapted method, holding the DiracX routes it uses.
_USES = "__diracx_bridge_uses__"

#: What every DISET service answers besides its own methods (``RequestHandler``'s exports).
BASE_TYPES: dict[str, list[Any]] = {"ping": [], "whoami": [], "echo": [str], "refreshConfiguration": [bool]}


@dataclass(frozen=True)
class Route:
    """The routing decision for one call, with its reason (logged at debug level, shown by ``status``).

    Built by :mod:`diracx_bridge.routing`, handed to the adapter it chose: the settings and the
    caller it decided on are the ones the adapter then acts with.
    """

    use_diracx: bool
    reason: str
    service: ServiceSettings | None = None
    bridge: BridgeSettings | None = None
    caller: Caller | None = None
    #: The service's switch is on (a legacy route then bypasses DIRAC's selector, which would
    #: send the call to DIRAC's own FutureClient).
    switched_on: bool = False


@dataclass(frozen=True)
class WithKeys:
    """What an adapted method returns when the legacy ``S_OK`` carries keys besides ``Value``.

    Some legacy services add keys to a successful answer (JobManager's ``JobID`` and
    ``requireProxyUpload``); ``@adapted`` puts ``value`` in ``Value`` and ``keys`` beside it,
    both through the wire encoding.
    """

    value: Any
    keys: Mapping[str, Any]


@overload
def adapted(func: Callable[..., T]) -> Callable[..., dict[str, Any]]: ...
@overload
def adapted(*, uses: Sequence[Endpoint] = ()) -> Callable[[Callable[..., T]], Callable[..., dict[str, Any]]]: ...


def adapted(func: Callable[..., T] | None = None, *, uses: Sequence[Endpoint] = ()) -> Any:
    """Make an adapter method behave like the DISET call it replaces; ``uses``: the DiracX routes it needs.

    Arguments and answer go through the wire encoding (:func:`over_the_wire`); the arguments are
    checked as the DISET handler checks them (the adapter's ``TYPES``, then the call signature);
    when the DiracX server lacks a route in ``uses`` (:mod:`diracx_bridge.capabilities`), the call
    is not served (legacy fallback or refusal); the method runs under DIRACCommon's
    ``convertToReturnValue``, so it returns ``S_OK``/``S_ERROR`` and never raises; the result
    carries DISET's ``rpcStub``, so DIRAC's failover (RMS ForwardDISET) can replay a failed
    call, which goes through the routing again.
    """
    if func is None:
        return functools.partial(_adapt, uses=tuple(uses))
    return _adapt(func, uses=tuple(uses))


def _adapt(func: Callable[..., T], *, uses: tuple[Endpoint, ...]) -> Callable[..., dict[str, Any]]:
    converted = convertToReturnValue(func)
    name = func.__name__
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(self: Adapter, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checked = self._checked_arguments(name, args, signature, kwargs)
        if isinstance(checked, dict):
            return checked
        # The routes are checked when the method first reaches for DiracX (``session``), so an
        # argument refused by the method itself never costs a request.
        self._uses, self._unserved_why = uses, None
        result: dict[str, Any] = converted(self, *checked)  # type: ignore[assignment]
        if self._unserved_why is not None:
            return self._not_served(name, args, self._unserved_why)
        if result["OK"]:
            try:
                if isinstance(result["Value"], WithKeys):
                    keys = result["Value"].keys
                    result["Value"] = result["Value"].value
                    result.update(over_the_wire(dict(keys)))
                result["Value"] = over_the_wire(result["Value"])
            except Exception as exc:  # noqa: BLE001 - an adapter bug must still answer, not raise
                result = errors.LegacyRefusal(f"Cannot serialize the answer of {name}: {exc!r}").result
        elif result.pop("ExecInfo", None) is not None:
            # A bug in the bridge, not a DiracX answer: keep it diagnosable, but secret-free. The live
            # exception (ExecInfo) goes, as DISET strips it: its text is the unredacted message.
            result["Message"] = errors.redact(result["Message"])
            logger().error(f"diracx-bridge bug in {func.__qualname__}", result["Message"])
        return self._answer(name, args, result)

    setattr(wrapper, _USES, uses)
    return wrapper


class Adapter:
    """Base of the adapters.

    A subclass names the service it stands for (``SERVICE``, ``<System>/<Service>``), the legacy
    handler's surface (``TYPES``: every ``types_<method>`` list of the handler, served or not),
    and why each legacy method it does not serve cannot be (``NOT_SERVED``, optional words for
    the refusal). That is all the registry and ``status`` need: a subclass in a public module of
    :mod:`diracx_bridge.adapters`, or behind an entry point of group ``diracx_bridge.adapters``,
    is found without any other edit (docs/adding-an-adapter.md).
    """

    SERVICE: ClassVar[str] = ""
    #: The legacy handler's ``types_<method>`` lists, for every method of the legacy service.
    TYPES: ClassVar[dict[str, list[Any]]] = {}
    #: Legacy methods DiracX cannot serve -> what it lacks for them (for the refusal and ``status``).
    NOT_SERVED: ClassVar[dict[str, str]] = {}
    #: False when the legacy surface is not known (a service without an adapter): every name is
    #: then treated as a legacy method (fallback or refusal), never as "Unknown method".
    KNOWS_LEGACY_SURFACE: ClassVar[bool] = True
    #: Legacy methods that only read: shadow mode may also ask DiracX for them (never for a write).
    READS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, route: Route, legacy: Callable[[], Any], url: str = "", client_kwargs: Any = None) -> None:
        self._route = route
        self._legacy_factory = legacy
        self._url = url or self.SERVICE
        self._client_kwargs = dict(client_kwargs or {})
        # The routes the running method uses, until checked; why the server cannot serve it, if so.
        # (DIRAC's Client builds one adapter per call, so this per-instance state is per call.)
        self._uses: tuple[Endpoint, ...] = ()
        self._unserved_why: str | None = None

    # --- the surface ------------------------------------------------------------------------------

    _LEGACY_TYPES: ClassVar[dict[str, list[Any]]] = BASE_TYPES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._LEGACY_TYPES = BASE_TYPES | cls.TYPES  # once per class: it is read on every call

    @classmethod
    def legacy_types(cls) -> dict[str, list[Any]]:
        """The legacy service's methods and their DISET type lists (the handler's and DISET's own)."""
        return cls._LEGACY_TYPES

    @classmethod
    def served(cls) -> dict[str, tuple[Endpoint, ...]]:
        """The methods this adapter answers from DiracX, and the routes each uses."""
        return {
            name: getattr(member, _USES)
            for name, member in inspect.getmembers(cls, callable)
            if hasattr(member, _USES) and not name.startswith("_")
        }

    @classmethod
    def not_served(cls) -> dict[str, str]:
        """Legacy methods with no DiracX equivalent, and why (for ``status`` and the docs)."""
        served = cls.served()
        return {name: cls.NOT_SERVED.get(name, "") for name in sorted(cls.legacy_types()) if name not in served}

    @classmethod
    def caller_notes(cls, caller: Caller, properties: Collection[str]) -> list[str]:
        """What this adapter serves, or not, for such a caller (its DIRAC group's properties): for ``status``.

        For an adapter whose answers depend on who asks (DiracX scoping by VO, refusing an identity).
        """
        return []

    # --- DISET's behaviour --------------------------------------------------------------------------

    def _rpc_stub(self, method: str, args: Sequence[Any]) -> list[Any]:
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

    def _answer(self, method: str, args: Sequence[Any], result: dict[str, Any]) -> dict[str, Any]:
        result["rpcStub"] = self._rpc_stub(method, args)  # DISET stubs the caller's own arguments
        return result

    def _checked_arguments(
        self,
        name: str,
        args: Sequence[Any],
        signature: inspect.Signature | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Any] | dict[str, Any]:
        """The arguments as the service receives them, or DISET's refusal (an answer) before any work.

        DISET encodes the arguments, the handler checks them against ``types_<name>``, then calls
        ``export_<name>(*args)``: a call that cannot bind is answered with the TypeError's text.
        A DISET call carries positional arguments only (DIRAC's ``Client`` drops keywords before
        the call); keywords given to the adapter directly are refused, not dropped.
        """
        if kwargs:
            refusal = errors.LegacyRefusal(
                f"{name} was called with keyword arguments ({', '.join(sorted(kwargs))}), which a DISET call "
                "cannot carry: pass them positionally",
                code=DErrno.EVALUE,
            )
            return self._answer(name, args, refusal.result)
        try:
            wire_args = over_the_wire(list(args))
        except Exception as exc:  # noqa: BLE001 - what DISET answers for an unencodable argument
            return self._answer(
                name, args, errors.LegacyRefusal(f"Cannot serialize the arguments of {name}: {exc!r}").result
            )
        try:
            types = self.legacy_types()
            if name in types:
                check_types(name, wire_args, types)
            if signature is not None:
                signature.bind(self, *wire_args)
        except errors.BridgeError as exc:
            return self._answer(name, args, exc.result)
        except TypeError as exc:
            return self._answer(name, args, errors.LegacyRefusal(f"Server error while serving {name}: {exc}").result)
        return wire_args

    # --- DiracX -------------------------------------------------------------------------------------

    @property
    def session(self) -> DiracXSession:
        """The caller's session; on a method's first use, also whether the server has its routes."""
        route = self._route
        assert route.bridge is not None and route.caller is not None and route.caller.proxy_path is not None
        if not route.bridge.url:
            raise errors.ConfigurationError(
                f"/DiracX/URL is not set, but {self._service_name()} is switched to DiracX",
                fix="ask the administrators to set /DiracX/URL, or to turn the service's switch off",
            )
        if route.caller.problem and route.caller.problem.startswith("no proxy"):
            raise errors.ProxyFileNotFound(route.caller.proxy_path)
        session = get_session(route.bridge.url, route.caller.proxy_path, route.bridge)
        if self._uses:
            uses, self._uses = self._uses, ()

            def fetch(path: str) -> Any:
                return session.request("GET", path, idempotent=True, action="reading DiracX's API description").json()

            why = capabilities.of_server(session.url, fetch).not_served_reason(uses)
            if why:
                self._unserved_why = why
                raise errors.NotServed(self._service_name(), "this method", why=why)
        return session

    # --- what is not served -------------------------------------------------------------------------

    def _service_name(self) -> str:
        return self.SERVICE or (self._route.service.name if self._route.service else "?")

    def _cannot_serve(self, why: str) -> NoReturn:
        """Stop the running adapted method: this call is not served (legacy fallback or refusal).

        For what a method learns only while serving a call (a job DiracX cannot act on, say);
        ``why`` completes "is not served by".
        """
        self._unserved_why = why
        raise errors.NotServed(self._service_name(), "this call", why=why)

    def _not_served(self, method: str, args: Sequence[Any], why: str) -> dict[str, Any]:
        """The legacy service's answer when the admin allows it, else a refusal that says how to get it."""
        service = self._service_name()
        if self._route.service is not None and self._route.service.legacy_fallback:
            logger().debug(f"{service}.{method}: not served by DiracX, using the legacy service", why)
            return getattr(self._legacy_factory(), method)(*args)  # type: ignore[no-any-return]
        return self._answer(method, args, errors.NotServed(service, method, why=why).result)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        if self.KNOWS_LEGACY_SURFACE and name not in self.legacy_types():

            def unknown(*args: Any, **kwargs: Any) -> dict[str, Any]:
                # The legacy service's own answer: DISET finds no export_<name> on the handler.
                checked = self._checked_arguments(name, args, kwargs=kwargs)
                if isinstance(checked, dict):
                    return checked
                return self._answer(name, args, errors.LegacyRefusal(f"Unknown method {name}").result)

            return unknown

        def not_served(*args: Any, **kwargs: Any) -> dict[str, Any]:
            checked = self._checked_arguments(name, args, kwargs=kwargs)
            if isinstance(checked, dict):
                return checked
            detail = self.NOT_SERVED.get(name)
            return self._not_served(name, args, capabilities.NAME + (f" ({detail})" if detail else ""))

        return not_served

    @adapted
    def ping(self) -> dict[str, Any]:
        """DIRAC's ``ping`` on a service, answered by DiracX's health probe."""
        self.session.request("GET", "/api/health/live", idempotent=True, action="ping")
        return {
            "name": self._service_name(),
            "backend": "DiracX",
            "url": self._route.bridge.url if self._route.bridge else "",
        }


class UnservedService(Adapter):
    """A service switched to DiracX for which the bridge has no adapter: nothing is served.

    DIRAC 9.1 recurses ~250 levels (about 6 s of DISET calls) per call in this situation; here
    every call answers the fallback or a clear ``S_ERROR`` at once.
    """

    KNOWS_LEGACY_SURFACE = False
