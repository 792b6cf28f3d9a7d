"""JobStateUpdate parity: every write leaves the databases as the legacy service does, with its answer.

Each case writes through the legacy DISET service on one job and through the adapter on its twin
(:mod:`twins`: identical jobs in the same state), from the same DIRAC client worker: the switch
``/DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate`` is the only difference. Then

* the answers are compared to the type (the twin's job ID standing for the other's);
* every row both sides keep about the twins is compared (``Databases.state``): Jobs, LoggingInfo,
  HeartBeatLoggingInfo, JobCommands, task-queue membership, job parameters;
* the traffic proves which side answered (:mod:`traffic`): the legacy call reached the legacy
  service only, the adapted call reached DiracX only, through the bridge's session (its
  ``User-Agent``; never DIRAC 9.1's own FutureClient), on the route the method composes.

Where the two sides differ by design, the case says so and ignores exactly that column or section,
with the README's "Known differences" row it stands for.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from traffic import Traffic, observe
from twins import JOBMAN, JSU, Databases, JobState, assert_same_state, make_twins

from diracx_bridge.testing.access_log import BRIDGE_UA
from diracx_bridge.testing.dirac_worker import DiracWorker

pytestmark = pytest.mark.integration

SERVICE = "WorkloadManagement/JobStateUpdate"
SWITCH = f"/DiracX/FutureClientEnabled/{SERVICE}"
LEGACY = {SWITCH: None}
ADAPTED = {SWITCH: "yes"}
FALLBACK = ADAPTED | {f"/DiracX/Bridge/{SERVICE}/LegacyFallback": "yes"}

STATUS = ("PATCH", "/api/jobs/status")
HEARTBEAT = ("PATCH", "/api/jobs/heartbeat")
METADATA = ("PATCH", "/api/jobs/metadata")
SEARCH = ("POST", "/api/jobs/search")

RUNNING = ("Running", "Application", "Step 1")
MATCHED = ("Matched", "Assigned", "Unknown")
STALLED = ("Stalled", "Job stalled: pilot not running", "Unknown")
STAGING = ("Staging", "Request to be sent", "Unknown")
#: Twins made per batch (one optimiser wait per batch).
BATCH = 8

#: Job-ID forms a caller may give: as DIRAC's own clients do (int), and as scripts do (str).
ID_FORMS = [pytest.param(int, id="int-id"), pytest.param(str, id="str-id")]


# --- the twins -------------------------------------------------------------------------------------------


class TwinPool:
    """Pairs of twin jobs in a given state, made by batches through the legacy services."""

    def __init__(self, owner: DiracWorker, admin: DiracWorker) -> None:
        self.owner, self.admin = owner, admin
        self.free: dict[tuple[str, str, str], list[int]] = defaultdict(list)

    def pair(self, state: tuple[str, str, str] = RUNNING) -> tuple[int, int]:
        if state[0] == "Stalled":
            # make_twins' application status would move a Stalled job back to Running: stall them last.
            jobs = self.pair(RUNNING)
            for job in jobs:
                assert self.admin.call(JSU, "setJobStatus", job, *state[:2], "twins", None, True, cs=LEGACY)["OK"]
            return jobs
        if len(self.free[state]) < 2:
            self.free[state] += make_twins(self.owner, self.admin, count=BATCH, to=state)
        return self.free[state].pop(0), self.free[state].pop(0)


@dataclass
class Sides:
    """The legacy and the adapted side of one case."""

    legacy_job: int
    adapted_job: int
    legacy: Any
    adapted: Any
    legacy_traffic: Traffic
    adapted_traffic: Traffic
    dbs: Databases

    def states(self) -> tuple[JobState, JobState]:
        return self.dbs.state(self.legacy_job), self.dbs.state(self.adapted_job)

    def assert_same_state(self, *, ignore: tuple[str, ...] = ()) -> tuple[JobState, JobState]:
        legacy, adapted = self.states()
        assert_same_state(legacy, adapted, ignore=ignore)
        return legacy, adapted

    def assert_same_answer(self, others: dict[int, int] | None = None) -> None:
        assert_same(self.legacy, swap_ids(self.adapted, {self.adapted_job: self.legacy_job, **(others or {})}))


class Parity:
    """The workers, the twin pools and the databases of the module."""

    def __init__(self, gs: Any, dbs: Databases) -> None:
        self.gs, self.grid, self.dbs = gs, gs.grid, dbs
        self.owner = gs.worker("ciuser", "civo_user")
        self.admin = gs.worker("ciuser", "civo_admin")
        self.other = gs.worker("otheruser", "civo_user")
        self.mine = TwinPool(self.owner, self.admin)
        self.theirs = TwinPool(self.other, self.admin)

    def both(
        self,
        method: str,
        args_of: Callable[[int], tuple[Any, ...]],
        *,
        state: tuple[str, str, str] = RUNNING,
        worker: DiracWorker | None = None,
        jobs: tuple[int, int] | None = None,
        adapted_cs: dict[str, str | None] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        served: str = "diracx",
    ) -> Sides:
        """``method(*args_of(job))`` through legacy on one twin and through the adapter on the other.

        ``served``: who answers the adapted call, proven by the traffic: ``"diracx"`` (through the
        bridge's session only), ``"local"`` (the bridge itself, contacting no one: a legacy
        refusal), ``"refused"`` (not served: nothing written, no legacy call), ``"legacy"`` (the
        legacy service: LegacyFallback, or an identity DiracX cannot act as).
        """
        worker = worker or self.owner
        legacy_job, adapted_job = jobs or self.mine.pair(state)
        options: dict[str, Any] = {"client_kwargs": client_kwargs} if client_kwargs else {}
        with observe(self.grid) as legacy_traffic:
            legacy = worker.call(JSU, method, *args_of(legacy_job), cs=LEGACY, **options)
        legacy_traffic.assert_legacy(method)
        with observe(self.grid) as adapted_traffic:
            adapted = worker.call(JSU, method, *args_of(adapted_job), cs=adapted_cs or ADAPTED, **options)
        {
            "diracx": lambda: assert_adapted(adapted_traffic, method),
            "local": lambda: adapted_traffic.assert_answered_locally(method),
            "refused": lambda: assert_not_written(adapted_traffic, method),
            "legacy": lambda: adapted_traffic.assert_legacy(method),
        }[served]()
        return Sides(legacy_job, adapted_job, legacy, adapted, legacy_traffic, adapted_traffic, self.dbs)


@pytest.fixture(scope="module")
def dbs(grid_session: Any) -> Iterator[Databases]:
    databases = Databases(grid_session.grid)
    yield databases
    databases.close()


@pytest.fixture(scope="module")
def parity(grid_session: Any, dbs: Databases) -> Parity:
    return Parity(grid_session, dbs)


@pytest.fixture
def p(parity: Parity, gs: Any) -> Parity:
    """The module's parity helper, with the grid checked alive for this test."""
    return parity


