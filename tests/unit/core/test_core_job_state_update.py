"""adapters/job_state_update.py against a MockTransport DiracX: what is sent, the legacy answers and refusals.

``Writes`` below stands for DiracX 0.7.0's three write routes (status, heartbeat, metadata) with
its job policy (owner, GenericPilot, JobAdministrator; FORCE_STATUS for JobAdministrator only),
its all-or-nothing 403 and its 404s; the built-in fake answers the job search.
"""

from __future__ import annotations

import datetime as dt
import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from core_test_helpers import (
    GROUP,
    URL,
    USER,
    VO,
    FakeDiracX,
    assert_no_secret,
    diracx_route,
    job_row,
    make_jwt,
    refresh_jwt,
)
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge.adapters import job_state_update
from diracx_bridge.adapters.job_state_update import JobStateUpdateAdapter
from diracx_bridge.tokens import DiracxToken

SERVICE = "WorkloadManagement/JobStateUpdate"
STATUS, HEARTBEAT, METADATA, SEARCH = (
    "/api/jobs/status",
    "/api/jobs/heartbeat",
    "/api/jobs/metadata",
    "/api/jobs/search",
)
WRITES = (STATUS, HEARTBEAT, METADATA)
USER_PROPS = ["NormalUser"]
ADMIN_PROPS = ["NormalUser", "JobAdministrator"]
PILOT_PROPS = ["GenericPilot", "LimitedDelegation"]


class Legacy:
    """Stands for the legacy DISET client: records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> dict[str, Any]:
            self.calls.append((method, args))
            return {"OK": True, "Value": f"legacy {method}"}

        return call


class Writes:
    """DiracX 0.7.0's write routes, as far as the adapter can observe them."""

    def __init__(self, fake: FakeDiracX) -> None:
        self.fake = fake
        self.commands: dict[int, list[dict[str, Any]]] = {}
        self.parameters: dict[int, dict[str, Any]] = {}
        self.heartbeat_failures = 0
        fake.overrides[("PATCH", STATUS)] = self.status
        fake.overrides[("PATCH", HEARTBEAT)] = self.heartbeat
        fake.overrides[("PATCH", METADATA)] = self.metadata

    @staticmethod
    def _claims(request: httpx.Request) -> dict[str, Any]:
        bearer = request.headers["Authorization"].removeprefix("Bearer ")
        return jwt.decode(bearer, options={"verify_signature": False})

    def _forbidden(self, request: httpx.Request, job_ids: list[int]) -> bool:
        """WMSAccessPolicy, MANAGE: pilots and admins anything, a NormalUser only all-own, existing jobs."""
        claims = self._claims(request)
        properties = set(claims["dirac_properties"])
        if properties & {"GenericPilot", "JobAdministrator"}:
            return False
        if "NormalUser" not in properties:
            return True
        rows = [self.fake.jobs.get(j) for j in job_ids]
        return not all(row and row["Owner"] == claims["preferred_username"] for row in rows)

    def status(self, request: httpx.Request) -> httpx.Response:
        body = _body(request)
        jobs = [int(j) for j in body]
        if (
            request.url.params.get("force") == "true"
            and "JobAdministrator" not in self._claims(request)["dirac_properties"]
        ):
            return httpx.Response(403, json={"detail": "Forbidden"})
        if self._forbidden(request, jobs):
            return httpx.Response(403, json={"detail": "Forbidden"})
        success, failed = {}, {}
        for job_id, records in body.items():
            row = self.fake.jobs.get(int(job_id))
            if row is None:
                failed[job_id] = {"detail": "Not found"}
                continue
            for when in records:
                assert dt.datetime.fromisoformat(when).tzinfo is not None, "DiracX refuses naive time stamps (400)"
            last = records[max(records)]
            row["Status"] = last.get("Status", row["Status"])
            entry = {"Status": row["Status"], "MinorStatus": None, "ApplicationStatus": None, "HeartBeatTime": None,
                     "StartExecTime": None, "EndExecTime": None, "LastUpdateTime": "2025-01-01T00:00:00Z"}  # fmt: skip
            for record in records.values():
                for key in ("MinorStatus", "ApplicationStatus"):
                    if record.get(key):
                        entry[key] = record[key]
            success[job_id] = entry
        answer = {"success": success, "failed": failed}
        return httpx.Response(200 if success else 404, json=answer if success else {"detail": answer})

    def heartbeat(self, request: httpx.Request) -> httpx.Response:
        body = _body(request)
        if self._forbidden(request, [int(j) for j in body]):
            return httpx.Response(403, json={"detail": "Forbidden"})
        for job_id in body:
            if int(job_id) not in self.fake.jobs:
                return httpx.Response(404, json={"detail": f"Job {job_id} not found"})
        if self.heartbeat_failures:
            self.heartbeat_failures -= 1
            return httpx.Response(500, text="Internal Server Error")
        commands = [c for j in body for c in self.commands.pop(int(j), [])]
        return httpx.Response(200, json=commands)

    def metadata(self, request: httpx.Request) -> httpx.Response:
        body = _body(request)
        if self._forbidden(request, [int(j) for j in body]):
            return httpx.Response(403, json={"detail": "Forbidden"})
        for job_id, values in body.items():
            if int(job_id) not in self.fake.jobs and set(values) - {"Site"}:
                return httpx.Response(404, json={"detail": f"Job {job_id} not found"})
        for job_id, values in body.items():
            row = self.fake.jobs.get(int(job_id))
            if row is not None and "Site" in values:
                row["Site"] = values["Site"]
            self.parameters.setdefault(int(job_id), {}).update({k: v for k, v in values.items() if k != "Site"})
        return httpx.Response(204)


