"""adapters/job_manager.py against a MockTransport DiracX: legacy answers, refusals, what is sent and what is not."""

from __future__ import annotations

import ast
import datetime as dt
import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_test_helpers import GROUP, USER, VO, FakeDiracX, diracx_route, make_jwt, refresh_jwt
from DIRACCommon.Core.Utilities import DErrno
from DIRACCommon.WorkloadManagementSystem.Client.JobStatus import JobsStateMachine

from diracx_bridge.adapters import job_manager
from diracx_bridge.adapters.job_manager import SOURCE, JobManagerAdapter, legacy_job_list
from diracx_bridge.tokens import DiracxToken

SERVICE = "WorkloadManagement/JobManager"
JDL_ROUTE = "/api/jobs/jdl"
STATUS_ROUTE = "/api/jobs/status"
SEARCH = "/api/jobs/search"
JDL = '[ Executable = "/bin/true"; JobName = "unit"; ]'
PARAMETRIC = '[ Executable = "/bin/echo"; Arguments = "%s"; Parameters = {"a","b","c"}; ]'


class Legacy:
    """Stands for the legacy JobManager's DISET client: records calls, answers what it is told."""

    def __init__(self, answers: dict[str, dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers = answers or {}

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> dict[str, Any]:
            self.calls.append((method, args))
            return self.answers.get(method, {"OK": True, "Value": f"legacy {method}"})

        return call


class FakeWMS:
    """The jobs routes of DiracX 0.7.0 over the FakeDiracX's job rows: submission and status changes.

    Status changes follow DiracX: its state machine (not forced) turns a refused transition into
    "same status, source (SM)", and a change dated before the job's last record changes nothing.
    """

    def __init__(self, diracx: FakeDiracX) -> None:
        self.diracx = diracx
        self.next_id = 100
        self.jdls: dict[int, str] = {}
        diracx.overrides[("POST", JDL_ROUTE)] = self.submit
        diracx.overrides[("PATCH", STATUS_ROUTE)] = self.set_status

    def add(self, status: str = "Waiting", owner: str = USER, *, group: str = GROUP, vo: str = VO, **row: Any) -> int:
        self.next_id += 1
        job = self.next_id
        self.diracx.jobs[job] = {"JobID": job, "Owner": owner, "OwnerGroup": group, "VO": vo, "Status": status, **row}
        self.diracx.logging[job] = [
            {"Status": "Received", "MinorStatus": "Job accepted", "ApplicationStatus": "Unknown",
             "StatusTime": "2025-01-02T03:04:05Z", "Source": "JobManager"},
        ]  # fmt: skip
        return job

    def status(self, job: int) -> str:
        return str(self.diracx.jobs[job]["Status"])

    def submit(self, request: httpx.Request) -> httpx.Response:
        jdls = json.loads(request.read())
        parametric = len(jdls) == 1 and "Parameters" in jdls[0]
        count = 3 if parametric else len(jdls)
        answer = []
        for _ in range(count):
            job = self.add("Submitting" if parametric else "Received")
            self.jdls[job] = jdls[0] if parametric else jdls[len(answer)]
            answer.append(
                {"JobID": job, "Status": self.status(job), "MinorStatus": "x", "TimeStamp": "2025-01-01T00:00:00Z"}
            )
        return httpx.Response(201, json=answer)

    def set_status(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        success: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for key, updates in body.items():
            row = self.diracx.jobs.get(int(key))
            if row is None:
                failed[key] = {"detail": "Not found"}
                continue
            for moment, update in sorted(updates.items()):
                assert dt.datetime.fromisoformat(moment).tzinfo is not None, "DiracX answers 400 to naive times"
                new = JobsStateMachine(row["Status"]).getNextState(update["Status"])["Value"]
                row["Status"], row["MinorStatus"] = new, update["MinorStatus"]
            success[key] = {"Status": row["Status"], "MinorStatus": row["MinorStatus"]}
        if not success:
            return httpx.Response(404, json={"detail": "Not found"})
        return httpx.Response(200, json={"success": success, "failed": failed})

    def patches(self) -> list[Any]:
        return [s for s in self.diracx.requests_to(STATUS_ROUTE) if s.method == "PATCH"]


@pytest.fixture
def wms(diracx: FakeDiracX) -> FakeWMS:
    return FakeWMS(diracx)


@pytest.fixture
def proxy_upload(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """requireProxyUpload answers False (the caller has a proxy in the ProxyManager); records who asked."""
    asked: list[str] = []

    def required(self: JobManagerAdapter, claims: Any) -> bool:
        asked.append(claims.username)
        return False

    monkeypatch.setattr(JobManagerAdapter, "_proxy_upload_required", required)
    monkeypatch.setattr(JobManagerAdapter, "_uses_limited_proxy", lambda self: False)
    return asked


def make_adapter(proxy: Path, legacy: Legacy | None = None, *, fallback: bool = False) -> JobManagerAdapter:
    chosen = legacy or Legacy()
    return JobManagerAdapter(diracx_route(proxy, SERVICE, legacy_fallback=fallback), lambda: chosen, SERVICE, {})


@pytest.fixture
def adapter(proxy: Path, wms: FakeWMS, proxy_upload: list[str]) -> JobManagerAdapter:
    return make_adapter(proxy)


def as_user(write_proxy_token: Callable[[DiracxToken], Path], *, user: str = USER, properties: tuple[str, ...]) -> Path:
    """The proxy, now carrying a token of ``user`` with ``properties``."""
    access = make_jwt(
        1200, sub=f"{VO}:{user}", vo=VO, preferred_username=user, dirac_group=GROUP, dirac_properties=list(properties)
    )
    return write_proxy_token(DiracxToken(access, refresh_jwt(), int(dt.datetime.now().timestamp()) + 1185))


def ok(result: dict[str, Any]) -> Any:
    assert result["OK"] is True, result
    return result["Value"]


def refused(result: dict[str, Any]) -> dict[str, Any]:
    assert result["OK"] is False, result
    assert "eyJ" not in json.dumps(result, default=str), "no token in an answer"
    return result


# --- the surface --------------------------------------------------------------------------------------


def test_types_are_the_legacy_handlers_whole_surface() -> None:
    """Every export_ of DIRAC 9.1.22's JobManagerHandler, with its types_ list, and nothing else."""
    import DIRAC.WorkloadManagementSystem.Service.JobManagerHandler as handler

    tree = ast.parse(Path(handler.__file__).read_text())
    mixin = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JobManagerHandlerMixin")
    exports = {
        f.name.removeprefix("export_")
        for f in mixin.body
        if isinstance(f, ast.FunctionDef) and f.name.startswith("export_")
    }
    types = {
        t.targets[0].id.removeprefix("types_"): [element.id for element in t.value.elts]  # type: ignore[attr-defined]
        for t in mixin.body
        if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name) and t.targets[0].id.startswith("types_")
    }
    assert set(JobManagerAdapter.TYPES) == exports == set(types)
    assert {k: [t.__name__ for t in v] for k, v in JobManagerAdapter.TYPES.items()} == types


def test_served_and_not_served() -> None:
    assert set(JobManagerAdapter.served()) == {"submitJob", "confirmBulkSubmission", "killJob", "deleteJob", "ping"}
    assert set(JobManagerAdapter.not_served()) == {"rescheduleJob", "resetJob", "removeJob", "whoami", "echo",
                                                   "refreshConfiguration"}  # fmt: skip
    assert "state machine" in JobManagerAdapter.not_served()["rescheduleJob"]


@pytest.mark.parametrize("method", ["rescheduleJob", "resetJob", "removeJob"])
def test_unserved_methods_refuse_naming_why_and_the_option(
    adapter: JobManagerAdapter, diracx: FakeDiracX, method: str
) -> None:
    result = refused(getattr(adapter, method)([1, 2]))
    assert result["Errno"] == errno.ENOTSUP
    assert f"{SERVICE}.{method} is not served by DiracX 0.7.0 (" in result["Message"]
    assert f"/DiracX/Bridge/{SERVICE}/LegacyFallback = yes" in result["Message"]
    assert diracx.sent == []


@pytest.mark.parametrize("method", ["rescheduleJob", "resetJob", "removeJob"])
def test_unserved_methods_go_to_legacy_when_allowed(proxy: Path, wms: FakeWMS, method: str) -> None:
    legacy = Legacy()
    adapter = make_adapter(proxy, legacy, fallback=True)
    assert getattr(adapter, method)(7) == {"OK": True, "Value": f"legacy {method}"}
    assert legacy.calls == [(method, (7,))]
    assert wms.diracx.sent == []


# --- legacy job lists --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "ids"),
    [(5, [5]), ("5", [5]), (" 5 ", [5]), ([5, "6"], [5, 6]), ([6, 6, "6", 5], [6, 5]), (True, [1]),
     (0, []), ("", []), ([], []), (None, []), ("1,2", []), ("x", []), (["x"], []), (1.5, []), ({"a": 1}, [])],
)  # fmt: skip
def test_job_lists_as_the_legacy_handler_reads_them(given: Any, ids: list[int]) -> None:
    assert legacy_job_list(given, "killJob") == ids


def test_a_job_list_int_cannot_read_fails_as_legacy() -> None:
    with pytest.raises(Exception, match=r"^Server error while serving killJob: int\(\) argument must be"):
        legacy_job_list([None], "killJob")


# --- submission --------------------------------------------------------------------------------------


def test_a_single_job(adapter: JobManagerAdapter, wms: FakeWMS, proxy_upload: list[str]) -> None:
    result = adapter.submitJob(JDL)
    job = ok(result)
    assert isinstance(job, int)
    assert result["JobID"] == job
    assert result["requireProxyUpload"] is False
    assert [s.body for s in wms.diracx.requests_to(JDL_ROUTE)] == [[JDL]]
    assert proxy_upload == [USER]


def test_a_jdl_without_brackets_is_fixed_as_legacy_does(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    ok(adapter.submitJob('  Executable = "/bin/true";  '))
    assert wms.diracx.requests_to(JDL_ROUTE)[0].body == ['[Executable = "/bin/true";]']


def test_a_parametric_job_goes_whole_to_diracx(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    result = adapter.submitJob(PARAMETRIC)
    jobs = ok(result)
    assert jobs == result["JobID"] and len(jobs) == 3
    assert [s.body for s in wms.diracx.requests_to(JDL_ROUTE)] == [[PARAMETRIC]]
    assert {wms.status(j) for j in jobs} == {"Submitting"}  # awaiting confirmBulkSubmission, as legacy


def test_more_parametric_jobs_than_diracx_takes_are_expanded_and_sent_by_twenty(
    adapter: JobManagerAdapter, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobManagerAdapter, "_max_parametric_jobs", staticmethod(lambda: 100))
    values = ", ".join(f'"v{i}"' for i in range(45))
    jobs = ok(adapter.submitJob(f'[ Executable = "/bin/echo"; Arguments = "%s %n"; Parameters = {{{values}}}; ]'))
    sent = [s.body for s in wms.diracx.requests_to(JDL_ROUTE)]
    assert [len(b) for b in sent] == [20, 20, 5]
    expanded = [jdl for body in sent for jdl in body]
    assert all("Parameters" not in jdl for jdl in expanded)
    assert 'Arguments = "v0 00";' in expanded[0] and 'Arguments = "v44 44";' in expanded[44]  # %n of the whole set
    assert "ParameterNumber = 44;" in expanded[44]
    assert jobs == sorted(jobs) and len(jobs) == 45


def test_a_submission_failing_half_way_withdraws_the_jobs_already_made(
    adapter: JobManagerAdapter, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobManagerAdapter, "_max_parametric_jobs", staticmethod(lambda: 100))
    calls: list[int] = []
    original = wms.submit

    def second_fails(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 2:
            return httpx.Response(500, json={"detail": "database is gone"})
        return original(request)

    wms.diracx.overrides[("POST", JDL_ROUTE)] = second_fails
    values = ", ".join(f'"v{i}"' for i in range(30))
    result = refused(adapter.submitJob(f'[ Executable = "/bin/echo"; Arguments = "%s"; Parameters = {{{values}}}; ]'))
    assert result["Errno"] == DErrno.ERESUNA
    assert "database is gone" in result["Message"] and "see the DiracX server logs" in result["Message"]
    made = [job for job in wms.diracx.jobs]
    assert len(made) == 20 and {wms.status(j) for j in made} == {"Deleted"}


@pytest.mark.parametrize(
    ("jdl", "errno_", "message"),
    [
        ("", 0, "Server error while serving submitJob: string index out of range"),
        ("   ", 0, "Server error while serving submitJob: string index out of range"),
        ('[ Executable = "/bin/true"; Parameters = 0; ]', DErrno.EWMSJDL,
         "Invalid job description ( 1501 : Illegal number of job parameters 0)"),
        ('[ Executable = "/bin/true"; Parameters.A = {"a","b"}; Parameters.B = {"c"}; ]', DErrno.EWMSJDL,
         "Invalid job description ( 1501 : Different length of parameter vectors: for Parameters.B, 2 != 1)"),
        ('[ Executable = "/bin/true"; Parameters = 21; ]', DErrno.EWMSJDL,
         "Invalid job description ( 1501 : Number of parametric jobs exceeds the limit of 20)"),
        ('[ JobName = "no executable"; ]', 0,
         "Invalid JDL: 1 validation error for BaseJobDescriptionModel\nexecutable"),
        ('[ Executable = "/bin/true"; VirtualOrganization = "elsewhere"; ]', DErrno.EWMSSUBM,
         "Job submission error ( 1503 : Wrong Virtual Organization in JDL)"),
    ],
)  # fmt: skip
def test_legacy_refusals_of_a_jdl_before_anything_is_sent(
    adapter: JobManagerAdapter, wms: FakeWMS, jdl: str, errno_: int, message: str
) -> None:
    result = refused(adapter.submitJob(jdl))
    assert result["Errno"] == errno_
    assert result["Message"].startswith(message)
    assert "JobId" not in result  # legacy names the job ID it reserved before refusing; nothing is reserved here
    assert wms.diracx.requests_to(JDL_ROUTE) == []


def test_a_wrong_vo_keeps_the_legacy_extra_keys(adapter: JobManagerAdapter) -> None:
    result = refused(adapter.submitJob('[ Executable = "/bin/true"; VirtualOrganization = "elsewhere"; ]'))
    assert (result["Status"], result["MinorStatus"]) == ("Failed", "Wrong Virtual Organization in JDL")


def test_the_type_check_is_disets(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    result = refused(adapter.submitJob(5))
    assert result["Message"].startswith("Type mismatch in parameter 0 (starting with param 0) Received <class 'int'>")
    assert wms.diracx.sent == []


def test_no_normal_user_is_not_authorized(
    write_proxy_token: Callable[[DiracxToken], Path], wms: FakeWMS, proxy_upload: list[str]
) -> None:
    adapter = make_adapter(as_user(write_proxy_token, properties=("GenericPilot",)))
    result = refused(adapter.submitJob(JDL))
    assert (result["Errno"], result["Message"]) == (
        DErrno.EWMSSUBM,
        "Job submission error ( 1503 : Job submission not authorized)",
    )
    assert wms.diracx.requests_to(JDL_ROUTE) == []


def test_a_limited_proxy_cannot_submit(
    adapter: JobManagerAdapter, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobManagerAdapter, "_uses_limited_proxy", lambda self: True)
    result = refused(adapter.submitJob(JDL))
    assert result["Message"] == "Job submission error ( 1503 : Can't submit using a limited proxy)"
    assert wms.diracx.requests_to(JDL_ROUTE) == []


def test_a_real_proxy_is_not_limited(proxy: Path, wms: FakeWMS) -> None:
    assert make_adapter(proxy)._uses_limited_proxy() is False


@pytest.mark.parametrize(
    ("status", "errno_", "words"),
    [(400, DErrno.EVALUE, "DiracX refused submitJob (HTTP 400): JDL syntax error"),
     (403, errno.EPERM, "DiracX refused submitJob to alice (group dirac_user, properties NormalUser"),
     (503, DErrno.ERESUNA, "see the DiracX server logs")],
)  # fmt: skip
def test_diracx_failures_are_s_errors_that_say_what_happened(
    adapter: JobManagerAdapter, wms: FakeWMS, status: int, errno_: int, words: str
) -> None:
    wms.diracx.overrides[("POST", JDL_ROUTE)] = lambda r: httpx.Response(status, json={"detail": "JDL syntax error"})
    result = refused(adapter.submitJob(JDL))
    assert result["Errno"] == errno_
    assert words in result["Message"]


def test_an_unreachable_diracx_is_an_s_error(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    wms.diracx.overrides[("POST", JDL_ROUTE)] = down
    result = refused(adapter.submitJob(JDL))
    assert result["Errno"] == DErrno.ERESUNA
    assert "is unreachable" in result["Message"] and "submitJob was not done" in result["Message"]


def test_an_answer_that_is_not_diracxs_is_an_s_error_not_an_exception(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    wms.diracx.overrides[("POST", JDL_ROUTE)] = lambda r: httpx.Response(201, json={"unexpected": True})
    result = refused(adapter.submitJob(JDL))
    assert "ExecInfo" not in result


# --- requireProxyUpload --------------------------------------------------------------------------------


def test_require_proxy_upload_asks_the_proxy_manager_once_for_a_while(
    proxy: Path, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    monkeypatch.setattr(job_manager, "_proxy_answers", {})
    monkeypatch.setattr(Registry, "getDNForUsername", lambda user: {"OK": True, "Value": [f"/CN={user}", "/CN=other"]})
    asked: list[int] = []
    registered: list[dict[str, Any]] = []

    def registered_users(self: JobManagerAdapter, seconds: int) -> dict[str, Any]:
        asked.append(seconds)
        return {"OK": True, "Value": registered}

    monkeypatch.setattr(JobManagerAdapter, "_registered_users", registered_users)
    adapter = make_adapter(proxy)
    claims = adapter.session.claims()
    assert adapter._proxy_upload_required(claims) is True  # no proxy there: upload one
    registered.append({"DN": f"/CN={USER}", "Name": USER})
    assert adapter._proxy_upload_required(claims) is False
    assert adapter._proxy_upload_required(claims) is False  # remembered for a while
    assert asked == [18000, 18000]


def test_require_proxy_upload_is_true_when_it_cannot_be_asked(
    proxy: Path, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    monkeypatch.setattr(job_manager, "_proxy_answers", {})
    monkeypatch.setattr(Registry, "getDNForUsername", lambda user: {"OK": True, "Value": [f"/CN={user}"]})
    monkeypatch.setattr(JobManagerAdapter, "_registered_users", lambda self, s: {"OK": False, "Message": "down"})
    adapter = make_adapter(proxy)
    assert adapter._proxy_upload_required(adapter.session.claims()) is True
    monkeypatch.setattr(Registry, "getDNForUsername", lambda user: {"OK": False, "Message": "no such user"})
    assert adapter._proxy_upload_required(adapter.session.claims()) is True


# --- confirmBulkSubmission -------------------------------------------------------------------------------


def test_confirmation_is_the_legacy_services_as_the_caller(proxy: Path, wms: FakeWMS) -> None:
    legacy = Legacy({"confirmBulkSubmission": {"OK": True, "Value": [3, 4], "rpcStub": ["legacy"]}})
    result = make_adapter(proxy, legacy).confirmBulkSubmission([3, 4])
    assert result["Value"] == [3, 4]
    assert result["rpcStub"][1] == "confirmBulkSubmission"
    assert legacy.calls == [("confirmBulkSubmission", ([3, 4],))]
    assert wms.diracx.sent == []


def test_a_refused_confirmation_keeps_the_legacy_error(proxy: Path, wms: FakeWMS) -> None:
    from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR

    legacy = Legacy(
        {"confirmBulkSubmission": S_ERROR(DErrno.EWMSSUBM, "Requested jobs for bulk transaction are not valid")}
    )
    result = refused(make_adapter(proxy, legacy).confirmBulkSubmission([3]))
    assert result["Message"] == "Job submission error ( 1503 : Requested jobs for bulk transaction are not valid)"
    assert result["Errno"] == DErrno.EWMSSUBM
    assert refused(make_adapter(proxy, legacy).confirmBulkSubmission("3"))["Message"].startswith("Type mismatch")


# --- kill and delete -------------------------------------------------------------------------------------


KILL = ("Killed", "Marked for termination", SOURCE)
DELETE = ("Deleted", "Checking accounting", SOURCE)


def bodies(wms: FakeWMS) -> list[dict[str, list[tuple[str, str, str]]]]:
    """Each status request as {job: [(Status, MinorStatus, Source) in time order]}."""
    return [
        {
            job: [(u["Status"], u["MinorStatus"], u["Source"]) for _, u in sorted(updates.items())]
            for job, updates in s.body.items()
        }
        for s in wms.patches()
    ]


@pytest.mark.parametrize("form", [int, str, lambda j: [j], lambda j: [str(j)]])
def test_kill_an_own_waiting_job_in_any_id_form(adapter: JobManagerAdapter, wms: FakeWMS, form: Any) -> None:
    job = wms.add("Waiting")
    result = adapter.killJob(form(job))
    assert ok(result) == [job]
    assert result["requireProxyUpload"] is False and "InvalidJobIDs" not in result
    assert bodies(wms) == [{str(job): [("Killed", "Marked for termination", SOURCE)]}]
    assert wms.patches()[0].params == {"force": "false"}
    assert wms.status(job) == "Killed"


@pytest.mark.parametrize(
    ("status", "killed", "sent"),
    [("Waiting", [0], [("Killed", "Marked for termination", SOURCE)]),
     ("Running", [0], [("Killed", "Marked for termination", SOURCE)]),
     ("Done", [], None), ("Failed", [], None), ("Completed", [], None),
     ("Killed", [0], [("Killed", "Marked for termination", SOURCE)]),  # legacy kills a killed job again
     ("Deleted", [0], [("Killed", "Marked for termination", SOURCE)])],  # Deleted has no transitions listed
)  # fmt: skip
def test_kill_follows_the_legacy_state_machine(
    adapter: JobManagerAdapter, wms: FakeWMS, status: str, killed: list[int], sent: Any
) -> None:
    job = wms.add(status)
    assert ok(adapter.killJob(job)) == [job for _ in killed]
    assert bodies(wms) == ([{str(job): sent}] if sent else [])


@pytest.mark.parametrize(
    ("status", "deleted", "sent", "final"),
    [("Waiting", True, [KILL, DELETE], "Deleted"),
     ("Running", False, [KILL], "Killed"),  # killed, not deletable
     ("Done", True, [DELETE], "Deleted"),
     ("Killed", True, [KILL, DELETE], "Deleted"),
     ("Completed", False, None, "Completed")],
)  # fmt: skip
def test_delete_kills_first_where_allowed_and_answers_the_deletable(
    adapter: JobManagerAdapter, wms: FakeWMS, status: str, deleted: bool, sent: Any, final: str
) -> None:
    job = wms.add(status)
    result = adapter.deleteJob([job], False)
    assert ok(result) == ([job] if deleted else [])
    assert bodies(wms) == ([{str(job): sent}] if sent else [])
    assert wms.status(job) == final


def test_jobs_of_another_user_are_not_authorized_and_the_rest_is_done(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    mine, theirs = wms.add("Waiting"), wms.add("Waiting", owner="bob")
    result = refused(adapter.killJob([theirs, mine, 99999]))
    assert result["Message"] == "Some jobs failed deletion" and result["Errno"] == 0
    assert result["NonauthorizedJobIDs"] == [theirs]
    assert result["InvalidJobIDs"] == [99999]
    assert result["requireProxyUpload"] is False
    assert "FailedJobIDs" not in result and "Value" not in result
    assert bodies(wms) == [{str(mine): [("Killed", "Marked for termination", SOURCE)]}]  # never the other's: no 403
    assert wms.status(theirs) == "Waiting"


def test_only_foreign_jobs_send_no_status_request_and_ask_no_proxy_question(
    adapter: JobManagerAdapter, wms: FakeWMS, proxy_upload: list[str]
) -> None:
    theirs = wms.add("Waiting", owner="bob")
    result = refused(adapter.deleteJob(theirs))
    assert result["NonauthorizedJobIDs"] == [theirs] and result["requireProxyUpload"] is False
    assert wms.patches() == [] and proxy_upload == []


def test_unknown_jobs_only_are_an_s_ok_with_invalid_ids(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    result = adapter.killJob([99998, 99999])
    assert ok(result) == [] and result["InvalidJobIDs"] == [99998, 99999]
    assert result["requireProxyUpload"] is False
    assert wms.patches() == []


def test_a_job_administrator_kills_anyones_jobs(
    write_proxy_token: Callable[[DiracxToken], Path], wms: FakeWMS, proxy_upload: list[str]
) -> None:
    adapter = make_adapter(as_user(write_proxy_token, properties=("NormalUser", "JobAdministrator")))
    theirs = wms.add("Running", owner="bob", vo="othervo")
    assert ok(adapter.killJob(theirs, True)) == [theirs]
    assert wms.patches()[0].params == {"force": "false"}  # force changes nothing once filtered: never sent


def test_force_from_a_normal_user_is_no_refusal(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    """Legacy filters by the state machine first, so force changes nothing; DiracX would answer 403."""
    job, done = wms.add("Matched"), wms.add("Done")
    assert ok(adapter.killJob([job, done], True)) == [job]
    assert wms.patches()[0].params == {"force": "false"}
    assert wms.status(done) == "Done"


def test_a_generic_pilot_is_not_the_owner(
    write_proxy_token: Callable[[DiracxToken], Path], wms: FakeWMS, proxy_upload: list[str]
) -> None:
    """DiracX lets a GenericPilot manage any job; the legacy JobPolicy gives it no kill right."""
    adapter = make_adapter(as_user(write_proxy_token, user="pilot", properties=("GenericPilot",)))
    job = wms.add("Running")
    assert refused(adapter.killJob(job))["NonauthorizedJobIDs"] == [job]
    assert wms.patches() == []


@pytest.mark.parametrize("given", [[], 0, "", "1,2", "x", 1.5, {"a": 1}])
def test_nothing_to_kill_answers_an_empty_list_without_asking_diracx(
    adapter: JobManagerAdapter, wms: FakeWMS, given: Any
) -> None:
    result = adapter.killJob(given)
    assert result["Value"] == [] and "requireProxyUpload" not in result
    assert wms.diracx.sent == []


def test_a_repeated_job_is_answered_once(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    job = wms.add("Waiting")
    assert ok(adapter.killJob([job, str(job), job])) == [job]
    assert list(bodies(wms)[0]) == [str(job)]


def test_a_job_list_int_cannot_read_is_the_legacy_server_error(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    result = refused(adapter.deleteJob([None]))
    assert result["Message"].startswith("Server error while serving deleteJob: int() argument must be")
    assert wms.diracx.sent == []


def test_changes_are_dated_after_the_jobs_last_record(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    """DiracX ignores a status older than the job's last record: a client clock behind must not lose a kill."""
    job = wms.add("Waiting")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    record = {"Status": "Waiting", "MinorStatus": "x", "ApplicationStatus": "Unknown", "Source": "JobScheduling"}
    wms.diracx.logging[job].append(record | {"StatusTime": future.strftime("%Y-%m-%dT%H:%M:%SZ")})
    ok(adapter.deleteJob(job))
    moments = sorted(dt.datetime.fromisoformat(m) for m in wms.patches()[0].body[str(job)])
    assert moments[0] >= future.replace(microsecond=0) + dt.timedelta(seconds=1)
    assert moments[0] < moments[1]


def test_a_change_diracx_did_not_make_is_a_failed_job(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    job, other = wms.add("Waiting"), wms.add("Waiting")
    answer = {"success": {str(job): {}, str(other): {"Status": "Killed"}}, "failed": {}}  # {}: an update DiracX skipped
    wms.diracx.overrides[("PATCH", STATUS_ROUTE)] = lambda r: httpx.Response(200, json=answer)
    result = refused(adapter.killJob([job, other]))
    assert result["Message"] == "Some jobs failed deletion"
    assert result["FailedJobIDs"] == [job] and "NonauthorizedJobIDs" not in result


def test_jobs_gone_before_the_change_are_failed(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    job = wms.add("Waiting")
    wms.diracx.overrides[("PATCH", STATUS_ROUTE)] = lambda r: httpx.Response(404, json={"detail": "Not found"})
    assert refused(adapter.killJob(job))["FailedJobIDs"] == [job]


def test_a_refused_status_request_is_an_s_error_naming_who_lacks_what(adapter: JobManagerAdapter, wms: FakeWMS) -> None:
    job = wms.add("Waiting")
    wms.diracx.overrides[("PATCH", STATUS_ROUTE)] = lambda r: httpx.Response(403, json={"detail": "Forbidden"})
    result = refused(adapter.killJob(job))
    assert result["Errno"] == errno.EPERM
    assert "to alice (group dirac_user" in result["Message"] and "JobAdministrator, or NormalUser" in result["Message"]


def test_many_jobs_are_read_and_changed_in_chunks(
    adapter: JobManagerAdapter, wms: FakeWMS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_manager, "ID_CHUNK", 3)
    jobs = [wms.add("Waiting") for _ in range(7)]
    assert ok(adapter.killJob(jobs)) == jobs
    assert [len(s.body["search"][0].get("values", [0])) for s in wms.diracx.requests_to(SEARCH)] == [3, 3, 1]
    assert [len(b) for b in bodies(wms)] == [3, 3, 1]


@pytest.mark.parametrize(
    ("properties", "job", "why"),
    [(("NormalUser", "JobSharing"), {"owner": "bob"}, "JobSharing"),  # a group member's job
     (("NormalUser",), {"vo": "othervo"}, "another VO"),  # the same user name in another VO
     (("NormalUser",), {"status": "Staging"}, "stager tasks")],
)  # fmt: skip
def test_what_diracx_cannot_do_as_legacy_is_not_served(
    write_proxy_token: Callable[[DiracxToken], Path], wms: FakeWMS, proxy_upload: list[str],
    properties: tuple[str, ...], job: dict[str, str], why: str,
) -> None:  # fmt: skip
    adapter = make_adapter(as_user(write_proxy_token, properties=properties))
    target = wms.add(**job)
    result = refused(adapter.killJob(target))
    assert result["Errno"] == errno.ENOTSUP
    assert f"{SERVICE}.killJob is not served by DiracX 0.7.0" in result["Message"] and why in result["Message"]
    assert wms.patches() == []
    legacy = Legacy()
    fallback = JobManagerAdapter(
        diracx_route(adapter._route.caller.proxy_path, SERVICE, legacy_fallback=True), lambda: legacy
    )
    assert fallback.killJob(target) == {"OK": True, "Value": "legacy killJob"}
    assert legacy.calls == [("killJob", (target,))]
    assert wms.patches() == []


def test_require_proxy_upload_is_asked_when_the_caller_owns_a_job(
    adapter: JobManagerAdapter, wms: FakeWMS, proxy_upload: list[str]
) -> None:
    ok(adapter.killJob(wms.add("Done")))  # nothing killed, but the caller owns the job: legacy asks
    assert proxy_upload == [USER]


def test_no_secret_in_any_failure(adapter: JobManagerAdapter, wms: FakeWMS, token: DiracxToken) -> None:
    job = wms.add("Waiting")
    wms.diracx.overrides[("PATCH", STATUS_ROUTE)] = lambda r: httpx.Response(
        500, json={"detail": f"crashed on Authorization: {r.headers['Authorization']}"}
    )
    result = refused(adapter.killJob(job))
    assert token.access_token not in result["Message"] and "<redacted>" in result["Message"]