# --- comparisons and proofs ---------------------------------------------------------------------------


def assert_same(legacy: Any, adapted: Any) -> None:
    assert adapted == legacy
    assert _types(adapted) == _types(legacy)  # equal values can still differ in type (1 == 1.0, True == 1)


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {(type(k).__name__, k): _types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, *(_types(v) for v in value)]
    return type(value).__name__


def swap_ids(answer: dict[str, Any], ids: dict[int, int]) -> dict[str, Any]:
    """An adapted answer with its twins' job IDs replaced by their legacy twins', where a call names them:
    in the stub's arguments (ints, strs, dict keys) and in the message ("job N")."""
    swapped = dict(answer)
    if "rpcStub" in answer:
        base, method, args = answer["rpcStub"]
        swapped["rpcStub"] = [base, method, _swap(args, ids)]
    if isinstance(answer.get("Message"), str):
        message = answer["Message"]
        for new, old in ids.items():
            message = re.sub(rf"\bjob {new}\b", f"job {old}", message, flags=re.IGNORECASE)
        swapped["Message"] = message
    return swapped


def _swap(value: Any, ids: dict[int, int]) -> Any:
    if isinstance(value, dict):
        return {_swap(k, ids): _swap(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, ids) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in ids:
        return ids[value]
    if isinstance(value, str) and value.isdigit() and int(value) in ids:
        return str(ids[int(value)])
    return value


def assert_adapted(traffic: Traffic, method: str, *routes: tuple[str, str]) -> None:
    """DiracX served ``method``: the bridge's session sent each route, DIRAC's FutureClient nothing, legacy nothing."""
    assert traffic.from_bridge(), f"{method}: the bridge sent nothing to DiracX; it saw {traffic.diracx}"
    for route in routes:
        assert traffic.from_bridge(*route), (
            f"{method}: the bridge sent no {' '.join(route)}; DiracX saw {traffic.diracx}"
        )
    assert all(e.user_agent == BRIDGE_UA for e in traffic.diracx), (
        f"not only the bridge reached DiracX: {traffic.diracx}"
    )
    assert not traffic.legacy_calls(method), f"{method} reached the legacy service: {traffic.legacy}"


def assert_not_written(traffic: Traffic, method: str) -> None:
    """Refused by the bridge before any write: no DiracX write, no legacy call (reads allowed)."""
    writes = [e for e in traffic.diracx if e.method != "GET" and e.path != SEARCH[1]]
    assert not writes, f"{method} wrote to DiracX although refused: {writes}"
    assert not traffic.legacy_calls(method), f"{method} reached the legacy service: {traffic.legacy}"


def assert_not_served(answer: dict[str, Any], method: str, *words: str) -> None:
    assert answer["OK"] is False and answer["Errno"] == 95, answer
    assert f"{SERVICE}.{method} is not served by DiracX 0.7.0 for this call" in answer["Message"]
    assert f"/DiracX/Bridge/{SERVICE}/LegacyFallback" in answer["Message"]
    for word in words:
        assert word in answer["Message"], answer["Message"]


def now_utc(offset: float = 0.0) -> str:
    """A legacy time stamp: naive UTC, as DIRAC's JobReport writes them."""
    return str(dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=offset))


# --- setJobStatus ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_status_from_the_job_wrapper(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("setJobStatus", lambda j: (form(j), "Completing", "Uploading Output Sandbox", "JobWrapper", None, False))
    assert s.legacy == {**s.legacy, "OK": True, "Value": [["MinorStatus"], ["Uploading Output Sandbox"]]}
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Completing" and legacy.logging[-1][3] == "JobWrapper"


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_status_minor_only_with_a_given_time(p: Parity, form: Callable[[int], Any]) -> None:
    jobs = p.mine.pair()
    when = now_utc(1)  # after the twins' own history
    s = p.both("setJobStatus", lambda j: (form(j), "", "Input data resolution", "lab", when, False), jobs=jobs)
    s.assert_same_answer()
    assert s.legacy["Value"] == [["MinorStatus"], ["Input data resolution"]]
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    s.assert_same_state()


