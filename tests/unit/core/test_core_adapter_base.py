"""adapters/base.py: every method name answers, DISET's wire encoding, S_ERROR instead of exceptions, rpcStub."""

from __future__ import annotations

import datetime as dt
import errno
from pathlib import Path
from typing import Any, ClassVar

import pytest
from core_test_helpers import FakeDiracX, diracx_route, make_jwt
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import errors
from diracx_bridge.adapters import Adapter, UnservedService, WithKeys, adapted, over_the_wire
from diracx_bridge.adapters import _base as base
from diracx_bridge.adapters.job_monitoring import JobMonitoringAdapter
from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.routing import Route

SERVICE = "Test/Echo"
FAKE_JWT = make_jwt(60, sub="someone")


class EchoAdapter(Adapter):
    SERVICE = SERVICE
    #: The legacy service's surface: what it serves, and two methods DiracX cannot serve.
    TYPES: ClassVar[dict[str, list[Any]]] = {
        "echo": [],
        "refuse": [],
        "crash": [],
        "unencodable": [],
        "getJDL": [int],
        "getJobJDL": [int, bool],
        "getJobParameters": [],
    }
    NOT_SERVED: ClassVar[dict[str, str]] = {"getJDL": "it has no JDL route"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[Any, ...]] = []

    @adapted
    def echo(self, *args: Any) -> Any:
        self.seen.append(args)
        return args[0] if len(args) == 1 else list(args)

    @adapted
    def refuse(self) -> None:
        raise errors.LegacyRefusal("you may not", code=errno.EPERM, extra={"JobID": 5, "InvalidJobIDs": [1, 2]})

    @adapted
    def crash(self) -> None:
        raise RuntimeError(f"internal failure with Authorization: Bearer {FAKE_JWT} and {FAKE_JWT}")

    @adapted
    def unencodable(self) -> Any:
        return object()


