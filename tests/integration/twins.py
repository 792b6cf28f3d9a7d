"""Twin jobs: a write through the legacy service on one job, the same write through the adapter on its twin.

The write path cannot be compared by answers alone: what matters is what ends up in the databases
DIRAC's agents, optimizers and monitoring read. So a write parity test

1. makes twin jobs, identical and in the same state (:func:`make_twins`), through the legacy
   services, so their histories differ only in time stamps;
2. sends a write through the legacy service for one twin and through the adapter for the other;
3. reads back every row both sides keep about a job (:meth:`Databases.state`), directly with
   SQLAlchemy Core over PyMySQL, and compares them (:func:`assert_same_state`): the ``Jobs`` row,
   ``LoggingInfo``, ``HeartBeatLoggingInfo``, ``JobCommands``, the task-queue membership, and the
   job parameters (kept in the grid's OpenSearch stand-in by both sides).

Time stamps cannot be equal between twins written a few milliseconds apart; they are compared as
set or unset, and by their order (the logging records' sequence, and ``StartExecTime`` <=
``EndExecTime``...). Job IDs, and values derived from them, are compared as "this job".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from diracx_bridge.testing.grid import Grid

JOBMAN = "DIRAC.WorkloadManagementSystem.Client.JobManagerClient.JobManagerClient"
JSU = "DIRAC.WorkloadManagementSystem.Client.JobStateUpdateClient.JobStateUpdateClient"
JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
TWIN_JDL = '[ Executable = "/bin/true"; JobName = "twin-{tag}"; JobGroup = "twins"; ]'
#: The order in which a job's time stamps may legitimately be set (a pair out of this order differs).
TIME_ORDER = ("SubmissionTime", "StartExecTime", "HeartBeatTime", "EndExecTime")
#: Jobs columns that are time stamps (compared as set/unset and by order).
JOB_TIMES = frozenset({"SubmissionTime", "RescheduleTime", "LastUpdateTime", *TIME_ORDER})
#: Values that differ between twins by construction, and say nothing about the write.
JOB_IDENTITY = frozenset({"JobID", "JobName"})


@dataclass
class JobState:
    """Everything the WMS databases keep about one job, with its identity and time stamps abstracted."""

    job: dict[str, Any]
    logging: list[tuple[Any, ...]]
    heartbeats: list[tuple[Any, ...]]
    commands: list[tuple[Any, ...]]
    in_task_queue: bool
    parameters: dict[str, Any]
    #: Pairs of time stamps out of the order of :data:`TIME_ORDER` (a symptom, not a value).
    disorder: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": dict(self.job),  # a copy: comparisons drop ignored columns from it
            "logging": self.logging,
            "heartbeats": self.heartbeats,
            "commands": self.commands,
            "in_task_queue": self.in_task_queue,
            "parameters": self.parameters,
            "disorder": self.disorder,
        }


def _abstract(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return "<set>"
    return value


class Databases:
    """The grid's WMS databases and parameter store, read as DIRAC's own code writes them."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._engines = {
            name: sa.create_engine(grid.mysql.url(name, "mysql+pymysql"), pool_pre_ping=True)
            for name in ("JobDB", "JobLoggingDB", "TaskQueueDB")
        }
        self._opensearch = f"http://127.0.0.1:{grid.opensearch_port}"

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()

    def _rows(self, db: str, sql: str, **params: Any) -> list[Mapping[str, Any]]:
        with self._engines[db].connect() as conn:
            return [row._mapping for row in conn.execute(sa.text(sql), params)]

    def job_row(self, job_id: int) -> dict[str, Any]:
        rows = self._rows("JobDB", "SELECT * FROM Jobs WHERE JobID = :j", j=job_id)
        return dict(rows[0]) if rows else {}

    def parameters(self, job_id: int) -> dict[str, Any]:
        """The job's parameters in the OpenSearch stand-in (both sides write there)."""
        r = httpx.post(
            f"{self._opensearch}/job_parameters*/_search",
            json={"query": {"term": {"JobID": job_id}}, "size": 100},
            timeout=10,
        )
        if r.status_code == 404:
            return {}
        r.raise_for_status()
        merged: dict[str, Any] = {}
        for hit in r.json()["hits"]["hits"]:
            merged.update(hit["_source"])
        return {k: v for k, v in merged.items() if k not in ("JobID", "timestamp")}

    def state(self, job_id: int) -> JobState:
        row = self.job_row(job_id)
        disorder = [
            f"{a} > {b}"
            for i, a in enumerate(TIME_ORDER)
            for b in TIME_ORDER[i + 1 :]
            if row.get(a) and row.get(b) and row[a] > row[b]
        ]
        logging = self._rows(
            "JobLoggingDB",
            "SELECT Status, MinorStatus, ApplicationStatus, StatusSource, StatusTime FROM LoggingInfo "
            "WHERE JobID = :j ORDER BY SeqNum",
            j=job_id,
        )
        times = [r["StatusTime"] for r in logging]
        if times != sorted(times):
            disorder.append("LoggingInfo StatusTime not in SeqNum order")
        return JobState(
            job={k: _abstract(v) for k, v in row.items() if k not in JOB_IDENTITY},
            logging=[(r["Status"], r["MinorStatus"], r["ApplicationStatus"], r["StatusSource"]) for r in logging],
            heartbeats=[
                (r["Name"], r["Value"])
                for r in self._rows(
                    "JobDB",
                    "SELECT Name, Value FROM HeartBeatLoggingInfo WHERE JobID = :j ORDER BY HeartBeatTime, Name",
                    j=job_id,
                )
            ],
            commands=[
                (r["Command"], r["Arguments"], r["Status"])
                for r in self._rows(
                    "JobDB",
                    "SELECT Command, Arguments, Status FROM JobCommands WHERE JobID = :j ORDER BY Command",
                    j=job_id,
                )
            ],
            in_task_queue=bool(self._rows("TaskQueueDB", "SELECT JobId FROM tq_Jobs WHERE JobId = :j", j=job_id)),
            parameters=self.parameters(job_id),
            disorder=disorder,
        )


