"""The write path: status updates, kills and a parametric submission, the bridge vs legacy DISET.

One run starts its own grid-in-a-box (real DIRAC 9.1.22 DISET services and real DiracX 0.7.0
sharing MariaDB, :mod:`diracx_bridge.testing.grid`), with ``MaxParametricJobs`` raised to
``--jobs`` in its CS (DIRAC's default, 20, would refuse a 1,000-job parametric JDL; DiracX 0.7.0's
own limit of 20 JDLs per request is a constant of ``diracx.logic.jobs.submission`` that the
adapter honours by sending 20 JDLs a request). It then measures, in ONE DIRAC client process
acting as the jobs' owner (``ciuser``, ``civo_user``), interleaved round by round
(:mod:`harness`), three bulk writes:

``status``
    ``JobStateUpdateClient().setJobStatusBulk(job, records)`` for ``--status-jobs`` jobs (250)
    with ``--records`` records each (4): 1,000 status records. That is the call's shape in
    production: DIRAC's ``JobReport`` (the job wrapper) accumulates one job's status records and
    sends them in one ``setJobStatusBulk`` call for that job (the handler takes one job ID); there
    is no multi-job form. The records are a job wrapper's: Running/"Job Initialization",
    an application status, another, then Completing/"Uploading Output Sandbox", on jobs that are
    ``Matched``.
``kill``
    ``JobManagerClient().killJob(ids)`` of ``--jobs`` (1,000) ``Waiting`` jobs in one call.
``submit``
    ``JobManagerClient().submitJob(jdl)`` of one parametric JDL of ``--jobs`` (1,000) jobs.

each through these paths:

``adapter``
    the call with ``/DiracX/FutureClientEnabled/WorkloadManagement/<Service> = yes``: DIRAC's
    ``Client``, the bridge's routing, the adapter and the process's pooled DiracX session.
``dirac_future``
    DIRAC 9.1.22's own ``FutureClient.JobStateUpdateClient().setJobStatusBulk`` (a new
    ``SyncDiracClient`` per call). DIRAC 9.1.22 has no FutureClient for JobManager (its
    ``JobManagerClient`` has no ``diracxClient``: with the switch on and no bridge, DIRAC raises
    ``NotImplementedError``), so ``kill`` and ``submit`` have no such path.
``raw_httpx``
    the floor: one reused ``httpx.Client`` sending the very requests the adapter sends, with the
    bearer token of the proxy's DIRACX block: ``status``, the same ``PATCH /api/jobs/status``
    per job; ``kill``, the same search (owners, statuses, logging times) then the same one
    ``PATCH /api/jobs/status`` of all the jobs (timed apart, to split the two); ``submit``, the
    same 50 ``POST /api/jobs/jdl`` of 20 JDLs, expanded beforehand (outside the timer).
``legacy``
    the same call with the switch off: DIRAC's DISET service.

Every measurement works on fresh jobs, made outside the timed region just before it by raw
requests to DiracX (``POST /api/jobs/jdl``, 20 a request, then one status request moving them
through DIRAC's state machine to ``Matched`` or ``Waiting``, so that DIRAC's optimizers leave them
alone). The jobs the adapter and raw submissions make start ``Received`` (DiracX makes
``Submitting`` jobs of one parametric JDL of at most 20 jobs only); they are killed after the
measurement, outside the timer, so that the optimizers do not work on 1,000 jobs during the next
measurement. Legacy's stay ``Submitting`` (``JobManagerClient.submitJob`` alone does not confirm
them; ``WMSClient`` would), which the optimizers ignore.

**Which side answered** is proven for every timed call from DiracX's access log (the grid's
middleware, :mod:`diracx_bridge.testing.access_log`): an adapted call must have made requests
with the bridge's ``User-Agent``; a legacy call none at all; DIRAC's FutureClient requests and no
bridge request; the raw path exactly its own requests. Any other count fails the bench. Each
answer is checked (``OK``, the number of jobs killed or submitted).

Reported per case and path: median, p90 and mean wall time, the median CPU time of the calling
thread (the client's own work: the rest of the wall time is the server and the network), and
the DiracX requests per call; ratios adapter/legacy (the issue's target: at least 2x faster, i.e.
<= 0.5), adapter/raw_httpx and adapter/dirac_future, as ratios of medians and per-round medians.
Never asserted in tests.

Run: ``.venv/bin/python bench/job_writes_bench.py [--rounds N] [--jobs N] [--status-jobs N] [--cases CASE ...]
[--workdir DIR]`` (``--cases submit``: that case alone, a few minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness

JSU_SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate"
JM_SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/JobManager"
MAX_PARAMETRIC = "/Systems/WorkloadManagement/Services/JobManager/MaxParametricJobs"
CASES = ("status", "kill", "submit")
PATHS = ("adapter", "dirac_future", "raw_httpx", "legacy")
#: The paths DIRAC 9.1.22 can take for each case (no FutureClient for JobManager).
CASE_PATHS = {
    "status": PATHS,
    "kill": ("adapter", "raw_httpx", "legacy"),
    "submit": ("adapter", "raw_httpx", "legacy"),
}
LABELS = {
    "adapter": "bridge adapter",
    "dirac_future": "DIRAC 9.1.22 FutureClient",
    "raw_httpx": "raw reused httpx (floor)",
    "legacy": "legacy DISET service (switch off)",
}
TARGET = 0.5  # adapter / legacy, medians: "at least 2x faster"
#: DiracX 0.7.0's limit of JDLs per submission request (``diracx.logic.jobs.submission``).
PER_REQUEST = 20
PREP_UA = "job-writes-bench (preparation)"
RAW_UA = "job-writes-bench (raw)"
JOB_JDL = '[ Executable = "/bin/true"; JobName = "wb-{tag}-%d"; JobGroup = "write-bench"; ]'
PARAMETRIC_JDL = (
    '[ Executable = "/bin/echo"; Arguments = "%s"; JobName = "wb-parametric-%n"; JobGroup = "write-bench"; '
    "Parameters = {n}; ParameterStart = 1; ParameterStep = 1; ]"
)
SOURCE = "JobWrapper"
#: The sizes of the after-rounds SQL-statement count (smaller: it is a count, not a timing).
DIAGNOSTIC_STATUS_JOBS, DIAGNOSTIC_JOBS = 20, 200
#: Lines of each adapter profile in the text report (the results keep 25, the files 60).
PROFILE_LINES = 18


class BenchError(RuntimeError):
    """The benchmark could not run, or a path answered something else than asked."""


# =============================================================================================
# Parent: the grid, the measuring child, the report
# =============================================================================================


def run(args: argparse.Namespace) -> int:
    from diracx_bridge.testing.grid import Grid
    from diracx_bridge.testing.processes import GridError, tail

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="job-writes-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, results_path, log_path = workdir / "spec.json", workdir / "results.json", workdir / "measure.log"
    results_path.unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    grid = Grid(workdir / "grid", cs_options={MAX_PARAMETRIC: str(max(args.jobs, 20))})
    t0 = time.monotonic()
    succeeded = False
    try:
        print(f"starting the grid-in-a-box in {grid.workdir} ...", flush=True)
        grid.start()
        assert grid.diracx is not None
        grid.proxy_init("ciuser", "civo_user")
        print(f"grid up in {grid.startup_seconds:.0f} s; load average {os.getloadavg()}", flush=True)
        spec = {
            "url": grid.diracx.url,
            "proxy": str(grid.proxy_path("ciuser", "civo_user")),
            "access_log": str(grid.diracx.access_log.path),
            "mysql_url": grid.mysql.url("JobDB", "mysql+pymysql"),
            "rounds": args.rounds,
            "jobs": args.jobs,
            "status_jobs": args.status_jobs,
            "records": args.records,
            "cases": args.cases,
            "results": str(results_path),
        }
        spec_path.write_text(json.dumps(spec))
        tmp = workdir / "tmp"  # DIRAC's FutureClient leaves a dx_* token file in $TMPDIR
        tmp.mkdir(exist_ok=True)
        print(f"measuring {args.rounds} interleaved rounds ...", flush=True)
        with log_path.open("wb") as log:
            rc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--measure", str(spec_path)],
                env=grid.client_environment("ciuser", "civo_user") | {"TMPDIR": str(tmp)},
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600 + 600 * (args.rounds + 1),
                check=False,
            ).returncode
        if rc or not results_path.exists():
            print(f"job_writes_bench: the measuring process failed (exit {rc}):\n{tail(log_path)}", file=sys.stderr)
            return 1
        results = json.loads(results_path.read_text())
        results["machine"]["grid_startup_s"] = round(grid.startup_seconds, 1)
        results["wall_s"] = round(time.monotonic() - t0)
        results_path.write_text(json.dumps(results, indent=1))
        print(report(results))
        print(f"\nraw samples: {results_path}; logs: {grid.log_dir}; bench wall time: {results['wall_s']} s")
        succeeded = True
        return 0
    except (GridError, BenchError, subprocess.TimeoutExpired) as exc:
        print(f"job_writes_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        grid.stop()
        if succeeded:
            harness.drop_grid_data(grid.workdir)


def report(results: dict[str, Any]) -> str:
    """Plain-text tables: one per case, its ratios, the target verdicts."""
    m = results["machine"]
    lines = [
        "",
        f"write path, {results['rounds']} interleaved rounds (no warm-up round counted), one DIRAC client process "
        f"as the jobs' owner; {m['cpus']} CPUs, load average {m['load_before']} before, {m['load_after']} after",
        f"measuring time {results['measure_s']:.0f} s (of which preparing jobs {results['prepare_s']:.0f} s)",
    ]
    verdicts = []
    for case in results.get("cases", CASES):
        data = results["samples"][case]
        wall, cpu = data["ms"], data["cpu_ms"]
        lines += ["", f"== {results['labels'][case]} ==", ""]
        unit, per = results["units"][case]
        rows = harness.summary_rows(wall, LABELS, fmt="{:.0f}")
        for row, path in zip(rows, wall, strict=True):
            median = statistics.median(wall[path])
            row += [
                f"{statistics.median(cpu[path]):.0f}",
                f"{median / per:.2f}",
                f"{statistics.median(data['requests'][path]):.0f}",
            ]
        lines += harness.table(
            ["path (ms per measurement)", "median", "p90", "mean", "CPU med", f"ms per {unit}", "DiracX req"], rows
        )
        if case != "status":
            lines.append(f"{LABELS['dirac_future']}: n/a (DIRAC 9.1.22 has no FutureClient for JobManager)")
        if "search_ms" in data:
            lines.append(
                f"raw_httpx parts: search {statistics.median(data['search_ms']['raw_httpx']):.0f} ms, "
                f"status request {statistics.median(data['patch_ms']['raw_httpx']):.0f} ms (medians)"
            )
        lines.append("")
        for other in ("legacy", "raw_httpx", "dirac_future"):
            if other in wall:
                lines.append(harness.comparison_line("adapter", other, wall["adapter"], wall[other]))
        verdicts.append((case, harness.ratio_of_medians(wall["adapter"], wall["legacy"])))
    if results.get("sql_statements"):
        lines += ["", "== SQL statements MariaDB ran, per job (status: per call), one measurement after the rounds =="]
        lines += harness.table(
            ["case", *PATHS],
            [
                [case, *(f"{by_path[p]:.1f}" if p in by_path else "n/a" for p in PATHS)]
                for case, by_path in results["sql_statements"].items()
            ],
        )
    for case, top in (results.get("profiles") or {}).items():
        lines += ["", f"== cProfile of one adapted {case} measurement after the rounds: cumulative seconds =="]
        lines += [f"  {seconds:8.3f}  {name}" for seconds, name in top[:PROFILE_LINES]]
    lines += ["", f"== target: adapter at least 2x faster than legacy (adapter/legacy <= {TARGET}, medians) =="]
    for case, r in verdicts:
        lines.append(f"{case:>7}: {r:.2f}x ({1 / r:.2f}x faster) -> {'MET' if r <= TARGET else 'NOT MET'}")
    return "\n".join(lines)


# =============================================================================================
# Child: the measuring DIRAC client process
# =============================================================================================


def _utc(offset_s: float = 0.0) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)


def _dirac_time(when: dt.datetime) -> str:
    """A status record's key as DIRAC's JobReport writes it (naive UTC, with microseconds)."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def wrapper_records(n: int, start: dt.datetime) -> dict[str, dict[str, str]]:
    """A job wrapper's ``n`` status records, 100 ms apart, as ``JobReport`` sends them (n >= 2)."""
    records = {_dirac_time(start): {"Status": "Running", "MinorStatus": "Job Initialization", "Source": SOURCE}}
    for i in range(1, n - 1):
        records[_dirac_time(start + dt.timedelta(milliseconds=100 * i))] = {
            "MinorStatus": "Application",
            "ApplicationStatus": f"Executing step {i}",
            "Source": SOURCE,
        }
    records[_dirac_time(start + dt.timedelta(milliseconds=100 * (n - 1)))] = {
        "Status": "Completing",
        "MinorStatus": "Uploading Output Sandbox",
        "Source": SOURCE,
    }
    return records


