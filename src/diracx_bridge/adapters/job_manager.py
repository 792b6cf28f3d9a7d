"""JobManager through DiracX: submissions, kills and deletions, with the legacy service's answers.

DiracX (the release :mod:`diracx_bridge.capabilities` names) submits JDLs (``POST /api/jobs/jdl``)
and changes job statuses (``PATCH /api/jobs/status``); it has no kill, delete, remove or
confirmation route, notifies no optimizer, and validates JDLs differently. Each legacy method is
therefore a composition:

* ``submitJob``: the checks the legacy service runs before it stores anything run here, in the
  caller's process, with DIRAC's own code and CS (limited proxy, ``NormalUser``, parametric
  expansion and ``MaxParametricJobs``, the job description model, the job manifest, owner and VO):
  refusals are the legacy texts and DErrno codes, and DiracX only ever receives JDLs legacy would
  accept. A parametric JDL of up to 20 jobs goes as it is (DiracX expands it; the jobs wait in
  ``Submitting`` for ``confirmBulkSubmission``, as with legacy); a larger one (only possible where
  the CS raises ``MaxParametricJobs``) is expanded here, by the same DIRACCommon function, and sent
  20 JDLs a call: those jobs start in ``Received``, since DiracX makes ``Submitting`` jobs of one
  parametric JDL only. ``requireProxyUpload`` is asked of the ProxyManager, as the caller.
* ``confirmBulkSubmission``: the legacy JobManager, as the caller. DiracX has no route for it, and
  the legacy service also notifies OptimizationMind at once, which no DiracX client can do (its
  ``OptimizeJobs`` message needs ``TrustedHost``): the parametric jobs submitted through DiracX are
  optimised as soon as legacy ones.
* ``killJob``, ``deleteJob``: one search (owner, status, logging times), then the legacy JobPolicy
  (valid, invalid, not authorised, owned) and DIRAC's job state machine (``JobsStateMachine``)
  decide, as ``StatusUtils.kill_delete_jobs`` does, which jobs change; only those go to DiracX, in
  one status request, never forced. DiracX accepts a transition its state machine refuses as a
  success (only a logging record ``(SM)`` and a changed MinorStatus), and refuses the whole request
  when one job is not the caller's; the filter makes both moot and the answer is legacy's list.
  ``force`` changes nothing in legacy (it filters first), so it is not sent (DiracX would refuse it
  to a non-administrator). Calls DiracX cannot serve as legacy would (a job the caller may touch
  only through ``JobSharing`` or from another VO, a job in ``Staging`` whose stager tasks legacy
  kills) are not served: legacy fallback or a clear refusal.
* ``rescheduleJob``, ``resetJob``, ``removeJob``: not served (``NOT_SERVED`` says why).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import capabilities, errors
from diracx_bridge.adapters._base import Adapter, WithKeys, adapted
from diracx_bridge.adapters._convert import naive_utc
from diracx_bridge.capabilities import JOBS_SEARCH, JOBS_SET_STATUS, JOBS_SUBMIT_JDL
from diracx_bridge.log import logger
from diracx_bridge.tokens import Claims

#: The handler's ``types_<method>`` lists: the legacy service's whole surface.
_TYPES: dict[str, list[Any]] = {
    "submitJob": [str],
    "confirmBulkSubmission": [list],
    "rescheduleJob": [],
    "removeJob": [],
    "deleteJob": [],
    "killJob": [],
    "resetJob": [],
}

#: The legacy service's default for ``/Systems/WorkloadManagement/Services/JobManager/MaxParametricJobs``.
MAX_PARAMETRIC_JOBS = 20
#: What DiracX takes in one submission (``logic/jobs/submission.py``).
DIRACX_JOBS_PER_CALL = 20
#: Job IDs per search and per status request.
ID_CHUNK = 1000
#: The validity the legacy service asks of the caller's proxy in the ProxyManager (5 hours).
PROXY_VALIDITY_SECONDS = 18000
#: How long a "the caller has a proxy there" answer is reused in this process.
PROXY_ANSWER_SECONDS = 300.0

#: Source of the logging records DiracX writes for a kill or a deletion (legacy writes none). Not
#: "JobManager": DiracX takes a source starting with "Job" for a sign of life and sets HeartBeatTime.
SOURCE = "DiracX/JobManager"
KILLED = ("Killed", "Marked for termination")
DELETED = ("Deleted", "Checking accounting")
STAGING = "Staging"

NORMAL_USER = "NormalUser"
JOB_ADMINISTRATOR = "JobAdministrator"
JOB_SHARING = "JobSharing"
GENERIC_PILOT = "GenericPilot"
_MANAGE = "JobAdministrator, or NormalUser for the caller's own jobs"

_proxy_answers: dict[tuple[str, str], float] = {}


def legacy_job_list(job_input: Any, method: str) -> list[int]:
    """The job IDs as the legacy handler's ``__getJobList`` reads them ([] for anything it cannot read).

    ``"1,2"``, a float or a dict read as no job at all; a value ``int()`` raises ``TypeError`` on
    (``[None]``) fails the call, as it does in the legacy service. Each job is then answered once
    (legacy fails on a repeated ID: see the README's differences).
    """
    if not job_input:
        return []
    try:
        if isinstance(job_input, (int, str)):
            ids = [int(job_input)]
        elif isinstance(job_input, list):
            ids = [int(x) for x in job_input]
        else:
            return []
    except ValueError:
        return []
    except TypeError as exc:
        raise errors.LegacyRefusal(f"Server error while serving {method}: {exc}") from None
    return list(dict.fromkeys(ids))


def allowed(status: str, target: str) -> bool:
    """Whether DIRAC's job state machine lets a job in ``status`` go to ``target`` (``_filterJobStateTransition``)."""
    from DIRACCommon.WorkloadManagementSystem.Client.JobStatus import JobsStateMachine

    machine = JobsStateMachine(status)
    if status not in machine.states:
        return False
    result = machine.getNextState(target)
    return bool(result["OK"]) and result["Value"] == target


@dataclass
class Rights:
    """The legacy JobPolicy's verdict on a list of jobs, plus what DiracX cannot do of it."""

    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    nonauth: list[int] = field(default_factory=list)
    owned: list[int] = field(default_factory=list)
    #: Valid for legacy, but DiracX would refuse the caller (JobSharing, another VO...).
    beyond_diracx: list[int] = field(default_factory=list)


def kill_rights(job_ids: Iterable[int], rows: dict[int, dict[str, Any]], claims: Claims) -> Rights:
    """``JobPolicy.evaluateJobRights(jobs, RIGHT_KILL)`` (the same for RIGHT_DELETE).

    Legacy grants the right to the job's owner (by user name), to a JobAdministrator, and to the
    members of the owner's group when it has JobSharing; DiracX to a JobAdministrator, a
    GenericPilot, and a NormalUser owning the job in the same VO.
    """
    props = set(claims.properties)
    admin = JOB_ADMINISTRATOR in props
    rights = Rights()
    for job in job_ids:
        row = rows.get(job)
        if row is None:
            rights.invalid.append(job)
            continue
        mine = row.get("Owner") == claims.username
        if mine:
            rights.owned.append(job)
        if not (admin or mine or (JOB_SHARING in props and row.get("OwnerGroup") == claims.group)):
            rights.nonauth.append(job)
            continue
        rights.valid.append(job)
        if not (admin or GENERIC_PILOT in props or (NORMAL_USER in props and mine and row.get("VO") == claims.vo)):
            rights.beyond_diracx.append(job)
    return rights


@dataclass(frozen=True)
class Submission:
    """A JDL checked as the legacy service checks it: the JDL to send, and the jobs it makes."""

    jdl: str
    jobs: list[str]
    parametric: bool


def check_submission(job_desc: str, owner: str, group: str, vo: str, max_jobs: int) -> Submission:
    """Every check the legacy ``submitJob`` makes before it stores a job, with its refusals.

    The same DIRAC functions in the same order: bracket fixing, the parametric expansion and its
    limit, the job description model of each job, then the job manifest and the owner, group and
    VO checks that ``JobDB.insertNewJobIntoDB`` makes. Legacy reserves a job ID before the last two
    refuse (the refusal names it, ``JobId``); nothing is reserved here.

    **One CS snapshot per call.** Legacy reads the CS live for every job: the model's validators
    call DIRAC's ``_make_model_config`` about 20 times per job (some 220 ``Operations`` reads, each
    building a helper and taking DIRAC's CS lock), and the manifest and job checks build their
    configuration again per job. That was 3 s of CPU for a 1,000-job parametric JDL. Here each of
    those three configurations is built once per call, by DIRAC's own code, when first needed, and
    serves every job of the call: a call of a few hundred milliseconds sees one CS snapshot, where
    legacy could in principle see a CS refresh between two jobs of one submission. The next call
    reads the CS again. The model's snapshot is given only to this call, in this thread (see
    :func:`_one_cs_snapshot`); the configurations are only read, never changed, by DIRAC's checks.
    """
    from DIRAC.Core.Utilities.JDL import jdlToBaseJobDescriptionModel
    from DIRAC.WorkloadManagementSystem.Client.JobState.JobManifest import makeJobManifestConfig
    from DIRAC.WorkloadManagementSystem.Utilities.JobModel import JobDescriptionModel
    from DIRACCommon.Core.Utilities.ClassAd.ClassAdLight import ClassAd
    from DIRACCommon.WorkloadManagementSystem.DB.JobDBUtils import checkAndAddOwner, checkAndPrepareJob
    from DIRACCommon.WorkloadManagementSystem.Utilities.ParametricJob import (
        generateParametricJobs,
        getParameterVectorLength,
    )
    from pydantic import ValidationError

    jdl = job_desc.strip()
    if not jdl:  # the legacy handler indexes the first character: an IndexError, wrapped by DISET
        raise errors.LegacyRefusal("Server error while serving submitJob: string index out of range")
    if jdl[0] != "[":
        jdl = f"[{jdl}"
    if jdl[-1] != "]":
        jdl = f"{jdl}]"
    class_ad = ClassAd(jdl)
    n_jobs = _legacy_value(getParameterVectorLength(class_ad))
    parametric = bool(n_jobs and n_jobs > 0)
    if parametric:
        if n_jobs > max_jobs:
            raise errors.LegacyRefusal(
                f"Number of parametric jobs exceeds the limit of {max_jobs}", code=DErrno.EWMSJDL
            )
        jobs = list(_legacy_value(generateParametricJobs(class_ad)))
    else:
        jobs = [jdl]
    with _one_cs_snapshot():
        for job in jobs:
            model = _legacy_value(jdlToBaseJobDescriptionModel(ClassAd(job)))
            try:
                JobDescriptionModel(**model.model_dump(exclude_none=True), owner=owner, ownerGroup=group, vo=vo)
            except ValidationError as exc:
                raise errors.LegacyRefusal(str(exc)) from None
    # DIRAC's checkAndAddOwner and checkAndPrepareJob (DB/JobDBUtils.py) are these DIRACCommon
    # functions given a configuration they build from the CS per job; it is built once here.
    manifest_config = makeJobManifestConfig(group)
    job_config = _job_check_config(group, vo)
    for job in jobs:
        manifest = _legacy_value(checkAndAddOwner(job, owner, group, job_manifest_config=manifest_config))
        class_ad_job = ClassAd(manifest.dumpAsJDL())
        result = checkAndPrepareJob(None, class_ad_job, ClassAd("[]"), owner, group, {}, vo, config=job_config)
        if not result["OK"]:
            result.pop("JobId", None)  # the ID legacy reserved before refusing; none is here
            raise errors.LegacyRefusal.of(result)
    return Submission(jdl, jobs, parametric)


def _job_check_config(group: str, vo: str) -> dict[str, Any]:
    """The configuration DIRAC 9.1's ``JobDBUtils.checkAndPrepareJob`` builds for each job, word for word."""
    from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations
    from DIRAC.WorkloadManagementSystem.DB import JobDBUtils

    return {
        "inputDataPolicyForVO": Operations(vo=vo).getValue("InputDataPolicy/InputDataModule"),
        "softwareDistModuleForVO": Operations(vo=vo).getValue("SoftwareDistModule"),
        "defaultCPUTimeForOwnerGroup": Operations(group=group).getValue("JobDescription/DefaultCPUTime", 86400),
        "getDIRACPlatform": JobDBUtils.getDIRACPlatform,
    }


#: The job description model's configuration in the ``check_submission`` running in this context:
#: None outside one (DIRAC reads the CS as it always does), an empty list until first built.
_model_config: ContextVar[list[Any] | None] = ContextVar("diracx_bridge_model_config", default=None)


class _SnapshotBuilders:
    """DIRAC's two job description models, given a snapshot-aware ``_config_builder`` while calls run.

    Installed when the first ``check_submission`` starts and DIRAC's own builders put back when the
    last one ends (a count under a lock: calls in several threads). While installed, the builder
    answers DIRAC's own builder's result unless the calling context is a ``check_submission`` one,
    so other threads and other code see no change.
    """

    lock = threading.Lock()
    users = 0
    originals: ClassVar[dict[type, Callable[..., Any]]] = {}

    @classmethod
    def enter(cls) -> None:
        from DIRAC.WorkloadManagementSystem.Utilities.JobModel import BaseJobDescriptionModel, JobDescriptionModel

        with cls.lock:
            if cls.users == 0:
                for model in (BaseJobDescriptionModel, JobDescriptionModel):
                    original = model.__dict__["_config_builder"]
                    cls.originals[model] = original
                    setattr(model, "_config_builder", _snapshot_builder(original))  # noqa: B010 (mypy: a ClassVar)
            cls.users += 1

    @classmethod
    def leave(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                for model, original in cls.originals.items():
                    setattr(model, "_config_builder", original)  # noqa: B010
                cls.originals.clear()


def _snapshot_builder(original: Callable[[], Any]) -> Callable[..., Any]:
    """DIRAC's ``_make_model_config``, built once per ``check_submission`` call in that call's context.

    DIRAC calls it as ``cls._config_builder()`` and as ``self._config_builder()`` (an instance
    binds it): the bound argument is ignored, as DIRAC's own builder ignores it.
    """

    def config_builder(_bound: object = None) -> Any:
        snapshot = _model_config.get()
        if snapshot is None:
            return original()
        if not snapshot:
            snapshot.append(original())
        return snapshot[0]

    return config_builder


@contextmanager
def _one_cs_snapshot() -> Iterator[None]:
    """DIRAC's job description models read one configuration for the rest of this block, in this context.

    A ``ContextVar`` (not a process-wide switch): another thread, or another asyncio task, has its
    own context and keeps reading the CS live.
    """
    _SnapshotBuilders.enter()
    token = _model_config.set([])
    try:
        yield
    finally:
        _model_config.reset(token)
        _SnapshotBuilders.leave()


def _legacy_value(result: dict[str, Any]) -> Any:
    if not result["OK"]:
        raise errors.LegacyRefusal.of(result)
    return result["Value"]


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class JobManagerAdapter(Adapter):
    SERVICE = "WorkloadManagement/JobManager"
    TYPES = _TYPES
    NOT_SERVED: ClassVar[dict[str, str]] = {
        "rescheduleJob": (
            "its reschedule route applies the job state machine: Waiting, Matched, Done, Failed and Killed jobs "
            "keep their status (with MinorStatus 'Job Rescheduled' and their counter raised), a Waiting job stays "
            "in its task queue, and no optimizer is told"
        ),
        "resetJob": "its reschedule route (reset_jobs) applies the job state machine as for rescheduleJob",
        "removeJob": "it has no route to remove jobs (logic.jobs.remove_jobs is not exposed)",
    }

    # --- submission --------------------------------------------------------------------------------

    @adapted(uses=[JOBS_SUBMIT_JDL])
    def submitJob(self, jobDesc: str) -> WithKeys:
        claims = self.session.claims()
        if self._uses_limited_proxy():
            raise errors.LegacyRefusal("Can't submit using a limited proxy", code=DErrno.EWMSSUBM)
        if NORMAL_USER not in claims.properties:
            raise errors.LegacyRefusal("Job submission not authorized", code=DErrno.EWMSSUBM)
        submission = check_submission(jobDesc, claims.username, claims.group, claims.vo, self._max_parametric_jobs())
        if submission.parametric and len(submission.jobs) <= DIRACX_JOBS_PER_CALL:
            ids = self._submit([submission.jdl])
            if len(ids) != len(submission.jobs):
                raise errors.DiracXServerError(
                    self.session.url, "submitJob", detail=f"{len(ids)} jobs made of {len(submission.jobs)} described"
                )
        else:
            ids = []
            try:
                for chunk in _chunks(submission.jobs, DIRACX_JOBS_PER_CALL):
                    ids += self._submit(chunk)
            except errors.BridgeError:
                self._withdraw(ids)
                raise
        value: Any = ids if submission.parametric else ids[0]
        return WithKeys(value, {"JobID": value, "requireProxyUpload": self._proxy_upload_required(claims)})

    def _submit(self, jdls: list[str]) -> list[int]:
        response = self.session.request("POST", "/api/jobs/jdl", json=jdls, action="submitJob", requires="NormalUser")
        return [int(job["JobID"]) for job in response.json()]

    def _withdraw(self, job_ids: list[int]) -> None:
        """Delete the jobs of a submission that failed half-way (they are active: they would run)."""
        if not job_ids:
            return
        try:
            self._set_statuses({job: [DELETED] for job in job_ids}, self._rows(job_ids, ["JobID", "LoggingInfo"]))
        except errors.BridgeError as exc:
            logger().error(f"submitJob failed half-way; jobs {job_ids} could not be deleted", str(exc))
        else:
            logger().warn(f"submitJob failed half-way; jobs {job_ids} of its first requests were deleted")

    def _uses_limited_proxy(self) -> bool:
        from DIRAC.Core.Security.X509Chain import X509Chain

        caller = self._route.caller
        chain = X509Chain()
        if caller is None or not chain.loadProxyFromFile(str(caller.proxy_path))["OK"]:
            return False
        result = chain.isLimitedProxy()
        return bool(result["OK"] and result["Value"])

    @staticmethod
    def _max_parametric_jobs() -> int:
        from DIRAC import gConfig
        from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceSection

        section = getServiceSection("WorkloadManagement/JobManager")
        return int(gConfig.getValue(f"{section}/MaxParametricJobs", MAX_PARAMETRIC_JOBS))

    def _proxy_upload_required(self, claims: Claims) -> bool:
        """``requireProxyUpload``: the caller has no proxy valid 5 hours more in the ProxyManager.

        The legacy service asks the ProxyManager (``gProxyManager.userHasProxy``) for the caller's
        first DN; so does this, as the caller, which the ProxyManager answers about its own proxies.
        As legacy, a failure to ask answers True.
        """
        from DIRAC.ConfigurationSystem.Client.Helpers import Registry

        dns = Registry.getDNForUsername(claims.username)
        if not dns["OK"] or not dns["Value"]:
            return True
        dn = dns["Value"][0]
        key = (dn, str(self._route.caller.proxy_path if self._route.caller else ""))
        if _proxy_answers.get(key, 0.0) > time.monotonic():
            return False
        result = self._registered_users(PROXY_VALIDITY_SECONDS)
        if not result["OK"]:
            logger().warn("requireProxyUpload: cannot ask the ProxyManager", result["Message"])
            return True
        if any(record.get("DN") == dn for record in result["Value"]):
            _proxy_answers[key] = time.monotonic() + PROXY_ANSWER_SECONDS
            return False
        return True

    def _registered_users(self, valid_seconds: int) -> dict[str, Any]:
        from DIRAC.Core.Base.Client import Client

        return Client(url="Framework/ProxyManager", **self._client_kwargs).getRegisteredUsers(valid_seconds)  # type: ignore[no-any-return]

    # --- the legacy service's own composition ----------------------------------------------------------

    @adapted
    def confirmBulkSubmission(self, jobIDs: list[Any]) -> WithKeys:
        """The legacy JobManager, as the caller: it activates the jobs and notifies the optimizers."""
        result = self._legacy_factory().confirmBulkSubmission(jobIDs)
        if not result["OK"]:
            raise errors.LegacyRefusal.of(result)
        return WithKeys(result["Value"], {k: v for k, v in result.items() if k not in ("OK", "Value", "rpcStub")})

    # --- kill and delete -----------------------------------------------------------------------------

    @adapted(uses=[JOBS_SEARCH, JOBS_SET_STATUS])
    def killJob(self, jobIDs: Any, force: Any = False) -> Any:
        return self._kill_or_delete("killJob", jobIDs, delete=False)

    @adapted(uses=[JOBS_SEARCH, JOBS_SET_STATUS])
    def deleteJob(self, jobIDs: Any, force: Any = False) -> Any:
        return self._kill_or_delete("deleteJob", jobIDs, delete=True)

    def _kill_or_delete(self, method: str, job_input: Any, *, delete: bool) -> Any:
        """``StatusUtils.kill_delete_jobs`` after ``JobPolicy.evaluateJobRights``, as the legacy handler runs them."""
        job_ids = legacy_job_list(job_input, method)
        if not job_ids:
            return []
        claims = self.session.claims()
        rows = self._rows(job_ids, ["JobID", "Owner", "OwnerGroup", "VO", "Status", "LoggingInfo"])
        rights = kill_rights(job_ids, rows, claims)
        if rights.beyond_diracx:
            self._cannot_serve(
                f"{capabilities.NAME}, which lets a NormalUser act on their own jobs of their own VO only (the legacy "
                f"JobPolicy alone allows jobs {rights.beyond_diracx}: JobSharing, or the user's jobs of another VO)"
            )
        staging = [job for job in rights.valid if rows[job].get("Status") == STAGING]
        if staging:
            self._cannot_serve(
                f"{capabilities.NAME}, which cannot kill the stager tasks of jobs in Staging ({staging})"
            )
        killable = [job for job in rights.valid if allowed(rows[job]["Status"], KILLED[0])]
        deletable = [job for job in rights.valid if delete and allowed(rows[job]["Status"], DELETED[0])]
        changes: dict[int, list[tuple[str, str]]] = {}
        for job in killable:
            changes.setdefault(job, []).append(KILLED)
        for job in deletable:
            changes.setdefault(job, []).append(DELETED)
        failed = self._set_statuses(changes, rows)
        keys: dict[str, Any] = {"requireProxyUpload": bool(rights.owned) and self._proxy_upload_required(claims)}
        if rights.invalid:
            keys["InvalidJobIDs"] = rights.invalid
        if rights.nonauth or failed:
            extra: dict[str, Any] = {}
            if rights.nonauth:
                extra["NonauthorizedJobIDs"] = rights.nonauth
            if failed:
                extra["FailedJobIDs"] = failed
            raise errors.LegacyRefusal("Some jobs failed deletion", extra=extra | keys)
        return WithKeys(deletable if delete else killable, keys)

    def _set_statuses(self, changes: dict[int, list[tuple[str, str]]], rows: dict[int, dict[str, Any]]) -> list[int]:
        """Apply each job's status changes, in order; the jobs DiracX did not move (legacy's ``badIDs``).

        DiracX ignores a status older than the job's last logging record, and its clocks are not
        the caller's: the changes are dated at least a second after that record.
        """
        failed: list[int] = []
        jobs = list(changes)
        for chunk in _chunks(jobs, ID_CHUNK):
            body: dict[str, dict[str, dict[str, str]]] = {}
            for job in chunk:
                start = self._after_last_record(rows.get(job, {}))
                body[str(job)] = {
                    (start + dt.timedelta(microseconds=step)).isoformat(): {
                        "Status": status,
                        "MinorStatus": minor,
                        "Source": SOURCE,
                    }
                    for step, (status, minor) in enumerate(changes[job])
                }
            try:
                response = self.session.request(
                    "PATCH",
                    "/api/jobs/status",
                    params={"force": "false"},
                    json=body,
                    action="setting job statuses (kill/delete)",
                    requires=_MANAGE,
                )
            except errors.DiracXRejected as exc:
                if exc.status != 404:  # 404: none of the jobs exists any more
                    raise
                failed += chunk
                continue
            answer = response.json()
            success = {int(k): v for k, v in (answer.get("success") or {}).items()}
            for job in chunk:
                final = changes[job][-1][0]
                if (success.get(job) or {}).get("Status") != final:
                    failed.append(job)
        return failed

    @staticmethod
    def _after_last_record(row: dict[str, Any]) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        times = [naive_utc(r["StatusTime"]) for r in row.get("LoggingInfo") or [] if r.get("StatusTime")]
        if times:
            floor = max(times).replace(tzinfo=dt.UTC) + dt.timedelta(seconds=1)  # StatusTime has whole seconds
            return max(now, floor)
        return now

    def _rows(self, job_ids: Sequence[int], parameters: list[str]) -> dict[int, dict[str, Any]]:
        """The jobs' rows, one search per chunk (one row per job: one page of ``len(chunk)`` rows)."""
        rows: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(job_ids, ID_CHUNK):
            spec = (
                {"parameter": "JobID", "operator": "eq", "value": chunk[0]}
                if len(chunk) == 1
                else {"parameter": "JobID", "operator": "in", "values": chunk}
            )
            response = self.session.request(
                "POST",
                "/api/jobs/search",
                params={"page": 1, "per_page": len(chunk)},
                json={"parameters": parameters, "search": [spec], "sort": [{"parameter": "JobID", "direction": "asc"}]},
                idempotent=True,
                action="reading the jobs' owners and statuses",
                requires="NormalUser or JobAdministrator",
            )
            for row in response.json():
                rows[int(row["JobID"])] = row
        return rows
