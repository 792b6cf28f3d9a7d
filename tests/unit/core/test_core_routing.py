"""routing.py: ``decide`` with an injected CS reader and caller, and ``select`` as DIRAC's RPCClientSelector."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from core_test_helpers import dict_reader, diracx_route

from diracx_bridge import routing, settings
from diracx_bridge.adapters import UnservedService, adapter_for
from diracx_bridge.adapters.job_monitoring import JobMonitoringAdapter
from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.routing import Route, decide, select
from diracx_bridge.settings import ServiceSettings

JM = "WorkloadManagement/JobMonitoring"
ON = {f"/DiracX/FutureClientEnabled/{JM}": "yes", "/DiracX/URL": "https://diracx.example.org/"}
ALICE = Caller(CallerKind.PROXY, proxy_path=Path("/tmp/x509up_u1000"), group="civo_user", vo="civo")


def never_read(path: str) -> str | None:
    raise AssertionError(f"the CS must not be read for an explicit URL ({path})")


class Recorder:
    """Stands for the bridge's DIRAC logger."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda *args: self.calls.append((level, args))


# --- decide ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "dips://dirac.example.org:9130/WorkloadManagement/JobMonitoring",
        "https://dirac.example.org:8443/WorkloadManagement/JobMonitoring",
        "http://dirac.example.org/WorkloadManagement/JobMonitoring",
        "",
        "JobMonitoring",
        "WorkloadManagement/JobMonitoring/extra",
    ],
)
def test_explicit_urls_go_to_legacy_without_reading_the_cs(url: str) -> None:
    route = decide(url, {}, read=never_read, caller=ALICE)
    assert route.use_diracx is False
    assert route.reason == "explicit URL"
    assert route.service is None  # select hands these to DIRAC's own selector, untouched


def test_switch_off_goes_to_legacy_with_the_service_known() -> None:
    route = decide(JM, {}, read=dict_reader({f"/DiracX/FutureClientEnabled/{JM}": "no"}), caller=ALICE)
    assert route.use_diracx is False
    assert route.service is not None
    assert route.service.name == JM
    assert route.service.enabled is False
    assert f"/DiracX/FutureClientEnabled/{JM} is off" in route.reason


def test_switch_on_and_a_proxy_user_goes_to_diracx() -> None:
    route = decide(JM, {}, read=dict_reader(ON), caller=ALICE)
    assert route.use_diracx is True
    assert route.caller is ALICE
    assert route.service is not None and route.service.enabled
    assert route.bridge is not None and route.bridge.url == "https://diracx.example.org"
    assert f"/DiracX/FutureClientEnabled/{JM}" in route.reason


def test_disabled_vo_goes_to_legacy_naming_the_vo_and_the_option() -> None:
    read = dict_reader({**ON, "/DiracX/DisabledVOs": "lhcb, civo"})
    route = decide(JM, {}, read=read, caller=ALICE)
    assert route.use_diracx is False
    assert "civo" in route.reason
    assert "/DiracX/DisabledVOs" in route.reason
    assert route.service is not None and route.service.enabled  # so select builds the legacy client itself


def test_other_disabled_vos_do_not_matter() -> None:
    route = decide(JM, {}, read=dict_reader({**ON, "/DiracX/DisabledVOs": "lhcb"}), caller=ALICE)
    assert route.use_diracx is True


def test_service_vos_list_excluding_the_vo_goes_to_legacy() -> None:
    read = dict_reader({**ON, f"/DiracX/Bridge/{JM}/VOs": "lhcb, gridpp"})
    route = decide(JM, {}, read=read, caller=ALICE)
    assert route.use_diracx is False
    assert "civo" in route.reason
    assert f"/DiracX/Bridge/{JM}/VOs" in route.reason
    assert "gridpp, lhcb" in route.reason


def test_service_vos_list_including_the_vo_goes_to_diracx() -> None:
    read = dict_reader({**ON, f"/DiracX/Bridge/{JM}/VOs": "lhcb, civo"})
    assert decide(JM, {}, read=read, caller=ALICE).use_diracx is True


def test_disabled_vos_win_over_the_service_vos_list() -> None:
    read = dict_reader({**ON, f"/DiracX/Bridge/{JM}/VOs": "civo", "/DiracX/DisabledVOs": "civo"})
    route = decide(JM, {}, read=read, caller=ALICE)
    assert route.use_diracx is False
    assert "/DiracX/DisabledVOs" in route.reason