def _records_body(records: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The adapter's ``PATCH /api/jobs/status`` records: naive DIRAC times read as UTC, ISO with ``T``."""
    return {
        dt.datetime.strptime(k, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC).isoformat(): v
        for k, v in records.items()
    }


class Child:
    """Everything the measuring process keeps: clients, DiracX access, the access log."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import httpx
        from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

        from diracx_bridge.testing.access_log import AccessLog

        self.spec = spec
        self.cs = gConfigurationData
        self.access = AccessLog(Path(spec["access_log"]))
        self.proxy = Path(spec["proxy"])
        self.prep = httpx.Client(base_url=spec["url"], headers={"User-Agent": PREP_UA}, timeout=300)
        self.raw = httpx.Client(base_url=spec["url"], headers={"User-Agent": RAW_UA}, timeout=300)
        self.prepare_s = 0.0
        #: Set while counting SQL statements (MariaDB's ``Questions``): read around each timed call.
        self.sql_counter: Callable[[], int] | None = None

    def auth(self) -> dict[str, str]:
        """The proxy's current DiracX access token (re-read: the bridge refreshes it in the file)."""
        from diracx_bridge.tokens import read_token

        return {"Authorization": f"Bearer {read_token(self.proxy).access_token}"}

    def switch(self, on: bool) -> None:
        """Both services' switches, in this process's CS (the bridge reads them at every call)."""
        for option in (JSU_SWITCH, JM_SWITCH):
            self.cs.setOptionInCFG(option, "yes" if on else "no")

    # --- fresh jobs, outside the timer ---------------------------------------------------------------

    def create(self, n: int, tag: str, route: Sequence[str]) -> list[int]:
        """``n`` fresh jobs through DiracX, then moved along ``route`` (DIRAC's state machine, unforced)."""
        t0 = time.monotonic()
        auth = self.auth()
        ids: list[int] = []
        for start in range(0, n, PER_REQUEST):
            jdls = [JOB_JDL.replace("{tag}", tag) % i for i in range(start, min(n, start + PER_REQUEST))]
            r = self.prep.post("/api/jobs/jdl", json=jdls, headers=auth)
            if r.status_code != 201:
                raise BenchError(f"creating jobs: HTTP {r.status_code} {r.text[:300]}")
            ids += [int(job["JobID"]) for job in r.json()]
        if route:
            self.move(ids, route)
        self.prepare_s += time.monotonic() - t0
        return ids

    def move(self, ids: Sequence[int], route: Sequence[str]) -> None:
        """One status request: each job along ``route``, a second after its submission record."""
        start = _utc(1.0)
        body = {
            str(job): {
                (start + dt.timedelta(milliseconds=10 * i)).isoformat(): {
                    "Status": status,
                    "MinorStatus": "write-bench",
                    "Source": "WriteBench",
                }
                for i, status in enumerate(route)
            }
            for job in ids
        }
        r = self.prep.patch("/api/jobs/status", params={"force": "false"}, json=body, headers=self.auth())
        moved = r.json().get("success", {}) if r.is_success else {}
        wrong = [j for j in ids if (moved.get(str(j)) or {}).get("Status") != route[-1]]
        if wrong:
            raise BenchError(
                f"moving jobs to {route[-1]}: {len(wrong)} not moved (HTTP {r.status_code} {r.text[:300]})"
            )

    # --- the measurements ----------------------------------------------------------------------------

    def measure(self, case: str, path: str, n: int) -> dict[str, Any]:
        """One timed call (or loop of calls) of ``case`` through ``path`` on fresh jobs."""
        if path not in CASE_PATHS[case]:
            return {}
        return getattr(self, f"_{case}")(path, n)

    def _timed(self, path: str, call: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
        self.switch(path == "adapter")
        mark = self.access.mark()
        q0 = self.sql_counter() if self.sql_counter else 0
        c0, t0 = time.thread_time(), time.perf_counter()
        answer = call()
        elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
        q1 = self.sql_counter() if self.sql_counter else 1
        entries = list(self.access.since(mark))
        bridge = sum(1 for e in entries if e.from_bridge)
        raw = sum(1 for e in entries if e.user_agent == RAW_UA)
        other = len(entries) - bridge - raw
        proof = {
            "adapter": bridge > 0 and raw == other == 0,
            "dirac_future": other > 0 and bridge == raw == 0,
            "raw_httpx": raw > 0 and bridge == other == 0,
            "legacy": not entries,
        }[path]
        if not proof:
            raise BenchError(f"{path}: DiracX saw {bridge} bridge, {raw} raw and {other} other requests")
        metrics = {"ms": elapsed * 1000, "cpu_ms": cpu * 1000, "requests": float(len(entries))}
        if self.sql_counter:
            metrics["sql"] = float(q1 - q0 - 1)  # less the first reading of the counter
        return answer, metrics

    def _status(self, path: str, n: int) -> dict[str, Any]:
        from DIRAC.WorkloadManagementSystem.Client.JobStateUpdateClient import JobStateUpdateClient
        from DIRAC.WorkloadManagementSystem.FutureClient.JobStateUpdateClient import (
            JobStateUpdateClient as FutureJobStateUpdateClient,
        )

        jobs = self.create(n, f"status-{path}", ("Checking", "Waiting", "Matched"))
        # Dated after the jobs' Matched record (1 s ahead of the moment it was sent).
        start = _utc(2.0)
        calls = [(job, wrapper_records(self.spec["records"], start)) for job in jobs]
        auth = self.auth()

        def adapted_or_legacy() -> list[Any]:
            return [JobStateUpdateClient().setJobStatusBulk(job, records, False) for job, records in calls]

        def future() -> list[Any]:
            return [FutureJobStateUpdateClient().setJobStatusBulk(job, records, False) for job, records in calls]

        def raw() -> list[Any]:
            answers = []
            for job, records in calls:
                r = self.raw.patch(
                    "/api/jobs/status",
                    params={"force": "false"},
                    json={str(job): _records_body(records)},
                    headers=auth,
                )
                answers.append({"OK": r.is_success and str(job) in r.json()["success"], "Message": r.text[:300]})
            return answers

        call = {"adapter": adapted_or_legacy, "legacy": adapted_or_legacy, "dirac_future": future, "raw_httpx": raw}
        answers, metrics = self._timed(path, call[path])
        bad = [a for a in answers if not a["OK"]]
        if bad:
            raise BenchError(f"status/{path}: {len(bad)} of {len(answers)} calls failed, first: {bad[0]['Message']}")
        return metrics

    def _kill(self, path: str, n: int) -> dict[str, Any]:
        from DIRAC.WorkloadManagementSystem.Client.JobManagerClient import JobManagerClient

        from diracx_bridge.adapters.job_manager import KILLED
        from diracx_bridge.adapters.job_manager import SOURCE as KILL_SOURCE

        jobs = self.create(n, f"kill-{path}", ("Checking", "Waiting"))
        auth = self.auth()
        parts: dict[str, float] = {}

        def raw() -> dict[str, Any]:
            # The adapter's two requests: the jobs' rows, then one status request for all of them.
            t0 = time.perf_counter()
            r = self.raw.post(
                "/api/jobs/search",
                params={"page": 1, "per_page": len(jobs)},
                json={
                    "parameters": ["JobID", "Owner", "OwnerGroup", "VO", "Status", "LoggingInfo"],
                    "search": [{"parameter": "JobID", "operator": "in", "values": jobs}],
                    "sort": [{"parameter": "JobID", "direction": "asc"}],
                },
                headers=auth,
            )
            rows = r.json()
            t1 = time.perf_counter()
            when = _utc(1.0).isoformat()  # the adapter dates it a second after the last record
            body = {
                str(row["JobID"]): {when: {"Status": KILLED[0], "MinorStatus": KILLED[1], "Source": KILL_SOURCE}}
                for row in rows
                if row["Status"] == "Waiting"
            }
            p = self.raw.patch("/api/jobs/status", params={"force": "false"}, json=body, headers=auth)
            parts.update(search_ms=(t1 - t0) * 1000, patch_ms=(time.perf_counter() - t1) * 1000)
            killed = [int(j) for j, v in p.json().get("success", {}).items() if v.get("Status") == KILLED[0]]
            return {"OK": p.is_success, "Value": killed, "Message": p.text[:300]}

        def client() -> dict[str, Any]:
            return JobManagerClient().killJob(jobs)  # type: ignore[no-any-return]

        answer, metrics = self._timed(path, raw if path == "raw_httpx" else client)
        if not answer["OK"] or len(answer["Value"]) != len(jobs):
            raise BenchError(f"kill/{path}: {answer.get('Message')} ({len(answer.get('Value') or [])} of {len(jobs)})")
        return metrics | parts

    def _submit(self, path: str, n: int) -> dict[str, Any]:
        from DIRAC.WorkloadManagementSystem.Client.JobManagerClient import JobManagerClient
        from DIRACCommon.Core.Utilities.ClassAd.ClassAdLight import ClassAd
        from DIRACCommon.WorkloadManagementSystem.Utilities.ParametricJob import generateParametricJobs

        jdl = PARAMETRIC_JDL.replace("{n}", str(n))
        auth = self.auth()
        expanded: list[str] = []
        if path == "raw_httpx":
            t0 = time.monotonic()
            expanded = generateParametricJobs(ClassAd(jdl))["Value"]  # the adapter's expansion, untimed here
            self.prepare_s += time.monotonic() - t0

        def raw() -> dict[str, Any]:
            ids: list[int] = []
            for start in range(0, len(expanded), PER_REQUEST):
                r = self.raw.post("/api/jobs/jdl", json=expanded[start : start + PER_REQUEST], headers=auth)
                if r.status_code != 201:
                    return {"OK": False, "Message": f"HTTP {r.status_code} {r.text[:300]}"}
                ids += [int(job["JobID"]) for job in r.json()]
            return {"OK": True, "Value": ids}

        def client() -> dict[str, Any]:
            return JobManagerClient().submitJob(jdl)  # type: ignore[no-any-return]

        answer, metrics = self._timed(path, raw if path == "raw_httpx" else client)
        if not answer["OK"] or len(answer["Value"]) != n:
            raise BenchError(f"submit/{path}: {answer.get('Message')}")
        if path != "legacy":  # Received: out of the optimizers' way before the next measurement
            t0 = time.monotonic()
            self.move(answer["Value"], ("Killed",))
            self.prepare_s += time.monotonic() - t0
        return metrics


def sql_statements(child: Child, spec: dict[str, Any], cases: Sequence[str]) -> dict[str, dict[str, float]]:
    """After the timed rounds: SQL statements MariaDB ran per job (status: per call), per case and path.

    Where the server time goes, counted rather than timed: MariaDB's ``Questions`` counter
    before and after one smaller measurement of each path (the grid is otherwise idle: its jobs
    are out of the optimizers' way), less the second reading itself.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(spec["mysql_url"])
    sizes = {"status": DIAGNOSTIC_STATUS_JOBS, "kill": DIAGNOSTIC_JOBS, "submit": DIAGNOSTIC_JOBS}

    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")  # one statement per reading

    def questions() -> int:
        return int(conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Questions'")).one()[1])

    counts: dict[str, dict[str, float]] = {}
    child.sql_counter = questions
    try:
        for case in cases:
            for path in CASE_PATHS[case]:
                statements = child.measure(case, path, sizes[case])["sql"]
                counts.setdefault(case, {})[path] = statements / sizes[case]
    finally:
        child.sql_counter = None
        conn.close()
        engine.dispose()
    return counts


def profile_adapter(
    child: Child, spec: dict[str, Any], out_dir: Path, cases: Sequence[str]
) -> dict[str, list[tuple[float, str]]]:
    """After the rounds: cProfile of one adapted call per case (never during the timed rounds).

    The full listings go to ``adapter-profile-<case>.txt``; the results keep the functions with
    the most cumulative time (seconds; ``socket`` reads are the wait for DiracX).
    """
    import cProfile
    import io
    import pstats

    sizes = {"status": DIAGNOSTIC_STATUS_JOBS, "kill": spec["jobs"], "submit": spec["jobs"]}
    tops: dict[str, list[tuple[float, str]]] = {}
    for case in cases:
        profiler = cProfile.Profile()
        timed = child._timed

        def profiled(path: str, call: Callable[[], Any], timed: Any = timed, profiler: Any = profiler) -> Any:
            return timed(path, lambda: profiler.runcall(call))

        child._timed = profiled  # type: ignore[method-assign]
        try:
            child.measure(case, "adapter", sizes[case])
        finally:
            child._timed = timed  # type: ignore[method-assign]
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
        stats.print_stats(60)
        (out_dir / f"adapter-profile-{case}.txt").write_text(text.getvalue())
        rows = sorted(
            ((ct, f"{Path(fn).name}:{line}({name})") for (fn, line, name), (_, _, _, ct, _) in stats.stats.items()),  # type: ignore[attr-defined]
            reverse=True,
        )
        tops[case] = [(round(ct, 3), name) for ct, name in rows[:25]]
    return tops


def measure(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    import DIRAC

    DIRAC.initialize(require_auth=False)
    from DIRAC import gConfig
    from DIRAC.ConfigurationSystem.Client.PathFinder import getServiceSection

    limit = gConfig.getValue(f"{getServiceSection('WorkloadManagement/JobManager')}/MaxParametricJobs", 20)
    if int(limit) < spec["jobs"]:
        raise BenchError(f"MaxParametricJobs is {limit} in this client's CS, below {spec['jobs']}")

    cases = spec.get("cases") or CASES
    child = Child(spec)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    # A small untimed round first: imports, connections, caches, each path's answer and proof.
    for case in cases:
        for path in CASE_PATHS[case]:
            child.measure(case, path, 3 if case == "status" else 40)

    def timed(case: str, path: str) -> dict[str, Any]:
        size = spec["status_jobs"] if case == "status" else spec["jobs"]
        out = child.measure(case, path, size)
        if out:
            print(f"{case:>6} {path:<12} {out['ms']:9.0f} ms  ({out['requests']:.0f} DiracX requests)", flush=True)
        return out

    samples = harness.run_rounds(cases, PATHS, timed, rounds=spec["rounds"])
    measure_s = time.monotonic() - t0
    statements = sql_statements(child, spec, cases)
    profiles = profile_adapter(child, spec, Path(spec["results"]).parent, cases)
    harness.write_json(
        Path(spec["results"]),
        {
            "rounds": spec["rounds"],
            "cases": list(cases),
            "units": {
                "status": ["call", spec["status_jobs"]],
                "kill": ["job", spec["jobs"]],
                "submit": ["job", spec["jobs"]],
            },
            "labels": {
                "status": f"setJobStatusBulk: {spec['status_jobs']} jobs x {spec['records']} records "
                f"({spec['status_jobs'] * spec['records']} status records), one call per job",
                "kill": f"killJob of {spec['jobs']} Waiting jobs, one call",
                "submit": f"submitJob of one parametric JDL of {spec['jobs']} jobs",
            },
            "samples": {
                case: {
                    metric: {p: v for p, v in by_path.items() if p in CASE_PATHS[case]}
                    for metric, by_path in metrics.items()
                }
                for case, metrics in samples.items()
            },
            "measure_s": measure_s,
            "sql_statements": statements,
            "profiles": profiles,
            "prepare_s": child.prepare_s,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            },
        },
    )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed interleaved rounds (default 4)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs killed, and jobs of the parametric JDL")
    parser.add_argument("--status-jobs", type=int, default=250, help="jobs given status records (default 250)")
    parser.add_argument("--records", type=int, default=4, help="status records per job and call (default 4)")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="the cases measured (default: all three)"
    )
    parser.add_argument("--workdir", type=Path, help="where the grid and results go (default: a new temp dir)")
    parser.add_argument("--report", type=Path, help="print the report of an earlier run's results.json and exit")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    return measure(args.measure) if args.measure else run(args)


if __name__ == "__main__":
    sys.exit(main())