def test_set_job_status_with_nothing_to_set_only_checks_the_caller(p: Parity) -> None:
    s = p.both("setJobStatus", lambda j: (j, "", "", "lab", None, False))
    assert s.legacy["OK"] and s.legacy["Value"] is None
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", METADATA)
    assert not s.adapted_traffic.from_bridge(*STATUS)
    s.assert_same_state()


def test_a_job_agent_starts_a_matched_job(p: Parity) -> None:
    s = p.both(
        "setJobStatus", lambda j: (j, "Running", "Job Initialization", "JobAgent@CI", None, False), state=MATCHED
    )
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    legacy, _ = s.assert_same_state()
    assert legacy.job["StartExecTime"] == legacy.job["HeartBeatTime"] == "<set>"


def test_another_source_starts_a_matched_job_heartbeat_time_differs(p: Parity) -> None:
    """README difference: legacy sets HeartBeatTime with StartExecTime; DiracX only for Job* sources."""
    s = p.both("setJobStatus", lambda j: (j, "Running", "Started by hand", "admin-script", None, False), state=MATCHED)
    s.assert_same_answer()
    legacy, adapted = s.assert_same_state(ignore=("job.HeartBeatTime",))
    assert legacy.job["HeartBeatTime"] == "<set>" and adapted.job["HeartBeatTime"] is None


def test_a_transition_the_state_machine_refuses(p: Parity) -> None:
    s = p.both("setJobStatus", lambda j: (j, "Waiting", "back to waiting", "lab", None, False))
    s.assert_same_answer()
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Running"
    assert legacy.logging[-1] == ("Running", "back to waiting", "idem", "lab(SM)")


def test_force_from_a_user_is_ignored_as_legacy_does(p: Parity) -> None:
    s = p.both("setJobStatus", lambda j: (j, "Waiting", "forced?", "lab", None, True))
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    assert all("force=false" in e.query for e in s.adapted_traffic.from_bridge(*STATUS))
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Running"


def test_force_from_a_job_administrator(p: Parity) -> None:
    s = p.both("setJobStatus", lambda j: (j, "Waiting", "forced", "admin", None, True), worker=p.admin)
    s.assert_same_answer()
    assert all("force=true" in e.query for e in s.adapted_traffic.from_bridge(*STATUS))
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Waiting"


@pytest.mark.parametrize("form", ID_FORMS)
def test_a_job_of_another_user_is_refused(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("setJobStatus", lambda j: (form(j), "Done", "not mine", "lab", None, False), worker=p.other)
    assert s.legacy["Message"] == f"Not authorized to modify job {s.legacy_job}"
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Running"


@pytest.mark.parametrize(
    ("who", "expected"), [("owner", "Not authorized to modify job 99999991"), ("admin", "No Matching Job")]
)
def test_a_job_that_does_not_exist(p: Parity, who: str, expected: str) -> None:
    worker = p.owner if who == "owner" else p.admin
    s = p.both("setJobStatus", lambda j: (99_999_991, "Done", "x", "lab", None, False), worker=worker, jobs=(0, 0))
    assert s.legacy["Message"] == expected
    assert_same(s.legacy, s.adapted)
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)


def test_scouting_is_not_served_then_goes_to_legacy_with_the_fallback(p: Parity) -> None:
    """README: DiracX 0.7.0's JobStatus has no Scouting; LegacyFallback sends the call to legacy."""
    s = p.both(
        "setJobStatus", lambda j: (j, "Scouting", "scouting", "lab", None, False), state=MATCHED, served="refused"
    )
    assert s.legacy["OK"], s.legacy
    assert_not_served(s.adapted, "setJobStatus", "no 'Scouting'")
    legacy_state, adapted_state = s.states()
    assert adapted_state.logging == legacy_state.logging[:-1]  # nothing written on the adapted twin
    with observe(p.grid) as fallback_traffic:
        fallback = p.owner.call(
            JSU, "setJobStatus", s.adapted_job, "Scouting", "scouting", "lab", None, False, cs=FALLBACK
        )
    fallback_traffic.assert_legacy("setJobStatus")
    assert_same(s.legacy, swap_ids(fallback, {s.adapted_job: s.legacy_job}))
    s.assert_same_state()


def test_an_unknown_status_is_the_state_machines_refusal(p: Parity) -> None:
    s = p.both("setJobStatus", lambda j: (j, "Bogus", "x", "lab", None, False), served="local")
    assert s.legacy["Message"] == "getNextState: 'Bogus' is not a valid state"
    s.assert_same_answer()
    s.assert_same_state()


def test_killed_also_queues_a_kill_command_and_leaves_the_task_queue(p: Parity) -> None:
    """README difference: DiracX's status route kills (Kill command, task queue); legacy's only records it."""
    s = p.both("setJobStatus", lambda j: (j, "Killed", "Marked for termination", "lab", None, False))
    s.assert_same_answer()
    legacy, adapted = s.assert_same_state(ignore=("commands", "in_task_queue"))
    assert legacy.commands == [] and adapted.commands == [("Kill", "", "Received")]
    assert legacy.in_task_queue and not adapted.in_task_queue


