"""JobMonitoring parity: every adapted method answers what the legacy DIRAC service answers.

Both answers come from the same kind of process (a DIRAC client worker), on the same jobs in
the shared databases: the switch ``/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring``
is the only difference. The jobs (more than 250, several owners, submitted through both DIRAC and
DiracX, moved through many states by both sides) are made once per module. DiracX's pages are
set to 100 rows so every multi-job call crosses pages.

Every comparison also proves which side answered (:mod:`traffic`): the legacy call reached the
legacy service and not DiracX; the adapted call reached DiracX through the bridge (its
``User-Agent``, on ``POST /api/jobs/search``) and not the legacy service, or, for the refusals
the bridge reproduces itself, reached neither. Without that, a routing that quietly stayed on
legacy would compare legacy with legacy and pass.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from traffic import observe

from diracx_bridge.shadow.compare import compare
from diracx_bridge.testing.dirac_worker import DiracWorker
from diracx_bridge.testing.grid import Grid

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
JSU = "DIRAC.WorkloadManagementSystem.Client.JobStateUpdateClient.JobStateUpdateClient"
JOBMAN = "DIRAC.WorkloadManagementSystem.Client.JobManagerClient.JobManagerClient"
SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring"
LEGACY = {SWITCH: None}
ADAPTED = {SWITCH: "yes", "/DiracX/Bridge/SearchPageSize": "100"}

JDL = '[ Executable = "/bin/true"; JobName = "parity-{n}"; JobGroup = "{group}"; ]'

# (Status, MinorStatus, ApplicationStatus) the jobs are moved to, by slices of the job list.
TARGETS = [
    ("Running", "Application", "Processing step 1"),
    ("Done", "Execution Complete", "Finished"),
    ("Failed", "Application Finished With Errors", "Exit code 3"),
    ("Stalled", "Job stalled: pilot not running", "Unknown"),
    ("Completing", "Uploading Output Sandbox", "Finished"),
    ("Killed", "Marked for termination", "Unknown"),
    ("Matched", "Assigned", "Unknown"),
]


def _search(dx, job_ids: list[int], parameters: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        r = dx.post(
            "/api/jobs/search",
            params={"page": page, "per_page": 1000},
            json={"parameters": parameters, "search": [{"parameter": "JobID", "operator": "in", "values": job_ids}]},
        )
        assert r.status_code in (200, 206), r.text
        rows += r.json()
        if r.status_code == 200:
            return rows
        page += 1


@pytest.fixture(scope="module")
def jobs(grid_session) -> dict[str, list[int]]:
    """The jobs of the parity suite, in stable states (no optimizer will touch them again)."""
    gs = grid_session
    mine: list[int] = []
    theirs: list[int] = []
    with gs.diracx("ciuser", "civo_user") as dx:
        for batch in range(11):  # DiracX takes at most 20 jobs per submission
            jdls = [JDL.format(n=f"{batch}-{i}", group=f"grp{batch % 3}") for i in range(20)]
            r = dx.post("/api/jobs/jdl", json=jdls)
            assert r.status_code == 201, r.text
            mine += [j["JobID"] for j in r.json()]
    with gs.diracx("otheruser", "civo_user") as dx:
        for batch in range(2):
            r = dx.post("/api/jobs/jdl", json=[JDL.format(n=f"other-{batch}-{i}", group="others") for i in range(20)])
            assert r.status_code == 201, r.text
            theirs += [j["JobID"] for j in r.json()]
    # ... and some through the legacy JobManager, as dirac-wms-job-submit does.
    worker = gs.worker("ciuser", "civo_user")
    for i in range(10):
        res = worker.call(JOBMAN, "submitJob", JDL.format(n=f"legacy-{i}", group="legacy"))
        assert res["OK"], res
        mine.append(res["Value"])
    everyone = mine + theirs
    admin = gs.worker("ciuser", "civo_admin")

    # DiracX notifies no optimizer: wait for DIRAC's OptimizationMind to move every job on.
    with gs.diracx("ciuser", "civo_admin") as dx:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pending = [r for r in _search(dx, everyone, ["JobID", "Status"]) if r["Status"] in ("Received", "Checking")]
            if not pending:
                break
            time.sleep(2)
        assert not pending, f"{len(pending)} jobs still not optimised: {pending[:5]}"

        # Move slices of jobs through states: DiracX writes some, the legacy service others.
        now = dt.datetime.now(dt.UTC)
        for k, (status, minor, app) in enumerate(TARGETS):
            chunk = everyone[k * 30 : (k + 1) * 30]
            diracx_half, legacy_half = chunk[::2], chunk[1::2]
            body = {
                str(j): {
                    (now + dt.timedelta(seconds=1)).isoformat(): {
                        "Status": status,
                        "MinorStatus": minor,
                        "ApplicationStatus": app,
                        "Source": "parity-suite",
                    }
                }
                for j in diracx_half
            }
            r = dx.patch("/api/jobs/status", params={"force": "true"}, json=body)
            assert r.status_code == 200, r.text
            assert not r.json()["failed"], r.json()["failed"]
            for j in legacy_half:
                res = admin.call(JSU, "setJobStatus", j, status, minor, "parity-suite", None, True)
                assert res["OK"], res
                res = admin.call(JSU, "setJobApplicationStatus", j, app, "parity-suite")
                assert res["OK"], res
        r = dx.patch("/api/jobs/metadata", json={str(j): {"Site": "DIRAC.CI.ch"} for j in everyone[:40]})
        assert r.status_code == 204, r.text
    return {"mine": mine, "theirs": theirs, "all": everyone}


class ParityWorker:
    """A DIRAC client worker plus the grid whose logs tell which side answered its calls."""

    def __init__(self, worker: DiracWorker, grid: Grid) -> None:
        self.worker = worker
        self.grid = grid

    def call(self, target: str, method: str, *args: Any, **options: Any) -> Any:
        return self.worker.call(target, method, *args, **options)


@pytest.fixture(scope="module")
def worker(grid_session, jobs) -> ParityWorker:
    return ParityWorker(grid_session.worker("ciuser", "civo_user"), grid_session.grid)


def both(
    worker: ParityWorker,
    method: str,
    *args: Any,
    extra_cs: dict[str, str] | None = None,
    served: bool = True,
    fallback: bool = False,
) -> tuple[Any, Any]:
    """The legacy and the adapted answers, each proven to come from the side it claims.

    ``served``: DiracX serves this call (else the bridge refuses it itself, contacting no one);
    ``fallback``: the "adapted" call must go to the legacy service (LegacyFallback).
    """
    with observe(worker.grid) as legacy_traffic:
        legacy = worker.call(JM, method, *args, cs=LEGACY | (extra_cs or {}))
    legacy_traffic.assert_legacy(method)
    with observe(worker.grid) as adapted_traffic:
        adapted = worker.call(JM, method, *args, cs=ADAPTED | (extra_cs or {}))
    if fallback:
        adapted_traffic.assert_legacy(method)
    elif served:
        adapted_traffic.assert_adapted(method)
    else:
        adapted_traffic.assert_answered_locally(method)
    return legacy, adapted


def assert_same(legacy: Any, adapted: Any, method: str = "") -> None:
    """Equal to the type, by the rules shadow mode uses in production (``diracx_bridge.shadow.compare``)."""
    verdict = compare(legacy, adapted, method)
    assert verdict.equal, f"{verdict}\nlegacy  {legacy!r}\nadapted {adapted!r}"
    assert (
        compare(legacy, {**adapted, "Value": "not the same"} if adapted.get("OK") else {**adapted, "Errno": -1}).equal
        is False
    )


def test_the_suite_has_enough_jobs_in_mixed_states(worker, jobs):
    assert len(jobs["all"]) >= 250
    states = worker.call(JM, "getJobsStatus", jobs["all"], cs=LEGACY)["Value"]
    statuses = {v["Status"] for v in states.values()}
    assert statuses >= {"Waiting", "Running", "Done", "Failed", "Stalled", "Killed", "Matched", "Completing"}


@pytest.mark.parametrize(
    "method", ["getJobsStates", "getJobsStatus", "getJobsMinorStatus", "getJobsApplicationStatus", "getJobsSites"]
)
def test_multi_job_methods_on_every_job(worker, jobs, method):
    legacy, adapted = both(worker, method, jobs["all"])
    assert legacy["OK"], legacy
    assert len(legacy["Value"]) == len(jobs["all"])  # > 100: DIRAC 9.1's FutureClient stopped at 100
    assert_same(legacy, adapted)


@pytest.mark.parametrize(
    "job_ids",
    [
        pytest.param("first-int", id="int"),
        pytest.param("first-str", id="str"),
        pytest.param("comma-str", id="comma-string"),
        pytest.param("str-list", id="list-of-str"),
        pytest.param("with-unknown", id="list-with-unknown-ids"),
        pytest.param("only-unknown", id="only-unknown-ids"),
        pytest.param("empty", id="empty-list"),
        pytest.param("bad-str", id="non-numeric-string"),
        pytest.param("dict", id="wrong-type"),
    ],
)
def test_job_id_forms(worker, jobs, job_ids):
    a, b, c = jobs["mine"][:3]
    forms = {
        "first-int": a,
        "first-str": str(a),
        "comma-str": f"{a}, {b},{c}",
        "str-list": [str(a), str(b)],
        "with-unknown": [a, 99_999_999, b],
        "only-unknown": [99_999_998],
        "empty": [],
        "bad-str": "12,abc",
        "dict": {a: 1},
    }
    # The bridge answers these itself, as the legacy service does: {} for no job, DISET's type
    # check and int()'s refusal, word for word.
    served = job_ids not in ("empty", "bad-str", "dict")
    legacy, adapted = both(worker, "getJobsStates", forms[job_ids], served=served)
    assert_same(legacy, adapted)


def test_jobs_of_another_user(worker, jobs):
    """Legacy JobMonitoring has no ownership check; DiracX (GlobalJobsInfo) neither: same answer."""
    legacy, adapted = both(worker, "getJobsStates", jobs["theirs"][:5])
    assert legacy["OK"] and len(legacy["Value"]) == 5
    assert_same(legacy, adapted)


def test_other_user_reads_mine(grid_session, jobs):
    other = ParityWorker(grid_session.worker("otheruser", "civo_user"), grid_session.grid)
    legacy, adapted = both(other, "getJobsSummary", jobs["mine"][:5])
    assert legacy["OK"] and len(legacy["Value"]) == 5, legacy
    assert_same(legacy, adapted)


def test_job_summary(worker, jobs):
    for job_id in (jobs["mine"][0], jobs["mine"][35], jobs["mine"][-1], jobs["theirs"][0]):
        legacy, adapted = both(worker, "getJobSummary", job_id)
        assert legacy["OK"] and isinstance(legacy["Value"]["LastUpdateTime"], dt.datetime)
        assert_same(legacy, adapted)


def test_job_summary_unknown_job(worker):
    assert_same(*both(worker, "getJobSummary", 99_999_997))


def test_jobs_summary_crosses_pages(worker, jobs):
    legacy, adapted = both(worker, "getJobsSummary", jobs["all"])
    assert len(legacy["Value"]) == len(jobs["all"])
    assert_same(legacy, adapted)


@pytest.mark.parametrize(
    "attrs",
    [None, ["Status", "Site"], ["status", "SITE", "Owner"], "Status,JobGroup", ["JobID"], ["Foo"], ["Status", "Nope"]],
    ids=["all", "list", "mixed-case", "comma-string", "JobID", "unknown", "one-unknown"],
)
def test_job_attributes(worker, jobs, attrs):
    args = (jobs["mine"][40],) if attrs is None else (jobs["mine"][40], attrs)
    served = attrs not in (["Foo"], ["Status", "Nope"])  # unknown attributes: refused by the bridge itself
    assert_same(*both(worker, "getJobAttributes", *args, served=served))


@pytest.mark.parametrize("attr", ["Status", "owner", "HeartBeatTime", "VerifiedFlag", "UserPriority", "Foo"])
def test_job_attribute(worker, jobs, attr):
    assert_same(*both(worker, "getJobAttribute", jobs["mine"][0], attr, served=attr != "Foo"))


def test_job_attribute_of_unknown_job(worker):
    assert_same(*both(worker, "getJobAttribute", 99_999_996, "Status"))


def test_logging_info(worker, jobs):
    # Jobs whose history was written by DiracX, by the legacy service, and by both.
    for job_id in (jobs["mine"][0], jobs["mine"][1], jobs["mine"][-1], jobs["theirs"][-1]):
        legacy, adapted = both(worker, "getJobLoggingInfo", job_id)
        assert legacy["OK"] and len(legacy["Value"]) >= 2, legacy
        assert_same(legacy, adapted)


def test_logging_info_unknown_job(worker):
    legacy, adapted = both(worker, "getJobLoggingInfo", 99_999_995)
    assert legacy["Message"] == "No Logging information for job 99999995"
    assert_same(legacy, adapted)


@pytest.mark.parametrize(
    "attr_dict",
    [
        {},
        {"Status": "Done"},
        {"Status": ["Done", "Failed", "Killed"]},
        {"Owner": "otheruser"},
        {"owner": "ciuser", "JobGroup": "grp1"},
        {"Site": "DIRAC.CI.ch", "Status": "Running"},
        {"Status": "NoSuchStatus"},
        {"Foo": "bar"},
        {"Status": []},
        {"Status": [], "Owner": "ciuser"},
        {"Foo": [], "Status": "Done"},
    ],
    ids=[
        "none",
        "scalar",
        "list",
        "owner",
        "mixed-case",
        "two-attrs",
        "no-match",
        "unknown-column",
        "empty-list",
        "empty-list-and-more",
        "empty-list-before-unknown-column",
    ],
)
def test_get_jobs(worker, jobs, attr_dict):
    refused_by_mysql = "Foo" in attr_dict or [] in attr_dict.values()
    legacy, adapted = both(worker, "getJobs", attr_dict, served=not refused_by_mysql)
    assert legacy["OK"] is not refused_by_mysql, legacy
    # MySQL returns the rows in the order of whichever index it scans (no ORDER BY); the adapter
    # returns them by JobID: the one order-free method of the comparison rules. Same jobs, same str type.
    assert_same(legacy, adapted, "getJobs")
    if legacy["OK"]:
        assert all(type(j) is str for j in adapted["Value"])


def test_get_jobs_with_cut_date(worker, jobs):
    summary = worker.call(JM, "getJobSummary", jobs["mine"][100], cs=LEGACY)["Value"]
    cut = summary["LastUpdateTime"]
    for cut_date in (cut, str(cut), cut.strftime("%Y-%m-%d"), str(cut + dt.timedelta(microseconds=500))):
        legacy, adapted = both(worker, "getJobs", {"Owner": "ciuser"}, cut_date)
        assert legacy["OK"], legacy
        assert_same(legacy, adapted, "getJobs")


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("getJobJDL", ("first", False)),
        ("getJobParameters", (["first"],)),
        ("getJobParameter", ("first", "CPUNormalizationFactor")),
        ("getJobHeartBeatData", ("first",)),
        ("getInputData", ("first",)),
    ],
)
def test_methods_diracx_cannot_serve(worker, jobs, method, args):
    args = tuple((jobs["mine"][0] if a == "first" else [jobs["mine"][0]] if a == ["first"] else a) for a in args)
    legacy, refused = both(worker, method, *args, served=False)
    assert legacy["OK"], legacy
    assert not refused["OK"]
    assert refused["Errno"] == 95 and f"{method} is not served by DiracX" in refused["Message"]
    assert "/DiracX/Bridge/WorkloadManagement/JobMonitoring/LegacyFallback" in refused["Message"]
    _, fallback = both(
        worker,
        method,
        *args,
        extra_cs={"/DiracX/Bridge/WorkloadManagement/JobMonitoring/LegacyFallback": "yes"},
        fallback=True,
    )
    assert_same(legacy, fallback)


@pytest.mark.parametrize(
    ("method", "args"),
    [("getJobJDL", ("5", False)), ("getJobHeartBeatData", ("first",)), ("getInputData", ({"x": 1},))],
)
def test_methods_diracx_cannot_serve_still_run_disets_type_check(worker, jobs, method, args):
    """The legacy handler refuses a wrong argument type before anything else: so does the adapter."""
    args = tuple(str(jobs["mine"][0]) if a == "first" else a for a in args)
    legacy, adapted = both(worker, method, *args, served=False)
    assert legacy["OK"] is False and legacy["Message"].startswith("Type mismatch in parameter 0"), legacy
    assert_same(legacy, adapted)


@pytest.mark.parametrize("method", ["getJobOwner", "getJobStatus", "export_getJobs"])
def test_a_method_the_legacy_service_lacks_answers_as_legacy_does(worker, jobs, method):
    """e.g. getJobOwner, removed from DIRAC 9.1: "Unknown method", not advice to set LegacyFallback."""
    with observe(worker.grid) as legacy_traffic:
        legacy = worker.call(JM, method, jobs["mine"][0], cs=LEGACY)
    assert legacy_traffic.legacy_calls(method) and not legacy_traffic.diracx
    with observe(worker.grid) as adapted_traffic:
        adapted = worker.call(JM, method, jobs["mine"][0], cs=ADAPTED)
    adapted_traffic.assert_answered_locally(method)
    assert legacy["Message"] == f"Unknown method {method}"
    assert_same(legacy, adapted)


def test_a_repeated_job_id_is_answered_once_where_legacy_fails(worker, jobs):
    """A documented difference (README): legacy MySQL fails on its temporary table; the adapter answers."""
    job = jobs["mine"][0]
    legacy, adapted = both(worker, "getJobsStates", [job, job])
    assert legacy["OK"] is False and "Duplicate entry" in legacy["Message"]
    expected = worker.call(JM, "getJobsStates", [job], cs=LEGACY)
    assert adapted["OK"] and adapted["Value"] == expected["Value"]