def _body(request: httpx.Request) -> Any:
    import json

    return json.loads(request.content)


def token_with(properties: list[str], user: str = USER) -> DiracxToken:
    access = make_jwt(
        1200, sub=f"{VO}:{user}", vo=VO, iss=URL, preferred_username=user, dirac_group=GROUP,
        dirac_properties=properties,
    )  # fmt: skip
    return DiracxToken(access, refresh_jwt(), int(time.time() + 1185))


@pytest.fixture
def writes(diracx: FakeDiracX) -> Writes:
    diracx.jobs = {i: job_row(i) for i in range(1, 6)}
    diracx.jobs[5]["Owner"] = "bob"  # another user's job
    return Writes(diracx)


@pytest.fixture
def as_props(write_proxy_token: Callable[[DiracxToken], Path]) -> Callable[[list[str]], Path]:
    return lambda properties: write_proxy_token(token_with(properties))


def make(proxy: Path, *, fallback: bool = False, legacy: Legacy | None = None) -> JobStateUpdateAdapter:
    route = diracx_route(proxy, SERVICE, legacy_fallback=fallback)
    return JobStateUpdateAdapter(route, lambda: legacy if legacy is not None else Legacy(), SERVICE, {})


@pytest.fixture
def adapter(as_props: Callable[[list[str]], Path], writes: Writes) -> JobStateUpdateAdapter:
    return make(as_props(USER_PROPS))


def ok(result: dict[str, Any]) -> Any:
    assert result["OK"] is True, result
    assert "rpcStub" in result
    return result["Value"]


def refused(result: dict[str, Any], message: str, code: int = 0) -> None:
    assert result["OK"] is False, result
    assert result["Message"] == message
    assert result["Errno"] == code
    assert "rpcStub" in result


def not_served(result: dict[str, Any], *words: str) -> None:
    assert result["OK"] is False, result
    assert result["Errno"] == errno.ENOTSUP
    assert f"{SERVICE}." in result["Message"] and " is not served by DiracX 0.7.0 for this call (" in result["Message"]
    assert f"/DiracX/Bridge/{SERVICE}/LegacyFallback = yes" in result["Message"]
    for word in words:
        assert word in result["Message"]


def sent(diracx: FakeDiracX, path: str) -> list[Any]:
    return [s.body for s in diracx.requests_to(path)]


def written(diracx: FakeDiracX) -> list[Any]:
    return [s for s in diracx.sent if s.path in WRITES]


# --- the surface --------------------------------------------------------------------------------------


def test_types_are_the_legacy_handlers_whole_surface() -> None:
    from DIRAC.WorkloadManagementSystem.Service.JobStateUpdateHandler import JobStateUpdateHandlerMixin as Handler

    legacy = {name[len("types_") :]: getattr(Handler, name) for name in dir(Handler) if name.startswith("types_")}
    assert legacy == JobStateUpdateAdapter.TYPES
    assert set(JobStateUpdateAdapter.served()) == set(legacy) | {"ping"}
    assert JobStateUpdateAdapter.not_served() == {"echo": "", "refreshConfiguration": "", "whoami": ""}


def test_the_registry_finds_it() -> None:
    from diracx_bridge.adapters import adapter_for

    assert adapter_for(SERVICE) is JobStateUpdateAdapter


def test_legacy_constants_match_the_installed_dirac() -> None:
    from DIRAC.WorkloadManagementSystem.Service import JobStateUpdateHandler as handler
    from DIRACCommon.WorkloadManagementSystem.Client.JobStatus import JOB_STATES

    assert job_state_update.MUTABLE_ATTRIBUTES == handler.MUTABLE_JOB_ATTRIBUTES
    assert set(JOB_STATES) == job_state_update.DIRAC_STATUSES
    assert {str(p) for p in handler.PRIVILEGED_JOB_PROPERTIES} == set(job_state_update._PRIVILEGED)


def test_diracx_model_constants_match_diracx_070() -> None:
    """The adapter names DiracX 0.7.0's models; the installed diracx must agree (or the tables move on)."""
    from diracx.core.models import JobAttributes, JobParameters, JobStatus
    from diracx.db.sql.job.db import JobDB

    attributes = {name for n, f in JobAttributes.model_fields.items() for name in (n, f.alias)}
    assert attributes == job_state_update.DIRACX_ATTRIBUTE_NAMES
    assert set(JobParameters.model_fields) == job_state_update.DIRACX_PARAMETER_FIELDS
    typed = {f.alias: str(f.annotation) for f in JobParameters.model_fields.values() if f.alias}
    assert {a for a, t in typed.items() if t == "int | None"} == job_state_update.INT_PARAMETERS
    assert {a for a, t in typed.items() if t == "str | None"} == job_state_update.STR_PARAMETERS
    assert {s.value for s in JobStatus} == job_state_update.DIRACX_STATUSES
    assert JobDB.heartbeat_fields == job_state_update.HEARTBEAT_FIELDS


# --- setJobStatus -----------------------------------------------------------------------------------


