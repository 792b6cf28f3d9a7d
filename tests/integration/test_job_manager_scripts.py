"""The unchanged DIRAC commands print the same with JobManager adapted, and a job's whole life through the adapters.

Each command runs as a subprocess of the grid's DIRAC installation, once with the switches off and
once with ``-o /DiracX/FutureClientEnabled/WorkloadManagement/JobManager=yes`` (and JobMonitoring's
for ``dirac-wms-job-status``); only the job IDs differ between the two outputs (each run acts on
its own twin job) and are normalised. The grid's logs prove which side answered (:mod:`traffic`).

The life test submits with the unchanged ``dirac-wms-job-submit``, lets DIRAC's optimizers run,
then moves the job through Matched, Running (heartbeats, parameters) and Done with JobStateUpdate
calls, once through legacy and once through whatever adapters the bridge has: JobManager and
JobMonitoring here; JobStateUpdate as well once its adapter is in the bridge (another branch, at the
time of writing: the test switches it on by itself when ``adapter_for`` finds it). A kill during
Running must reach the job at its next heartbeat on both paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from traffic import JOB_MONITORING_METHODS, Traffic, observe
from twins import JM, JSU, Databases, JobState, assert_same_state, make_twins, wait_for_status

from diracx_bridge.adapters import adapter_for
from diracx_bridge.adapters.job_manager import SOURCE

pytestmark = pytest.mark.integration

JOB_MANAGER = "/DiracX/FutureClientEnabled/WorkloadManagement/JobManager"
JOB_MONITORING = "/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring"
JOB_STATE_UPDATE = "/DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate"
FALLBACK = "/DiracX/Bridge/WorkloadManagement/JobManager/LegacyFallback"
#: JobStateUpdate is driven through the bridge only when the bridge adapts it (DIRAC 9.1's own
#: FutureClient for it is not what users would get with the bridge).
JSU_ADAPTED = adapter_for("WorkloadManagement/JobStateUpdate") is not None
SUBMIT = ("POST", "/api/jobs/jdl")
SEARCH = ("POST", "/api/jobs/search")
STATUS = ("PATCH", "/api/jobs/status")
JOB_MANAGER_METHODS = frozenset({"submitJob", "confirmBulkSubmission", "killJob", "deleteJob", "rescheduleJob"})
JDL = '[ Executable = "/bin/echo"; Arguments = "life"; JobName = "scripts"; JobGroup = "jm-scripts"; ]'
PARAMETRIC = '[ Executable = "/bin/echo"; Arguments = "%s"; JobGroup = "jm-scripts"; Parameters = {"x", "y"}; ]'
#: A JDL with an input sandbox (relative to the command's directory): WMSClient uploads it first.
SANDBOXED = (
    '[ Executable = "/bin/cat"; Arguments = "jm-input.txt"; JobName = "life"; JobGroup = "jm-scripts"; '
    'InputSandbox = {"jm-input.txt"}; StdOutput = "std.out"; OutputSandbox = {"std.out"}; ]'
)


def options(*switches: str) -> list[str]:
    return [f"-o{switch}=yes" for switch in switches]


def numbered(text: str, *job_ids: int) -> str:
    """``text`` with the given job IDs written ``<job0>``, ``<job1>``... (the only legitimate difference)."""
    for index, job in enumerate(job_ids):
        text = re.sub(rf"\b{job}\b", f"<job{index}>", text)
    return text


def run(grid: Any, argv: list[str], *extra: str) -> tuple[str, Traffic]:
    with observe(grid) as seen:
        done = grid.run([argv[0], *extra, *argv[1:]], check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout, seen


def legacy_only(seen: Traffic, method: str) -> None:
    assert seen.diracx == [], f"the legacy run must not touch DiracX: {seen.diracx}"
    assert seen.legacy_calls(method), f"the legacy run must call the legacy {method}: {seen.legacy}"


def sandbox_types(grid: Any, job: int) -> list[str]:
    """The sandboxes assigned to ``job`` (SandboxMetadataDB), by type."""
    engine = sa.create_engine(grid.mysql.url("SandboxMetadataDB", "mysql+pymysql"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT Type FROM sb_EntityMapping WHERE EntityId = :e ORDER BY Type"), {"e": f"Job:{job}"}
            )
            return [row.Type for row in rows]
    finally:
        engine.dispose()


def job_ids_in(text: str) -> list[int]:
    return [int(j) for j in re.findall(r"\d+", text.split("JobID = ", 1)[1])]


@pytest.fixture(scope="module")
def dbs(grid_session):
    databases = Databases(grid_session.grid)
    yield databases
    databases.close()


@pytest.fixture
def user(gs):
    return gs.worker("ciuser", "civo_user")


@pytest.fixture
def admin(gs):
    return gs.worker("ciuser", "civo_admin")


@pytest.fixture
def jdl_files(grid) -> dict[str, Path]:
    files = {}
    (grid.workdir / "jm-input.txt").write_text("input sandbox\n")
    for name, text in (("single", JDL), ("parametric", PARAMETRIC), ("sandboxed", SANDBOXED)):
        path = grid.workdir / f"jm-scripts-{name}.jdl"
        path.write_text(text)
        files[name] = path
    return files


# --- the unchanged commands -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["single", "parametric", "sandboxed"])
def test_dirac_wms_job_submit(gs, grid, jdl_files, kind):
    gs.proxy()
    legacy, legacy_seen = run(grid, ["dirac-wms-job-submit", str(jdl_files[kind])])
    adapted, adapted_seen = run(grid, ["dirac-wms-job-submit", str(jdl_files[kind])], *options(JOB_MANAGER))
    legacy_only(legacy_seen, "submitJob")
    assert adapted_seen.from_bridge(*SUBMIT) and not adapted_seen.legacy_calls("submitJob")
    if kind == "parametric":  # WMSClient confirms: through the legacy service, which notifies the optimizers
        assert adapted_seen.legacy_calls("confirmBulkSubmission")
    assert "\nJobID = " in legacy
    assert numbered(adapted, *job_ids_in(adapted)) == numbered(legacy, *job_ids_in(legacy))


@pytest.mark.parametrize(
    ("command", "method", "state"),
    [
        ("dirac-wms-job-kill", "killJob", ("Running", "Application", "Running")),
        ("dirac-wms-job-kill", "killJob", ("Done", "Execution Complete", "Done")),  # "Killed jobs " and nothing
        ("dirac-wms-job-delete", "deleteJob", None),
        ("dirac-wms-job-delete", "deleteJob", ("Running", "Application", "Running")),  # killed, not deleted
    ],
)
def test_dirac_wms_job_kill_and_delete(gs, grid, user, admin, command, method, state):
    legacy_job, adapted_job = make_twins(user, admin, to=state)
    legacy, legacy_seen = run(grid, [command, str(legacy_job)])
    adapted, adapted_seen = run(grid, [command, str(adapted_job)], *options(JOB_MANAGER))
    legacy_only(legacy_seen, method)
    assert adapted_seen.from_bridge(*SEARCH) and not adapted_seen.legacy_calls(method)
    assert numbered(adapted, adapted_job) == numbered(legacy, legacy_job)
    assert "\nKilled jobs " in legacy or "\nDeleted jobs " in legacy


def test_dirac_wms_job_reschedule_goes_to_legacy_with_the_fallback(gs, grid, user, admin):
    """DiracX 0.7.0 cannot reschedule as legacy does: the script works with LegacyFallback, through legacy."""
    legacy_job, adapted_job = make_twins(user, admin, to=("Failed", "Application Finished With Errors", "Exit 1"))
    legacy, legacy_seen = run(grid, ["dirac-wms-job-reschedule", str(legacy_job)])
    adapted, adapted_seen = run(grid, ["dirac-wms-job-reschedule", str(adapted_job)], *options(JOB_MANAGER, FALLBACK))
    legacy_only(legacy_seen, "rescheduleJob")
    legacy_only(adapted_seen, "rescheduleJob")
    assert f"\nRescheduled job {legacy_job}\n" in legacy
    assert numbered(adapted, adapted_job) == numbered(legacy, legacy_job)


def test_dirac_wms_job_status_after_a_kill(gs, grid, user, admin):
    legacy_job, adapted_job = make_twins(user, admin, to=("Running", "Application", "Running"))
    run(grid, ["dirac-wms-job-kill", str(legacy_job)])
    run(grid, ["dirac-wms-job-kill", str(adapted_job)], *options(JOB_MANAGER))
    legacy, legacy_seen = run(grid, ["dirac-wms-job-status", str(legacy_job)])
    adapted, adapted_seen = run(grid, ["dirac-wms-job-status", str(adapted_job)], *options(JOB_MANAGER, JOB_MONITORING))
    assert legacy_seen.diracx == [] and {c.method for c in legacy_seen.legacy} & JOB_MONITORING_METHODS
    assert adapted_seen.from_bridge(*SEARCH) and not {c.method for c in adapted_seen.legacy} & JOB_MONITORING_METHODS
    assert "Status=Killed;" in legacy and "MinorStatus=Marked for termination;" in legacy
    assert numbered(adapted, adapted_job) == numbered(legacy, legacy_job)


# --- a job's whole life -----------------------------------------------------------------------------------


def adapted_life_switches() -> dict[str, str | None]:
    return {JOB_MANAGER: "yes", JOB_MONITORING: "yes", JOB_STATE_UPDATE: "yes" if JSU_ADAPTED else None}


LEGACY_LIFE = {JOB_MANAGER: None, JOB_MONITORING: None, JOB_STATE_UPDATE: None}


@pytest.fixture(scope="module", autouse=True)
def lives(grid_session) -> dict[str, list[int]]:
    """Two jobs per path, submitted with dirac-wms-job-submit first thing in the module.

    A job submitted through DiracX waits for OptimizationMind's periodic scan (DiracX notifies no
    optimizer; at least a minute), so the submissions are made before the other tests run.
    """
    gs = grid_session
    grid = gs.grid
    gs.proxy()
    path = grid.workdir / "jm-life.jdl"
    path.write_text(SANDBOXED)
    (grid.workdir / "jm-input.txt").write_text("input sandbox\n")
    jobs: dict[str, list[int]] = {"legacy": [], "adapted": []}
    for _ in range(2):
        legacy = grid.run(["dirac-wms-job-submit", str(path)])
        adapted = grid.run(["dirac-wms-job-submit", *options(JOB_MANAGER), str(path)])
        jobs["legacy"] += job_ids_in(legacy.stdout)
        jobs["adapted"] += job_ids_in(adapted.stdout)
    return jobs


def live(pilot: Any, user: Any, job: int, cs: dict[str, str | None], *, until: str) -> list[Any]:
    """Matched by a pilot, then Running with a parameter and heartbeats, then ``until`` (Done or Running)."""
    answers = []
    for worker, method, args in [
        (pilot, "setJobStatus", (job, "Matched", "Assigned", "Matcher")),
        (user, "setJobStatus", (job, "Running", "Job Initialization", "JobWrapper")),
        (user, "setJobParameter", (job, "LifeStep", "running")),
        (user, "setJobApplicationStatus", (job, "Step 1", "JobWrapper")),
        (user, "sendHeartBeat", (job, {"LoadAverage": 1.5, "MemoryUsed": 1024.0}, {})),
    ]:
        answers.append(worker.call(JSU, method, *args, cs=cs))
        assert answers[-1]["OK"], (method, answers[-1])
    if until == "Done":
        answers.append(user.call(JSU, "setJobStatus", job, "Done", "Execution Complete", "JobWrapper", cs=cs))
        assert answers[-1]["OK"], answers[-1]
    return answers


def assert_same_life(legacy: JobState, adapted: JobState, *, extra_records: list[tuple[str, ...]]) -> None:
    """The lives are the same, but for the submission record's application status and DiracX's kill records."""
    first = legacy.logging[0]
    assert first[2] == "idem" and adapted.logging[0] == (first[0], first[1], "Unknown", first[3])
    adapted.logging[0] = first
    for record in extra_records:
        assert record in adapted.logging and record not in legacy.logging
        adapted.logging.remove(record)
    assert_same_state(legacy, adapted)


def test_a_jobs_whole_life(gs, dbs, lives):
    pilot, user = gs.worker("ciuser", "civo_pilot"), gs.worker("ciuser", "civo_user")
    pairs = list(zip(lives["legacy"], lives["adapted"], strict=True))
    everyone = lives["legacy"] + lives["adapted"]
    wait_for_status(user, everyone, lambda s: s not in ("Received", "Checking"))
    legacy_job, adapted_job = pairs[0]
    live(pilot, user, legacy_job, LEGACY_LIFE, until="Done")
    with observe(gs.grid) as seen:
        live(pilot, user, adapted_job, adapted_life_switches(), until="Done")
        status = user.call(JM, "getJobsStatus", adapted_job, cs=adapted_life_switches())
    assert status["Value"] == {adapted_job: {"Status": "Done"}}, status
    assert seen.from_bridge(*SEARCH)
    if JSU_ADAPTED:
        assert seen.from_bridge(*STATUS)
    assert_same_life(dbs.state(legacy_job), dbs.state(adapted_job), extra_records=[])
    # The optimizers gave each job its input sandbox (uploaded by WMSClient before the submission).
    assert sandbox_types(gs.grid, legacy_job) == sandbox_types(gs.grid, adapted_job) == ["Input"]


def test_a_kill_during_running_reaches_the_next_heartbeat_on_both_paths(gs, grid, dbs, lives):
    pilot, user = gs.worker("ciuser", "civo_pilot"), gs.worker("ciuser", "civo_user")
    legacy_job, adapted_job = lives["legacy"][1], lives["adapted"][1]
    wait_for_status(user, [legacy_job, adapted_job], lambda s: s not in ("Received", "Checking"))
    live(pilot, user, legacy_job, LEGACY_LIFE, until="Running")
    live(pilot, user, adapted_job, adapted_life_switches(), until="Running")
    run(grid, ["dirac-wms-job-kill", str(legacy_job)])
    _, adapted_seen = run(grid, ["dirac-wms-job-kill", str(adapted_job)], *options(JOB_MANAGER))
    assert adapted_seen.from_bridge(*STATUS) and not adapted_seen.legacy_calls("killJob")
    heartbeats = {}
    for job, cs in ((legacy_job, LEGACY_LIFE), (adapted_job, adapted_life_switches())):
        heartbeats[job] = user.call(JSU, "sendHeartBeat", job, {"LoadAverage": 0.5}, {}, cs=cs)
        assert heartbeats[job]["OK"], heartbeats[job]
    assert heartbeats[legacy_job]["Value"] == {"Kill": ""}, heartbeats
    assert heartbeats[adapted_job]["Value"] == heartbeats[legacy_job]["Value"]
    legacy, adapted = dbs.state(legacy_job), dbs.state(adapted_job)
    assert legacy.commands == adapted.commands == [("Kill", "", "Sent")]
    # DiracX ends a killed job (legacy's kill writes no time), so the heartbeat may come after that end
    # (time stamps have whole seconds; the kill is dated after the job's last record, see the adapter).
    assert legacy.job["EndExecTime"] is None and adapted.job["EndExecTime"] == "<set>"
    assert legacy.disorder == [] and set(adapted.disorder) <= {"HeartBeatTime > EndExecTime"}
    adapted.job["EndExecTime"], adapted.disorder = None, []
    if JSU_ADAPTED:  # README (JobStateUpdate): legacy's heartbeat revives a killed job, DiracX's does not
        assert (legacy.job["Status"], adapted.job["Status"]) == ("Running", "Killed")
        adapted.job["Status"] = legacy.job["Status"]
    assert_same_life(legacy, adapted, extra_records=[("Killed", "Marked for termination", "idem", SOURCE)])
