"""adapters/job_monitoring.py against a MockTransport DiracX: pagination, filters, legacy shapes and texts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from core_test_helpers import FakeDiracX, diracx_route, job_row
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge.adapters import job_monitoring
from diracx_bridge.adapters.job_monitoring import JOB_ATTRIBUTES, JobMonitoringAdapter, _just_before

SEARCH = "/api/jobs/search"


class NoLegacy:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the legacy service was called ({name})")


def make_adapter(proxy: Path, **bridge: Any) -> JobMonitoringAdapter:
    return JobMonitoringAdapter(diracx_route(proxy, **bridge), NoLegacy, "WorkloadManagement/JobMonitoring", {})


@pytest.fixture
def adapter(proxy: Path, diracx: FakeDiracX) -> JobMonitoringAdapter:
    diracx.jobs = {i: job_row(i) for i in range(1, 11)}
    return make_adapter(proxy)


def searches(diracx: FakeDiracX) -> list[Any]:
    return diracx.requests_to(SEARCH)


def ok(result: dict[str, Any]) -> Any:
    assert result["OK"] is True, result
    return result["Value"]


# --- pagination --------------------------------------------------------------------------------------


def test_every_page_is_followed(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.jobs = {i: {"JobID": i, "Status": "Done"} for i in range(1, 25_001)}
    adapter = make_adapter(proxy, search_page_size=10_000)
    jobs = ok(adapter.getJobs())
    assert jobs == [str(i) for i in range(1, 25_001)]
    sent = searches(diracx)
    assert len(sent) == 3
    # Keyset pages: always page 1, each one after the last JobID seen (offsets can skip rows).
    assert [s.params for s in sent] == [{"page": "1", "per_page": "10000"}] * 3
    assert [s.body["search"] for s in sent] == [
        [],
        [{"parameter": "JobID", "operator": "gt", "value": 10_000}],
        [{"parameter": "JobID", "operator": "gt", "value": 20_000}],
    ]
    assert all(s.body["sort"] == [{"parameter": "JobID", "direction": "asc"}] for s in sent)


def test_pages_of_the_configured_size(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.jobs = {i: job_row(i) for i in range(1, 251)}
    adapter = make_adapter(proxy, search_page_size=100)
    states = ok(adapter.getJobsStatus(list(range(1, 251))))
    assert len(states) == 250
    assert [s.body["search"][-1].get("value") for s in searches(diracx)] == [None, 100, 200]


def test_single_page_answer_is_one_request(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.getJobs({"Status": "Waiting"})) == [str(i) for i in range(1, 11)]
    assert len(searches(diracx)) == 1


def test_a_job_removed_between_pages_skips_nothing(proxy: Path, diracx: FakeDiracX) -> None:
    """With offsets, deleting job 3 after page 1 would shift job 11 onto page 1's slot: lost."""
    diracx.jobs = {i: job_row(i) for i in range(1, 31)}
    adapter = make_adapter(proxy, search_page_size=10)
    original = diracx._search

    def search_then_delete(request, body):  # type: ignore[no-untyped-def]
        response = original(request, body)
        diracx.jobs.pop(3, None)
        return response

    diracx._search = search_then_delete  # type: ignore[method-assign]
    assert ok(adapter.getJobs()) == [str(i) for i in range(1, 31)]