def test_set_job_status_sends_one_aware_record_and_answers_legacy_names(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX
) -> None:
    before = dt.datetime.now(dt.UTC)
    assert ok(adapter.setJobStatus(1, "Running", "Application", "JobWrapper", None, False)) == [
        ["MinorStatus"],
        ["Application"],
    ]
    (body,) = sent(diracx, STATUS)
    ((when, record),) = body["1"].items()
    assert record == {"Status": "Running", "MinorStatus": "Application", "Source": "JobWrapper"}
    moment = dt.datetime.fromisoformat(when)
    assert moment.tzinfo is not None and before <= moment <= dt.datetime.now(dt.UTC)
    assert diracx.requests_to(STATUS)[0].params == {"force": "false"}


def test_set_job_status_with_only_a_status_answers_empty_lists(adapter: JobStateUpdateAdapter) -> None:
    assert ok(adapter.setJobStatus("2", "Running", "", "src")) == [[], []]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2025-01-02 03:04:05", "2025-01-02T03:04:05+00:00"),
        ("2025-01-02 03:04:05.123456", "2025-01-02T03:04:05.123456+00:00"),
        ("2025-01-02T03:04:05", "2025-01-02T03:04:05+00:00"),
        ("2025-01-02T04:04:05+01:00", "2025-01-02T03:04:05+00:00"),
        ("2025-01-02T03:04:05Z", "2025-01-02T03:04:05+00:00"),
        (dt.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05+00:00"),
    ],
)
def test_time_stamps_are_utc_for_diracx(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, given: Any, expected: str
) -> None:
    ok(adapter.setJobStatus(1, "", "minor", "src", given, False))
    assert list(sent(diracx, STATUS)[0]["1"]) == [expected]


