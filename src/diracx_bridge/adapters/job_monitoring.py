"""JobMonitoring, answered by DiracX's job search: what the legacy service answers, exactly.

The legacy service reads DIRAC's JobDB/JobLoggingDB directly; DiracX serves the same
tables through ``POST /api/jobs/search`` (with the ``LoggingInfo`` pseudo-parameter). Beyond
routing the call, being a drop-in replacement means reproducing the legacy answer to the type:

* dictionaries keyed by ``int`` job ID, attributes in the legacy order (sorted names), the
  caller's spelling of attribute names kept (MySQL column names are case-insensitive, DiracX's
  are not), ``getJobs`` as ``list[str]``;
* naive UTC ``datetime`` values, ``'True'``/``'False'`` flags, logging times as
  ``"YYYY-MM-DD HH:MM:SS"`` strings, ``idem`` values resolved;
* job IDs accepted as int, str, comma-separated str or list, with the legacy refusals (the
  DISET argument type check, ``int()`` errors, unknown attributes) word for word;
* every page of DiracX's paginated answers (DIRAC 9.1's FutureClient stops at the first 100).

``getJobJDL``, ``getJobParameter(s)``, ``getJobHeartBeatData`` and ``getInputData`` read tables
or the OpenSearch index DiracX does not expose (``NOT_SERVED``): they go to the legacy service when the
admin allows it, or answer a clear ``S_ERROR`` (see :class:`~diracx_bridge.adapters.base.Adapter`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from diracx_bridge import errors
from diracx_bridge.adapters._base import Adapter, adapted
from diracx_bridge.adapters._convert import (
    CONVERTED_COLUMNS,
    empty_in_list_error,
    from_diracx_value,
    job_ids_of,
    mysql_error,
    naive_utc,
)
from diracx_bridge.capabilities import JOBS_SEARCH

#: The columns of DIRAC's ``Jobs`` table (DIRAC's JobDB.sql), which DiracX's search returns too.
JOB_ATTRIBUTES = (
    "JobID",
    "JobType",
    "JobGroup",
    "Site",
    "JobName",
    "Owner",
    "OwnerGroup",
    "VO",
    "SubmissionTime",
    "RescheduleTime",
    "LastUpdateTime",
    "StartExecTime",
    "HeartBeatTime",
    "EndExecTime",
    "Status",
    "MinorStatus",
    "ApplicationStatus",
    "UserPriority",
    "RescheduleCounter",
    "VerifiedFlag",
    "AccountedFlag",
)
_CANONICAL = {name.lower(): name for name in JOB_ATTRIBUTES}

#: The handler's ``types_<method>`` lists: the legacy service's whole surface (DISET's type check
#: runs before the method, served or not).
_TYPES: dict[str, list[Any]] = {
    "getJobs": [],
    "getJobJDL": [int, bool],
    "getJobParameter": [[str, int], str],
    "getJobParameters": [[str, int, list]],
    "getJobHeartBeatData": [int],
    "getInputData": [(int, list)],
    "getJobLoggingInfo": [int],
    "getJobsStates": [[str, int, list]],
    "getJobsStatus": [[str, int, list]],
    "getJobsMinorStatus": [[str, int, list]],
    "getJobsApplicationStatus": [[str, int, list]],
    "getJobsSites": [[str, int, list]],
    "getJobSummary": [int],
    "getJobsSummary": [list],
    "getJobAttributes": [int],
    "getJobAttribute": [int, str],
}

#: Job IDs per search request (the body of a 5000-ID ``in`` filter is ~40 kB).
ID_CHUNK = 5_000

_READ = "NormalUser (for the caller's own jobs) or JobAdministrator"


class JobMonitoringAdapter(Adapter):
    SERVICE = "WorkloadManagement/JobMonitoring"
    TYPES = _TYPES
    #: Every method of the service only reads: all may be shadowed.
    READS = frozenset(_TYPES)
    NOT_SERVED: ClassVar[dict[str, str]] = {
        "getJobJDL": "it exposes no job JDLs",
        "getJobParameter": "it has no route to read job parameters",
        "getJobParameters": "it has no route to read job parameters",
        "getJobHeartBeatData": "it keeps heartbeat data write-only",
        "getInputData": "it exposes no job input data",
    }

    # --- DiracX access ---------------------------------------------------------------------------

    def _search(self, parameters: list[str] | None, search: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
        """Every row of a search, page after page.

        Pages are keyed on JobID ("JobID > the last one seen", always page 1) rather than on page
        numbers: a job removed between two pages would otherwise shift the rows (one skipped
        silently) or empty the last page (HTTP 416 and a failed call). The legacy service reads
        everything in one SQL query and has neither problem.
        """
        rows: list[dict[str, Any]] = []
        session = self.session
        per_page = session.settings.search_page_size
        wanted = None if parameters is None else ["JobID", *(p for p in parameters if p != "JobID")]
        after: list[dict[str, Any]] = []
        while True:
            response = session.request(
                "POST",
                "/api/jobs/search",
                params={"page": 1, "per_page": per_page},
                json={
                    "parameters": wanted,
                    "search": search + after,
                    "sort": [{"parameter": "JobID", "direction": "asc"}],
                },
                idempotent=True,
                action=action,
                requires=_READ,
            )
            batch = response.json()
            rows.extend(batch)
            if response.status_code != 206 or len(batch) < per_page:
                return rows
            after = [{"parameter": "JobID", "operator": "gt", "value": int(batch[-1]["JobID"])}]

    def _rows_by_id(
        self, job_ids: Sequence[int], parameters: list[str] | None, action: str
    ) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(job_ids), ID_CHUNK):
            chunk = list(job_ids[start : start + ID_CHUNK])
            # "eq" for one job: a simpler query (DIRAC 9.1's FutureClient sent a bare ID as "values": 422).
            spec = (
                {"parameter": "JobID", "operator": "eq", "value": chunk[0]}
                if len(chunk) == 1
                else {"parameter": "JobID", "operator": "in", "values": chunk}
            )
            for row in self._search(parameters, [spec], action):
                found[int(row["JobID"])] = row
        return found

    def _attributes(
        self, job_ids: Sequence[int], attr_list: Iterable[str] | None, action: str
    ) -> dict[int, dict[str, Any]]:
        """JobDB.getJobsAttributes, through DiracX: {jobID: {attr: value}} in the legacy shape."""
        if not job_ids:
            return {}
        if attr_list:
            requested = sorted(attr_list)  # the legacy service sorts the list it was given
            for name in requested:
                if name.lower() not in _CANONICAL:
                    raise errors.LegacyRefusal(f"Unknown job attribute: {name}")
        else:
            requested = sorted(JOB_ATTRIBUTES)
        canonical = [_CANONICAL[name.lower()] for name in requested]
        rows = self._rows_by_id(job_ids, sorted(set(canonical)), action)
        # (caller's name, column, needs a conversion?) once per call, not once per value.
        plan: dict[str, tuple[str, bool]] = {}
        for name, column in zip(requested, canonical, strict=True):
            plan.setdefault(name, (column, column in CONVERTED_COLUMNS))
        result: dict[int, dict[str, Any]] = {}
        for job_id in job_ids:
            row = rows.get(job_id)
            if row is None:
                continue  # unknown jobs are left out, as the legacy service does
            result[job_id] = {
                name: from_diracx_value(column, row.get(column)) if convert else row.get(column)
                for name, (column, convert) in plan.items()
            }
        return result

    # --- the legacy methods ----------------------------------------------------------------------

    @adapted(uses=[JOBS_SEARCH])
    def getJobsStates(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), ["Status", "MinorStatus", "ApplicationStatus"], "getJobsStates")

    @adapted(uses=[JOBS_SEARCH])
    def getJobsStatus(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), ["Status"], "getJobsStatus")

    @adapted(uses=[JOBS_SEARCH])
    def getJobsMinorStatus(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), ["MinorStatus"], "getJobsMinorStatus")

    @adapted(uses=[JOBS_SEARCH])
    def getJobsApplicationStatus(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), ["ApplicationStatus"], "getJobsApplicationStatus")

    @adapted(uses=[JOBS_SEARCH])
    def getJobsSites(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), ["Site"], "getJobsSites")

    @adapted(uses=[JOBS_SEARCH])
    def getJobsSummary(self, jobIDs: Any) -> dict[int, dict[str, Any]]:
        return self._attributes(job_ids_of(jobIDs), None, "getJobsSummary")

    @adapted(uses=[JOBS_SEARCH])
    def getJobSummary(self, jobID: Any) -> dict[str, Any]:
        return self._attributes([int(jobID)], None, "getJobSummary").get(int(jobID), {})

    @adapted(uses=[JOBS_SEARCH])
    def getJobAttributes(self, jobID: Any, attrList: Any = None) -> dict[str, Any]:
        if isinstance(attrList, str):
            attrList = attrList.replace(" ", "").split(",")
        return self._attributes([int(jobID)], attrList, "getJobAttributes").get(int(jobID), {})

    @adapted(uses=[JOBS_SEARCH])
    def getJobAttribute(self, jobID: Any, attribute: Any) -> Any:
        return self._attributes([int(jobID)], [attribute], "getJobAttribute").get(int(jobID), {}).get(attribute)

    @adapted(uses=[JOBS_SEARCH])
    def getJobLoggingInfo(self, jobID: Any) -> list[tuple[str, str, str, str, str]]:
        rows = self._search(
            ["JobID", "LoggingInfo"],
            [{"parameter": "JobID", "operator": "eq", "value": int(jobID)}],
            "getJobLoggingInfo",
        )
        records = rows[0].get("LoggingInfo", []) if rows else []
        if not records:
            raise errors.LegacyRefusal("No Logging information for job %d" % int(jobID))  # noqa: UP031
        # DiracX resolves "idem" the same way the legacy service does; only the time format differs.
        return [
            (r["Status"], r["MinorStatus"], r["ApplicationStatus"], str(naive_utc(r["StatusTime"])), r["Source"])
            for r in records
        ]

    @adapted(uses=[JOBS_SEARCH])
    def getJobs(self, attrDict: Any = None, cutDate: Any = None) -> list[str]:
        # The legacy service hands attrDict to MySQL as it is: an empty list is "IN (  )", which
        # MySQL refuses while parsing, before it looks at any column name.
        syntax_error = empty_in_list_error(attrDict or {}, cutDate)
        if syntax_error is not None:
            raise syntax_error
        search: list[dict[str, Any]] = []
        for name, value in (attrDict or {}).items():
            column = _CANONICAL.get(str(name).lower())
            if column is None:
                # What the legacy service answers: MariaDB's own refusal, wrapped by DIRAC's MySQL class.
                raise mysql_error(1054, f"Unknown column '{name}' in 'WHERE'")
            if isinstance(value, list):
                values = [_search_value(column, v) for v in value]
                if len(values) == 1:
                    search.append({"parameter": column, "operator": "eq", "value": values[0]})
                else:
                    search.append({"parameter": column, "operator": "in", "values": values})
            else:
                search.append({"parameter": column, "operator": "eq", "value": _search_value(column, value)})
        if cutDate:
            search.append({"parameter": "LastUpdateTime", "operator": "gt", "value": _just_before(cutDate)})
        rows = self._search(["JobID"], search, "getJobs")
        return [str(row["JobID"]) for row in rows]


def _search_value(column: str, value: Any) -> Any:
    if column in ("JobID", "UserPriority", "RescheduleCounter"):
        return int(value)
    if isinstance(value, dt.datetime):
        return _second_string(value)
    return str(value)


def _second_string(value: dt.datetime) -> str:
    return naive_utc(value).strftime("%Y-%m-%d %H:%M:%S")


def _iso(text: str) -> dt.datetime | None:
    """ISO 8601 with a ``T`` or an offset, which MySQL accepts and DIRAC's ``fromString`` does not."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _just_before(cut: Any) -> str:
    """``LastUpdateTime >= cut`` expressed with DiracX's ``gt``.

    DiracX reads a second-precision string as that whole second, so ``gt "T-1s"`` means
    ``>= T``. MySQL compares its DATETIME(0) column with the exact value, so a cut with a
    fraction of a second starts at the next whole second.
    """
    from DIRACCommon.Core.Utilities.TimeUtilities import fromString

    moment = cut if isinstance(cut, (dt.datetime, dt.date)) else fromString(str(cut)) or _iso(str(cut))
    if isinstance(moment, dt.date) and not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time())
    if moment is None:
        raise errors.DiracXRejected("getJobs", status=400, detail=f"invalid cut date {cut!r}")
    moment = naive_utc(moment)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
    return _second_string(moment - dt.timedelta(seconds=1))
