"""Legacy <-> DiracX value conversions shared by the adapters.

Each function reproduces one behaviour of the legacy stack that callers can observe: the DISET
argument check, JobDB's parsing of job IDs, MySQL's value types. Their refusals carry the legacy
text, so a script that matched on it still does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from DIRACCommon.Core.Utilities import DErrno

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


#: The server DIRAC's databases run on, as its parse errors name it (DIRAC's own set-up uses MariaDB).
SQL_SERVER = "MariaDB"
#: MySQL/MariaDB quote at most this many characters of the statement in a parse error ("near '%-.80s'").
_NEAR_CHARS = 80


def mysql_error(code: int, text: str) -> errors.LegacyRefusal:
    """A MySQL server error as DIRAC's ``MySQL._query`` reports it (``DErrno.EMYSQL``)."""
    return errors.LegacyRefusal(f"Execution failed.: ({(code, text)!r} )", code=DErrno.EMYSQL)


def sql_literal(value: Any) -> str:
    """A value as DIRAC's ``MySQL._escapeValues`` writes it into a statement (everything quoted)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(sql_literal(v) for v in value) + ")"
    if isinstance(value, bytes):
        value = value.decode()
    escaped = str(value)
    for char, replacement in (
        ("\\", "\\\\"),
        ("\0", "\\0"),
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("'", "\\'"),
        ('"', '\\"'),
        ("\x1a", "\\Z"),
    ):
        escaped = escaped.replace(char, replacement)
    return f"'{escaped}'"


def empty_in_list_error(attr_dict: Mapping[str, Any], cut_date: Any = None) -> errors.LegacyRefusal | None:
    """MySQL's refusal of the ``IN (  )`` that DIRAC's ``buildCondition`` writes for an empty list, or None.

    The statement is rebuilt as ``buildCondition`` writes it (``AND``-joined conditions in the
    order of the dict, then ``LastUpdateTime >= cutDate``), because MySQL quotes it from the
    offending ``)`` on.
    """
    parts: list[str] = []
    failed_at: int | None = None
    for name, value in attr_dict.items():
        column = f"`{str(name).replace('`', '')}`"
        if isinstance(value, list):
            if not value and failed_at is None:
                failed_at = len(" AND ".join(parts)) + (5 if parts else 0) + len(column) + len(" IN (  ")
            parts.append(f"{column} IN ( {', '.join(sql_literal(v) for v in value)} )")
        elif value is None:
            parts.append(f"{column} IS NULL")
        else:
            parts.append(f"{column} = {sql_literal(value)}")
    if failed_at is None:
        return None
    if cut_date:
        parts.append(f"`LastUpdateTime` >= {sql_literal(cut_date)}")
    near = " AND ".join(parts)[failed_at:][:_NEAR_CHARS]
    return mysql_error(
        1064,
        "You have an error in your SQL syntax; check the manual that corresponds to your "
        f"{SQL_SERVER} server version for the right syntax to use near '{near}' at line 1",
    )


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
