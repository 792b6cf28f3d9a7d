"""Legacy <-> DiracX value conversions shared by the adapters.

Each function reproduces one behaviour of the legacy stack that callers can observe: the DISET
argument check, JobDB's parsing of job IDs, MySQL's value types. Their refusals carry the legacy
text, so a script that matched on it still does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from diracx_bridge import errors

#: Jobs columns DIRAC reads as DATETIME (naive UTC on the legacy side, ISO 8601 in DiracX).
DATETIME_COLUMNS = frozenset(
    {"SubmissionTime", "RescheduleTime", "LastUpdateTime", "StartExecTime", "HeartBeatTime", "EndExecTime"}
)
#: Jobs columns that are ENUM('True','False'[,'Failed']) in DIRAC and booleans in DiracX.
FLAG_COLUMNS = frozenset({"VerifiedFlag", "AccountedFlag"})
#: The columns whose DiracX value differs in type from the legacy one; the others pass as they are.
CONVERTED_COLUMNS = DATETIME_COLUMNS | FLAG_COLUMNS


def check_types(method: str, args: Sequence[Any], types: Mapping[str, list[Any]]) -> None:
    """The DISET handler's argument check (``types_<method>``), with its exact refusal texts."""
    expected = types[method]
    for index in range(min(len(expected), len(args))):
        wanted = expected[index]
        if wanted is None:
            continue
        allowed = tuple(wanted) if isinstance(wanted, (list, tuple)) else wanted
        if not isinstance(args[index], allowed):
            raise errors.LegacyRefusal(
                "Type mismatch in parameter %d (starting with param 0) Received %s, expected %s"  # noqa: UP031
                % (index, type(args[index]), str(wanted))
            )
    if len(args) < len(expected):
        raise errors.LegacyRefusal(f"Function {method} expects at least {len(expected)} arguments")


def _legacy_failure(exc: Exception) -> errors.BridgeError:
    """What DIRACCommon's ``convertToReturnValue`` makes of an exception, as the service does."""
    return errors.LegacyRefusal(f"{exc!r}: {exc}")


def job_ids_of(job_ids: Any) -> list[int]:
    """Job IDs as JobDB reads them (int, ``"1, 2"``, or a list of int/str), in order, once each.

    The legacy service fails on a repeated ID (MySQL error 1062 on its temporary table); the
    adapter answers for each job once instead: a documented improvement, not a parity gap.
    """
    try:
        if isinstance(job_ids, str):
            ids = [int(j) for j in job_ids.replace(" ", "").split(",")]
        elif isinstance(job_ids, int):
            ids = [int(job_ids)]  # a bool is an int for DISET's check; JobDB's int() makes it 0/1
        else:
            ids = [int(j) for j in job_ids]
    except (TypeError, ValueError) as exc:
        raise _legacy_failure(exc) from None
    return list(dict.fromkeys(ids))


def naive_utc(value: str | dt.datetime) -> dt.datetime:
    """A DiracX timestamp (ISO 8601, with offset) as DIRAC hands it out: naive, in UTC."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def from_diracx_value(column: str, value: Any) -> Any:
    """A ``Jobs`` value from DiracX's JSON, with the type MySQL gives the legacy service."""
    if value is None:
        return None
    if column in DATETIME_COLUMNS:
        return naive_utc(value)
    if column in FLAG_COLUMNS:
        return str(value) if isinstance(value, bool) else value  # "Failed" stays "Failed"
    return value