def test_an_iso_time_stamp_is_read_where_legacy_fails_half_way(p: Parity) -> None:
    """README difference: legacy's fromString cannot read ``T``: it writes the Jobs row, then fails."""
    jobs = p.mine.pair()
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    s = p.both("setJobStatus", lambda j: (j, "", "iso minor", "lab", when, False), jobs=jobs)
    assert s.legacy["Message"] == "Server error while serving setJobStatus: 'NoneType' object is not iterable"
    assert s.adapted["OK"] and s.adapted["Value"] == [["MinorStatus"], ["iso minor"]]
    legacy, adapted = s.assert_same_state(ignore=("logging",))
    assert adapted.logging == [*legacy.logging, ("idem", "iso minor", "idem", "lab")]
    assert legacy.job["MinorStatus"] == "iso minor"  # legacy's half-done write


# --- setJobStatusBulk (JobReport, and the failover) -------------------------------------------------------


def _wrapper_records() -> dict[str, dict[str, str]]:
    return {
        now_utc(0.1): {
            "Status": "Completing",
            "MinorStatus": "Application Finished Successfully",
            "Source": "JobWrapper",
        },
        now_utc(0.2): {"MinorStatus": "Uploading Output Sandbox", "Source": "JobWrapper"},
        now_utc(0.3): {"ApplicationStatus": "Done", "Source": "JobWrapper"},
    }


@pytest.mark.parametrize("form", ID_FORMS)
def test_bulk_from_the_job_report(p: Parity, form: Callable[[int], Any]) -> None:
    jobs = p.mine.pair()
    records = _wrapper_records()  # after the twins' own history
    s = p.both("setJobStatusBulk", lambda j: (form(j), records, False), jobs=jobs)
    assert s.legacy["Value"] == [["MinorStatus", "ApplicationStatus"], ["Uploading Output Sandbox", "Done"]]
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatusBulk", STATUS)
    assert len(s.adapted_traffic.from_bridge(*STATUS)) == 1
    legacy, _ = s.assert_same_state()
    assert [r[3] for r in legacy.logging[-3:]] == ["JobWrapper"] * 3


def test_bulk_with_nothing(p: Parity) -> None:
    s = p.both("setJobStatusBulk", lambda j: (j, {}, False))
    assert s.legacy["Message"] == "Server error while serving setJobStatusBulk: list index out of range"
    s.assert_same_answer()
    s.assert_same_state()


def test_bulk_forced_by_an_administrator(p: Parity) -> None:
    jobs = p.mine.pair()
    records = {now_utc(0.1): {"Status": "Waiting", "MinorStatus": "back to waiting", "Source": "admin"}}
    s = p.both("setJobStatusBulk", lambda j: (j, records, True), worker=p.admin, jobs=jobs)
    s.assert_same_answer()
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Waiting"


def test_the_failover_replays_a_failed_bulk_call_through_the_adapter(p: Parity) -> None:
    """JobReport's failover: the rpcStub of a failed call, replayed by RMS's ForwardDISET (executeRPCStub)."""
    legacy_job, adapted_job = p.mine.pair()
    records = _wrapper_records()
    legacy = p.owner.call(JSU, "setJobStatusBulk", legacy_job, records, False, cs=LEGACY)
    # DiracX unreachable (a dead port): the call fails, carrying its stub, as JobReport keeps it.
    dead = ADAPTED | {"/DiracX/URL": "http://127.0.0.1:9"}
    failed = p.owner.call(JSU, "setJobStatusBulk", adapted_job, records, False, cs=dead)
    assert failed["OK"] is False and failed["Errno"] == 2001 and "unreachable" in failed["Message"], failed
    stub = failed["rpcStub"]
    assert stub[1:] == ["setJobStatusBulk", [adapted_job, records, False]]
    with observe(p.grid) as replay_traffic:
        replayed = p.owner.call("eval", "DIRAC.Core.Base.Client:executeRPCStub", stub, cs=ADAPTED)
    assert_adapted(replay_traffic, "setJobStatusBulk", STATUS)
    assert_same(legacy["Value"], replayed["Value"])
    assert_same_state(p.dbs.state(legacy_job), p.dbs.state(adapted_job))


