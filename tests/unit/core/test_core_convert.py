"""adapters/convert.py: the legacy argument check, job-ID parsing and value types, compared with DIRAC's own code."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import pytest
from DIRACCommon.Core.Utilities.ReturnValues import convertToReturnValue

from diracx_bridge import activation, errors
from diracx_bridge.adapters import job_monitoring
from diracx_bridge.adapters._convert import check_types, from_diracx_value, job_ids_of, naive_utc


@functools.cache
def handler_class() -> type:
    """DIRAC's JobMonitoringHandler, imported without switching the bridge on in this test process.

    Importing a handler makes DIRAC list its extensions, which calls the bridge's entry point
    (activation): that would replace DIRAC's selector and install the proxy hooks for every
    test that runs afterwards.
    """
    active_before = activation.status()["active"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIRACX_BRIDGE_DISABLE", "1")
        from DIRAC.WorkloadManagementSystem.Service.JobMonitoringHandler import JobMonitoringHandler
    assert activation.status()["active"] is active_before
    return JobMonitoringHandler


def diset_check(method: str, args: list[Any]) -> dict[str, Any]:
    """What DISET's RequestHandler answers for these arguments (its real, private check)."""
    from DIRAC.Core.DISET.RequestHandler import RequestHandler

    check = RequestHandler._RequestHandler__checkExpectedArgumentTypes  # type: ignore[attr-defined]
    return check(handler_class(), method, args)


def test_adapter_types_are_the_handler_types() -> None:
    JobMonitoringHandler = handler_class()

    for method, types in job_monitoring._TYPES.items():
        assert getattr(JobMonitoringHandler, f"types_{method}") == types, method


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("getJobsStates", [1.5]),
        ("getJobsStatus", [None]),
        ("getJobsSites", [{"1": 2}]),
        ("getJobSummary", ["12"]),
        ("getJobsSummary", [12]),
        ("getJobsSummary", ["1,2"]),
        ("getJobAttribute", [12, 5]),
        ("getJobAttribute", ["12", "Status"]),
        ("getJobLoggingInfo", [[1]]),
        ("getJobAttributes", ["1", ["Status"]]),
    ],
)
def test_check_types_refuses_with_disets_exact_text(method: str, args: list[Any]) -> None:
    expected = diset_check(method, args)
    assert expected["OK"] is False
    with pytest.raises(errors.BridgeError) as caught:
        check_types(method, args, job_monitoring._TYPES)
    assert caught.value.result["Message"] == expected["Message"]
    assert caught.value.result["Errno"] == 0
    assert caught.value.result["Message"].startswith("Type mismatch in parameter ")


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("getJobsStates", [1]),
        ("getJobsStates", ["1,2"]),
        ("getJobsStates", [[1, "2"]]),
        ("getJobSummary", [12]),
        ("getJobSummary", [True]),  # bool is an int, for DISET too
        ("getJobAttributes", [12, None]),
        ("getJobAttributes", [12, ["Status"]]),
        ("getJobAttribute", [12, "Status"]),
        ("getJobs", [{"Status": "Done"}, "2025-01-01"]),
        ("getJobs", [None, None]),
    ],
)
def test_check_types_accepts_what_diset_accepts(method: str, args: list[Any]) -> None:
    assert diset_check(method, args)["OK"] is True
    check_types(method, args, job_monitoring._TYPES)  # no exception


# --- job_ids_of ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, [5]),
        ("7", [7]),
        ("1, 2", [1, 2]),
        (" 3 ,4,5 ", [3, 4, 5]),
        (["1", 2, "3"], [1, 2, 3]),
        ([3, 1, 3, 2, 1], [3, 1, 2]),
        (["4", 4, " 4"], [4]),
        ("2,1,2", [2, 1]),
        ([], []),
        (True, [1]),
    ],
)
def test_job_ids_of(given: Any, expected: list[int]) -> None:
    ids = job_ids_of(given)
    assert ids == expected
    assert all(type(i) is int for i in ids)


def legacy_message(parse: Callable[[], Any]) -> str:
    """The S_ERROR text the legacy service answers when JobDB's own parsing raises."""
    result = convertToReturnValue(parse)()
    assert result["OK"] is False
    return result["Message"]


@pytest.mark.parametrize(
    ("given", "legacy_parse"),
    [
        ("1,a", lambda: [int(j) for j in "1,a".replace(" ", "").split(",")]),
        ("1,,2", lambda: [int(j) for j in "1,,2".replace(" ", "").split(",")]),
        ("", lambda: [int(j) for j in "".replace(" ", "").split(",")]),
        (["1", "x"], lambda: [(int(j),) for j in ["1", "x"]]),
        ([1, None], lambda: [(int(j),) for j in [1, None]]),
        ([[1]], lambda: [(int(j),) for j in [[1]]]),
    ],
)
def test_job_ids_of_refuses_with_the_legacy_text(given: Any, legacy_parse: Callable[[], Any]) -> None:
    with pytest.raises(errors.BridgeError) as caught:
        job_ids_of(given)
    assert caught.value.result["Message"] == legacy_message(legacy_parse)
    assert caught.value.result["Errno"] == 0


def test_job_ids_of_value_error_text() -> None:
    with pytest.raises(errors.BridgeError) as caught:
        job_ids_of("1, a")
    assert str(caught.value) == (
        "ValueError(\"invalid literal for int() with base 10: 'a'\"): invalid literal for int() with base 10: 'a'"
    )


# --- naive_utc / from_diracx_value ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2025-01-02T03:04:05Z", dt.datetime(2025, 1, 2, 3, 4, 5)),
        ("2025-01-02T03:04:05+00:00", dt.datetime(2025, 1, 2, 3, 4, 5)),
        ("2025-01-02T05:04:05+02:00", dt.datetime(2025, 1, 2, 3, 4, 5)),
        ("2025-01-01T23:30:00-04:00", dt.datetime(2025, 1, 2, 3, 30, 0)),
        ("2025-01-02T03:04:05.250000Z", dt.datetime(2025, 1, 2, 3, 4, 5, 250000)),
        ("2025-01-02 03:04:05", dt.datetime(2025, 1, 2, 3, 4, 5)),
        (dt.datetime(2025, 1, 2, 3, 4, 5), dt.datetime(2025, 1, 2, 3, 4, 5)),
        (
            dt.datetime(2025, 1, 2, 4, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            dt.datetime(2025, 1, 2, 3, 4, 5),
        ),
    ],
)
def test_naive_utc(given: str | dt.datetime, expected: dt.datetime) -> None:
    result = naive_utc(given)
    assert result == expected
    assert result.tzinfo is None


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("SubmissionTime", "2025-01-02T03:04:05Z", dt.datetime(2025, 1, 2, 3, 4, 5)),
        ("LastUpdateTime", "2025-01-02T04:04:05+01:00", dt.datetime(2025, 1, 2, 3, 4, 5)),
        ("HeartBeatTime", None, None),
        ("EndExecTime", None, None),
        ("VerifiedFlag", True, "True"),
        ("VerifiedFlag", False, "False"),
        ("AccountedFlag", "Failed", "Failed"),
        ("AccountedFlag", "True", "True"),
        ("Status", "Done", "Done"),
        ("UserPriority", 3, 3),
        ("JobID", 12, 12),
    ],
)
def test_from_diracx_value(column: str, value: Any, expected: Any) -> None:
    result = from_diracx_value(column, value)
    assert result == expected
    assert type(result) is type(expected)