def assert_same_state(legacy: JobState, adapted: JobState, *, ignore: Iterable[str] = ()) -> None:
    """The two twins ended in the same state; ``ignore``: ``"job.<Column>"`` or a section name."""
    skip = set(ignore)
    left, right = legacy.as_dict(), adapted.as_dict()
    for section in list(left):
        if section in skip:
            left.pop(section), right.pop(section)
    for column in [s.removeprefix("job.") for s in skip if s.startswith("job.")]:
        left["job"].pop(column, None), right["job"].pop(column, None)
    differences = [
        f"{section}:\n  legacy  {left[section]!r}\n  adapted {right[section]!r}"
        for section in left
        if left[section] != right[section]
    ]
    assert not differences, "the twins differ after the same write:\n" + "\n".join(differences)


def make_twins(worker: Any, admin: Any, *, count: int = 2, to: tuple[str, str, str] | None = None) -> list[int]:
    """``count`` identical jobs of the worker's user, optimised to Waiting, then moved to ``to``.

    Everything goes through the legacy services (switches off), so the twins' histories are the
    same but for their time stamps. ``to`` is (Status, MinorStatus, ApplicationStatus), set by the
    ``admin`` worker (a JobAdministrator) with ``force``.
    """
    tag = f"{time.monotonic_ns()}"
    ids: list[int] = []
    for i in range(count):
        res = worker.call(JOBMAN, "submitJob", TWIN_JDL.format(tag=f"{tag}-{i}"))
        assert res["OK"], res
        ids.append(int(res["Value"]))
    wait_for_status(admin, ids, lambda s: s not in ("Received", "Checking"))
    if to is not None:
        status, minor, application = to
        for job in ids:
            res = admin.call(JSU, "setJobStatus", job, status, minor, "twins", None, True)
            assert res["OK"], res
            res = admin.call(JSU, "setJobApplicationStatus", job, application, "twins")
            assert res["OK"], res
    return ids


def wait_for_status(worker: Any, job_ids: list[int], done: Any, timeout: float = 180) -> dict[int, str]:
    """Poll (there is no event to wait on: DIRAC's optimizers work asynchronously) until ``done(status)``."""
    deadline = time.monotonic() + timeout
    while True:
        res = worker.call(
            JM, "getJobsStatus", job_ids, cs={"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": None}
        )
        assert res["OK"], res
        statuses = {int(j): v["Status"] for j, v in res["Value"].items()}
        if all(done(s) for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, f"jobs still not done after {timeout} s: {statuses}"
        time.sleep(0.5)