# --- setJobApplicationStatus -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ID_FORMS)
def test_application_status(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("setJobApplicationStatus", lambda j: (form(j), "Step 2 of 3", "JobWrapper"))
    assert s.legacy["Value"] == [["ApplicationStatus"], ["Step 2 of 3"]]
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobApplicationStatus", STATUS)
    s.assert_same_state()


def test_application_status_without_source_of_a_stalled_job(p: Parity) -> None:
    """Legacy and DiracX alike move a Stalled job back to Running on any status update."""
    s = p.both("setJobApplicationStatus", lambda j: (j, "Step 3", ""), state=STALLED)
    s.assert_same_answer()
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Running" and legacy.logging[-1][3] == "Unknown"


def test_empty_application_status(p: Parity) -> None:
    s = p.both("setJobApplicationStatus", lambda j: (j, "", "lab"))
    assert s.legacy["OK"] and s.legacy["Value"] is None
    s.assert_same_answer()
    s.assert_same_state()


def test_application_status_of_another_user(p: Parity) -> None:
    s = p.both("setJobApplicationStatus", lambda j: (j, "hijack", "lab"), worker=p.other)
    s.assert_same_answer()
    s.assert_same_state()


# --- setJobSite and setJobAttribute ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_site_answers_the_rows_changed(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("setJobSite", lambda j: (form(j), "DIRAC.Twin.ch"))
    assert s.legacy["Value"] == 1
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobSite", SEARCH, METADATA)
    s.assert_same_state()
    again = p.both("setJobSite", lambda j: (form(j), "DIRAC.Twin.ch"), jobs=(s.legacy_job, s.adapted_job))
    assert again.legacy["Value"] == 0
    again.assert_same_answer()
    again.assert_same_state()


def test_set_job_site_of_another_user(p: Parity) -> None:
    s = p.both("setJobSite", lambda j: (j, "DIRAC.Other.ch"), worker=p.other)
    s.assert_same_answer()
    s.assert_same_state()


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_attribute_site(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("setJobAttribute", lambda j: (form(j), "Site", "DIRAC.Attr.ch"))
    assert s.legacy["Value"] == 1
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobAttribute", SEARCH, METADATA)
    s.assert_same_state()


def test_an_attribute_legacy_refuses(p: Parity) -> None:
    s = p.both("setJobAttribute", lambda j: (j, "Owner", "someone"), served="local")
    assert s.legacy["Message"] == "Job attribute 'Owner' cannot be modified through JobStateUpdate"
    s.assert_same_answer()
    s.assert_same_state()


@pytest.mark.parametrize("attribute", ["MinorStatus", "HeartBeatTime"])
def test_attributes_diracx_cannot_set_alone_go_to_legacy_with_the_fallback(p: Parity, attribute: str) -> None:
    """README: legacy writes the column alone, DiracX cannot: not served, or legacy's answer with the fallback."""
    value = "set alone" if attribute == "MinorStatus" else "2031-01-01 00:00:00"
    s = p.both("setJobAttribute", lambda j: (j, attribute, value), served="refused")
    assert s.legacy["Value"] == 1
    assert_not_served(s.adapted, "setJobAttribute", attribute)
    fallback = p.both("setJobAttribute", lambda j: (j, attribute, value), adapted_cs=FALLBACK, served="legacy")
    fallback.assert_same_answer()
    fallback.assert_same_state()


# --- job parameters ---------------------------------------------------------------------------------


def _unique(name: str) -> str:
    """Parameter names new to the index, so no earlier test fixed their mapping (OpenSearch maps on first sight)."""
    return f"{name}_{time.monotonic_ns()}"


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_parameter(p: Parity, form: Callable[[int], Any]) -> None:
    name = _unique("Param")
    s = p.both("setJobParameter", lambda j: (form(j), name, "value 1"))
    # README difference: legacy answers the index name when it creates the job's document; DiracX does not say.
    assert s.legacy["OK"] and s.legacy["Value"] == "job_parameters_civo_0m" and s.adapted["Value"] is None
    assert_adapted(s.adapted_traffic, "setJobParameter", METADATA)
    legacy, _ = s.assert_same_state()
    assert legacy.parameters == {name: "value 1"}
    again = p.both("setJobParameter", lambda j: (form(j), name, "value 2"), jobs=(s.legacy_job, s.adapted_job))
    again.assert_same_answer()  # the document exists: legacy answers None too
    again.assert_same_state()


def test_set_job_parameter_on_a_job_of_another_user(p: Parity) -> None:
    name = _unique("Param")
    s = p.both("setJobParameter", lambda j: (j, name, "x"), worker=p.other)
    assert s.legacy["Message"] == f"Not authorized to modify job {s.legacy_job}"
    s.assert_same_answer()
    s.assert_same_state()


def test_typed_parameters_are_stored_as_numbers(p: Parity) -> None:
    """README difference: DiracX types PayloadPID etc. as integers; legacy keeps the string (mapped long)."""
    s = p.both("setJobParameters", lambda j: (j, [["PayloadPID", "4242"], ["CPUNormalizationFactor", 12]]))
    assert s.legacy["OK"] and s.adapted["OK"], (s.legacy, s.adapted)
    legacy, adapted = s.assert_same_state(ignore=("parameters",))
    assert legacy.parameters == {"PayloadPID": "4242", "CPUNormalizationFactor": 12}
    assert adapted.parameters == {"PayloadPID": 4242, "CPUNormalizationFactor": 12}


@pytest.mark.parametrize(
    ("name", "value"), [("CPUNormalizationFactor", "N/A"), ("TotalCPUTime(s)", "12.34"), ("Site", "X")]
)
def test_parameters_diracx_would_store_differently_are_not_served(p: Parity, name: str, value: str) -> None:
    s = p.both("setJobParameter", lambda j: (j, name, value), served="refused")
    assert_not_served(s.adapted, "setJobParameter", name)
    assert p.dbs.parameters(s.adapted_job) == {}
    fallback = p.owner.call(JSU, "setJobParameter", s.adapted_job, name, value, cs=FALLBACK)
    assert_same(s.legacy, swap_ids(fallback, {s.adapted_job: s.legacy_job}))
    s.assert_same_state()


@pytest.mark.parametrize("form", ID_FORMS)
def test_set_job_parameters(p: Parity, form: Callable[[int], Any]) -> None:
    names = [_unique("P") for _ in range(3)]
    pairs = [[names[0], "text"], [names[1], 42], [names[2], ["one", "two"]]]
    first_name = _unique("First")
    first = p.both("setJobParameter", lambda j: (form(j), first_name, "x"))  # the document exists
    s = p.both("setJobParameters", lambda j: (form(j), pairs), jobs=(first.legacy_job, first.adapted_job))
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobParameters", METADATA)
    legacy, _ = s.assert_same_state()
    assert legacy.parameters[names[2]] == ["one", "two"]


def test_set_job_parameters_empty(p: Parity) -> None:
    s = p.both("setJobParameters", lambda j: (j, []))
    assert s.legacy["OK"] and s.adapted["OK"]
    s.assert_same_state()


def test_set_jobs_parameter(p: Parity) -> None:
    a1, b1 = p.mine.pair()
    a2, b2 = p.mine.pair()
    name = _unique("Bulk")
    legacy = p.owner.call(JSU, "setJobsParameter", {a1: [name, 1], a2: [name, "two"]}, cs=LEGACY)
    with observe(p.grid) as traffic:
        adapted = p.owner.call(JSU, "setJobsParameter", {b1: [name, 1], b2: [name, "two"]}, cs=ADAPTED)
    assert_adapted(traffic, "setJobsParameter", METADATA)
    assert_same(legacy, swap_ids(adapted, {b1: a1, b2: a2}))
    for x, y in ((a1, b1), (a2, b2)):
        assert_same_state(p.dbs.state(x), p.dbs.state(y))
    assert p.dbs.parameters(a1) == {name: "1"}  # legacy writes strings


def test_set_jobs_parameter_writes_what_it_may_and_reports_the_last_refusal(p: Parity) -> None:
    a1, b1 = p.mine.pair()
    a2, b2 = p.mine.pair()
    t1, t2 = p.theirs.pair()
    name = _unique("Partial")
    legacy = p.owner.call(JSU, "setJobsParameter", {a1: [name, "a"], t1: [name, "t"], a2: [name, "b"]}, cs=LEGACY)
    with observe(p.grid) as traffic:
        adapted = p.owner.call(JSU, "setJobsParameter", {b1: [name, "a"], t2: [name, "t"], b2: [name, "b"]}, cs=ADAPTED)
    assert legacy["Message"] == f"Not authorized to modify job {t1}"
    assert_adapted(traffic, "setJobsParameter", METADATA)
    assert_same(legacy, swap_ids(adapted, {b1: a1, b2: a2, t2: t1}))
    for x, y in ((a1, b1), (a2, b2), (t1, t2)):
        assert_same_state(p.dbs.state(x), p.dbs.state(y))
    assert p.dbs.parameters(a2) == {name: "b"} and p.dbs.parameters(t1) == {}


# --- sendHeartBeat ---------------------------------------------------------------------------------


#: What DIRAC's Watchdog sends (floats, and the disk space as an int).
WATCHDOG = {"LoadAverage": 1.25, "MemoryUsed": 2048.5, "Vsize": 4096.0, "AvailableDiskSpace": 51200,
            "CPUConsumed": 12.5, "WallClockTime": 30.0}  # fmt: skip


@pytest.mark.parametrize("form", ID_FORMS)
def test_the_watchdogs_heartbeat(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("sendHeartBeat", lambda j: (form(j), WATCHDOG, {"StandardOutput": "last lines\nof output"}))
    assert s.legacy["Value"] == {}
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "sendHeartBeat", HEARTBEAT)
    assert len([e for e in s.adapted_traffic.diracx if e.method == "PATCH"]) == 1  # one request
    legacy, _ = s.assert_same_state()
    assert len(legacy.heartbeats) == 6 and legacy.parameters == {"StandardOutput": "last lines\nof output"}


def test_a_heartbeat_with_other_static_data(p: Parity) -> None:
    static = {_unique("Static"): "x", "LocalAccount": "pilot001"}
    s = p.both("sendHeartBeat", lambda j: (j, {"LoadAverage": 0.5}, static))
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "sendHeartBeat", METADATA, HEARTBEAT)
    legacy, _ = s.assert_same_state()
    assert legacy.parameters == static


def test_a_heartbeat_collects_the_kill_command(p: Parity) -> None:
    """README difference: legacy sets a heartbeating job Running whatever its status (here Killed); DiracX does not."""
    legacy_job, adapted_job = p.mine.pair()
    for job in (legacy_job, adapted_job):
        assert p.owner.call(JOBMAN, "killJob", job)["OK"]
    s = p.both("sendHeartBeat", lambda j: (j, {"LoadAverage": 1.0}, {}), jobs=(legacy_job, adapted_job))
    assert s.legacy["Value"] == {"Kill": ""}
    s.assert_same_answer()
    legacy, adapted = s.assert_same_state(ignore=("job.Status",))
    assert legacy.commands == [("Kill", "", "Sent")]
    assert legacy.job["Status"] == "Running" and adapted.job["Status"] == "Killed"


@pytest.mark.parametrize("state", [MATCHED, STALLED], ids=["matched", "stalled"])
def test_a_heartbeat_of_a_matched_or_stalled_job(p: Parity, state: tuple[str, str, str]) -> None:
    """README difference: both end Running; DiracX logs the move (Source Heartbeat) and starts the clock."""
    s = p.both("sendHeartBeat", lambda j: (j, {"LoadAverage": 1.0}, {}), state=state)
    s.assert_same_answer()
    legacy, adapted = s.assert_same_state(ignore=("logging", "job.StartExecTime", "disorder"))
    assert legacy.job["Status"] == adapted.job["Status"] == "Running"
    assert adapted.logging == [*legacy.logging, ("Running", "idem", "idem", "Heartbeat")]
    assert adapted.job["StartExecTime"] == "<set>"


def test_two_heartbeats_in_one_second_keep_both(p: Parity) -> None:
    """README difference: legacy drops the second's data silently (primary key); the bridge stores it a second later."""
    for _attempt in range(5):
        legacy_job, adapted_job = p.mine.pair()
        results = {}
        for job, cs in ((legacy_job, LEGACY), (adapted_job, ADAPTED)):
            while time.time() % 1 > 0.5:  # both heartbeats of a job in one second
                time.sleep(0.05)
            with observe(p.grid) as traffic:
                first = p.owner.call(JSU, "sendHeartBeat", job, {"LoadAverage": 1.0}, {}, cs=cs)
                second = p.owner.call(JSU, "sendHeartBeat", job, {"LoadAverage": 2.0}, {}, cs=cs)
            results[job] = (first, second, traffic)
        legacy_rows, adapted_rows = p.dbs.state(legacy_job).heartbeats, p.dbs.state(adapted_job).heartbeats
        if len(legacy_rows) == 1:  # the two legacy heartbeats did fall in one second
            break
    assert legacy_rows == [("LoadAverage", "1")]
    assert adapted_rows == [("LoadAverage", "1"), ("LoadAverage", "2")]
    for first, second, _ in results.values():
        assert first["OK"] and second["OK"] and second["Value"] == {}
    statuses = [e.status for e in results[adapted_job][2].from_bridge(*HEARTBEAT)]
    assert statuses in ([200, 200], [200, 500, 200]), statuses


@pytest.mark.parametrize(
    ("dynamic", "word"),
    [({"Foo": 3.0}, "'Foo'"), ({"StandardOutput": "x"}, "'StandardOutput'"), ({"LoadAverage": "1.50"}, "1.50")],
)
def test_heartbeat_data_diracx_would_store_differently(p: Parity, dynamic: dict[str, Any], word: str) -> None:
    s = p.both("sendHeartBeat", lambda j: (j, dynamic, {}), served="refused")
    assert s.legacy["OK"], s.legacy
    assert_not_served(s.adapted, "sendHeartBeat", word)
    fallback = p.both("sendHeartBeat", lambda j: (j, dynamic, {}), adapted_cs=FALLBACK, served="legacy")
    fallback.assert_same_answer()
    fallback.assert_same_state()


def test_heartbeat_of_another_users_job(p: Parity) -> None:
    s = p.both("sendHeartBeat", lambda j: (j, {"LoadAverage": 1.0}, {"X": "y"}), worker=p.other)
    assert s.legacy["Message"] == f"Not authorized to modify job {s.legacy_job}"
    s.assert_same_answer()
    s.assert_same_state()


# --- updateJobFromStager -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Done", "Failed"])
def test_the_stager_callback(p: Parity, status: str) -> None:
    s = p.both("updateJobFromStager", lambda j: (j, status), state=STAGING)
    assert s.legacy["OK"], s.legacy
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "updateJobFromStager", SEARCH, STATUS)
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == ("Checking" if status == "Done" else "Staging")