def test_exact_multiple_of_the_page_size_stops_at_the_total(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.jobs = {i: job_row(i) for i in range(1, 21)}
    adapter = make_adapter(proxy, search_page_size=10)
    assert len(ok(adapter.getJobs())) == 20
    assert len(searches(diracx)) == 2  # no third request for an empty page


# --- job ID filters ----------------------------------------------------------------------------------


def test_one_job_id_uses_eq(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    assert ok(adapter.getJobsStatus(7)) == {"7": {"Status": "Waiting"}}
    body = searches(diracx)[0].body
    assert body["search"] == [{"parameter": "JobID", "operator": "eq", "value": 7}]
    assert body["parameters"] == ["JobID", "Status"]


@pytest.mark.parametrize("given", ["7", [7], ["7"], [7, 7]])
def test_one_job_id_in_any_form_uses_eq(adapter: JobMonitoringAdapter, diracx: FakeDiracX, given: Any) -> None:
    assert ok(adapter.getJobsSites(given)) == {"7": {"Site": "ANY"}}
    assert searches(diracx)[0].body["search"] == [{"parameter": "JobID", "operator": "eq", "value": 7}]


@pytest.mark.parametrize("given", [[3, 1, 2], "3, 1, 2", ["3", 1, "2", 3]])
def test_several_job_ids_use_in(adapter: JobMonitoringAdapter, diracx: FakeDiracX, given: Any) -> None:
    states = ok(adapter.getJobsStates(given))
    assert states == {str(i): {"ApplicationStatus": "Unknown", "MinorStatus": "Pilot Agent Submission",
                               "Status": "Waiting"} for i in (3, 1, 2)}  # fmt: skip
    assert searches(diracx)[0].body["search"] == [{"parameter": "JobID", "operator": "in", "values": [3, 1, 2]}]


def test_many_job_ids_are_chunked(
    adapter: JobMonitoringAdapter, diracx: FakeDiracX, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_monitoring, "ID_CHUNK", 3)
    sites = ok(adapter.getJobsSites(list(range(1, 8))))
    assert sorted(int(k) for k in sites) == list(range(1, 8))
    assert [s.body["search"] for s in searches(diracx)] == [
        [{"parameter": "JobID", "operator": "in", "values": [1, 2, 3]}],
        [{"parameter": "JobID", "operator": "in", "values": [4, 5, 6]}],
        [{"parameter": "JobID", "operator": "eq", "value": 7}],
    ]


def test_default_chunk_size_bounds_the_request(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.jobs = {i: {"JobID": i, "Status": "Done"} for i in range(1, 12_001)}
    statuses = ok(make_adapter(proxy).getJobsStatus(list(range(1, 12_001))))
    assert len(statuses) == 12_000
    assert [len(s.body["search"][0]["values"]) for s in searches(diracx)] == [5000, 5000, 2000]


def test_unknown_jobs_are_left_out(adapter: JobMonitoringAdapter) -> None:
    assert ok(adapter.getJobsStatus([1, 999])) == {"1": {"Status": "Waiting"}}
    assert ok(adapter.getJobSummary(999)) == {}
    assert ok(adapter.getJobAttributes(999)) == {}


def test_bad_job_ids_answer_the_legacy_text_without_calling_diracx(
    adapter: JobMonitoringAdapter, diracx: FakeDiracX
) -> None:
    result = adapter.getJobsStatus("1,x")
    assert result["OK"] is False
    assert result["Message"] == (
        "ValueError(\"invalid literal for int() with base 10: 'x'\"): invalid literal for int() with base 10: 'x'"
    )
    type_error = adapter.getJobsStatus(1.5)
    assert type_error["Message"].startswith("Type mismatch in parameter 0 (starting with param 0) Received")
    assert diracx.sent == []


# --- attributes ---------------------------------------------------------------------------------------


def test_attribute_names_keep_the_callers_case(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    attrs = ok(adapter.getJobAttributes(1, ["status", "SITE", "jobName"]))
    assert attrs == {"SITE": "ANY", "jobName": "job1", "status": "Waiting"}
    assert list(attrs) == ["SITE", "jobName", "status"]  # the legacy service sorts the names it was given
    assert searches(diracx)[0].body["parameters"] == ["JobID", "JobName", "Site", "Status"]


def test_attribute_list_as_a_comma_string(adapter: JobMonitoringAdapter) -> None:
    assert ok(adapter.getJobAttributes(2, "Status, Site")) == {"Site": "ANY", "Status": "Waiting"}


def test_single_attribute(adapter: JobMonitoringAdapter) -> None:
    assert ok(adapter.getJobAttribute(3, "minorstatus")) == "Pilot Agent Submission"
    assert ok(adapter.getJobAttribute(3, "SubmissionTime")) == dt.datetime(2025, 1, 2, 3, 4, 5)


def test_unknown_attribute_is_the_legacy_error(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    result = adapter.getJobAttributes(1, ["Status", "Foo"])
    assert result["OK"] is False
    assert result["Message"] == "Unknown job attribute: Foo"
    assert result["Errno"] == 0
    assert adapter.getJobAttribute(1, "Bar")["Message"] == "Unknown job attribute: Bar"
    assert diracx.sent == []


def test_job_summary_has_every_attribute_with_legacy_types(adapter: JobMonitoringAdapter) -> None:
    summary = ok(adapter.getJobSummary(4))
    assert list(summary) == sorted(JOB_ATTRIBUTES)
    assert summary["JobID"] == 4
    assert summary["SubmissionTime"] == dt.datetime(2025, 1, 2, 3, 4, 5)
    assert summary["LastUpdateTime"] == dt.datetime(2025, 1, 2, 3, 0, 0)  # +01:00 in DiracX, naive UTC here
    assert summary["SubmissionTime"].tzinfo is None
    assert summary["HeartBeatTime"] is None
    assert summary["VerifiedFlag"] == "True"
    assert summary["AccountedFlag"] == "Failed"


def test_jobs_summary_is_keyed_like_the_wire(adapter: JobMonitoringAdapter) -> None:
    summaries = ok(adapter.getJobsSummary([1, 2]))
    assert set(summaries) == {"1", "2"}
    assert summaries["2"]["JobName"] == "job2"


# --- getJobs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ("2025-01-02 03:04:05", "2025-01-02 03:04:04"),
        ("2025-01-02", "2025-01-01 23:59:59"),
        (dt.date(2025, 1, 2), "2025-01-01 23:59:59"),
        (dt.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02 03:04:04"),
        # The wire (like DISET's) keeps datetimes to the second: the fraction never reaches the service.
        (dt.datetime(2025, 1, 2, 3, 4, 5, 123456), "2025-01-02 03:04:04"),
        # A fraction in a string does reach it: MySQL's ">= 03:04:05.x" starts at 03:04:06.
        ("2025-01-02 03:04:05.5", "2025-01-02 03:04:05"),
    ],
)
def test_cut_date_becomes_gt_one_second_before(
    adapter: JobMonitoringAdapter, diracx: FakeDiracX, cut: Any, expected: str
) -> None:
    ok(adapter.getJobs({"Status": "Waiting"}, cut))
    assert searches(diracx)[0].body["search"] == [
        {"parameter": "Status", "operator": "eq", "value": "Waiting"},
        {"parameter": "LastUpdateTime", "operator": "gt", "value": expected},
    ]


def test_just_before_a_datetime_with_microseconds() -> None:
    assert _just_before(dt.datetime(2025, 1, 2, 3, 4, 5, 123456)) == "2025-01-02 03:04:05"
    assert _just_before(dt.datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02 03:04:04"
    assert _just_before(dt.datetime(2025, 1, 1, 0, 0, 0)) == "2024-12-31 23:59:59"


def test_get_jobs_filters(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.getJobs({"status": ["Waiting", "Running"], "Site": ["ANY"], "JobID": "3"}))
    assert searches(diracx)[0].body["search"] == [
        {"parameter": "Status", "operator": "in", "values": ["Waiting", "Running"]},
        {"parameter": "Site", "operator": "eq", "value": "ANY"},
        {"parameter": "JobID", "operator": "eq", "value": 3},
    ]
    assert searches(diracx)[0].body["parameters"] == ["JobID"]


def test_get_jobs_returns_strings(adapter: JobMonitoringAdapter) -> None:
    jobs = ok(adapter.getJobs({"Owner": "alice"}))
    assert jobs == [str(i) for i in range(1, 11)]
    assert all(isinstance(j, str) for j in jobs)


#: What the legacy service answered on the grid-in-a-box (MariaDB), word for word.
LEGACY_EMPTY_IN = (
    'Execution failed.: ((1064, "You have an error in your SQL syntax; check the manual that corresponds to your '
    "MariaDB server version for the right syntax to use near '{near}' at line 1\") )"
)


@pytest.mark.parametrize(
    ("attr_dict", "cut", "near"),
    [
        ({"Status": []}, None, ")"),
        ({"Status": [], "Owner": "ciuser"}, None, ") AND `Owner` = 'ciuser'"),
        ({"Owner": "o'neil", "Status": []}, None, ")"),
        ({"Status": [], "Site": ["A", "B"], "Foo": None}, None, ") AND `Site` IN ( 'A', 'B' ) AND `Foo` IS NULL"),
        ({"Status": []}, "2025-01-02", ") AND `LastUpdateTime` >= '2025-01-02'"),
        ({"Status": [], "JobGroup": "x" * 100}, None, (") AND `JobGroup` = '" + "x" * 100)[:80]),
        ({"Colour": [], "Status": "Done"}, None, ") AND `Status` = 'Done'"),  # a syntax error comes before names
    ],
)
def test_get_jobs_with_an_empty_list_is_mysqls_syntax_error(
    adapter: JobMonitoringAdapter, diracx: FakeDiracX, attr_dict: dict[str, Any], cut: Any, near: str
) -> None:
    """Legacy writes ``IN (  )``, which MySQL refuses while parsing, quoting the rest of the statement."""
    result = adapter.getJobs(attr_dict, cut)
    assert result["OK"] is False
    assert result["Errno"] == DErrno.EMYSQL
    assert LEGACY_EMPTY_IN.format(near=near) in result["Message"]
    assert diracx.sent == []


def test_get_jobs_unknown_column_is_mysqls_refusal(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    result = adapter.getJobs({"Colour": "blue"})
    assert result["OK"] is False
    assert result["Errno"] == DErrno.EMYSQL
    assert "Unknown column 'Colour' in 'WHERE'" in result["Message"]
    assert diracx.sent == []


# --- getJobLoggingInfo --------------------------------------------------------------------------------


def test_logging_info_as_legacy_five_item_sequences(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    diracx.logging[5] = [
        {"Status": "Received", "MinorStatus": "Job accepted", "ApplicationStatus": "Unknown",
         "StatusTime": "2025-01-02T03:04:05Z", "Source": "JobManager"},
        {"Status": "Waiting", "MinorStatus": "Pilot Agent Submission", "ApplicationStatus": "Unknown",
         "StatusTime": "2025-01-02T05:04:06+02:00", "Source": "JobScheduling"},
    ]  # fmt: skip
    records = ok(adapter.getJobLoggingInfo(5))
    assert records == [
        ["Received", "Job accepted", "Unknown", "2025-01-02 03:04:05", "JobManager"],
        ["Waiting", "Pilot Agent Submission", "Unknown", "2025-01-02 03:04:06", "JobScheduling"],
    ]
    assert all(len(r) == 5 for r in records)
    body = searches(diracx)[0].body
    assert body["parameters"] == ["JobID", "LoggingInfo"]
    assert body["search"] == [{"parameter": "JobID", "operator": "eq", "value": 5}]


@pytest.mark.parametrize("job_id", [6, 999])
def test_no_logging_info_is_the_legacy_error(adapter: JobMonitoringAdapter, job_id: int) -> None:
    result = adapter.getJobLoggingInfo(job_id)
    assert result["OK"] is False
    assert result["Message"] == f"No Logging information for job {job_id}"
    assert result["Errno"] == 0


# --- errors from DiracX reach the caller as S_ERROR ----------------------------------------------------


def test_forbidden_search_is_an_s_error(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    import errno

    import httpx

    diracx.overrides[("POST", SEARCH)] = lambda _r: httpx.Response(403, json={"detail": "no"})
    result = adapter.getJobsStatus([1, 2])
    assert result["OK"] is False
    assert result["Errno"] == errno.EPERM
    assert "getJobsStatus" in result["Message"]
    assert "JobAdministrator" in result["Message"]
    assert result["rpcStub"][1:] == ["getJobsStatus", [[1, 2]]]


# --- DISET's refusals before the method runs --------------------------------------------------------


def test_too_few_arguments_is_refused_as_the_handler_does(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    result = adapter.getJobAttributes()
    assert result["OK"] is False
    assert result["Message"] == "Function getJobAttributes expects at least 1 arguments"
    assert "rpcStub" in result
    assert searches(diracx) == []


def test_too_many_arguments_is_a_server_error_not_an_exception(adapter: JobMonitoringAdapter) -> None:
    result = adapter.getJobsStates([1], "extra")
    assert result["OK"] is False
    assert result["Message"].startswith("Server error while serving getJobsStates: ")
    assert "ExecInfo" not in result


def test_iso_cut_date_with_offset_is_accepted_like_mysql(adapter: JobMonitoringAdapter, diracx: FakeDiracX) -> None:
    ok(adapter.getJobs({}, "2025-01-02T03:04:05+00:00"))
    assert searches(diracx)[0].body["search"] == [
        {"parameter": "LastUpdateTime", "operator": "gt", "value": "2025-01-02 03:04:04"}
    ]
