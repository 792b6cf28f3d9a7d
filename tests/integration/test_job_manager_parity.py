"""JobManager parity on the grid-in-a-box: the same write through the legacy service and through the adapter.

Each write goes to the legacy JobManager for one job and through the adapter for its twin, a job in
the same state (:mod:`twins`); the answers are compared to the type (job IDs normalised), then every
row both sides keep about the two jobs (:func:`twins.assert_same_state`). Each call also proves
which side served it (:mod:`traffic`): the adapted call reached DiracX through the bridge (a search,
and a status request when something changes) and never the legacy JobManager method; the legacy
call never reached DiracX.

Where DiracX 0.7.0 cannot write what legacy writes, the difference is named here, asserted exactly
(:func:`assert_twins`), and listed in the README's "Known differences": a kill or a deletion through
DiracX adds a logging record per status change (legacy writes none), sets ``EndExecTime`` when the
job is killed, and queues a ``Kill`` command when a job is deleted without being killed; a job
submitted through DiracX has ``Unknown`` instead of ``idem`` as the application status of its first
record, and DiracX's own defaults for ``InputDataModule`` and ``SoftwareDistModule`` in its JDL when
the CS sets none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from traffic import Traffic, observe
from twins import JOBMAN, Databases, JobState, assert_same_state, make_twins, wait_for_status

from diracx_bridge.adapters.job_manager import SOURCE

pytestmark = pytest.mark.integration

SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/JobManager"
FALLBACK = "/DiracX/Bridge/WorkloadManagement/JobManager/LegacyFallback"
LEGACY = {SWITCH: None, FALLBACK: None}
ADAPTED = {SWITCH: "yes", FALLBACK: None}
WMS = "DIRAC.WorkloadManagementSystem.Client.WMSClient.WMSClient"
SEARCH = ("POST", "/api/jobs/search")
STATUS = ("PATCH", "/api/jobs/status")
SUBMIT = ("POST", "/api/jobs/jdl")
KILL_RECORD = ("Killed", "Marked for termination", "idem", SOURCE)
DELETE_RECORD = ("Deleted", "Checking accounting", "idem", SOURCE)
#: What DiracX 0.7.0's configuration model puts in a JDL where the CS sets nothing (DIRAC puts nothing).
DIRACX_JDL_DEFAULTS = (
    'InputDataModule = "DIRAC.Core.Utilities.InputDataResolution";',
    'SoftwareDistModule = "LocalSoftwareDist";',
)


@pytest.fixture(scope="module")
def dbs(grid_session) -> Iterator[Databases]:
    databases = Databases(grid_session.grid)
    yield databases
    databases.close()


@pytest.fixture(scope="module", autouse=True)
def early_single(grid_session) -> tuple[dict[str, Any], dict[str, Any], Traffic]:
    """The same single JDL submitted through both sides first thing, compared by the module's last test.

    Before it, one legacy job is optimised: OptimizationMind loses the second of two concurrent
    first notifications after it starts (JobState's lazy database set-up); the twins of the first
    test would otherwise wait for its scan. DiracX notifies no optimizer, so the adapted job waits
    for that scan (at least a minute: DIRAC's scheduler clamps LoadJobPeriod to 60 s) while the
    other tests run.
    """
    worker = grid_session.worker("ciuser", "civo_user")
    warm = worker.call(JOBMAN, "submitJob", JDL, cs=LEGACY)
    assert warm["OK"], warm
    wait_for_status(worker, [warm["Value"]], lambda s: s not in ("Received", "Checking"), timeout=90)
    return call_both(grid_session.grid, worker, "submitJob", (JDL,), (JDL,))


@pytest.fixture
def user(gs):
    return gs.worker("ciuser", "civo_user")


@pytest.fixture
def admin(gs):
    return gs.worker("ciuser", "civo_admin")


@pytest.fixture
def other(gs):
    return gs.worker("otheruser", "civo_user")


# --- helpers ---------------------------------------------------------------------------------------------


def same_job(value: Any, legacy_job: int, adapted_job: int) -> Any:
    """``value`` with the legacy twin's ID written as the adapted twin's (IDs differ by construction only)."""
    return renumber(value, {legacy_job: adapted_job})


def renumber(value: Any, ids: dict[int, int]) -> Any:
    """``value`` with each legacy job ID (int or str) written as its adapted twin's."""
    if isinstance(value, dict):
        return {k: renumber(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [renumber(v, ids) for v in value]
    if type(value) is int and value in ids:
        return ids[value]
    if isinstance(value, str) and value.isdigit() and int(value) in ids:
        return str(ids[int(value)])
    return value


def assert_same_answer(legacy: Any, adapted: Any) -> None:
    assert adapted == legacy
    assert _types(adapted) == _types(legacy)  # 1 == True, 1 == 1.0: the types too


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", *(_types(v) for v in value)]
    return type(value).__name__


def assert_adapted_write(seen: Traffic, method: str, *, changed: bool) -> None:
    """DiracX served ``method``: the bridge searched, changed statuses only if something changes, no legacy call."""
    assert seen.from_bridge(*SEARCH), f"{method}: no search reached DiracX: {seen.diracx}"
    assert bool(seen.from_bridge(*STATUS)) is changed, f"{method}: status requests {seen.from_bridge(*STATUS)}"
    assert not seen.legacy_calls(method), f"{method} reached the legacy service: {seen.legacy_calls(method)}"


def call_both(
    grid: Any, worker: Any, method: str, legacy_args: tuple[Any, ...], adapted_args: tuple[Any, ...], **options: Any
) -> tuple[dict[str, Any], dict[str, Any], Traffic]:
    """The legacy call (switch off), proven legacy, and the adapted one (switch on) with what it reached."""
    with observe(grid) as legacy_seen:
        legacy = worker.call(JOBMAN, method, *legacy_args, cs=LEGACY, **options)
    with observe(grid) as adapted_seen:
        adapted = worker.call(JOBMAN, method, *adapted_args, cs=ADAPTED, **options)
    legacy_seen.assert_legacy(method)
    return legacy, adapted, adapted_seen


def assert_twins(
    legacy: JobState,
    adapted: JobState,
    *,
    records: tuple[tuple[str, ...], ...] = (),
    killed_now: bool = False,
    kill_command_added: bool = False,
) -> None:
    """The twins are equal but for what DiracX 0.7.0 writes and legacy does not, named exactly.

    ``records``: the logging records DiracX adds (legacy's kill and delete write none);
    ``killed_now``: DiracX set ``EndExecTime`` (Killed is a final status for it; legacy leaves it);
    ``kill_command_added``: DiracX queued a Kill command for a job it deleted without killing it.
    """
    assert adapted.logging == legacy.logging + list(records), (legacy.logging, adapted.logging)
    ignore = ["logging"]
    if killed_now:
        assert legacy.job["EndExecTime"] is None and adapted.job["EndExecTime"] == "<set>"
        ignore.append("job.EndExecTime")
    if kill_command_added:
        assert adapted.commands == sorted([*legacy.commands, ("Kill", "", "Received")])
        ignore.append("commands")
    assert_same_state(legacy, adapted, ignore=ignore)


# --- kill and delete: twins ---------------------------------------------------------------------------------

# (twins' state, the job-ID form, legacy's answer list empty?, DiracX's extra records, EndExecTime set, Kill added)
KILL_CASES = [
    pytest.param(None, int, False, (KILL_RECORD,), True, id="waiting-int"),
    pytest.param(("Running", "Application", "Running"), str, False, (KILL_RECORD,), True, id="running-str"),
    pytest.param(("Matched", "Assigned", "Unknown"), list, False, (KILL_RECORD,), True, id="matched-list"),
    pytest.param(("Stalled", "Job stalled", "Unknown"), list, False, (KILL_RECORD,), True, id="stalled-list"),
    pytest.param(("Killed", "Marked for termination", "Unknown"), int, False, (KILL_RECORD,), False, id="killed-again"),
    pytest.param(("Done", "Execution Complete", "Done"), int, True, (), False, id="done-forbidden"),
    pytest.param(("Failed", "Application Finished With Errors", "Exit 2"), str, True, (), False, id="failed-forbidden"),
]
DELETE_CASES = [
    pytest.param(None, list, False, (KILL_RECORD, DELETE_RECORD), True, False, id="waiting-list"),
    pytest.param(
        ("Running", "Application", "Running"), int, True, (KILL_RECORD,), True, False, id="running-killed-only"
    ),
    pytest.param(("Done", "Execution Complete", "Done"), str, False, (DELETE_RECORD,), False, True, id="done-int"),
    pytest.param(("Killed", "x", "Unknown"), int, False, (KILL_RECORD, DELETE_RECORD), False, False, id="killed"),
    pytest.param(("Completing", "Uploading", "Unknown"), list, True, (KILL_RECORD,), True, False, id="completing"),
]


def form(kind: Any, job: int) -> Any:
    return [job] if kind is list else kind(job)


@pytest.mark.parametrize(("state", "kind", "empty", "records", "killed_now"), KILL_CASES)
def test_kill_twins(grid, user, admin, dbs, state, kind, empty, records, killed_now):
    legacy_job, adapted_job = make_twins(user, admin, to=state)
    legacy, adapted, seen = call_both(grid, user, "killJob", (form(kind, legacy_job),), (form(kind, adapted_job),))
    assert legacy["OK"] and legacy["Value"] == ([] if empty else [legacy_job]), legacy
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_adapted_write(seen, "killJob", changed=bool(records))
    assert_twins(dbs.state(legacy_job), dbs.state(adapted_job), records=records, killed_now=killed_now)


@pytest.mark.parametrize(("state", "kind", "empty", "records", "killed_now", "kill_added"), DELETE_CASES)
def test_delete_twins(grid, user, admin, dbs, state, kind, empty, records, killed_now, kill_added):
    legacy_job, adapted_job = make_twins(user, admin, to=state)
    legacy, adapted, seen = call_both(grid, user, "deleteJob", (form(kind, legacy_job),), (form(kind, adapted_job),))
    assert legacy["OK"] and legacy["Value"] == ([] if empty else [legacy_job]), legacy
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_adapted_write(seen, "deleteJob", changed=bool(records))
    assert_twins(
        dbs.state(legacy_job), dbs.state(adapted_job), records=records, killed_now=killed_now,
        kill_command_added=kill_added,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["killJob", "deleteJob"])
def test_jobs_of_another_user_are_refused_and_untouched(grid, user, other, admin, dbs, method):
    legacy_job, adapted_job = make_twins(other, admin)
    legacy, adapted, seen = call_both(grid, user, method, ([legacy_job, 99_999_990],), ([adapted_job, 99_999_990],))
    assert legacy["OK"] is False and legacy["NonauthorizedJobIDs"] == [legacy_job], legacy
    assert legacy["InvalidJobIDs"] == [99_999_990]
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_adapted_write(seen, method, changed=False)  # a status request would be refused whole (403)
    assert_twins(dbs.state(legacy_job), dbs.state(adapted_job))


def test_a_mixed_list_kills_the_own_jobs_and_names_the_others(grid, user, other, admin, dbs):
    mine_legacy, mine_adapted = make_twins(user, admin)
    theirs_legacy, theirs_adapted = make_twins(other, admin)
    legacy, adapted, seen = call_both(
        grid, user, "killJob", ([theirs_legacy, mine_legacy],), ([theirs_adapted, mine_adapted],)
    )
    assert legacy["Message"] == "Some jobs failed deletion" and "Value" not in legacy
    assert_same_answer(renumber(legacy, {theirs_legacy: theirs_adapted, mine_legacy: mine_adapted}), adapted)
    assert_adapted_write(seen, "killJob", changed=True)
    assert_twins(dbs.state(mine_legacy), dbs.state(mine_adapted), records=(KILL_RECORD,), killed_now=True)
    assert_twins(dbs.state(theirs_legacy), dbs.state(theirs_adapted))


def test_force_from_a_normal_user_changes_nothing(grid, user, admin, dbs):
    """Legacy filters by the state machine before it forces; DiracX would answer 403 to the flag."""
    legacy_job, adapted_job = make_twins(user, admin, to=("Done", "Execution Complete", "Done"))
    legacy, adapted, seen = call_both(grid, user, "killJob", (legacy_job, True), (adapted_job, True))
    assert legacy == {**legacy, "OK": True, "Value": []}
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_adapted_write(seen, "killJob", changed=False)
    assert_twins(dbs.state(legacy_job), dbs.state(adapted_job))


def test_a_job_administrator_kills_another_users_job(grid, admin, other, dbs):
    legacy_job, adapted_job = make_twins(other, admin, to=("Running", "Application", "Running"))
    legacy, adapted, seen = call_both(grid, admin, "killJob", ([legacy_job], True), ([adapted_job], True))
    assert legacy["OK"] and legacy["Value"] == [legacy_job]
    assert legacy["requireProxyUpload"] is False  # the caller owns none of the jobs: legacy does not ask
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_adapted_write(seen, "killJob", changed=True)
    assert_twins(dbs.state(legacy_job), dbs.state(adapted_job), records=(KILL_RECORD,), killed_now=True)


def test_a_host_certificate_stays_on_legacy(grid, user, admin, dbs):
    """DiracX 0.7.0 cannot act as a host: an agent's call goes to the legacy service, switch on or off."""
    legacy_job, adapted_job = make_twins(user, admin)
    host = {"client_kwargs": {"useCertificates": True}}
    with observe(grid) as legacy_seen:
        legacy = user.call(JOBMAN, "killJob", legacy_job, cs=LEGACY, **host)
    with observe(grid) as adapted_seen:
        adapted = user.call(JOBMAN, "killJob", adapted_job, cs=ADAPTED, **host)
    for seen in (legacy_seen, adapted_seen):
        seen.assert_legacy("killJob")
        assert [(c.group, c.user) for c in seen.legacy_calls("killJob")] == [("hosts", "localhost")]
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    assert_same_state(dbs.state(legacy_job), dbs.state(adapted_job))


@pytest.mark.parametrize(
    ("given", "served"),
    [([], False), (0, False), ("1,2", False), ("abc", False), (1.5, False), ([99_999_991, "99999992"], True)],
)
def test_job_lists_legacy_reads_as_nothing_or_unknown(grid, user, given, served):
    legacy, adapted, seen = call_both(grid, user, "killJob", (given,), (given,))
    assert legacy["OK"], legacy
    assert_same_answer(legacy, adapted)
    if served:
        assert_adapted_write(seen, "killJob", changed=False)
    else:
        seen.assert_answered_locally("killJob")


def test_a_repeated_job_is_killed_once_where_legacy_fails(grid, user, admin, dbs):
    """Legacy's rights check fails on a repeated ID (MySQL 1062) and kills nothing; the bridge kills the job."""
    legacy_job, adapted_job = make_twins(user, admin)
    legacy, adapted, seen = call_both(grid, user, "killJob", ([legacy_job, legacy_job],), ([adapted_job, adapted_job],))
    assert legacy == {**legacy, "OK": True, "Value": []}
    assert adapted["OK"] and adapted["Value"] == [adapted_job]
    assert_adapted_write(seen, "killJob", changed=True)
    assert dbs.state(legacy_job).job["Status"] == "Waiting" and dbs.state(adapted_job).job["Status"] == "Killed"


# --- methods DiracX does not serve ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rescheduleJob", "resetJob", "removeJob"])
def test_unserved_methods_go_to_legacy_with_the_fallback_and_are_refused_without(grid, user, admin, dbs, method):
    caller = admin if method == "resetJob" else user  # legacy lets only a JobAdministrator reset
    legacy_job, adapted_job = make_twins(user, admin, to=("Failed", "Application Finished With Errors", "Exit 3"))
    with observe(grid) as refused_seen:
        refused = caller.call(JOBMAN, method, adapted_job, cs=ADAPTED)
    refused_seen.assert_answered_locally(method)
    assert refused["OK"] is False and refused["Errno"] == 95, refused
    assert f"{FALLBACK} = yes" in refused["Message"]
    with observe(grid) as legacy_seen:
        legacy = caller.call(JOBMAN, method, legacy_job, cs=LEGACY)
    with observe(grid) as fallback_seen:
        adapted = caller.call(JOBMAN, method, adapted_job, cs=ADAPTED | {FALLBACK: "yes"})
    legacy_seen.assert_legacy(method)
    fallback_seen.assert_legacy(method)
    assert legacy["OK"], legacy
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)
    if method == "removeJob":
        assert dbs.state(legacy_job).job == dbs.state(adapted_job).job == {}
        return
    # Both went through the legacy service, which notified the optimizers: compare once both rest, a
    # rescheduled job on hold for the reschedule delay, a reset one (counter 0) waiting.
    resting = {"rescheduleJob": "On Hold: after rescheduling 1", "resetJob": "Pilot Agent Submission"}[method]
    deadline = time.monotonic() + 60
    while {dbs.state(j).logging[-1][1:3].count(resting) for j in (legacy_job, adapted_job)} != {1}:
        assert time.monotonic() < deadline, (dbs.state(legacy_job).logging, dbs.state(adapted_job).logging)
        time.sleep(0.5)
    assert_same_state(dbs.state(legacy_job), dbs.state(adapted_job))


def test_a_normal_user_may_not_reset_on_either_side(grid, user, admin):
    legacy_job, adapted_job = make_twins(user, admin)
    with observe(grid) as legacy_seen:
        legacy = user.call(JOBMAN, "resetJob", legacy_job, cs=LEGACY)
    with observe(grid) as fallback_seen:
        adapted = user.call(JOBMAN, "resetJob", adapted_job, cs=ADAPTED | {FALLBACK: "yes"})
    legacy_seen.assert_legacy("resetJob")
    fallback_seen.assert_legacy("resetJob")
    assert legacy["Message"] == "Some jobs failed resetting" and legacy["NonauthorizedJobIDs"] == [legacy_job]
    assert_same_answer(same_job(legacy, legacy_job, adapted_job), adapted)


# --- submission ----------------------------------------------------------------------------------------------------


def jdl_of(dbs: Databases, job: int) -> str:
    from DIRACCommon.WorkloadManagementSystem.DB.JobDBUtils import extractJDL

    rows = dbs._rows("JobDB", "SELECT JDL, OriginalJDL FROM JobJDLs WHERE JobID = :j", j=job)
    jdl = extractJDL(rows[0]["JDL"])
    return re.sub(r"JobID = \d+;", "JobID = <job>;", jdl) + "\nORIGINAL " + extractJDL(rows[0]["OriginalJDL"])


def without_diracx_defaults(jdl: str, legacy_jdl: str) -> str:
    """The adapted JDL without the lines DiracX's configuration defaults add where the CS sets nothing."""
    for line in DIRACX_JDL_DEFAULTS:
        if line not in legacy_jdl:
            assert line in jdl, f"{line} expected from DiracX's defaults in:\n{jdl}"
            jdl = re.sub(rf"\n *{re.escape(line)}", "", jdl)
    return jdl


def assert_submitted_twins(dbs: Databases, legacy_job: int, adapted_job: int) -> None:
    legacy, adapted = dbs.state(legacy_job), dbs.state(adapted_job)
    # DiracX writes the submission record's application status as "Unknown", DIRAC as "idem".
    first = legacy.logging[0]
    assert first[2] == "idem" and adapted.logging[0] == (first[0], first[1], "Unknown", first[3])
    adapted.logging[0] = first
    assert_same_state(legacy, adapted)
    legacy_jdl = jdl_of(dbs, legacy_job)
    assert without_diracx_defaults(jdl_of(dbs, adapted_job), legacy_jdl) == legacy_jdl


JDL = '[ Executable = "/bin/echo"; Arguments = "parity"; JobName = "submit-parity"; JobGroup = "jm-parity"; ]'
PARAMETRIC = (
    '[ Executable = "/bin/echo"; Arguments = "%s %n"; JobName = "p-%n"; JobGroup = "jm-parity"; '
    'Parameters = {"alpha", "beta", "gamma"}; ]'
)


def test_a_parametric_job_through_wmsclient_is_confirmed_by_legacy_and_optimised_at_once(grid, user, dbs):
    """WMSClient submits, then confirms: the adapter's confirmation is the legacy service's, which notifies."""
    with observe(grid) as legacy_seen:
        legacy = user.call(WMS, "submitJob", PARAMETRIC, cs=LEGACY)
    assert legacy["OK"] and len(legacy["Value"]) == 3, legacy
    # One notification at a time: OptimizationMind loses the second of two concurrent first messages
    # after its start (JobState's lazy database set-up), legacy's or the adapter's alike.
    wait_for_status(user, legacy["Value"], lambda s: s not in ("Received", "Checking"), timeout=30)
    with observe(grid) as adapted_seen:
        adapted = user.call(WMS, "submitJob", PARAMETRIC, cs=ADAPTED)
    assert adapted["OK"] and len(adapted["Value"]) == 3, adapted
    assert legacy_seen.legacy_calls("submitJob") and not legacy_seen.diracx
    assert adapted_seen.from_bridge(*SUBMIT) and not adapted_seen.legacy_calls("submitJob")
    assert adapted_seen.legacy_calls("confirmBulkSubmission")  # the composition: legacy confirms and notifies
    pairs = list(zip(legacy["Value"], adapted["Value"], strict=True))
    assert_same_answer(renumber(legacy, dict(pairs)), adapted)
    wait_for_status(user, adapted["Value"], lambda s: s not in ("Received", "Checking"), timeout=30)
    for legacy_job, adapted_job in pairs:
        assert_submitted_twins(dbs, legacy_job, adapted_job)


@pytest.mark.parametrize(
    "jdl",
    [
        pytest.param("", id="empty"),
        pytest.param("[ Executable = ; ]", id="syntax"),
        pytest.param('[ Executable = "/bin/true"; Parameters = 0; ]', id="no-parameters"),
        pytest.param('[ Executable = "/bin/true"; Parameters = 25; ParameterStep = 1; ]', id="too-many-parametric"),
        pytest.param('[ Executable = "/bin/true"; Site = "Nowhere.ch"; ]', id="unknown-site"),
        pytest.param('[ Executable = "/bin/true"; JobType = "Weird"; ]', id="job-type"),
        pytest.param('[ Executable = "/bin/true"; Platform = "NoSuchOS"; ]', id="platform"),
        pytest.param('[ Executable = "/bin/true"; VirtualOrganization = "elsewhere"; ]', id="wrong-vo"),
        # the adapter checks the jobs of one parametric JDL against one CS snapshot: job 2's refusal is still legacy's
        pytest.param(
            '[ Executable = "/bin/true"; JobType = "%s"; Parameters = {"User", "Weird", "User"}; ]',
            id="job-type-of-parametric-job-2",
        ),
        pytest.param(
            '[ Executable = "/bin/true"; Site = "%s"; Parameters = {"ANY", "Nowhere.ch"}; ]',
            id="unknown-site-of-parametric-job-2",
        ),
    ],
)
def test_refused_submissions_answer_the_legacy_texts_and_codes(grid, user, jdl):
    legacy, adapted, seen = call_both(grid, user, "submitJob", (jdl,), (jdl,))
    assert legacy["OK"] is False, legacy
    if "JobId" in legacy:  # legacy reserved a job ID before refusing; the bridge reserves nothing
        legacy = {k: v for k, v in legacy.items() if k != "JobId"}
    assert_same_answer(legacy, adapted)
    assert not seen.from_bridge(*SUBMIT) and not seen.legacy_calls("submitJob")


def test_a_group_without_normal_user_may_not_submit(gs):
    pilot = gs.worker("ciuser", "civo_pilot")
    legacy, adapted, seen = call_both(gs.grid, pilot, "submitJob", (JDL,), (JDL,))
    assert legacy["Message"] == "Job submission error ( 1503 : Job submission not authorized)", legacy
    assert_same_answer(legacy, adapted)
    assert not seen.from_bridge(*SUBMIT) and not seen.legacy_calls("submitJob")


# --- timings (reported, never asserted) -----------------------------------------------------------------------------


def test_report_a_submission_and_kill_of_many_jobs(user, capsys):
    """One submission and one kill of 20 jobs through each side (``pytest -s`` shows the seconds)."""
    many = (
        '[ Executable = "/bin/true"; JobGroup = "jm-timing"; Parameters = 20; ParameterStart = 1; ParameterStep = 1; ]'
    )
    seconds = {}
    for name, cs in (("legacy", LEGACY), ("adapted", ADAPTED)):
        start = time.perf_counter()
        submitted = user.call(JOBMAN, "submitJob", many, cs=cs)
        seconds[f"submit 20 ({name})"] = time.perf_counter() - start
        assert submitted["OK"], submitted
        start = time.perf_counter()
        killed = user.call(JOBMAN, "killJob", submitted["Value"], cs=cs)
        seconds[f"kill 20 ({name})"] = time.perf_counter() - start
        assert killed["OK"] and len(killed["Value"]) == 20, killed
    with capsys.disabled():
        print("\n" + ", ".join(f"{k}: {v:.2f} s" for k, v in seconds.items()))


def test_a_single_job_submitted_through_diracx_is_the_legacy_one(user, dbs, early_single):
    """Last in the module: the adapted job waits for OptimizationMind's scan (DiracX notifies no optimizer)."""
    legacy, adapted, seen = early_single
    assert legacy["OK"] and isinstance(legacy["Value"], int), legacy
    assert_same_answer(same_job(legacy, legacy["Value"], adapted["Value"]), adapted)
    assert seen.from_bridge(*SUBMIT) and not seen.legacy_calls("submitJob")
    wait_for_status(user, [legacy["Value"], adapted["Value"]], lambda s: s not in ("Received", "Checking"))
    assert_submitted_twins(dbs, legacy["Value"], adapted["Value"])
