"""JobStateUpdate through DiracX: the job wrappers', pilots' and users' writes, with the legacy answers.

The legacy service writes DIRAC's JobDB, JobLoggingDB and the job-parameters index directly;
DiracX (the release :mod:`diracx_bridge.capabilities` names) writes the same tables through four
routes: ``PATCH /api/jobs/status`` (statuses, with DIRAC's own state machine and time-stamp rules
from DIRACCommon), ``PATCH /api/jobs/heartbeat`` (heartbeat data, commands), ``PATCH
/api/jobs/metadata`` (``Site`` and job parameters) and ``POST /api/jobs/search`` (reads). Each
legacy method is composed from them so that the databases end in the state the legacy service
leaves them in, and the caller gets the legacy answer:

* answers to the type: ``(attrNames, attrValues)`` for the status methods (legacy's JobDB removes
  ``Status`` from the names it returns), the rows-affected ``int`` of ``setJobSite`` and
  ``setJobAttribute`` (the job's ``Site`` is read first to tell 1 from 0), ``{command: arguments}``
  for heartbeats, the stager's informational strings; ``None`` where legacy has no value;
* the legacy refusals word for word ("Not authorized to modify job N", "No Matching Job",
  "Job N not found", "Job attribute 'X' cannot be modified through JobStateUpdate"...). DiracX's
  all-or-nothing 403 and its 404 become the legacy text for the caller's kind: the legacy
  service lets a JobAdministrator, Operator or TrustedHost act on any job, and says "Not
  authorized" to anyone else about a job that does not exist;
* legacy's checks before any write: a call with nothing to set still checks the caller's right on
  the job (``PATCH /api/jobs/metadata`` with an empty update: an access check that writes
  nothing);
* ``force`` from a caller without JobAdministrator is dropped, as legacy silently ignores it
  (DiracX would answer 403);
* time stamps: naive strings are UTC (DIRAC's convention), ISO 8601 with ``T`` or an offset and
  ``datetime`` objects are read as what they say (legacy fails on them half-way);
* partial failures as legacy reports them: ``setJobsParameter`` writes every job the caller may
  modify and reports the last refusal; a job in DiracX's ``failed`` dict is a failure, never lost
  inside its 200;
* a heartbeat whose data DiracX refuses because another heartbeat of the job was stored in the same
  second (the primary key of HeartBeatLoggingInfo, HTTP 500) is sent again in the next second:
  legacy drops that data silently, the bridge keeps it.

Where DiracX cannot leave the databases as legacy does, the call is not served: it goes to
the legacy service when ``/DiracX/Bridge/WorkloadManagement/JobStateUpdate/LegacyFallback`` allows
it, else it is refused with ``ENOTSUP`` and a message naming the option, before anything is
written. The one switch is the admins' (as for every adapter), so a site that wants DiracX only
sees each such call refused with its reason rather than silently sent elsewhere. Those calls:

* ``setJobAttribute`` of ``Status``, ``MinorStatus``, ``ApplicationStatus``, ``StartExecTime``,
  ``EndExecTime`` or ``HeartBeatTime`` (legacy writes the column alone; DiracX sets statuses only
  with a logging record and ``LastUpdateTime``, and the time stamps not at all);
* a status DiracX does not know (``Scouting``; an unknown status is refused with legacy's text);
* job parameters DiracX would store differently: a name DiracX reads as a job attribute or a
  model field (``Site``, ``site``, ``Status``, ``host_name``, ``timestamp``...), a non-integral or
  non-numeric value of an integer-typed parameter (``CPUNormalizationFactor="N/A"``, ``"12.5"``:
  DiracX would refuse or truncate it), a non-string of a string-typed one, NaN or infinity;
* heartbeat data outside DiracX's ``HeartbeatData`` SQL fields (``StandardOutput`` or
  ``HeartBeatTime`` as dynamic data, any other name), or values MySQL would store as other text;
* a refusal (403) for a caller whose legacy rights DiracX does not model (Operator, TrustedHost,
  JobSharing, a group without NormalUser): legacy may allow what DiracX refused.

Where DiracX's own rules differ from legacy's and DiracX's are the intended ones, they are kept and
listed in the README's differences rather than worked around: a heartbeat of a Matched or Stalled
job logs its move to Running (and sets ``StartExecTime``), a heartbeat leaves a job in any other
status as it is (legacy sets it Running whatever it was, even Killed or Failed: DIRAC's own
FutureClient documents DiracX's rule as the intended one); a status set to Killed or Deleted also
queues a Kill command and leaves the task queue; a source not starting with ``Job`` that moves a
job to Running leaves ``HeartBeatTime`` unset (legacy sets it with ``StartExecTime``: DiracX has
no route to set it alone, and its heartbeat would mark the job's pending commands Sent); integral
values of typed parameters are stored as numbers; ``setJobParameter(s)`` answer ``None`` (legacy
answers the index name when it creates the job's document, which DiracX does not say).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import capabilities, errors
from diracx_bridge.adapters._base import Adapter, adapted
from diracx_bridge.capabilities import JOBS_HEARTBEAT, JOBS_METADATA, JOBS_SEARCH, JOBS_SET_STATUS
from diracx_bridge.log import logger

#: The handler's ``types_<method>`` lists: the legacy service's whole surface.
_TYPES: dict[str, list[Any]] = {
    "updateJobFromStager": [[str, int], str],
    "setJobStatus": [[str, int], str, str, str],
    "setJobStatusBulk": [[str, int], dict],
    "setJobAttribute": [[str, int], str, str],
    "setJobSite": [[str, int], str],
    "setJobApplicationStatus": [[str, int], str, str],
    "setJobParameter": [[str, int], str, str],
    "setJobsParameter": [dict],
    "setJobParameters": [[str, int], list],
    "sendHeartBeat": [[str, int], dict, dict],
}

#: The attributes the legacy handler lets a caller set (``MUTABLE_JOB_ATTRIBUTES``).
MUTABLE_ATTRIBUTES = frozenset(
    {"Status", "MinorStatus", "ApplicationStatus", "Site", "StartExecTime", "EndExecTime", "HeartBeatTime"}
)

#: DIRAC's job statuses (DIRACCommon's JobStatus.JOB_STATES) and those DiracX's JobStatus has.
DIRAC_STATUSES = frozenset(
    {
        *("Submitting", "Received", "Checking", "Scouting", "Staging", "Waiting", "Matched", "Rescheduled"),
        *("Running", "Stalled", "Completing", "Done", "Completed", "Failed", "Deleted", "Killed"),
    }
)
DIRACX_STATUSES = DIRAC_STATUSES - {"Scouting"}

#: The status-record keys the legacy service reads (JobStatusUtility); it ignores any other.
_RECORD_KEYS = ("Status", "MinorStatus", "ApplicationStatus", "Source")

#: Properties with which the legacy handler lets a caller act on any job (``PRIVILEGED_JOB_PROPERTIES``).
_PRIVILEGED = frozenset({"JobAdministrator", "TrustedHost", "Operator"})
#: Properties granting legacy rights that DiracX's job policy does not know.
_LEGACY_ONLY_RIGHTS = frozenset({"TrustedHost", "Operator", "JobSharing"})

#: DiracX's ``JobMetaData`` (``diracx.core.models``): the names it reads as job attributes (by
#: alias or by field name: the model populates by name), and the field names of its typed
#: parameters, which it would store under their alias. A test checks them against the models.
DIRACX_ATTRIBUTE_NAMES = frozenset(
    {
        *("JobType", "JobGroup", "Site", "JobName", "Owner", "OwnerGroup", "VO", "SubmissionTime"),
        *("RescheduleTime", "LastUpdateTime", "StartExecTime", "HeartBeatTime", "EndExecTime", "Status"),
        *("MinorStatus", "ApplicationStatus", "UserPriority", "RescheduleCounter", "VerifiedFlag", "AccountedFlag"),
        *("job_type", "job_group", "site", "job_name", "owner", "owner_group", "vo", "submission_time"),
        *("reschedule_time", "last_update_time", "start_exec_time", "heart_beat_time", "end_exec_time", "status"),
        *("minor_status", "application_status", "user_priority", "reschedule_counter", "verified_flag"),
        "accounted_flag",
    }
)
DIRACX_PARAMETER_FIELDS = frozenset(
    {
        *("timestamp", "cpu_normalization_factor", "norm_cpu_time_s", "total_cpu_time_s", "host_name"),
        *("grid_ce", "model_name", "pilot_agent", "pilot_reference", "memory_mb", "local_account"),
        *("payload_pid", "ce_queue", "batch_system"),
    }
)
#: ``JobParameters`` fields DiracX types as integers, and as strings.
INT_PARAMETERS = frozenset({"CPUNormalizationFactor", "NormCPUTime(s)", "TotalCPUTime(s)", "Memory(MB)", "PayloadPID"})
STR_PARAMETERS = frozenset(
    {"HostName", "GridCE", "ModelName", "PilotAgent", "Pilot_Reference", "LocalAccount", "CEQueue", "BatchSystem"}
)

#: Heartbeat data DiracX stores in HeartBeatLoggingInfo, as legacy does (``JobDB.heartbeat_fields``).
HEARTBEAT_FIELDS = frozenset(
    {"LoadAverage", "MemoryUsed", "Vsize", "AvailableDiskSpace", "CPUConsumed", "WallClockTime"}
)
#: A number as MySQL writes a DOUBLE into the TEXT column: such a string is stored as it is by both sides.
_PLAIN_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d*[1-9])?")
_MAX_SIGNIFICANT = 15

#: Seconds before a heartbeat refused for its second is sent again (past the server's second, whatever
#: the clocks' offset; also long enough for the server to close the connection its 500 left).
HEARTBEAT_RETRY_DELAY = 1.05

#: Seconds the legacy stager callback waits for the job to reach Staging (one look per second).
STAGER_TRIALS = 10

_BY_JOB_ID = [{"parameter": "JobID", "direction": "asc"}]
_MANAGE = "the job's owner, a GenericPilot or a JobAdministrator"


class JobStateUpdateAdapter(Adapter):
    SERVICE = "WorkloadManagement/JobStateUpdate"
    TYPES = _TYPES
    NOT_SERVED: ClassVar[dict[str, str]] = {}

    # --- the caller --------------------------------------------------------------------------------

    def _properties(self) -> frozenset[str]:
        return frozenset(self.session.claims().properties)

    def _unserved(self, why: str) -> NoReturn:
        """This call cannot be served faithfully: the legacy service's answer, or a refusal saying why.

        Raised before anything is written; ``adapted`` then answers ``_not_served`` (LegacyFallback).
        """
        self._unserved_why = f"{capabilities.NAME} for this call ({why})"
        raise errors.NotServed(self._service_name(), "this call", why=self._unserved_why)

    def _refused(self, shown: Any) -> NoReturn:
        """DiracX answered 403: legacy's text, if legacy would have refused this caller too."""
        properties = self._properties()
        if "NormalUser" in properties and not properties & _LEGACY_ONLY_RIGHTS:
            raise errors.LegacyRefusal(f"Not authorized to modify job {shown}")
        self._unserved(
            f"it refused job {shown} to a token with properties {', '.join(sorted(properties)) or 'none'}; its "
            "job policy lets only the owner, GenericPilot and JobAdministrator modify a job, while the legacy service "
            "also honours Operator, TrustedHost and JobSharing, and lets owners act without NormalUser"
        )

    def _missing(self, shown: Any, privileged_answer: errors.BridgeError) -> NoReturn:
        """The job does not exist: legacy checks the caller's right first, which fails unless privileged."""
        if self._properties() & _PRIVILEGED:
            raise privileged_answer
        raise errors.LegacyRefusal(f"Not authorized to modify job {shown}")

    # --- DiracX ------------------------------------------------------------------------------------

    def _send(
        self,
        action: str,
        method: str,
        path: str,
        json: Any,
        *,
        shown: Any,
        missing: errors.BridgeError | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """One write; DiracX's 403/404 become the legacy refusal about job ``shown``."""
        try:
            return self.session.request(method, path, json=json, params=params, action=action, requires=_MANAGE)
        except errors.Forbidden:
            self._refused(shown)
        except errors.DiracXRejected as exc:
            if exc.status == 404 and missing is not None:
                self._missing(shown, missing)
            raise

    def _check_access(self, action: str, job: int, shown: Any) -> None:
        """Legacy's ``_checkJobAccess`` alone: an empty metadata update is DiracX's access check, writing nothing."""
        self._send(action, "PATCH", "/api/jobs/metadata", {str(job): {}}, shown=shown)

    def _search_one(self, action: str, job: int, parameters: list[str]) -> dict[str, Any] | None:
        """The job's row (those columns), or None; a caller DiracX does not let search is not served."""
        try:
            response = self.session.request(
                "POST",
                "/api/jobs/search",
                params={"page": 1, "per_page": 1},
                json={"parameters": ["JobID", *parameters], "search": [_job_is(job)], "sort": _BY_JOB_ID},
                idempotent=True,
                action=action,
                requires="NormalUser or JobAdministrator",
            )
        except errors.Forbidden:
            self._unserved(
                "its job search, which this call needs to give the legacy answer, is refused to this token "
                "(a GenericPilot token may not search)"
            )
        rows = self._json(response, action)
        if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
            raise _malformed(self.session.url, action, "a job search answer that is not a list of rows")
        return rows[0] if rows else None

    def _set_statuses(
        self, action: str, jobID: Any, records: Mapping[str, Mapping[str, str]], force: Any
    ) -> tuple[list[str], list[str]]:
        """``PATCH /api/jobs/status`` for one job; legacy's ``(attrNames, attrValues)``."""
        job = _job_id(action, jobID)
        response = self._send(
            action,
            "PATCH",
            "/api/jobs/status",
            {str(job): records},
            params={"force": "true" if force else "false"},
            shown=jobID,
            missing=errors.LegacyRefusal("No Matching Job"),
        )
        body = self._json(response, action)
        try:
            success, failed = body["success"], body["failed"]
            entry = success.get(str(job))
            if entry is None:
                detail = (failed.get(str(job)) or {}).get("detail", "no answer for this job")
                if detail == "Not found":
                    self._missing(jobID, errors.LegacyRefusal("No Matching Job"))
                raise errors.DiracXRejected(action, status=response.status_code, detail=f"job {job}: {detail}")
            # Legacy's JobDB takes Status out of the names it was given (it sets it separately).
            names = [name for name in ("MinorStatus", "ApplicationStatus") if entry.get(name)]
            values = [str(entry[name]) for name in names]
        except (KeyError, TypeError, AttributeError) as exc:
            raise _malformed(self.session.url, action, f"a status answer without {exc}") from None
        return names, values

    def _forced(self, action: str, jobID: Any, force: Any) -> bool:
        """Legacy honours ``force`` from a JobAdministrator only, and silently ignores it otherwise."""
        if force and "JobAdministrator" not in self._properties():
            logger().debug(f"{action}: ignoring 'force' from a caller without JobAdministrator", f"job {jobID}")
            return False
        return bool(force)

    def _patch_metadata(
        self,
        action: str,
        updates: Mapping[int, Mapping[str, Any]],
        shown: Any,
        missing: errors.BridgeError | None = None,
    ) -> None:
        """Job parameters (or Site); a job that does not exist is an error (legacy writes an orphan document)."""
        self._send(
            action,
            "PATCH",
            "/api/jobs/metadata",
            {str(job): dict(values) for job, values in updates.items()},
            shown=shown,
            missing=missing or _no_job(shown),
        )

    def _json(self, response: Any, action: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise _malformed(self.session.url, action, "an answer that is not JSON") from None

    # --- what DiracX can store as legacy does -----------------------------------------------------------

    def _status_records(self, action: str, status_dict: Mapping[Any, Any], force: Any) -> dict[str, dict[str, str]]:
        """Legacy's ``statusDict`` as DiracX's body: UTC ISO keys, empty values dropped, unknown keys ignored."""
        records: dict[str, dict[str, str]] = {}
        for when, record in status_dict.items():
            if not isinstance(record, Mapping):
                raise errors.BridgeError(
                    f"{action}: the status at {when!r} is a {type(record).__name__}, not a dictionary of "
                    f"{', '.join(_RECORD_KEYS)}",
                    code=DErrno.EVALUE,
                )
            kept: dict[str, str] = {}
            for key in _RECORD_KEYS:
                value = record.get(key)
                if not value:
                    continue  # legacy drops empty values
                if not isinstance(value, str):
                    self._unserved(f"DiracX takes {key} as a string, and {value!r} is a {type(value).__name__}")
                kept[key] = value
            status = kept.get("Status")
            if status is not None and status not in DIRACX_STATUSES:
                if status not in DIRAC_STATUSES and not force:
                    # The legacy state machine's own refusal (DiracX would answer 422).
                    raise errors.LegacyRefusal(f"getNextState: '{status}' is not a valid state")
                self._unserved(f"its JobStatus has no '{status}'")
            key = _utc_iso(action, when)
            if key in records:
                self._unserved(f"two of the times given are the same instant ({when!r})")
            records[key] = kept
        return records

    def _parameters(self, pairs: Mapping[Any, Any]) -> dict[str, Any]:
        """Job parameters DiracX stores as legacy does, or the call is not served."""
        out: dict[str, Any] = {}
        for name, value in pairs.items():
            if not isinstance(name, str):
                self._unserved(f"a parameter name must be a string, not {name!r}")
            if name in DIRACX_ATTRIBUTE_NAMES or name in DIRACX_PARAMETER_FIELDS:
                self._unserved(
                    f"its job metadata reads a parameter named '{name}' as a job attribute or a model field, "
                    "not as a job parameter"
                )
            if name in INT_PARAMETERS and not _integral(value):
                self._unserved(
                    f"it types {name} as an integer and would refuse or truncate {value!r}, which legacy keeps as it is"
                )
            if name in STR_PARAMETERS and not isinstance(value, str):
                self._unserved(f"it types {name} as a string and refuses {value!r}")
            if not _finite(value):
                self._unserved(f"it refuses NaN and infinity, given for {name}")
            out[name] = value
        return out

    def _heartbeat_data(self, dynamic: Mapping[str, Any]) -> dict[str, Any]:
        for name, value in dynamic.items():
            if name not in HEARTBEAT_FIELDS:
                self._unserved(
                    f"its heartbeat stores only {', '.join(sorted(HEARTBEAT_FIELDS))} as heartbeat data, not "
                    f"'{name}', which legacy stores in HeartBeatLoggingInfo"
                )
            if not _heartbeat_value(value):
                self._unserved(
                    f"it stores heartbeat data as numbers, and {name}={value!r} would not be stored as the same text"
                )
        return dict(dynamic)

    # --- the legacy methods ------------------------------------------------------------------------------

    @adapted(uses=[JOBS_SET_STATUS, JOBS_METADATA])
    def setJobStatus(  # noqa: PLR0917 - the legacy handler's positional signature
        self,
        jobID: Any,
        status: Any = "",
        minorStatus: Any = "",
        source: Any = "Unknown",
        datetime: Any = None,
        force: Any = False,
    ) -> tuple[list[str], list[str]] | None:
        record = {k: v for k, v in (("Status", status), ("MinorStatus", minorStatus)) if v}
        return self._status_call("setJobStatus", jobID, record, source=source, when=datetime, force=force)

    @adapted(uses=[JOBS_SET_STATUS, JOBS_METADATA])
    def setJobApplicationStatus(
        self, jobID: Any, appStatus: Any, source: Any = "Unknown"
    ) -> tuple[list[str], list[str]] | None:
        record = {"ApplicationStatus": appStatus} if appStatus else {}
        return self._status_call("setJobApplicationStatus", jobID, record, source=source)

    def _status_call(
        self, action: str, jobID: Any, record: dict[str, Any], *, source: Any, when: Any = None, force: Any = False
    ) -> tuple[list[str], list[str]] | None:
        """Legacy's ``JobStatusUtility.setJobStatus``: nothing to set is an access check and ``None``."""
        job = _job_id(action, jobID)
        if not record:
            self._check_access(action, job, jobID)
            return None
        if source:
            record["Source"] = source
        force = self._forced(action, jobID, force)
        stamp = when if when else dt.datetime.now(dt.UTC)
        records = self._status_records(action, {stamp: record}, force)
        return self._set_statuses(action, jobID, records, force)

    @adapted(uses=[JOBS_SET_STATUS, JOBS_METADATA])
    def setJobStatusBulk(self, jobID: Any, statusDict: Any, force: Any = False) -> tuple[list[str], list[str]]:
        job = _job_id("setJobStatusBulk", jobID)
        if not statusDict:
            # Legacy checks the caller's right, then fails on the empty dictionary.
            self._check_access("setJobStatusBulk", job, jobID)
            raise errors.LegacyRefusal("Server error while serving setJobStatusBulk: list index out of range")
        force = self._forced("setJobStatusBulk", jobID, force)
        records = self._status_records("setJobStatusBulk", statusDict, force)
        return self._set_statuses("setJobStatusBulk", jobID, records, force)

    @adapted(uses=[JOBS_SEARCH, JOBS_METADATA])
    def setJobAttribute(self, jobID: Any, attribute: Any, value: Any) -> int:
        if attribute not in MUTABLE_ATTRIBUTES:
            raise errors.LegacyRefusal(f"Job attribute '{attribute}' cannot be modified through JobStateUpdate")
        job = _job_id("setJobAttribute", jobID)
        if attribute != "Site":
            self._unserved(
                f"it sets {attribute} only with a status update, which also writes a logging record and "
                "LastUpdateTime (use setJobStatus), or not at all for the time stamps"
                if attribute in ("Status", "MinorStatus", "ApplicationStatus")
                else f"it has no way to set {attribute}"
            )
        return self._set_site("setJobAttribute", job, jobID, value)

    @adapted(uses=[JOBS_SEARCH, JOBS_METADATA])
    def setJobSite(self, jobID: Any, site: Any) -> int:
        return self._set_site("setJobSite", _job_id("setJobSite", jobID), jobID, site)

    def _set_site(self, action: str, job: int, shown: Any, site: str) -> int:
        """JobDB.setJobAttribute's answer is the rows MySQL changed: 1, or 0 for the same Site or no job."""
        row = self._search_one(action, job, ["Site"])
        self._send(action, "PATCH", "/api/jobs/metadata", {str(job): {"Site": site}}, shown=shown)
        return 1 if row is not None and row.get("Site") != site else 0

    @adapted(uses=[JOBS_METADATA])
    def setJobParameter(self, jobID: Any, name: Any, value: Any) -> None:
        job = _job_id("setJobParameter", jobID)
        self._patch_metadata("setJobParameter", {job: self._parameters({name: value})}, jobID)

    @adapted(uses=[JOBS_METADATA])
    def setJobParameters(self, jobID: Any, parameters: Any) -> None:
        job = _job_id("setJobParameters", jobID)
        try:
            pairs = dict(parameters)
        except (TypeError, ValueError) as exc:
            self._check_access("setJobParameters", job, jobID)  # legacy checks the caller first
            raise errors.LegacyRefusal(f"Server error while serving setJobParameters: {exc}") from None
        self._patch_metadata("setJobParameters", {job: self._parameters(pairs)}, jobID)

    @adapted(uses=[JOBS_METADATA])
    def setJobsParameter(self, jobsParameterDict: Any) -> None:
        """Legacy writes each job the caller may modify and answers the last failure: so does this."""
        updates: dict[int, dict[str, Any]] = {}
        shown: dict[int, Any] = {}
        for key, pair in jobsParameterDict.items():
            job = _job_id("setJobsParameter", key)
            try:
                name, value = str(pair[0]), str(pair[1])  # legacy writes both as strings
            except (TypeError, IndexError, KeyError) as exc:
                raise errors.LegacyRefusal(f"Server error while serving setJobsParameter: {exc}") from None
            updates[job], shown[job] = self._parameters({name: value}), key
        if not updates:
            return
        try:
            self._patch_metadata("setJobsParameter", updates, next(iter(shown.values())))
            return
        except errors.BridgeError as exc:
            if len(updates) == 1 or isinstance(exc, errors.NotServed) or not _per_job_failure(exc):
                raise
        # DiracX refused the whole batch: job by job, as legacy does, which answers the last failure.
        last: errors.BridgeError | None = None
        for job, values in updates.items():
            try:
                self._patch_metadata("setJobsParameter", {job: values}, shown[job])
            except (errors.LegacyRefusal, errors.DiracXRejected) as exc:
                last = exc
            except errors.BridgeError as exc:
                if exc.result.get("Errno") != DErrno.EWMSJMAN:  # not "Job N not found": DiracX itself failed
                    raise
                last = exc
        if last is not None:
            raise last

    @adapted(uses=[JOBS_HEARTBEAT, JOBS_METADATA])
    def sendHeartBeat(self, jobID: Any, dynamicData: Any, staticData: Any) -> dict[str, str]:
        job = _job_id("sendHeartBeat", jobID)
        body = self._heartbeat_data(dynamicData)
        static = dict(staticData)
        if isinstance(static.get("StandardOutput"), str):
            # DiracX's heartbeat stores it as a job parameter, as legacy does with all static data.
            body["StandardOutput"] = static.pop("StandardOutput")
        missing = errors.LegacyRefusal(f"Job {jobID} not found")
        if static:
            # The rest of the static data first: a heartbeat marks the job's commands Sent, so no
            # failure may follow it.
            self._patch_metadata("sendHeartBeat", {job: self._parameters(static)}, jobID, missing)
        try:
            response = self._send(
                "sendHeartBeat", "PATCH", "/api/jobs/heartbeat", {str(job): body}, shown=jobID, missing=missing
            )
        except errors.DiracXServerError as exc:
            if exc.status != 500 or not HEARTBEAT_FIELDS & body.keys():
                raise
            # Most likely another heartbeat of this job was stored this second (HeartBeatLoggingInfo's
            # key is to the second), and DiracX rolled this one back: store it in the next second.
            _sleep_to_next_second()
            response = self._send(
                "sendHeartBeat", "PATCH", "/api/jobs/heartbeat", {str(job): body}, shown=jobID, missing=missing
            )
        commands = self._json(response, "sendHeartBeat")
        try:
            return {
                str(c["command"]): "" if c.get("arguments") is None else str(c["arguments"])
                for c in commands
                if int(c["job_id"]) == job
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self.session.url, "sendHeartBeat", f"a heartbeat answer without {exc}") from None

    @adapted(uses=[JOBS_METADATA, JOBS_SEARCH, JOBS_SET_STATUS])
    def updateJobFromStager(self, jobID: Any, status: Any) -> Any:
        """The stager's callback: wait up to 10 s for Staging, then move the job on (legacy's texts)."""
        action = "updateJobFromStager"
        job = _job_id(action, jobID)
        self._check_access(action, job, jobID)
        record = {"Status": "Checking", "MinorStatus": "JobScheduling"} if status == "Done" else {}
        record = record or {"MinorStatus": "Staging input files failed"}
        info = None
        for trial in range(STAGER_TRIALS):
            row = self._search_one(action, job, ["Status"])
            if row is None:
                return "No Matching Job"
            if row.get("Status") == "Staging":
                if trial:
                    info = f"Found job in Staging after {trial} seconds"
                break
            time.sleep(1)
        else:
            return f"Job is not in Staging after {STAGER_TRIALS} seconds"
        records = self._status_records(action, {dt.datetime.now(dt.UTC): {**record, "Source": "StagerSystem"}}, False)
        try:
            answer = self._set_statuses(action, jobID, records, False)
        except errors.LegacyRefusal:
            if info:
                return info  # legacy answers its information even when the update failed
            raise
        return info if info else answer


# --- values ---------------------------------------------------------------------------------------------


def _job_id(method: str, job_id: Any) -> int:
    """``int(jobID)`` as the handler does it, with the handler's failure text."""
    try:
        return int(job_id)
    except (TypeError, ValueError) as exc:
        raise errors.LegacyRefusal(f"Server error while serving {method}: {exc}") from None


def _no_job(shown: Any) -> errors.BridgeError:
    """Parameters of a job that does not exist: legacy writes an orphan document, DiracX refuses (404)."""
    return errors.BridgeError(
        f"Job {shown} not found: DiracX keeps no parameters of a job that does not exist", code=DErrno.EWMSJMAN
    )


def _job_is(job: int) -> dict[str, Any]:
    return {"parameter": "JobID", "operator": "eq", "value": job}


def _utc_iso(method: str, value: Any) -> str:
    """A legacy time stamp (naive UTC string, ISO 8601 with ``T`` or an offset, datetime) for DiracX."""
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        raise errors.BridgeError(
            f"{method}: {value!r} is not a time stamp; give UTC as 'YYYY-MM-DD HH:MM:SS[.ffffff]' "
            "(or ISO 8601 with an offset)",
            code=DErrno.EVALUE,
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # DIRAC's time stamps are UTC
    return moment.astimezone(dt.UTC).isoformat()


def _integral(value: Any) -> bool:
    """A value DiracX's integer-typed parameters store without changing it (but for its type)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()) is not None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _heartbeat_value(value: Any) -> bool:
    """Stored as the same text by legacy (as given) and DiracX (a float, written by MySQL as a DOUBLE)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return abs(value) < 10**_MAX_SIGNIFICANT
    if isinstance(value, str):
        digits = value.lstrip("-").replace(".", "").lstrip("0")
        return _PLAIN_NUMBER.fullmatch(value) is not None and len(digits) <= _MAX_SIGNIFICANT
    return False


def _sleep_to_next_second() -> None:
    """Past the server's second of the failed insert, whatever the clocks' offset (HEARTBEAT_RETRY_DELAY)."""
    time.sleep(HEARTBEAT_RETRY_DELAY)


def _malformed(url: str, action: str, what: str) -> errors.DiracXServerError:
    return errors.DiracXServerError(url, action, detail=what)


def _per_job_failure(exc: errors.BridgeError) -> bool:
    """A batch refusal that may concern only some of the jobs: worth retrying job by job."""
    if isinstance(exc, errors.LegacyRefusal):
        return exc.message.startswith("Not authorized to modify job")
    return exc.result.get("Errno") == DErrno.EWMSJMAN