def test_the_stager_callback_on_a_job_not_in_staging(p: Parity) -> None:
    s = p.both("updateJobFromStager", lambda j: (j, "Done"))
    assert s.legacy["Value"] == "Job is not in Staging after 10 seconds"
    s.assert_same_answer()
    assert len(s.adapted_traffic.from_bridge(*SEARCH)) == 10
    s.assert_same_state()


def test_the_stager_callback_on_a_missing_job(p: Parity) -> None:
    s = p.both("updateJobFromStager", lambda j: (99_999_992, "Done"), worker=p.admin, jobs=(0, 0))
    assert s.legacy["Value"] == "No Matching Job"
    assert_same(s.legacy, s.adapted)


# --- who calls: pilots, administrators, hosts ------------------------------------------------------------


def test_a_pilot_reports_for_its_payload(p: Parity) -> None:
    """A GenericPilot proxy (civo_pilot) acts on the user's job, through DiracX (its PILOT/MANAGE rights)."""
    pilot = p.gs.worker("ciuser", "civo_pilot")
    s = p.both("setJobStatus", lambda j: (j, "", "Downloading InputSandbox", "JobAgent@CI", None, False), worker=pilot)
    s.assert_same_answer()
    assert_adapted(s.adapted_traffic, "setJobStatus", STATUS)
    s.assert_same_state()
    hb = p.both("sendHeartBeat", lambda j: (j, WATCHDOG, {}), worker=pilot, jobs=(s.legacy_job, s.adapted_job))
    hb.assert_same_answer()
    assert_adapted(hb.adapted_traffic, "sendHeartBeat", HEARTBEAT)
    hb.assert_same_state()


