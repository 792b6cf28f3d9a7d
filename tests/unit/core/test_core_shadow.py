"""Shadow mode: the legacy answer goes back untouched; sampled reads are compared with DiracX's in the background."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_test_helpers import FakeDiracX, assert_no_secret, diracx_route, job_row

from diracx_bridge import routing
from diracx_bridge.adapters.job_monitoring import JobMonitoringAdapter
from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.routing import Route
from diracx_bridge.settings import ShadowSettings
from diracx_bridge.shadow import ShadowedClient, compare, shadow
from diracx_bridge.shadow import _worker as worker_module
from diracx_bridge.shadow import journal as journal_module
from diracx_bridge.shadow.journal import read_records, summarise_arguments
from diracx_bridge.tokens import DiracxToken

JM = "WorkloadManagement/JobMonitoring"
STUB = [[JM, {"timeout": 600, "skipCACheck": False, "keepAliveLapse": 150}], "getJobsStatus", [[1]]]


# --- the comparison rules ---------------------------------------------------------------------------


def ok(value: Any, method: str = "getJobsStatus", args: Any = ([1],)) -> dict[str, Any]:
    return {
        "OK": True,
        "Value": value,
        "rpcStub": [[JM, {"skipCACheck": False, "keepAliveLapse": 150}], method, list(args)],
    }


def test_equal_answers_are_equal_and_process_local_keys_do_not_count() -> None:
    left = ok({"1": {"Status": "Done"}}) | {"CallStack": ["x"]}
    assert compare(left, ok({"1": {"Status": "Done"}})).equal


@pytest.mark.parametrize(
    ("legacy", "adapted", "cause", "path", "shown"),
    [
        (
            ok({"1": {"Status": "Done"}}),
            ok({"1": {"Status": "Failed"}}),
            "value",
            "Value['1']['Status']",
            ("'Done'", "'Failed'"),
        ),
        (
            ok({"1": {"UserPriority": 1}}),
            ok({"1": {"UserPriority": 1.0}}),
            "type",
            "Value['1']['UserPriority']",
            ("<int>", "<float>"),
        ),
        (
            ok({"1": {"JobName": "mine"}}),
            ok({"1": {"JobName": "yours"}}),
            "value",
            "Value['1']['JobName']",
            ("<str>", "<str>"),
        ),
        (ok({"1": {}, "2": {}}), ok({"1": {}}), "missing", "Value['2']", ("<dict of 0>", "<absent>")),
        (ok({"1": {}}), ok({"1": {}, "2": {}}), "extra", "Value['2']", ("<absent>", "<dict of 0>")),
        (ok([1, 2]), ok([1]), "length", "Value", ("<2 items>", "<1 items>")),
        ({"OK": False, "Message": "boom", "Errno": 0}, ok({}), "legacy-error", "OK", ("'boom'", "'OK'")),
        (ok({}), {"OK": False, "Message": "no token", "Errno": 1150}, "diracx-error", "OK", ("'OK'", "'no token'")),
        (
            {"OK": False, "Message": "a", "Errno": 0},
            {"OK": False, "Message": "b", "Errno": 0},
            "error-text",
            "Message",
            ("<str>", "<str>"),
        ),
    ],
)
def test_the_first_difference_is_named(
    legacy: Any, adapted: Any, cause: str, path: str, shown: tuple[str, str]
) -> None:
    """Job states are shown (they name the case); payload such as a job's name is not."""
    verdict = compare(legacy, adapted)
    assert (verdict.equal, verdict.cause, verdict.path, verdict.legacy, verdict.adapted) == (False, cause, path, *shown)


def test_get_jobs_order_is_free_but_nothing_else() -> None:
    assert compare(ok(["3", "1"], "getJobs"), ok(["1", "3"], "getJobs"), "getJobs").equal
    assert not compare(ok(["3", "1"], "getJobs"), ok(["1", "4"], "getJobs"), "getJobs").equal
    assert not compare(ok(["3", "1"]), ok(["1", "3"]), "getJobsStates").equal


def test_arguments_are_summarised_without_payload() -> None:
    summary = summarise_arguments([[1, 2, 3, 4, 5, 6, 7], "Status,Site", {"Owner": "ann", "JobGroup": "g"}, 5, None])
    assert summary == [{"items": 7, "first": [1, 2, 3, 4, 5]}, "Status,Site", {"keys": ["JobGroup", "Owner"]}, 5, None]


# --- the shadowed client ---------------------------------------------------------------------------