def test_an_unreadable_time_stamp_is_refused_before_sending(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    result = adapter.setJobStatus(1, "", "minor", "src", "yesterday", False)
    assert result["OK"] is False and result["Errno"] == DErrno.EVALUE
    assert "'yesterday' is not a time stamp" in result["Message"] and "YYYY-MM-DD HH:MM:SS" in result["Message"]
    assert written(diracx) == []


def test_nothing_to_set_is_an_access_check_and_none(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.setJobStatus(1, "", "", "src", None, False)) is None
    assert sent(diracx, METADATA) == [{"1": {}}]
    assert sent(diracx, STATUS) == []
    refused(adapter.setJobStatus(5, "", "", "src", None, False), "Not authorized to modify job 5")


def test_force_from_a_non_administrator_is_dropped(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.setJobStatus(1, "Done", "x", "src", None, True))
    assert diracx.requests_to(STATUS)[0].params == {"force": "false"}


def test_force_from_an_administrator_is_sent(
    as_props: Callable[[list[str]], Path], writes: Writes, diracx: FakeDiracX
) -> None:
    ok(make(as_props(ADMIN_PROPS)).setJobStatus(5, "Done", "x", "src", None, True))
    assert diracx.requests_to(STATUS)[0].params == {"force": "true"}


def test_another_users_job_is_the_legacy_refusal(adapter: JobStateUpdateAdapter) -> None:
    refused(adapter.setJobStatus(5, "Done", "x", "src", None, False), "Not authorized to modify job 5")
    refused(adapter.setJobStatus("5", "Done", "x", "src", None, False), "Not authorized to modify job 5")


def test_a_missing_job_is_not_authorized_for_users_and_pilots(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    for properties in (USER_PROPS, PILOT_PROPS):
        refused(make(as_props(properties)).setJobStatus(99, "Done", "x", "s"), "Not authorized to modify job 99")


def test_a_missing_job_is_no_matching_job_for_administrators(
    as_props: Callable[[list[str]], Path], writes: Writes, diracx: FakeDiracX
) -> None:
    adapter = make(as_props(ADMIN_PROPS))
    refused(adapter.setJobStatus(99, "Done", "x", "s"), "No Matching Job")
    # A 200 that lists the job as failed is a failure too, never lost in the answer.
    diracx.overrides[("PATCH", STATUS)] = lambda r: httpx.Response(
        200, json={"success": {"1": {"Status": "Done"}}, "failed": {"99": {"detail": "Not found"}}}
    )
    refused(adapter.setJobStatus(99, "Done", "x", "s"), "No Matching Job")


def test_a_job_failed_for_another_reason_is_an_error(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    diracx.overrides[("PATCH", STATUS)] = lambda r: httpx.Response(
        200, json={"success": {}, "failed": {"1": {"detail": "Kaboom"}}}
    )
    result = adapter.setJobStatus(1, "Done", "x", "s")
    assert result["OK"] is False and result["Errno"] == DErrno.EVALUE
    assert "job 1: Kaboom" in result["Message"]


def test_operator_or_jobsharing_refused_by_diracx_is_not_served(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    """Legacy honours these properties on others' jobs; DiracX does not: its 403 may not be legacy's answer."""
    for properties in (["NormalUser", "Operator"], ["NormalUser", "JobSharing"], ["JobMonitor"]):
        not_served(make(as_props(properties)).setJobStatus(5, "Done", "x", "s"), "Operator, TrustedHost and JobSharing")


def test_operator_refused_by_diracx_falls_back_when_allowed(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    legacy = Legacy()
    adapter = make(as_props(["NormalUser", "Operator"]), fallback=True, legacy=legacy)
    assert adapter.setJobStatus(5, "Done", "x", "s", None, False) == {"OK": True, "Value": "legacy setJobStatus"}
    assert legacy.calls == [("setJobStatus", (5, "Done", "x", "s", None, False))]


def test_scouting_is_not_served_and_sends_nothing(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    not_served(adapter.setJobStatus(1, "Scouting", "x", "s"), "its JobStatus has no 'Scouting'")
    assert written(diracx) == []


def test_scouting_goes_to_legacy_with_the_fallback(
    as_props: Callable[[list[str]], Path], writes: Writes, diracx: FakeDiracX
) -> None:
    legacy = Legacy()
    result = make(as_props(USER_PROPS), fallback=True, legacy=legacy).setJobStatus("1", "Scouting", "x", "s")
    assert result["Value"] == "legacy setJobStatus"
    assert legacy.calls == [("setJobStatus", ("1", "Scouting", "x", "s"))]
    assert written(diracx) == []


def test_an_unknown_status_is_the_state_machines_refusal(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    refused(adapter.setJobStatus(1, "Bogus", "x", "s"), "getNextState: 'Bogus' is not a valid state")
    assert written(diracx) == []


def test_an_unknown_status_forced_by_an_administrator_is_not_served(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    not_served(make(as_props(ADMIN_PROPS)).setJobStatus(1, "Bogus", "x", "s", None, True), "no 'Bogus'")


def test_a_bad_job_id_is_the_handlers_int_failure(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    refused(
        adapter.setJobStatus("12abc", "Done", "x", "s"),
        "Server error while serving setJobStatus: invalid literal for int() with base 10: '12abc'",
    )
    assert diracx.sent == []


def test_disets_type_check_comes_first(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    result = adapter.setJobStatus(1.5, "Done", "x", "s")
    assert result["Message"].startswith("Type mismatch in parameter 0 (starting with param 0) Received")
    refused(adapter.setJobStatus(1, "Done"), "Function setJobStatus expects at least 4 arguments")
    assert diracx.sent == []


# --- setJobStatusBulk ---------------------------------------------------------------------------------


def test_bulk_sends_every_record_in_utc(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    status_dict = {
        "2025-01-02 03:04:05.5": {"Status": "Running", "MinorStatus": "m1", "Source": "JobWrapper", "Foo": "x"},
        "2025-01-02 03:04:06": {"ApplicationStatus": "a2", "Status": "", "Source": "JobWrapper"},
    }
    assert ok(adapter.setJobStatusBulk(1, status_dict, False)) == [["MinorStatus", "ApplicationStatus"], ["m1", "a2"]]
    assert sent(diracx, STATUS) == [
        {
            "1": {
                "2025-01-02T03:04:05.500000+00:00": {"Status": "Running", "MinorStatus": "m1", "Source": "JobWrapper"},
                "2025-01-02T03:04:06+00:00": {"ApplicationStatus": "a2", "Source": "JobWrapper"},
            }
        }
    ]


def test_bulk_keeps_the_rpc_stub_for_the_failover(adapter: JobStateUpdateAdapter) -> None:
    status_dict = {"2025-01-02 03:04:05": {"MinorStatus": "m"}}
    result = adapter.setJobStatusBulk("1", status_dict, False)
    assert result["rpcStub"] == [
        [SERVICE, {"skipCACheck": False, "keepAliveLapse": 150}],
        "setJobStatusBulk",
        ["1", status_dict, False],
    ]


def test_bulk_with_nothing_checks_access_then_fails_as_legacy(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX
) -> None:
    refused(
        adapter.setJobStatusBulk(1, {}, False), "Server error while serving setJobStatusBulk: list index out of range"
    )
    assert sent(diracx, METADATA) == [{"1": {}}]
    refused(adapter.setJobStatusBulk(5, {}, False), "Not authorized to modify job 5")


def test_bulk_record_that_is_not_a_dictionary(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    result = adapter.setJobStatusBulk(1, {"2025-01-02 03:04:05": "Running"}, False)
    assert result["Errno"] == DErrno.EVALUE and "is a str, not a dictionary" in result["Message"]
    assert written(diracx) == []


def test_bulk_with_two_spellings_of_one_instant_is_not_served(adapter: JobStateUpdateAdapter) -> None:
    same = {"2025-01-02 03:04:05": {"MinorStatus": "a"}, "2025-01-02T03:04:05": {"MinorStatus": "b"}}
    not_served(adapter.setJobStatusBulk(1, same, False), "the same instant")


def test_bulk_non_string_values_are_not_served(adapter: JobStateUpdateAdapter) -> None:
    not_served(adapter.setJobStatusBulk(1, {"2025-01-02 03:04:05": {"MinorStatus": 5}}, False), "as a string")


# --- setJobApplicationStatus ------------------------------------------------------------------------


def test_application_status(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.setJobApplicationStatus("3", "step 2", "")) == [["ApplicationStatus"], ["step 2"]]
    (record,) = sent(diracx, STATUS)[0]["3"].values()
    assert record == {"ApplicationStatus": "step 2"}  # no Source: DiracX's default is legacy's, Unknown


def test_empty_application_status_is_an_access_check(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.setJobApplicationStatus(3, "", "src")) is None
    assert sent(diracx, STATUS) == [] and sent(diracx, METADATA) == [{"3": {}}]


# --- setJobAttribute and setJobSite -----------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["Owner", "JobGroup", "site", "UserPriority"])
def test_immutable_attributes_are_refused_as_legacy_does(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, attribute: str
) -> None:
    message = f"Job attribute '{attribute}' cannot be modified through JobStateUpdate"
    refused(adapter.setJobAttribute(5, attribute, "x"), message)
    assert diracx.sent == []


@pytest.mark.parametrize(
    "attribute", ["Status", "MinorStatus", "ApplicationStatus", "StartExecTime", "EndExecTime", "HeartBeatTime"]
)
def test_attributes_diracx_cannot_set_alone_are_not_served(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, attribute: str
) -> None:
    not_served(adapter.setJobAttribute(1, attribute, "2025-01-01 00:00:00"), attribute)
    assert written(diracx) == []


def test_attribute_not_served_goes_to_legacy_with_the_fallback(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    legacy = Legacy()
    result = make(as_props(USER_PROPS), fallback=True, legacy=legacy).setJobAttribute(1, "HeartBeatTime", "x")
    assert result["Value"] == "legacy setJobAttribute" and legacy.calls == [
        ("setJobAttribute", (1, "HeartBeatTime", "x"))
    ]


def test_site_answers_the_rows_mysql_changed(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.setJobSite(1, "DIRAC.X.ch")) == 1
    assert ok(adapter.setJobSite("1", "DIRAC.X.ch")) == 0  # the same value: MySQL changes nothing
    assert ok(adapter.setJobAttribute(1, "Site", "DIRAC.Y.ch")) == 1
    assert diracx.jobs[1]["Site"] == "DIRAC.Y.ch"
    assert sent(diracx, METADATA)[-1] == {"1": {"Site": "DIRAC.Y.ch"}}
    assert sent(diracx, SEARCH)[0]["search"] == [{"parameter": "JobID", "operator": "eq", "value": 1}]


def test_site_of_a_missing_job(as_props: Callable[[list[str]], Path], writes: Writes) -> None:
    assert ok(make(as_props(ADMIN_PROPS)).setJobSite(99, "DIRAC.X.ch")) == 0
    refused(make(as_props(USER_PROPS)).setJobSite(99, "DIRAC.X.ch"), "Not authorized to modify job 99")
    refused(make(as_props(USER_PROPS)).setJobSite(5, "DIRAC.X.ch"), "Not authorized to modify job 5")


def test_site_from_a_caller_diracx_does_not_let_search_is_not_served(
    as_props: Callable[[list[str]], Path], writes: Writes, diracx: FakeDiracX
) -> None:
    diracx.overrides[("POST", SEARCH)] = lambda r: httpx.Response(403, json={"detail": "Forbidden"})
    not_served(make(as_props(PILOT_PROPS)).setJobSite(1, "DIRAC.X.ch"), "GenericPilot token may not search")
    assert written(diracx) == []


# --- job parameters --------------------------------------------------------------------------------


def test_set_job_parameter(adapter: JobStateUpdateAdapter, diracx: FakeDiracX, writes: Writes) -> None:
    assert ok(adapter.setJobParameter("2", "HostName", "wn1.example.org")) is None
    assert sent(diracx, METADATA) == [{"2": {"HostName": "wn1.example.org"}}]


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("Site", "X", "job attribute or a model field"),
        ("site", "X", "job attribute or a model field"),
        ("Status", "X", "job attribute or a model field"),
        ("host_name", "X", "job attribute or a model field"),
        ("timestamp", "X", "job attribute or a model field"),
        ("CPUNormalizationFactor", "N/A", "as an integer"),
        ("NormCPUTime(s)", "12.5", "as an integer"),
        ("PayloadPID", "1e3", "as an integer"),
    ],
)
def test_parameters_diracx_would_store_differently_are_not_served(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, name: str, value: str, why: str
) -> None:
    not_served(adapter.setJobParameter(1, name, value), why)
    assert written(diracx) == []


def test_integral_typed_parameters_are_served(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.setJobParameters(1, [["PayloadPID", "1234"], ["TotalCPUTime(s)", 12.0], ["Memory(MB)", 512]]))
    assert sent(diracx, METADATA) == [{"1": {"PayloadPID": "1234", "TotalCPUTime(s)": 12.0, "Memory(MB)": 512}}]


@pytest.mark.parametrize(
    ("pairs", "why"),
    [
        ([["HostName", 5]], "as a string"),
        ([["X", float("nan")]], "NaN"),
        ([["X", [1.0, float("inf")]]], "NaN"),
        ([["Memory(MB)", True]], "as an integer"),
    ],
)
def test_set_job_parameters_not_served(adapter: JobStateUpdateAdapter, pairs: list[Any], why: str) -> None:
    not_served(adapter.setJobParameters(1, pairs), why)


def test_set_job_parameters_keeps_value_types(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.setJobParameters(1, [("A", "1"), ["B", 2], ["C", [1, "x"]], ["A", "last"]]))
    assert sent(diracx, METADATA) == [{"1": {"A": "last", "B": 2, "C": [1, "x"]}}]


def test_set_job_parameters_that_are_not_pairs(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    refused(
        adapter.setJobParameters(1, [["A", "1", "extra"]]),
        "Server error while serving setJobParameters: "
        "dictionary update sequence element #0 has length 3; 2 is required",
    )
    assert sent(diracx, METADATA) == [{"1": {}}]  # legacy checks the caller's right first
    refused(adapter.setJobParameters(5, [["A"]]), "Not authorized to modify job 5")


NO_JOB_99 = "Job management error ( 1504 : Job 99 not found: DiracX keeps no parameters of a job that does not exist)"


def test_parameters_of_a_missing_job(as_props: Callable[[list[str]], Path], writes: Writes) -> None:
    refused(make(as_props(ADMIN_PROPS)).setJobParameter(99, "A", "1"), NO_JOB_99, DErrno.EWMSJMAN)
    refused(make(as_props(PILOT_PROPS)).setJobParameter(99, "A", "1"), "Not authorized to modify job 99")
    refused(make(as_props(USER_PROPS)).setJobParameter(99, "A", "1"), "Not authorized to modify job 99")


def test_jobs_parameter_writes_strings(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.setJobsParameter({1: ["A", 1], "2": ("B", 2.5)})) is None
    assert sent(diracx, METADATA) == [{"1": {"A": "1"}, "2": {"B": "2.5"}}]
    assert ok(adapter.setJobsParameter({})) is None
    assert len(sent(diracx, METADATA)) == 1


def test_jobs_parameter_writes_what_it_may_and_reports_the_last_refusal(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, writes: Writes
) -> None:
    result = adapter.setJobsParameter({1: ["A", "1"], 5: ["A", "5"], 2: ["A", "2"], 99: ["A", "9"]})
    refused(result, "Not authorized to modify job 99")
    assert writes.parameters == {1: {"A": "1"}, 2: {"A": "2"}}
    assert sent(diracx, METADATA)[0] == {"1": {"A": "1"}, "5": {"A": "5"}, "2": {"A": "2"}, "99": {"A": "9"}}


def test_jobs_parameter_by_an_administrator_with_a_missing_job(
    as_props: Callable[[list[str]], Path], writes: Writes
) -> None:
    result = make(as_props(ADMIN_PROPS)).setJobsParameter({99: ["A", "9"], 5: ["A", "5"]})
    refused(result, NO_JOB_99, DErrno.EWMSJMAN)
    assert writes.parameters == {5: {"A": "5"}}


def test_jobs_parameter_malformed(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    refused(
        adapter.setJobsParameter({1: "A"}), "Server error while serving setJobsParameter: string index out of range"
    )
    refused(
        adapter.setJobsParameter({"x": ["A", "1"]}),
        "Server error while serving setJobsParameter: invalid literal for int() with base 10: 'x'",
    )
    assert diracx.sent == []


# --- sendHeartBeat ---------------------------------------------------------------------------------


def test_heartbeat_sends_data_and_standard_output(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    dynamic = {"LoadAverage": 1.5, "MemoryUsed": 1024, "Vsize": "2048.5", "CPUConsumed": 0.1}
    assert ok(adapter.sendHeartBeat("1", dynamic, {"StandardOutput": "last lines"})) == {}
    assert sent(diracx, HEARTBEAT) == [{"1": {**dynamic, "StandardOutput": "last lines"}}]
    assert sent(diracx, METADATA) == []  # one request for the usual heartbeat


def test_heartbeat_other_static_data_is_written_first(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.sendHeartBeat(1, {}, {"StandardOutput": 5, "CPUNormalizationFactor": "12"}))
    assert [s.path for s in written(diracx)] == [METADATA, HEARTBEAT]
    assert sent(diracx, METADATA) == [{"1": {"StandardOutput": 5, "CPUNormalizationFactor": "12"}}]
    assert sent(diracx, HEARTBEAT) == [{"1": {}}]


def test_heartbeat_answers_commands_as_legacy(adapter: JobStateUpdateAdapter, writes: Writes) -> None:
    writes.commands[1] = [{"job_id": 1, "command": "Kill", "arguments": None}]
    assert ok(adapter.sendHeartBeat(1, {}, {})) == {"Kill": ""}
    writes.commands[1] = [{"job_id": 1, "command": "Kill", "arguments": "now"}]
    assert ok(adapter.sendHeartBeat("1", {}, {})) == {"Kill": "now"}


@pytest.mark.parametrize(
    ("dynamic", "why"),
    [
        ({"Foo": 1.0}, "not 'Foo'"),
        ({"StandardOutput": "x"}, "not 'StandardOutput'"),
        ({"HeartBeatTime": "2025-01-01 00:00:00"}, "not 'HeartBeatTime'"),
        ({"LoadAverage": "high"}, "LoadAverage='high'"),
        ({"LoadAverage": "1.50"}, "LoadAverage='1.50'"),
        ({"LoadAverage": True}, "LoadAverage=True"),
        ({"LoadAverage": float("inf")}, "LoadAverage=inf"),
        ({"MemoryUsed": 10**16}, "MemoryUsed="),
    ],
)
def test_heartbeat_data_diracx_would_store_differently_is_not_served(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, dynamic: dict[str, Any], why: str
) -> None:
    not_served(adapter.sendHeartBeat(1, dynamic, {"A": "b"}), why)
    assert written(diracx) == []


def test_heartbeat_refused_for_its_second_is_sent_again(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, writes: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_state_update, "HEARTBEAT_RETRY_DELAY", 0.0)
    writes.heartbeat_failures = 1
    assert ok(adapter.sendHeartBeat(1, {"LoadAverage": 1.0}, {})) == {}
    assert len(sent(diracx, HEARTBEAT)) == 2
    writes.heartbeat_failures = 2
    result = adapter.sendHeartBeat(1, {"LoadAverage": 1.0}, {})
    assert result["OK"] is False and result["Errno"] == DErrno.ERESUNA and "HTTP 500" in result["Message"]
    # Without heartbeat data there is no second to collide on: no retry.
    writes.heartbeat_failures = 1
    assert adapter.sendHeartBeat(1, {}, {})["Errno"] == DErrno.ERESUNA
    assert len(sent(diracx, HEARTBEAT)) == 5


def test_heartbeat_of_a_missing_job(as_props: Callable[[list[str]], Path], writes: Writes) -> None:
    refused(make(as_props(ADMIN_PROPS)).sendHeartBeat(99, {}, {"A": "x"}), "Job 99 not found")
    refused(make(as_props(ADMIN_PROPS)).sendHeartBeat(99, {}, {}), "Job 99 not found")
    refused(make(as_props(PILOT_PROPS)).sendHeartBeat(99, {}, {}), "Not authorized to modify job 99")
    refused(make(as_props(USER_PROPS)).sendHeartBeat(5, {}, {}), "Not authorized to modify job 5")


def test_heartbeat_malformed_answer(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    diracx.overrides[("PATCH", HEARTBEAT)] = lambda r: httpx.Response(200, json=[{"command": "Kill"}])
    result = adapter.sendHeartBeat(1, {}, {})
    assert result["Errno"] == DErrno.ERESUNA and "a heartbeat answer without 'job_id'" in result["Message"]


# --- updateJobFromStager ----------------------------------------------------------------------------


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(job_state_update.time, "sleep", slept.append)
    return slept


def test_stager_on_a_job_in_staging(adapter: JobStateUpdateAdapter, diracx: FakeDiracX, no_sleep: list[float]) -> None:
    diracx.jobs[1]["Status"] = "Staging"
    assert ok(adapter.updateJobFromStager(1, "Done")) == [["MinorStatus"], ["JobScheduling"]]
    (record,) = sent(diracx, STATUS)[0]["1"].values()
    assert record == {"Status": "Checking", "MinorStatus": "JobScheduling", "Source": "StagerSystem"}
    assert no_sleep == []


def test_stager_failed_staging_sets_only_the_minor_status(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, no_sleep: list[float]
) -> None:
    diracx.jobs[1]["Status"] = "Staging"
    ok(adapter.updateJobFromStager("1", "Failed"))
    (record,) = sent(diracx, STATUS)[0]["1"].values()
    assert record == {"MinorStatus": "Staging input files failed", "Source": "StagerSystem"}


def test_stager_waits_for_staging(adapter: JobStateUpdateAdapter, diracx: FakeDiracX, no_sleep: list[float]) -> None:
    original = diracx._search

    def later(request: httpx.Request, body: Any) -> httpx.Response:
        if len(diracx.requests_to(SEARCH)) == 3:
            diracx.jobs[1]["Status"] = "Staging"
        return original(request, body)

    diracx._search = later  # type: ignore[method-assign]
    assert ok(adapter.updateJobFromStager(1, "Done")) == "Found job in Staging after 2 seconds"
    assert no_sleep == [1, 1]


def test_stager_gives_up_after_ten_seconds(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, no_sleep: list[float]
) -> None:
    assert ok(adapter.updateJobFromStager(1, "Done")) == "Job is not in Staging after 10 seconds"
    assert len(no_sleep) == 10 and sent(diracx, STATUS) == []


def test_stager_on_a_missing_job(as_props: Callable[[list[str]], Path], writes: Writes, no_sleep: list[float]) -> None:
    assert ok(make(as_props(ADMIN_PROPS)).updateJobFromStager(99, "Done")) == "No Matching Job"
    refused(make(as_props(USER_PROPS)).updateJobFromStager(5, "Done"), "Not authorized to modify job 5")


def test_stager_by_a_pilot_is_not_served(
    as_props: Callable[[list[str]], Path], writes: Writes, diracx: FakeDiracX, no_sleep: list[float]
) -> None:
    diracx.overrides[("POST", SEARCH)] = lambda r: httpx.Response(403, json={"detail": "Forbidden"})
    not_served(make(as_props(PILOT_PROPS)).updateJobFromStager(1, "Done"), "may not search")


# --- failures from DiracX: S_ERRORs with a DErrno code and what to do, never an exception ----------------


CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("setJobStatus", (1, "Running", "m", "s", None, False)),
    ("setJobStatusBulk", (1, {"2025-01-02 03:04:05": {"MinorStatus": "m"}}, False)),
    ("setJobApplicationStatus", (1, "a", "s")),
    ("setJobSite", (1, "DIRAC.X.ch")),
    ("setJobAttribute", (1, "Site", "DIRAC.X.ch")),
    ("setJobParameter", (1, "A", "b")),
    ("setJobParameters", (1, [["A", "b"]])),
    ("setJobsParameter", ({1: ["A", "b"]},)),
    ("sendHeartBeat", (1, {"LoadAverage": 1.0}, {"A": "b"})),
    ("updateJobFromStager", (1, "Done")),
]


def _fail_every_route(diracx: FakeDiracX, response: Callable[[httpx.Request], httpx.Response]) -> None:
    for path in WRITES:
        diracx.overrides[("PATCH", path)] = response
    diracx.overrides[("POST", SEARCH)] = response


@pytest.mark.parametrize(("method", "args"), CALLS)
@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (401, {"detail": "Invalid JWT"}, DErrno.ENOAUTH, "dirac-proxy-init"),
        (422, {"detail": [{"msg": "bad"}]}, DErrno.EVALUE, "HTTP 422"),
        (400, {"detail": "nope"}, DErrno.EVALUE, "(HTTP 400): nope"),
        (500, "Internal Server Error", DErrno.ERESUNA, "see the DiracX server logs"),
        (503, {"detail": "DB down"}, DErrno.ERESUNA, "HTTP 503"),
    ],
)
def test_diracx_errors_are_s_errors(
    adapter: JobStateUpdateAdapter,
    diracx: FakeDiracX,
    token_file: DiracxToken,
    method: str,
    args: tuple[Any, ...],
    status: int,
    body: Any,
    code: int,
    words: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_state_update, "HEARTBEAT_RETRY_DELAY", 0.0)
    diracx.jobs[1]["Status"] = "Staging"
    answer = (
        (lambda r: httpx.Response(status, text=body))
        if isinstance(body, str)
        else (lambda r: httpx.Response(status, json=body))
    )
    _fail_every_route(diracx, answer)
    result = getattr(adapter, method)(*args)
    assert result["OK"] is False, result
    assert result["Errno"] == code, result
    assert words in result["Message"]
    assert method in result["Message"]
    assert "rpcStub" in result and "ExecInfo" not in result
    assert_no_secret(result, token_file)


@pytest.mark.parametrize(("method", "args"), CALLS)
def test_diracx_down_is_unreachable(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, method: str, args: tuple[Any, ...]
) -> None:
    diracx.jobs[1]["Status"] = "Staging"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    _fail_every_route(diracx, down)
    result = getattr(adapter, method)(*args)
    assert result["OK"] is False and result["Errno"] == DErrno.ERESUNA
    assert f"DiracX at {URL} is unreachable" in result["Message"] and "Check /DiracX/URL" in result["Message"]


@pytest.mark.parametrize(("method", "args"), CALLS)
def test_answers_that_are_not_diracxs(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, method: str, args: tuple[Any, ...]
) -> None:
    diracx.jobs[1]["Status"] = "Staging"
    _fail_every_route(diracx, lambda r: httpx.Response(200, text="<html>proxy error</html>"))
    diracx.overrides[("PATCH", METADATA)] = lambda r: httpx.Response(204)
    result = getattr(adapter, method)(*args)
    if method in ("setJobParameter", "setJobParameters", "setJobsParameter"):
        assert ok(result) is None  # 204: nothing to read
        return
    assert result["OK"] is False and result["Errno"] == DErrno.ERESUNA, result
    assert "not JSON" in result["Message"]


def test_a_status_answer_of_the_wrong_shape(adapter: JobStateUpdateAdapter, diracx: FakeDiracX) -> None:
    diracx.overrides[("PATCH", STATUS)] = lambda r: httpx.Response(200, json={"ok": True})
    result = adapter.setJobStatus(1, "Running", "m", "s")
    assert result["Errno"] == DErrno.ERESUNA and "a status answer without 'success'" in result["Message"]


def test_no_proxy_says_run_dirac_proxy_init(tmp_path: Path, diracx: FakeDiracX) -> None:
    result = make(tmp_path / "absent").setJobStatus(1, "Running", "m", "s")
    assert result["OK"] is False and result["Errno"] == DErrno.EPROXYFIND
    assert "dirac-proxy-init" in result["Message"]


def test_a_server_without_the_heartbeat_route_does_not_serve_heartbeats(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX
) -> None:
    from core_test_helpers import openapi_document

    from diracx_bridge import capabilities

    routes = capabilities.ROUTES - {capabilities.JOBS_HEARTBEAT}
    diracx.overrides[("GET", "/api/openapi.json")] = lambda r: httpx.Response(200, json=openapi_document(routes))
    result = adapter.sendHeartBeat(1, {}, {})
    assert result["Errno"] == errno.ENOTSUP and "PATCH /api/jobs/heartbeat" in result["Message"]
    assert written(diracx) == []
    assert ok(adapter.setJobParameter(1, "A", "b")) is None


@pytest.fixture
def token_file(as_props: Callable[[list[str]], Path]) -> DiracxToken:
    from diracx_bridge.tokens import read_token

    return read_token(as_props(USER_PROPS))


@pytest.mark.parametrize(("method", "args"), CALLS)
def test_a_diracx_403_is_legacys_refusal_for_every_method(
    adapter: JobStateUpdateAdapter, diracx: FakeDiracX, method: str, args: tuple[Any, ...]
) -> None:
    diracx.jobs[1]["Status"] = "Staging"
    for path in WRITES:
        diracx.overrides[("PATCH", path)] = lambda r: httpx.Response(403, json={"detail": "Forbidden"})
    refused(getattr(adapter, method)(*args), "Not authorized to modify job 1")


def test_a_bug_in_the_adapter_is_an_s_error_not_an_exception(
    adapter: JobStateUpdateAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(job_state_update, "_utc_iso", broken)
    result = adapter.setJobStatus(1, "Running", "m", "s")
    assert result["OK"] is False and "a bug" in result["Message"]
    assert "ExecInfo" not in result and "rpcStub" in result