class Legacy:
    """Stands for the DISET RPCClient of the service."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> dict[str, Any]:
            self.calls.append((method, args))
            return {"OK": True, "Value": f"legacy {method}"}

        return call


def make(
    tmp_path: Path, *, fallback: bool = False, kwargs: dict[str, Any] | None = None, url: str = ""
) -> tuple[EchoAdapter, Legacy, list[int]]:
    legacy = Legacy()
    built: list[int] = []

    def factory() -> Legacy:
        built.append(1)
        return legacy

    route = diracx_route(tmp_path / "proxy", SERVICE, legacy_fallback=fallback)
    return EchoAdapter(route, factory, url, kwargs), legacy, built


# --- unknown methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["getJobParameters", "getJDL", "getJobJDL"])
def test_unserved_legacy_methods_answer_enotsup_naming_the_method_and_the_option(tmp_path: Path, method: str) -> None:
    adapter, legacy, built = make(tmp_path)
    result = getattr(adapter, method)(1, True)
    assert result["OK"] is False
    assert result["Errno"] == errno.ENOTSUP
    assert DErrno.cmpError(result, errno.ENOTSUP)
    assert f"{SERVICE}.{method}" in result["Message"]
    assert f"/DiracX/Bridge/{SERVICE}/LegacyFallback" in result["Message"]
    assert f"/DiracX/FutureClientEnabled/{SERVICE}" in result["Message"]
    assert result["rpcStub"] == [[SERVICE, {"skipCACheck": False, "keepAliveLapse": 150}], method, [1, True]]
    assert legacy.calls == []
    assert built == []  # no legacy client built either


@pytest.mark.parametrize("method", ["export_custom", "someExtensionMethod", "getJobOwner"])
def test_methods_the_legacy_service_lacks_answer_as_legacy_does(tmp_path: Path, method: str) -> None:
    """DISET answers "Unknown method" for a name the handler has no export_ for; LegacyFallback cannot help."""
    adapter, legacy, built = make(tmp_path, fallback=True)
    result = getattr(adapter, method)(1, "two")
    assert result["OK"] is False
    assert result["Message"] == f"Unknown method {method}"
    assert result["Errno"] == 0
    assert result["rpcStub"][1:] == [method, [1, "two"]]
    assert legacy.calls == [] and built == []


def test_unserved_methods_run_disets_type_check_first(tmp_path: Path) -> None:
    """What the legacy handler answers for a wrong argument type, before fallback or refusal."""
    for fallback in (False, True):
        adapter, legacy, _ = make(tmp_path, fallback=fallback)
        result = adapter.getJobJDL("5", True)
        assert result["OK"] is False and result["Errno"] == 0
        assert result["Message"].startswith(
            "Type mismatch in parameter 0 (starting with param 0) Received <class 'str'>"
        )
        assert legacy.calls == []


def test_keyword_arguments_are_refused_not_dropped(tmp_path: Path) -> None:
    """A DISET call carries positional arguments only; keywords handed to the adapter are refused."""
    adapter, legacy, _ = make(tmp_path, fallback=True)
    for result in (adapter.echo(1, attr=3), adapter.getJobJDL(1, True, attr=3), adapter.someExtensionMethod(attr=3)):
        assert result["OK"] is False and "keyword arguments (attr)" in result["Message"], result
        assert result["Errno"] == DErrno.EVALUE
    assert legacy.calls == []


def test_known_unserved_methods_say_why(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    assert "is not served by DiracX 0.7.0 (it has no JDL route)" in adapter.getJDL(1)["Message"]
    assert "is not served by DiracX 0.7.0." in adapter.getJobJDL(1, True)["Message"]


def test_the_adapter_states_its_surface() -> None:
    assert set(EchoAdapter.served()) == {"echo", "refuse", "crash", "unencodable", "ping"}
    # DISET's own methods (whoami, refreshConfiguration) are part of every legacy service's surface.
    assert EchoAdapter.not_served() == {
        "getJDL": "it has no JDL route",
        "getJobJDL": "",
        "getJobParameters": "",
        "refreshConfiguration": "",
        "whoami": "",
    }


def test_unknown_methods_never_raise_attribute_error(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    assert hasattr(adapter, "whatever")
    assert callable(adapter.whatever)
    with pytest.raises(AttributeError):
        _ = adapter._private  # dunder/private lookups keep Python's protocol (copy, pickle, hasattr checks)


def test_legacy_fallback_calls_the_legacy_method_with_the_same_args(tmp_path: Path) -> None:
    adapter, legacy, built = make(tmp_path, fallback=True)
    result = adapter.getJobJDL(12, True)
    assert result == {"OK": True, "Value": "legacy getJobJDL"}
    assert legacy.calls == [("getJobJDL", (12, True))]
    assert built == [1]
    # adapted methods keep using DiracX even with the fallback on
    assert adapter.echo(3)["Value"] == 3
    assert legacy.calls == [("getJobJDL", (12, True))]


class KeysAdapter(EchoAdapter):
    """Two more shapes of answer: an S_OK with legacy keys, a call found unservable half-way."""

    TYPES: ClassVar[dict[str, list[Any]]] = {**EchoAdapter.TYPES, "with_keys": [], "stops_midway": []}

    @adapted
    def with_keys(self) -> WithKeys:
        return WithKeys((1, 2), {"JobID": (1, 2), "requireProxyUpload": False})

    @adapted
    def stops_midway(self) -> None:
        self.seen.append(("started",))
        self._cannot_serve("the test server (it cannot do this call)")


def test_an_answer_with_legacy_keys_besides_value(tmp_path: Path) -> None:
    adapter = KeysAdapter(diracx_route(tmp_path / "proxy", SERVICE), Legacy)
    result = adapter.with_keys()
    assert result["OK"] is True
    assert result["Value"] == [1, 2] and result["JobID"] == [1, 2]  # through the wire encoding too
    assert result["requireProxyUpload"] is False
    assert result["rpcStub"][1] == "with_keys"


@pytest.mark.parametrize("fallback", [False, True])
def test_a_call_found_unservable_midway_is_refused_or_sent_to_legacy(tmp_path: Path, fallback: bool) -> None:
    legacy = Legacy()
    adapter = KeysAdapter(diracx_route(tmp_path / "proxy", SERVICE, legacy_fallback=fallback), lambda: legacy)
    result = adapter.stops_midway()
    assert adapter.seen == [("started",)]
    if fallback:
        assert result == {"OK": True, "Value": "legacy stops_midway"}
        assert legacy.calls == [("stops_midway", ())]
    else:
        assert result["Errno"] == errno.ENOTSUP
        assert f"{SERVICE}.stops_midway is not served by the test server (it cannot do this call)" in result["Message"]
        assert legacy.calls == []


def test_job_monitoring_unserved_methods(tmp_path: Path) -> None:
    route = diracx_route(tmp_path / "proxy")
    adapter = JobMonitoringAdapter(route, Legacy)
    result = adapter.getJobParameters([1, 2])
    assert result["Errno"] == errno.ENOTSUP
    assert "WorkloadManagement/JobMonitoring.getJobParameters is not served by DiracX 0.7.0" in result["Message"]
    assert "/DiracX/Bridge/WorkloadManagement/JobMonitoring/LegacyFallback" in result["Message"]


def test_unserved_service_names_its_service(tmp_path: Path) -> None:
    route = diracx_route(tmp_path / "proxy", "WorkloadManagement/PilotManager")
    result = UnservedService(route, Legacy, "WorkloadManagement/PilotManager").getPilots(1)
    assert result["Errno"] == errno.ENOTSUP
    assert "WorkloadManagement/PilotManager.getPilots" in result["Message"]
    assert "/DiracX/Bridge/WorkloadManagement/PilotManager/LegacyFallback" in result["Message"]


# --- adapted: the wire ---------------------------------------------------------------------------------


def test_arguments_go_through_the_wire_encoding(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    when = dt.datetime(2025, 1, 2, 3, 4, 5)
    adapter.echo((1, 2), {1: "a", "b": (3, 4)}, when, None, True)
    assert adapter.seen == [([1, 2], {"1": "a", "b": [3, 4]}, when, None, True)]
    assert isinstance(adapter.seen[0][2], dt.datetime)


def test_values_go_through_the_wire_encoding(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    when = dt.datetime(2025, 1, 2, 3, 4, 5, 678)
    result = adapter.echo({7: {"When": when, "Tuple": (1, "x")}})
    assert result["OK"] is True
    # What DISET delivers: str keys, lists, datetimes (to the second, as JSON encoding keeps them).
    assert result["Value"] == {"7": {"When": dt.datetime(2025, 1, 2, 3, 4, 5), "Tuple": [1, "x"]}}
    assert result["Value"] == over_the_wire({7: {"When": when, "Tuple": (1, "x")}})


def test_unencodable_argument_is_an_s_error(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    result = adapter.echo(object())
    assert result["OK"] is False
    assert "Cannot serialize the arguments of echo" in result["Message"]
    assert adapter.seen == []


def test_unencodable_value_is_an_s_error_not_an_exception(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    result = adapter.unencodable()
    assert result["OK"] is False
    assert "unencodable" in result["Message"]


# --- adapted: errors -----------------------------------------------------------------------------------


def test_bridge_error_gives_its_own_s_error(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    result = adapter.refuse()
    assert result["OK"] is False
    assert result["Errno"] == errno.EPERM
    assert "you may not" in result["Message"]
    assert result["JobID"] == 5
    assert result["InvalidJobIDs"] == [1, 2]
    assert "ExecInfo" not in result


def test_unexpected_exception_is_an_s_error_with_secrets_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[tuple[Any, ...]] = []

    class Log:
        def error(self, *args: Any) -> None:
            logged.append(args)

        def __getattr__(self, _name: str) -> Any:
            return lambda *args: None

    monkeypatch.setattr(base, "logger", Log)
    adapter, _, _ = make(tmp_path)
    result = adapter.crash()
    assert result["OK"] is False
    assert "RuntimeError" in result["Message"]
    assert "internal failure" in result["Message"]
    assert "<redacted>" in result["Message"]
    # Not in the message, nor anywhere else in the answer (DISET strips ExecInfo; a live exception
    # object would carry the token to whoever logs the whole result).
    assert FAKE_JWT not in str(result)
    assert FAKE_JWT.split(".")[1] not in str(result)
    assert "ExecInfo" not in result
    assert len(logged) == 1
    assert FAKE_JWT not in str(logged)
    assert "crash" in logged[0][0]


def test_adapted_never_raises(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path, kwargs={"keepAliveLapse": "not a number", "timeout": 600})
    for call in (adapter.echo, adapter.refuse, adapter.crash, adapter.unencodable):
        result = call(1) if call is adapter.echo else call()
        assert isinstance(result, dict)
        assert "rpcStub" in result


# --- adapted: rpcStub ----------------------------------------------------------------------------------


def test_rpc_stub_has_diset_shape(tmp_path: Path) -> None:
    kwargs = {"timeout": 600, "useCertificates": False, "proxyLocation": "/tmp/x509up_u1", "keepAliveLapse": 300}
    adapter, _, _ = make(tmp_path, kwargs=kwargs, url="Test/Echo")
    result = adapter.echo((1, 2), {3: 4})
    stub = result["rpcStub"]
    assert isinstance(stub, list) and len(stub) == 3
    (service, stub_kwargs), method, args = stub
    assert service == "Test/Echo"
    assert method == "echo"
    assert args == [(1, 2), {3: 4}]  # the caller's own arguments, as InnerRPCClient stubs them
    assert "useCertificates" not in stub_kwargs
    assert stub_kwargs["timeout"] == 600
    assert stub_kwargs["proxyLocation"] == "/tmp/x509up_u1"
    assert stub_kwargs["keepAliveLapse"] == 300
    assert "useCertificates" in kwargs  # the client's own kwargs are not modified
    # replayable by ForwardDISET after a round trip through the RMS (JSON): same call, same arguments
    assert over_the_wire(stub) == [["Test/Echo", stub_kwargs], "echo", [[1, 2], {"3": 4}]]


def test_rpc_stub_on_errors_and_default_url(tmp_path: Path) -> None:
    adapter, _, _ = make(tmp_path)
    result = adapter.refuse()
    assert result["rpcStub"][0][0] == SERVICE
    assert result["rpcStub"][1:] == ["refuse", []]


@pytest.mark.parametrize(("given", "expected"), [(None, 150), (0, 0), (10, 150), (300, 300), ("bad", 150)])
def test_rpc_stub_keep_alive_lapse_as_diset_sets_it(tmp_path: Path, given: Any, expected: int) -> None:
    """``BaseClient.__setKeepAliveLapse``: absent or unparsable -> 150, 0 -> 0, else at least 150."""
    kwargs = {} if given is None else {"keepAliveLapse": given}
    adapter, _, _ = make(tmp_path, kwargs=kwargs)
    assert adapter.echo(1)["rpcStub"][0][1]["keepAliveLapse"] == expected


# --- the session behind adapters -------------------------------------------------------------------------


def test_ping_answers_from_diracx_health(proxy: Path, diracx: FakeDiracX) -> None:
    adapter = EchoAdapter(diracx_route(proxy, SERVICE), Legacy)
    result = adapter.ping()
    assert result["OK"] is True, result
    assert result["Value"] == {"name": SERVICE, "backend": "DiracX", "url": diracx.url}
    assert [s.path for s in diracx.sent] == ["/api/health/live"]


def test_missing_url_is_a_configuration_error(proxy: Path, diracx: FakeDiracX) -> None:
    adapter = EchoAdapter(diracx_route(proxy, SERVICE, url=None), Legacy)
    result = adapter.ping()
    assert result["OK"] is False
    assert result["Errno"] == DErrno.ECONF
    assert "/DiracX/URL is not set" in result["Message"]
    assert diracx.sent == []


def test_missing_proxy_is_credentials_not_found(tmp_path: Path, diracx: FakeDiracX) -> None:
    missing = tmp_path / "nothing-here"
    route = diracx_route(missing, SERVICE)
    route = Route(
        True,
        "test",
        route.service,
        route.bridge,
        Caller(CallerKind.PROXY, proxy_path=missing, problem=f"no proxy at {missing} (No such file or directory)"),
    )
    result = EchoAdapter(route, Legacy).ping()
    assert result["Errno"] == DErrno.EPROXYFIND
    assert "dirac-proxy-init" in result["Message"]
    assert str(missing) in result["Message"]
    assert diracx.sent == []