class Legacy:
    """Stands for the legacy DISET client: answers, and counts its calls."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.serviceURL = "dips://legacy:9130/WorkloadManagement/JobMonitoring"

    def __getattr__(self, method: str) -> Any:
        def call(*_args: Any) -> Any:
            self.calls.append(method)
            return self.answers[method]

        return call


@pytest.fixture
def settings(tmp_path: Path) -> ShadowSettings:
    return ShadowSettings(queue_size=10, max_per_second=1000, journal=str(tmp_path / "journal"), drain_seconds=5)


@pytest.fixture(autouse=True)
def _fresh_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_shadow", None)


def shadowed(proxy: Path, legacy: Legacy, settings: ShadowSettings, rate: float = 1.0) -> ShadowedClient:
    return ShadowedClient(
        legacy,
        adapter=JobMonitoringAdapter,
        route=diracx_route(proxy),
        url=JM,
        client_kwargs={},
        rate=rate,
        settings=settings,
    )


def records(settings: ShadowSettings) -> list[dict[str, Any]]:
    assert shadow(settings).drain(10), "the shadow worker did not finish"
    return list(read_records([Path(settings.journal or "")]))


def test_the_caller_gets_the_legacy_answer_itself_and_the_comparison_is_recorded(
    proxy: Path, token: DiracxToken, diracx: FakeDiracX, settings: ShadowSettings
) -> None:
    diracx.jobs = {1: job_row(1)}
    answer = ok({"1": {"Status": "Waiting"}})
    legacy = Legacy({"getJobsStatus": answer})
    assert shadowed(proxy, legacy, settings).getJobsStatus([1]) is answer
    (record,) = records(settings)
    assert record["kind"] == "compared" and record["equal"] is True and record["cause"] == "equal"
    assert (record["service"], record["method"], record["group"], record["vo"]) == (
        JM,
        "getJobsStatus",
        "dirac_user",
        "testvo",
    )
    assert record["legacy"]["ok"] and record["diracx"]["ok"] and record["diracx"]["ms"] > 0
    assert record["args"] == [{"items": 1, "first": [1]}]
    assert len(diracx.requests_to("/api/jobs/search")) == 1
    assert_no_secret(json.dumps(record), token)


def test_a_difference_is_recorded_with_its_cause(proxy: Path, diracx: FakeDiracX, settings: ShadowSettings) -> None:
    diracx.jobs = {1: job_row(1)}  # DiracX sees Waiting
    legacy = Legacy({"getJobsStatus": ok({"1": {"Status": "Running"}})})
    shadowed(proxy, legacy, settings).getJobsStatus([1])
    (record,) = records(settings)
    assert record["equal"] is False and record["cause"] == "value"
    assert record["difference"] == {"path": "Value['1']['Status']", "legacy": "'Running'", "diracx": "'Waiting'"}


def test_writes_and_unsampled_calls_never_reach_diracx(
    proxy: Path, diracx: FakeDiracX, settings: ShadowSettings
) -> None:
    legacy = Legacy({"getJobsStatus": ok({}), "setJobStatus": ok(None)})
    client = shadowed(proxy, legacy, settings, rate=0.0)
    client.getJobsStatus([1])
    writer = ShadowedClient(
        legacy, adapter=WriteAdapter, route=diracx_route(proxy), url=JM, client_kwargs={}, rate=1.0, settings=settings
    )
    writer.setJobStatus(1, "Done")
    assert legacy.calls == ["getJobsStatus", "setJobStatus"]
    assert worker_module._shadow is None  # nothing was ever queued
    assert diracx.sent == []


class WriteAdapter(JobMonitoringAdapter):
    """An adapter whose service has a write (setJobStatus is not among its READS)."""

    SERVICE = "Test/Writes"


def test_a_method_diracx_cannot_serve_is_recorded_without_asking_it(
    proxy: Path, diracx: FakeDiracX, settings: ShadowSettings
) -> None:
    legacy = Legacy({"getJobJDL": ok("[ Executable = x; ]", "getJobJDL", (1, False))})
    shadowed(proxy, legacy, settings).getJobJDL(1, False)
    (record,) = records(settings)
    assert record["kind"] == "unserved" and record["method"] == "getJobJDL"
    assert diracx.sent == []


def test_a_dead_diracx_costs_the_caller_nothing_and_is_recorded(
    proxy: Path, diracx: FakeDiracX, settings: ShadowSettings
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    diracx.overrides[("POST", "/api/jobs/search")] = down
    diracx.overrides[("GET", "/api/openapi.json")] = down
    answer = ok({"1": {"Status": "Waiting"}})
    assert shadowed(proxy, Legacy({"getJobsStatus": answer}), settings).getJobsStatus([1]) is answer
    (record,) = records(settings)
    assert record["equal"] is False and record["cause"] == "diracx-error"
    assert record["diracx"]["ok"] is False and "unreachable" in record["diracx"]["error"]


def test_a_full_queue_drops_samples_and_says_how_many(
    proxy: Path, diracx: FakeDiracX, settings: ShadowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    diracx.jobs = {1: job_row(1)}
    tight = ShadowSettings(queue_size=1, max_per_second=1000, journal=settings.journal, drain_seconds=5)
    worker = shadow(tight)
    taken, gate = threading.Event(), threading.Event()
    original = worker._throttle
    monkeypatch.setattr(worker, "_throttle", lambda: (taken.set(), gate.wait(10), original()))
    client = shadowed(proxy, Legacy({"getJobsStatus": ok({"1": {"Status": "Waiting"}})}), tight)
    client.getJobsStatus([1])
    assert taken.wait(10)  # the worker holds the first sample
    for _ in range(4):
        client.getJobsStatus([1])  # one waits in the queue, three are dropped
    gate.set()
    kinds = [r["kind"] for r in records(tight)]
    dropped = [r["count"] for r in read_records([Path(tight.journal or "")]) if r["kind"] == "dropped"]
    assert kinds.count("compared") == 2 and sum(dropped) == 3, kinds


def test_an_unwritable_journal_never_reaches_the_caller(proxy: Path, diracx: FakeDiracX, tmp_path: Path) -> None:
    diracx.jobs = {1: job_row(1)}
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    settings = ShadowSettings(queue_size=10, max_per_second=1000, journal=str(blocked / "journal"), drain_seconds=5)
    answer = ok({"1": {"Status": "Waiting"}})
    assert shadowed(proxy, Legacy({"getJobsStatus": answer}), settings).getJobsStatus([1]) is answer
    assert shadow(settings).drain(10)
    assert "cannot open the shadow journal" in (shadow(settings).journal.problem or "")


def test_the_journal_is_never_written_through_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    folder.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("")
    journal = journal_module.Journal(folder)
    journal.path.symlink_to(target)
    assert journal.write({"kind": "x"}) is False
    assert target.read_text() == ""


def test_a_large_journal_is_rotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "MAX_BYTES", 100)
    journal = journal_module.Journal(tmp_path)
    for i in range(10):
        assert journal.write({"kind": "x", "i": i, "pad": "y" * 30})
    rotated = journal.path.with_name(journal.path.name + ".1")
    assert rotated.exists() and journal.path.stat().st_size <= 200
    assert {r["i"] for r in read_records([tmp_path])} <= set(range(10))
    assert stat_mode(journal.path) == 0o640 & ~current_umask()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- routing: who is shadowed -------------------------------------------------------------------------


def legacy_route(proxy: Path, *, rate: float = 1.0, shadow_vos: frozenset[str] | None = None, **caller: Any) -> Route:
    route = diracx_route(proxy)
    service = route.service.__class__(**{**route.service.__dict__, "shadow_rate": rate, "shadow_vos": shadow_vos})  # type: ignore[union-attr]
    who = Caller(
        CallerKind(caller.get("kind", "proxy")), proxy_path=proxy, group="dirac_user", vo=caller.get("vo", "testvo")
    )
    return Route(False, f"{JM} is off", service, route.bridge, who)


@pytest.mark.parametrize(
    ("options", "wrapped"),
    [
        ({}, True),
        ({"rate": 0.0}, False),
        ({"kind": "host"}, False),
        ({"vo": "othervo", "shadow_vos": frozenset({"testvo"})}, False),
        ({"vo": "testvo", "shadow_vos": frozenset({"testvo"})}, True),
    ],
)
def test_who_is_shadowed(proxy: Path, options: dict[str, Any], wrapped: bool) -> None:
    legacy = object()
    rate = options.pop("rate", 1.0)
    vos = options.pop("shadow_vos", None)
    client = routing.shadowed(legacy, JM, legacy_route(proxy, rate=rate, shadow_vos=vos, **options), {})
    assert isinstance(client, ShadowedClient) is wrapped
    assert (client is legacy) is not wrapped


def test_a_service_without_an_adapter_is_not_shadowed(proxy: Path) -> None:
    route = legacy_route(proxy)
    assert routing.shadowed("legacy", "WorkloadManagement/NoAdapter", route, {}) == "legacy"