def test_a_pilot_on_a_job_that_does_not_exist(p: Parity) -> None:
    pilot = p.gs.worker("ciuser", "civo_pilot")
    s = p.both("sendHeartBeat", lambda j: (99_999_993, {}, {}), worker=pilot, jobs=(0, 0))
    assert s.legacy["Message"] == "Not authorized to modify job 99999993"
    assert_same(s.legacy, s.adapted)
    assert_adapted(s.adapted_traffic, "sendHeartBeat", HEARTBEAT)


def test_an_administrator_heartbeat_of_a_job_that_does_not_exist(p: Parity) -> None:
    s = p.both("sendHeartBeat", lambda j: (99_999_994, {}, {}), worker=p.admin, jobs=(0, 0))
    assert s.legacy["Message"] == "Job 99999994 not found"
    assert_same(s.legacy, s.adapted)


def test_a_host_certificate_stays_on_legacy(p: Parity) -> None:
    """Agents act with the host certificate, which DiracX 0.7.0 cannot stand for: routing keeps them on legacy."""
    s = p.both(
        "setJobStatus",
        lambda j: (j, "", "set by an agent", "StalledJobAgent", None, False),
        client_kwargs={"useCertificates": True},
        served="legacy",
    )
    assert [c.group for c in s.adapted_traffic.legacy_calls("setJobStatus")] == ["hosts"]
    s.assert_same_answer()
    s.assert_same_state()