@pytest.mark.parametrize("kind", [CallerKind.HOST, CallerKind.DELEGATED, CallerKind.IN_MEMORY])
def test_callers_diracx_cannot_act_as_go_to_legacy(kind: CallerKind) -> None:
    route = decide(JM, {}, read=dict_reader(ON), caller=Caller(kind))
    assert route.use_diracx is False
    assert kind.value in route.reason
    assert route.service is not None and route.service.enabled


def test_client_kwargs_decide_the_caller_when_none_is_injected() -> None:
    """``useCertificates=True`` without a proxy location is the host certificate, as in DISET."""
    route = decide(JM, {"useCertificates": True}, read=dict_reader(ON))
    assert route.use_diracx is False
    assert "host" in route.reason
    delegated = decide(JM, {"delegatedDN": "/DC=org/CN=bob", "delegatedGroup": "g"}, read=dict_reader(ON))
    assert "delegated" in delegated.reason


def test_deprecated_option_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(routing, "logger", lambda: recorder)
    read = dict_reader({f"/DiracX/LegacyClientEnabled/{JM}": "yes"})
    for _ in range(3):
        route = decide(JM, {}, read=read, caller=ALICE)
        assert route.use_diracx is True
    warnings = [args for level, args in recorder.calls if level in ("warn", "warning")]
    assert len(warnings) == 1
    assert f"/DiracX/LegacyClientEnabled/{JM}" in warnings[0][0]
    assert f"/DiracX/FutureClientEnabled/{JM}" in warnings[0][0]


def test_current_option_does_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(routing, "logger", lambda: recorder)
    decide(JM, {}, read=dict_reader(ON), caller=ALICE)
    assert recorder.calls == []


# --- DIRAC's own switch function -------------------------------------------------------------------