# --- every method: refusals, forms, and who answers ----------------------------------------------------

EVERY_METHOD: list[tuple[str, Callable[[Any], tuple[Any, ...]]]] = [
    ("setJobStatus", lambda j: (j, "Done", "not mine", "lab", None, False)),
    ("setJobStatusBulk", lambda j: (j, {"2030-01-01 00:00:00": {"MinorStatus": "not mine"}}, False)),
    ("setJobAttribute", lambda j: (j, "Site", "DIRAC.NotMine.ch")),
    ("setJobSite", lambda j: (j, "DIRAC.NotMine.ch")),
    ("setJobApplicationStatus", lambda j: (j, "not mine", "lab")),
    ("setJobParameter", lambda j: (j, "NotMine", "x")),
    ("setJobParameters", lambda j: (j, [["NotMine", "x"]])),
    ("setJobsParameter", lambda j: ({j: ["NotMine", "x"]},)),
    ("sendHeartBeat", lambda j: (j, {"LoadAverage": 1.0}, {"NotMine": "x"})),
    ("updateJobFromStager", lambda j: (j, "Done")),
]


@pytest.mark.parametrize(("method", "args_of"), EVERY_METHOD, ids=[m for m, _ in EVERY_METHOD])
@pytest.mark.parametrize("form", ID_FORMS)
def test_every_method_refuses_a_job_of_another_user(
    p: Parity, method: str, args_of: Callable[[Any], tuple[Any, ...]], form: Callable[[int], Any]
) -> None:
    s = p.both(method, lambda j: args_of(form(j)), worker=p.other)
    assert s.legacy["Message"] == f"Not authorized to modify job {s.legacy_job}", s.legacy
    s.assert_same_answer()
    legacy, _ = s.assert_same_state()
    assert legacy.job["Site"] == "ANY" and legacy.parameters == {}


def test_force_in_a_bulk_from_a_user_is_ignored(p: Parity) -> None:
    jobs = p.mine.pair()
    records = {now_utc(0.1): {"Status": "Waiting", "MinorStatus": "forced?", "Source": "lab"}}
    s = p.both("setJobStatusBulk", lambda j: (j, records, True), jobs=jobs)
    s.assert_same_answer()
    assert all("force=false" in e.query for e in s.adapted_traffic.from_bridge(*STATUS))
    legacy, _ = s.assert_same_state()
    assert legacy.job["Status"] == "Running"


@pytest.mark.parametrize("form", ID_FORMS)
def test_the_stager_callback_id_forms(p: Parity, form: Callable[[int], Any]) -> None:
    s = p.both("updateJobFromStager", lambda j: (form(j), "Done"), state=STAGING)
    s.assert_same_answer()
    s.assert_same_state()


def test_set_jobs_parameter_with_str_keys(p: Parity) -> None:
    a1, b1 = p.mine.pair()
    name = _unique("StrKey")
    legacy = p.owner.call(JSU, "setJobsParameter", {str(a1): [name, 7]}, cs=LEGACY)
    with observe(p.grid) as traffic:
        adapted = p.owner.call(JSU, "setJobsParameter", {str(b1): [name, 7]}, cs=ADAPTED)
    assert_adapted(traffic, "setJobsParameter", METADATA)
    assert_same(legacy, swap_ids(adapted, {b1: a1}))
    assert_same_state(p.dbs.state(a1), p.dbs.state(b1))


def test_the_bridge_not_dirac_9_1s_future_client_serves_the_switched_on_service(p: Parity) -> None:
    """DIRAC 9.1.22 wires its own FutureClient for JobStateUpdate; with the bridge, its adapter answers."""
    client = "__import__('DIRAC.WorkloadManagementSystem.Client.JobStateUpdateClient', fromlist=['_'])"
    future = p.owner.call("eval", "builtins:eval", f"{client}.JobStateUpdateClient.diracxClient.__module__")
    assert future == "DIRAC.WorkloadManagementSystem.FutureClient.JobStateUpdateClient"  # DIRAC's own is wired
    adapter = f"__import__('diracx_bridge.adapters', fromlist=['_']).adapter_for('{SERVICE}').__name__"
    assert p.owner.call("eval", "builtins:eval", adapter) == "JobStateUpdateAdapter"
    s = p.both("setJobApplicationStatus", lambda j: (j, "who answers?", "lab"))
    entries = s.adapted_traffic.diracx
    assert entries and {e.user_agent for e in entries} == {BRIDGE_UA}, entries
    s.assert_same_answer()
    s.assert_same_state()