@pytest.fixture
def dirac_cs(monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process's real DIRAC CS, with options set for one test and removed afterwards."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    added: list[str] = []

    def set_option(path: str, value: str) -> None:
        gConfigurationData.setOptionInCFG(path, value)
        added.append(path)
        settings.clear_cache()

    yield set_option
    for path in added:
        gConfigurationData.deleteOptionInCFG(path)
    settings.clear_cache()


def patch_use_legacy_adapter(monkeypatch: pytest.MonkeyPatch, answer: bool) -> list[str]:
    """As DIRAC's own comparison tests switch a service (tests/Integration/FutureClient/utils.py)."""
    asked: list[str] = []
    monkeypatch.setattr(
        "DIRAC.Core.Tornado.Client.ClientSelector.useLegacyAdapter", lambda *args: asked.append(args[0]) or answer
    )
    return asked


def test_a_patched_use_legacy_adapter_switches_the_service_on(monkeypatch: pytest.MonkeyPatch, dirac_cs: Any) -> None:
    asked = patch_use_legacy_adapter(monkeypatch, True)
    route = decide(JM, {}, caller=ALICE)  # no /DiracX/FutureClientEnabled in this process's CS
    assert route.use_diracx is True
    assert route.reason == f"DIRAC's useLegacyAdapter('{JM}') is true"
    assert asked == [JM]  # asked at call time, not cached


def test_a_patched_use_legacy_adapter_switches_the_service_off(monkeypatch: pytest.MonkeyPatch, dirac_cs: Any) -> None:
    dirac_cs(f"/DiracX/FutureClientEnabled/{JM}", "yes")
    assert decide(JM, {}, caller=ALICE).use_diracx is True
    patch_use_legacy_adapter(monkeypatch, False)
    route = decide(JM, {}, caller=ALICE)
    assert route.use_diracx is False and route.switched_on is False
    assert route.reason == f"/DiracX/FutureClientEnabled/{JM} is off"


def test_the_bridges_own_rules_stay_on_top_of_dirac_switch(monkeypatch: pytest.MonkeyPatch, dirac_cs: Any) -> None:
    """DisabledVOs, the service's VO list and the deprecated name still apply to a patched switch."""
    patch_use_legacy_adapter(monkeypatch, True)
    dirac_cs("/DiracX/DisabledVOs", "civo")
    route = decide(JM, {}, caller=ALICE)
    assert route.use_diracx is False and route.switched_on is True
    assert route.reason == "VO civo is in /DiracX/DisabledVOs"


def test_the_deprecated_name_still_switches_on(monkeypatch: pytest.MonkeyPatch, dirac_cs: Any) -> None:
    """DIRAC's function no longer reads LegacyClientEnabled; the bridge still does."""
    patch_use_legacy_adapter(monkeypatch, False)
    dirac_cs(f"/DiracX/LegacyClientEnabled/{JM}", "yes")
    route = decide(JM, {}, caller=ALICE)
    assert route.use_diracx is True
    assert route.reason == f"/DiracX/LegacyClientEnabled/{JM} is on (deprecated name)"


# --- select ----------------------------------------------------------------------------------------


class Original:
    """DIRAC's RPCClientSelector: records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.result = object()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result


class FakeHttpsClient:
    pass


class FakeFutureClient:
    pass


@pytest.fixture
def no_dirac_adapter_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """DIRAC's own ``useLegacyAdapter`` path must not be taken by the bridge's legacy route."""
    import DIRAC.ConfigurationSystem.Client.PathFinder as path_finder
    import DIRAC.Core.Tornado.Client.ClientSelector as client_selector

    def forbidden(*_args: Any, **_kwargs: Any) -> bool:
        raise AssertionError("DIRAC's useLegacyAdapter was consulted")

    monkeypatch.setattr(path_finder, "useLegacyAdapter", forbidden)
    monkeypatch.setattr(client_selector, "useLegacyAdapter", forbidden)


def route_of(use_diracx: bool, *, enabled: bool, service: str = JM, caller: Caller | None = None) -> Route:
    system, _, name = service.partition("/")
    settings = ServiceSettings(system, name, enabled, "/DiracX/FutureClientEnabled/x" if enabled else None, False, None)
    return Route(use_diracx, "test", settings, None, caller, switched_on=enabled)


def patch_decide(monkeypatch: pytest.MonkeyPatch, route: Route) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def fake_decide(url: str, client_kwargs: dict[str, Any], **_: Any) -> Route:
        seen.append((url, dict(client_kwargs)))
        return route

    monkeypatch.setattr(routing, "decide", fake_decide)
    return seen


def test_select_switch_off_calls_dirac_selector_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = patch_decide(monkeypatch, route_of(False, enabled=False))
    original = Original()
    result = select(
        original, JM, "extra", httpsClient=FakeHttpsClient, diracxClient=None, timeout=600, proxyLocation="/p"
    )
    assert result is original.result
    assert original.calls == [
        ((JM, "extra"), {"httpsClient": FakeHttpsClient, "diracxClient": None, "timeout": 600, "proxyLocation": "/p"})
    ]
    # decide sees the client's own kwargs, not the selector's
    assert seen == [(JM, {"timeout": 600, "proxyLocation": "/p"})]


def test_select_explicit_url_calls_dirac_selector(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "dips://dirac.example.org:9130/WorkloadManagement/JobMonitoring"
    monkeypatch.setattr(routing, "decide", functools.partial(decide, read=never_read))
    original = Original()
    assert select(original, url, httpsClient=None, diracxClient=None) is original.result
    assert original.calls == [((url,), {"httpsClient": None, "diracxClient": None})]


def test_select_routing_failure_falls_back_to_the_legacy_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not to DIRAC's selector: with the switch on it would answer DIRAC's FutureClient or raise."""

    def broken(*_args: Any, **_kwargs: Any) -> Route:
        raise RuntimeError("CS exploded")

    monkeypatch.setattr(routing, "decide", broken)
    recorder = Recorder()
    monkeypatch.setattr(routing, "logger", lambda: recorder)
    built: list[tuple[Any, ...]] = []
    monkeypatch.setattr(routing, "legacy_client", lambda url, https, kwargs: built.append((url, dict(kwargs))) or "L")
    original = Original()
    assert select(original, JM, httpsClient=None, diracxClient=FakeFutureClient, timeout=5) == "L"
    assert original.calls == []
    assert built == [(JM, {"timeout": 5})]
    assert any("CS exploded" in str(args) for _, args in recorder.calls)


@pytest.mark.usefixtures("no_dirac_adapter_switch")
def test_select_legacy_route_with_switch_on_builds_the_legacy_client_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_decide(monkeypatch, route_of(False, enabled=True))
    built: list[tuple[Any, ...]] = []
    legacy = object()

    def fake_legacy_client(url: str, https_client: Any, client_kwargs: Any) -> Any:
        built.append((url, https_client, dict(client_kwargs)))
        return legacy

    monkeypatch.setattr(routing, "legacy_client", fake_legacy_client)
    original = Original()
    result = select(original, JM, httpsClient=FakeHttpsClient, diracxClient=FakeFutureClient, timeout=600)
    assert result is legacy
    assert original.calls == []  # DIRAC's selector would return diracxClient() here
    assert built == [(JM, FakeHttpsClient, {"timeout": 600})]


@pytest.mark.usefixtures("no_dirac_adapter_switch")
def test_legacy_client_uses_the_https_class_for_https_services(monkeypatch: pytest.MonkeyPatch) -> None:
    import DIRAC.ConfigurationSystem.Client.PathFinder as path_finder

    made: list[tuple[Any, ...]] = []

    class Https:
        def __init__(self, url: str, **kwargs: Any) -> None:
            made.append(("https", url, kwargs))

    class Dips:
        def __init__(self, url: str, **kwargs: Any) -> None:
            made.append(("dips", url, kwargs))

    import DIRAC.Core.DISET.RPCClient as rpc_module

    monkeypatch.setattr(rpc_module, "RPCClient", Dips)
    monkeypatch.setattr(path_finder, "getServiceURL", lambda _url: "https://dirac.example.org:8443/WM/JM")
    assert isinstance(routing.legacy_client(JM, Https, {"timeout": 1}), Https)
    monkeypatch.setattr(path_finder, "getServiceURL", lambda _url: "dips://dirac.example.org:9130/WM/JM")
    assert isinstance(routing.legacy_client(JM, Https, {"timeout": 2}), Dips)
    assert made == [("https", JM, {"timeout": 1}), ("dips", JM, {"timeout": 2})]


def test_select_adapter_route_returns_the_adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    route = diracx_route(tmp_path / "proxy")
    patch_decide(monkeypatch, route)
    built: list[str] = []
    monkeypatch.setattr(routing, "legacy_client", lambda url, *_: built.append(url) or "legacy")
    original = Original()
    adapter = select(original, JM, httpsClient=None, diracxClient=None, timeout=600)
    assert isinstance(adapter, JobMonitoringAdapter)
    assert original.calls == []
    assert adapter._route is route
    assert adapter._client_kwargs == {"timeout": 600}
    assert built == []  # the legacy client is built only if a method needs it
    assert adapter._legacy_factory() == "legacy"
    assert built == [JM]


def test_select_unknown_service_uses_dirac_future_client_class(monkeypatch: pytest.MonkeyPatch) -> None:
    # A service without an adapter of the bridge (JobStateUpdate, DIRAC 9.1's only wired one, now has one).
    patch_decide(monkeypatch, route_of(True, enabled=True, service="ResourceStatus/ResourceStatus"))
    result = select(Original(), "ResourceStatus/ResourceStatus", httpsClient=None, diracxClient=FakeFutureClient)
    assert type(result) is FakeFutureClient


@pytest.mark.parametrize("diracx_client", [None, "partial"])
def test_select_unknown_service_without_client_class_is_unserved(
    monkeypatch: pytest.MonkeyPatch, diracx_client: Any
) -> None:
    """``diracxClient`` is None, or (a Client class without the attribute) one of Client.__getattr__'s partials."""
    calls: list[Any] = []
    if diracx_client == "partial":
        diracx_client = functools.partial(calls.append, "executeRPC called")
    service = "ResourceStatus/ResourceStatus"  # a service without an adapter
    patch_decide(monkeypatch, route_of(True, enabled=True, service=service))
    result = select(Original(), service, httpsClient=None, diracxClient=diracx_client)
    assert isinstance(result, UnservedService)
    assert calls == []  # never called: DIRAC 9.1 recursed through it
    answer = result.killJob(1)
    assert answer["OK"] is False
    assert f"{service}.killJob" in answer["Message"]


def test_adapter_class_lookup() -> None:
    assert adapter_for(JM) is JobMonitoringAdapter
    assert adapter_for("ResourceStatus/ResourceStatus") is None
