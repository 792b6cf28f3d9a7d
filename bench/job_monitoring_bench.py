"""Per-call latency of ``JobMonitoringClient.getJobsStates``: the bridge vs the alternatives.

One run starts its own grid-in-a-box (real DIRAC 9.1.22 DISET services and real DiracX 0.7.0
sharing MariaDB, :mod:`diracx_bridge.testing.grid`), submits jobs, and measures, in ONE DIRAC
client process, the same question asked four ways:

``adapter``
    ``JobMonitoringClient().getJobsStates(ids)`` with
    ``/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring = yes``: DIRAC's ``Client``,
    the bridge's selector (activated by DIRAC's extension discovery, as in production), the
    JobMonitoring adapter and the process's pooled session. What a user's script gets.
``dirac_future``
    ``DIRAC.WorkloadManagementSystem.FutureClient.JobMonitoringClient.JobMonitoringClient()
    .getJobsStates(ids)``: DIRAC 9.1.22's own adapter, which opens a new ``SyncDiracClient``
    (discovery request, new pool) per call.
``raw_httpx``
    one reused ``httpx.Client`` sending the very request the adapter sends
    (``POST /api/jobs/search``, same body and query) with the bearer token of the proxy's
    DIRACX block, read with DIRAC's own ``diracxTokenFromPEM``. The floor: HTTP + DiracX only.
``legacy``
    the same ``JobMonitoringClient().getJobsStates(ids)`` with the switch off: DIRAC's DISET
    service, for reference.

plus a diagnostic fifth path, ``session``: the bridge's pooled ``DiracXSession.request`` alone
(no DIRAC ``Client``, no routing, no adapter), which splits the adapter's overhead into "HTTP
session and token" and "DIRAC client, routing and reshaping".

How, and why so:

* All paths run in the same process, **interleaved** (:mod:`harness`, shared by every bench):
  each round calls every path once, in a rotating order, for each case (one job ID, then
  ``--many`` IDs). On this shared 2-core machine the load of other processes drifts over
  seconds; interleaving spreads that drift over all paths alike instead of penalising whichever
  ran last. The switch is flipped in the process's in-memory CS (the bridge re-reads it on every
  call) outside the timed region.
* The first ``--warmup`` rounds are not counted (imports, first connections, token read).
* Per path: median, p90 and mean wall time, and the median CPU time of the calling thread (the
  client-side cost, which the machine's load perturbs much less than wall time). Ratios are
  adapter/raw_httpx, adapter/dirac_future and adapter/legacy, each as the ratio of the medians,
  of the means, and the median of the per-round ratios (paired samples taken milliseconds apart).
* Before timing: the adapter must answer what legacy answers, and the raw request must be byte
  for byte the adapter's (method, URL with query, body), or the bench fails rather than compare
  different work. During timing each answer is checked (``OK``, number of jobs): DIRAC 9.1.22's
  FutureClient returns only the first 100 jobs of a larger request (it ignores DiracX's
  ``206``), and the report says so.
* Afterwards, and only then: the client-side cost with DiracX replaced by its own recorded
  answer (``httpx.MockTransport``, no server noise) for raw httpx, the session and the
  adapter, i.e. the adapter's overhead in microseconds; each pure-CPU stage of the adapter
  timed alone; and cProfile of the adapter path (never during the timed rounds: it slows
  Python code down), to say where the overhead over raw httpx goes.

The grid is stopped at the end, also on error, Ctrl-C or SIGTERM; after a successful run its
databases are deleted and the results, profiles and logs stay in ``--workdir``.

Run: ``.venv/bin/python bench/job_monitoring_bench.py [--calls N] [--workdir DIR]``
(``--many``, ``--warmup``, ``--profile-calls``, ``--json`` too; ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness

SERVICE = "WorkloadManagement/JobMonitoring"
SWITCH = f"/DiracX/FutureClientEnabled/{SERVICE}"
#: The adapter is to stay within this factor of a raw reused httpx client.
TARGET = 1.15
#: Paths in the order the report lists them; ``session`` is diagnostic only.
PATHS = ("adapter", "dirac_future", "raw_httpx", "legacy", "session")
LABELS = {
    "adapter": "bridge adapter (JobMonitoringClient, switch on)",
    "dirac_future": "DIRAC 9.1.22 FutureClient (new SyncDiracClient/call)",
    "raw_httpx": "raw reused httpx.Client",
    "legacy": "legacy DISET service (switch off)",
    "session": "(diagnostic) bridge DiracXSession.request only",
}
#: What ``getJobsStates`` asks DiracX for: the adapter's exact parameters and sort.
STATE_PARAMETERS = ["JobID", "ApplicationStatus", "MinorStatus", "Status"]
#: The query string the adapter sends with every search. ``per_page`` is set in the measuring
#: process from the bridge's own setting (``/DiracX/Bridge/SearchPageSize``), and the canned-answer
#: step checks that the raw request is byte for byte the adapter's.
SEARCH_QUERY: dict[str, int] = {"page": 1, "per_page": 1000}
#: Each adapter stage is timed in this many batches of this many calls; the best batch counts.
STAGE_BATCHES, STAGE_BATCH_CALLS = 30, 50
#: DiracX 0.7.0 accepts at most 20 JDLs per submission request.
SUBMIT_BATCH = 20
JDL = '[Executable = "/bin/echo"; Arguments = "bench"; JobName = "jm-bench-%d";]'


# =============================================================================================
# Parent: start the grid, submit jobs, run the measuring child, report
# =============================================================================================


class BenchError(RuntimeError):
    """The benchmark could not run (the grid, a path's answer, the child process)."""


def _search_body(ids: Sequence[int]) -> dict[str, Any]:
    """The body the adapter sends for ``getJobsStates(ids)`` (``eq`` for one ID, as it does)."""
    spec: dict[str, Any] = (
        {"parameter": "JobID", "operator": "eq", "value": ids[0]}
        if len(ids) == 1
        else {"parameter": "JobID", "operator": "in", "values": list(ids)}
    )
    return {
        "parameters": STATE_PARAMETERS,
        "search": [spec],
        "sort": [{"parameter": "JobID", "direction": "asc"}],
    }


def submit_jobs(url: str, proxy: Path, count: int, settle_timeout: float) -> list[int]:
    """Submit ``count`` jobs through DiracX, then wait until DIRAC's optimizers are done with them.

    Jobs stay ``Received`` until DIRAC's OptimizationMind picks them up (every 10 s in the
    grid), then the optimizers write to the same MariaDB as every measured path reads. Waiting
    for them to settle in ``Waiting`` keeps that write burst out of the timed rounds.
    """
    import httpx

    from diracx_bridge.tokens import read_token

    token = read_token(proxy).access_token
    ids: list[int] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for start in range(0, count, SUBMIT_BATCH):
            batch = [JDL % i for i in range(start, min(count, start + SUBMIT_BATCH))]
            r = client.post("/api/jobs/jdl", json=batch)
            if r.status_code != 201:
                raise BenchError(f"submitting jobs to DiracX failed: HTTP {r.status_code} {r.text[:500]}")
            ids.extend(int(job["JobID"]) for job in r.json())
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            r = client.post(
                "/api/jobs/search",
                params={"page": 1, "per_page": 10_000},
                json={"parameters": ["JobID", "Status"], "search": [_search_body(ids)["search"][0]]},
            )
            if r.is_success and all(row["Status"] not in ("Received", "Checking") for row in r.json()):
                return ids
            time.sleep(2)
    print(f"note: jobs still being optimised after {settle_timeout:.0f} s; measuring anyway", file=sys.stderr)
    return ids


def run(args: argparse.Namespace) -> int:
    """Start the grid, run the measuring child against it, print the report; always stop the grid."""
    from diracx_bridge.testing.grid import Grid
    from diracx_bridge.testing.processes import GridError, tail

    workdir: Path = (args.workdir or Path(tempfile.mkdtemp(prefix="job-monitoring-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, results_path, child_log = (
        workdir / "spec.json",
        workdir / "results.json",
        workdir / "measure.log",
    )
    results_path.unlink(missing_ok=True)
    # SIGTERM (a CI timeout, `kill`) must stop the grid like Ctrl-C does: run the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    grid = Grid(workdir / "grid")
    child: subprocess.Popen[bytes] | None = None
    succeeded = False
    t0 = time.monotonic()
    try:
        print(f"starting the grid-in-a-box in {grid.workdir} ...", flush=True)
        grid.start()
        assert grid.diracx is not None
        proxy = grid.proxy_init("ciuser", "civo_user")
        print(f"grid up in {grid.startup_seconds:.0f} s; submitting {args.many} jobs ...", flush=True)
        ids = submit_jobs(grid.diracx.url, proxy, args.many, settle_timeout=180)
        spec = {
            "one": ids[:1],
            "many": ids,
            "calls": args.calls,
            "warmup": args.warmup,
            "profile_calls": args.profile_calls,
            "results": str(results_path),
            "profile_text": str(workdir / "adapter-profile.txt"),  # -one-real.txt, -one-canned.txt, ...
        }
        spec_path.write_text(json.dumps(spec))
        tmp = workdir / "tmp"  # DIRAC's FutureClient leaves a dx_* token file in $TMPDIR per refresh token
        tmp.mkdir(exist_ok=True)
        env = grid.client_environment("ciuser", "civo_user") | {"TMPDIR": str(tmp)}
        print(
            f"measuring {args.calls} calls per path and case ({args.warmup} warm-up rounds), interleaved ...",
            flush=True,
        )
        with child_log.open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--measure", str(spec_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            rc = child.wait(timeout=300 + 3.0 * (args.calls + args.warmup) + 0.5 * args.profile_calls)
        if rc or not results_path.exists():
            raise BenchError(f"the measuring process failed (exit {rc}); see {child_log}\n{tail(child_log)}")
        results = json.loads(results_path.read_text())
        results["machine"]["grid_startup_s"] = round(grid.startup_seconds, 1)
        results_path.write_text(json.dumps(results, indent=1))
        print(report(results))
        if args.json:
            harness.write_json(args.json, results)
        print(f"\nraw samples: {results_path}; profiles: {workdir}/adapter-profile-*.txt; logs: {grid.log_dir}")
        print(f"bench wall time: {time.monotonic() - t0:.0f} s")
        succeeded = True
        return 0
    except GridError as exc:
        print(f"job_monitoring_bench: the grid-in-a-box failed: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired:
        print(f"the measuring process timed out; see {child_log}", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"job_monitoring_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        grid.stop()
        if succeeded:
            harness.drop_grid_data(grid.workdir)


# =============================================================================================
# Statistics and report (parent side: plain data in, text out)
# =============================================================================================


def report(results: dict[str, Any]) -> str:
    """The text report: one table per case, the ratios, the target verdict, the profile summary."""
    m = results["machine"]
    lines = [
        "",
        f"getJobsStates latency, {results['calls']} calls per path and case after {results['warmup']} "
        f"warm-up rounds, interleaved round-robin in one DIRAC client process",
        f"machine: {m['cpus']} CPUs ({m['platform']}), shared; load average {m['load_before']} before, "
        f"{m['load_after']} after; Python {m['python']}",
    ]
    verdicts = []
    for case, data in results["cases"].items():
        n_ids = data["requested"]
        lines += ["", f"== {case}: {n_ids} job ID{'s' if n_ids > 1 else ''} per call ==", ""]
        wall = {path: data["wall_ms"][path] for path in PATHS if path in data["wall_ms"]}
        rows = harness.summary_rows(wall, LABELS)
        for row, path in zip(rows, wall, strict=True):
            row += [f"{statistics.median(data['cpu_ms'][path]):.2f}", str(data["jobs_returned"][path])]
        table = harness.table(["path", "median", "p90", "mean", "CPU med", "jobs"], rows)
        fewer = [data["jobs_returned"][path] < n_ids for path in wall]
        lines += [
            table[0],
            *(line + ("  <- FEWER than asked" if f else "") for line, f in zip(table[1:], fewer, strict=True)),
        ]
        lines.append("(milliseconds; CPU med = median CPU time of the calling thread, i.e. client-side work)")
        lines.append("")
        for other in ("raw_httpx", "dirac_future", "legacy"):
            lines.append(harness.comparison_line("adapter", other, wall["adapter"], wall[other]))
        # Wall-time differences of a few ms drown in this machine's noise; the calling thread's
        # CPU time is what the client itself spends, so the overhead is split with it.
        cpu = {path: statistics.median(data["cpu_ms"][path]) for path in ("adapter", "session", "raw_httpx")}
        lines.append(
            f"client CPU adapter / raw_httpx: {harness.ratio(cpu['adapter'], cpu['raw_httpx']):.2f}x; the adapter's "
            f"extra {cpu['adapter'] - cpu['raw_httpx']:+.2f} ms CPU per call = session/token layer "
            f"{cpu['session'] - cpu['raw_httpx']:+.2f} ms + DIRAC Client, routing and adapter "
            f"{cpu['adapter'] - cpu['session']:+.2f} ms"
        )
        ratio = harness.ratio_of_medians(wall["adapter"], wall["raw_httpx"])
        met = ratio <= TARGET
        verdicts.append((case, ratio, met))
        if data["jobs_returned"]["dirac_future"] < n_ids:
            lines.append(
                f"DIRAC 9.1.22's FutureClient returned {data['jobs_returned']['dirac_future']} of {n_ids} jobs: "
                "it reads only the first page of DiracX's 206 answer (the bridge reads every page)."
            )
    lines += ["", f"== target: adapter within {TARGET:.2f}x of raw reused httpx (medians) =="]
    for case, ratio, met in verdicts:
        lines.append(f"{case:>5}: {ratio:.2f}x -> {'MET' if met else 'NOT MET'}")
    lines += _canned_lines(results.get("canned"), results["cases"])
    lines += _profile_lines(results.get("profile"), results.get("stages"))
    return "\n".join(lines)


def _canned_lines(canned: dict[str, Any] | None, cases: dict[str, Any]) -> list[str]:
    """The network-free comparison, and the raw-call duration above which the target holds."""
    if not canned:
        return []
    lines = [
        "",
        "== client-side cost with DiracX replaced by a canned answer (httpx.MockTransport; microseconds per "
        f"call, best of {canned['batches']} alternating batches of {canned['number']}) ==",
        "",
        f"{'case':<6} {'raw httpx':>10} {'session':>10} {'adapter':>10} {'adapter overhead':>17}   target holds when",
    ]
    for case in cases:
        c = canned[case]
        overhead = c["adapter"] - c["raw_httpx"]
        floor_ms = overhead / (TARGET - 1) / 1000
        raw_ms = harness.summarise(cases[case]["wall_ms"]["raw_httpx"])["median"]
        lines.append(
            f"{case:<6} {c['raw_httpx']:10.0f} {c['session']:10.0f} {c['adapter']:10.0f} {overhead:+16.0f}   "
            f"a raw call takes >= {floor_ms:.1f} ms (measured here: {raw_ms:.1f} ms)"
        )
    return lines


def _profile_lines(profile: dict[str, Any] | None, stages: dict[str, float] | None) -> list[str]:
    lines: list[str] = []
    if stages:
        lines += [
            "",
            f"== adapter stages timed alone (no network; microseconds per call, best of {STAGE_BATCHES} batches "
            f"of {STAGE_BATCH_CALLS}) ==",
        ]
        lines += [f"{name:<66} {us:9.1f}" for name, us in stages.items()]
    for case, prof in (profile or {}).items():
        lines += [
            "",
            f"== cProfile of the adapter path, {case} ({prof['calls']} calls; cumulative time per call, "
            f"profiled total {prof['total_ms']:.2f} ms; cProfile inflates Python-heavy parts) ==",
        ]
        lines += [f"{name:<66} {ms:7.3f} ms" for name, ms in prof["layers"].items()]
        lines += ["", "top functions by own time (tottime per call; socket recv = waiting for DiracX):"]
        lines += [f"  {ms:7.3f} ms  {name}" for name, ms in prof["top_tottime"]]
    return lines


# =============================================================================================
# Child: the measuring DIRAC client process
# =============================================================================================


@dataclass
class Path_:
    """One way of asking the question; ``prepare`` runs before each call, outside the timer."""

    name: str
    prepare: Callable[[], None]
    call: Callable[[list[int]], dict[Any, Any]]


def _by_id(rows: list[dict[str, Any]]) -> dict[Any, Any]:
    """What the raw paths do with DiracX's rows: key them by job ID (as the caller needs them)."""
    return {row["JobID"]: row for row in rows}


def _value(result: dict[str, Any], what: str) -> dict[Any, Any]:
    if not result.get("OK"):
        raise BenchError(f"{what} failed: {result.get('Message')}")
    value = result["Value"]
    if not isinstance(value, dict):
        raise BenchError(f"{what} answered {type(value).__name__}, not a dict")
    return value


def _set_switch(on: bool) -> None:
    """Flip the service's switch in this process's CS (the bridge reads it on every call)."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    gConfigurationData.setOptionInCFG(SWITCH, "yes" if on else "no")


def _build_paths(url: str) -> tuple[list[Path_], Callable[[], None]]:
    """The five paths of the report, sharing this process; plus a closer for what they opened."""
    import httpx
    from DIRAC.Core.Security.DiracX import diracxTokenFromPEM
    from DIRAC.Core.Security.Locations import getDefaultProxyLocation
    from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient
    from DIRAC.WorkloadManagementSystem.FutureClient.JobMonitoringClient import (
        JobMonitoringClient as FutureJobMonitoringClient,
    )

    def switch(on: bool) -> Callable[[], None]:
        return lambda: _set_switch(on)

    # The bridge must really be in the way when the switch is on, and out of it when off.
    switch(True)()
    adapter = JobMonitoringClient()._getRPC()
    if type(adapter).__name__ != "JobMonitoringAdapter":
        raise BenchError(f"switch on, but the client got {type(adapter)!r}: is the bridge activated?")
    session = adapter.session
    SEARCH_QUERY["per_page"] = session.settings.search_page_size
    switch(False)()
    if type(JobMonitoringClient()._getRPC()).__name__ != "RPCClient":
        raise BenchError("switch off, but the client did not get DIRAC's DISET RPCClient")

    class RawSearch:
        """A reused httpx client with the proxy's token, re-read (outside the timer) before it expires."""

        def __init__(self) -> None:
            self.client = httpx.Client(base_url=url, timeout=60)
            self.expires = 0.0
            self.refresh()

        def refresh(self) -> None:
            if time.time() < self.expires - 60:
                return
            token = diracxTokenFromPEM(getDefaultProxyLocation())
            self.client.headers["Authorization"] = f"Bearer {token['access_token']}"
            self.expires = float(token.get("expires_on") or time.time() + 600)

        def call(self, ids: list[int]) -> dict[Any, Any]:
            r = self.client.post("/api/jobs/search", params=SEARCH_QUERY, json=_search_body(ids))
            if not r.is_success:
                raise BenchError(f"raw search answered HTTP {r.status_code}: {r.text[:300]}")
            return _by_id(r.json())

    raw = RawSearch()

    def session_call(ids: list[int]) -> dict[Any, Any]:
        r = session.request("POST", "/api/jobs/search", params=SEARCH_QUERY, json=_search_body(ids), idempotent=True)
        return _by_id(r.json())

    paths = [
        Path_("adapter", switch(True), lambda ids: _value(JobMonitoringClient().getJobsStates(ids), "adapter")),
        Path_(
            "dirac_future",
            lambda: None,
            lambda ids: _value(FutureJobMonitoringClient().getJobsStates(ids), "DIRAC FutureClient"),
        ),
        Path_("raw_httpx", raw.refresh, raw.call),
        Path_("legacy", switch(False), lambda ids: _value(JobMonitoringClient().getJobsStates(ids), "legacy")),
        Path_("session", lambda: None, session_call),
    ]
    return paths, raw.client.close


def _measure_rounds(paths: list[Path_], cases: dict[str, list[int]], calls: int, warmup: int) -> dict[str, Any]:
    """The interleaved rounds (harness.run_rounds): every case, every path once per round, rotating."""
    by_name = {p.name: p for p in paths}
    returned: dict[str, dict[str, int]] = {case: {} for case in cases}

    def measure(case: str, name: str) -> dict[str, float]:
        path, ids = by_name[name], cases[case]
        path.prepare()
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        value = path.call(ids)
        t1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        if returned[case].setdefault(name, len(value)) != len(value):
            raise BenchError(f"{name} returned {len(value)} jobs, earlier {returned[case][name]}")
        return {"wall_ms": (t1 - t0) / 1e6, "cpu_ms": (c1 - c0) / 1e6}

    samples = harness.run_rounds(list(cases), list(by_name), measure, rounds=calls, warmup=warmup)
    return {
        case: {
            "requested": len(ids),
            "wall_ms": samples[case]["wall_ms"],
            "cpu_ms": samples[case]["cpu_ms"],
            "jobs_returned": returned[case],
        }
        for case, ids in cases.items()
    }


def _check_same_answers(paths: list[Path_], cases: dict[str, list[int]]) -> None:
    """The adapter must answer what legacy answers (else its speed means nothing)."""
    by_name = {p.name: p for p in paths}
    for case, ids in cases.items():
        answers = {}
        for name in ("adapter", "legacy"):
            by_name[name].prepare()
            answers[name] = by_name[name].call(ids)
        if answers["adapter"] != answers["legacy"]:
            raise BenchError(f"{case}: the adapter's answer differs from the legacy one")


#: Functions whose cumulative time per call the profile reports, as (label, file suffix, name).
PROFILE_LAYERS = (
    (
        "whole call: JobMonitoringClient.getJobsStates",
        "WorkloadManagementSystem/Client/JobMonitoringClient.py",
        "getJobsStates",
    ),
    ("  selector: routing.select (decide + adapter instance)", "diracx_bridge/routing.py", "select"),
    ("    routing.decide", "diracx_bridge/routing.py", "decide"),
    ("      settings.service_settings", "diracx_bridge/settings.py", "service_settings"),
    ("      settings.bridge_settings", "diracx_bridge/settings.py", "bridge_settings"),
    ("      identity.resolve_caller", "diracx_bridge/identity.py", "resolve_caller"),
    ("  adapted wrapper (adapters/base.py)", "diracx_bridge/adapters/base.py", "wrapper"),
    ("    over_the_wire (MixedEncode round trips, args + answer)", "diracx_bridge/adapters/base.py", "over_the_wire"),
    ("    Adapter._rpc_stub", "diracx_bridge/adapters/base.py", "_rpc_stub"),
    ("    Adapter.session (get_session lookup)", "diracx_bridge/adapters/base.py", "session"),
    ("    JobMonitoringAdapter._search", "diracx_bridge/adapters/job_monitoring.py", "_search"),
    ("      DiracXSession.request", "diracx_bridge/session.py", "request"),
    ("        httpx Client.request", "httpx/_client.py", "request"),
    ("          TokenAuth.current (stat of the proxy)", "diracx_bridge/session.py", "current"),
    ("          httpx Client.build_request", "httpx/_client.py", "build_request"),
    ("          httpx Client.send", "httpx/_client.py", "send"),
    ("            httpcore handle_request", "httpcore/_sync/connection_pool.py", "handle_request"),
    ("        Response.json", "httpx/_models.py", "json"),
    ("  strToIntDict (DIRAC's client fix-up)", "DIRAC/Core/Utilities/JEncode.py", "strToIntDict"),
)


def _profile_adapter(path: Path_, ids: list[int], calls: int, text_out: Path) -> dict[str, Any]:
    """cProfile of the adapter path only (enabled around each call, not around the harness)."""
    profiler = cProfile.Profile()
    for _ in range(calls):
        path.prepare()
        profiler.enable()
        path.call(ids)
        profiler.disable()
    stats = pstats.Stats(profiler)
    raw_stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    layers: dict[str, float] = {}
    for label, suffix, func in PROFILE_LAYERS:
        ct = sum(v[3] for (file, _, name), v in raw_stats.items() if name == func and file.endswith(suffix))
        layers[label] = ct * 1000 / calls
    top = sorted(raw_stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top_tottime = [
        (f"{Path(file).parent.name}/{Path(file).name}:{line}({name})", v[2] * 1000 / calls)
        for (file, line, name), v in top
    ]
    with text_out.open("w") as f:
        stats.stream = f  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
    return {
        "calls": calls,
        "total_ms": stats.total_tt * 1000 / calls,  # type: ignore[attr-defined]
        "layers": layers,
        "top_tottime": top_tottime,
    }


def _time_stages(cases: dict[str, list[int]]) -> dict[str, float]:
    """Each pure-CPU stage of the adapter path, alone: microseconds per call (no network)."""
    from DIRAC.Core.Utilities.JEncode import strToIntDict
    from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

    from diracx_bridge import routing
    from diracx_bridge.adapters import over_the_wire
    from diracx_bridge.identity import resolve_caller

    _set_switch(True)
    client = JobMonitoringClient()
    adapter = client._getRPC()
    if type(adapter).__name__ != "JobMonitoringAdapter":
        raise BenchError(f"stage timing: expected the bridge's adapter, got {type(adapter)!r}")
    one, many = cases["one"], cases["many"]
    answers = {len(ids): adapter.getJobsStates(ids)["Value"] for ids in (one, many)}
    # The adapter's reshaping of DiracX rows into the legacy answer, with the search itself
    # stubbed out on a throwaway adapter instance (an instance attribute, nothing global).
    reshaper = client._getRPC()
    canned_rows = {
        len(ids): {int(k): {"JobID": int(k), **v} for k, v in answers[len(ids)].items()} for ids in (one, many)
    }
    reshaper._rows_by_id = lambda job_ids, _params, _action: canned_rows[len(job_ids)]
    state_attrs = ["Status", "MinorStatus", "ApplicationStatus"]
    stages: dict[str, Callable[[], object]] = {
        "JobMonitoringClient() (DIRAC Client constructor)": JobMonitoringClient,
        "client._getRPC(): selector = decide + adapter instance": client._getRPC,
        "routing.decide (CS reads + caller)": lambda: routing.decide(SERVICE, {"timeout": 600}),
        "identity.resolve_caller": lambda: resolve_caller({"timeout": 600}),
        "adapter.session (get_session lookup)": lambda: adapter.session,
        "session.auth.current() (stat of the proxy, cached token)": adapter.session.auth.current,
        "over_the_wire(args), 1 ID": lambda: over_the_wire([one]),
        f"over_the_wire(args), {len(many)} IDs": lambda: over_the_wire([many]),
        "over_the_wire(answer), 1 job": lambda: over_the_wire(answers[1]),
        f"over_the_wire(answer), {len(many)} jobs": lambda: over_the_wire(answers[len(many)]),
        "adapter reshaping rows -> legacy answer (_attributes), 1 job": lambda: reshaper._attributes(
            one, state_attrs, "bench"
        ),
        f"adapter reshaping rows -> legacy answer (_attributes), {len(many)} jobs": lambda: reshaper._attributes(
            many, state_attrs, "bench"
        ),
        "strToIntDict(answer), 1 job": lambda: strToIntDict(answers[1]),
        f"strToIntDict(answer), {len(many)} jobs": lambda: strToIntDict(answers[len(many)]),
    }
    out = {}
    for name, fn in stages.items():
        # The best of many short batches: other processes on the machine only ever add time,
        # and short batches are likelier to fall in a quiet moment of this shared machine.
        runs = timeit.Timer(fn).repeat(repeat=STAGE_BATCHES, number=STAGE_BATCH_CALLS)
        out[name] = min(runs) / STAGE_BATCH_CALLS * 1e6
    return out


#: A URL nothing answers: the canned-answer comparison gets its own bridge session for it.
CANNED_URL = "http://canned-answer.invalid"


class CannedDiracX:
    """DiracX replaced by its own recorded answers, for client-side costs free of server noise.

    The real answer of each case (its bytes, fetched once from DiracX) is served by
    ``httpx.MockTransport`` to a raw ``httpx.Client``, to a bridge session and, through it, to
    ``JobMonitoringClient().getJobsStates``, so the three differ only by client-side code. The
    bridge gets its own session for :data:`CANNED_URL` (``/DiracX/URL`` points there while the
    context is open; the real session is left alone) and that session's transport is swapped
    (``httpx.Client._transport``, private: the bench fails loudly if httpx renames it).
    """

    def __init__(self, url: str, cases: dict[str, list[int]]) -> None:
        import httpx
        from DIRAC.Core.Security.DiracX import diracxTokenFromPEM
        from DIRAC.Core.Security.Locations import getDefaultProxyLocation

        self.cases = cases
        self.token = diracxTokenFromPEM(getDefaultProxyLocation())["access_token"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as real:
            self.answers = {
                case: real.post("/api/jobs/search", params=SEARCH_QUERY, json=_search_body(ids)).content
                for case, ids in cases.items()
            }
        self.body = b""
        self.last_request: tuple[str, str, bytes] = ("", "", b"")

    def select(self, case: str) -> None:
        """Serve the recorded answer of ``case`` from now on."""
        self.body = self.answers[case]

    def _handler(self, request: Any) -> Any:
        import httpx

        self.last_request = (request.method, str(request.url), request.read())
        return httpx.Response(200, content=self.body, headers={"content-type": "application/json"})

    def check_same_request(self, calls: dict[str, Callable[[list[int]], dict[Any, Any]]]) -> None:
        """The raw path must send exactly what the adapter sends, or the comparison is unfair.

        Fails the bench (rather than measuring something else) when the adapter's request
        changes, e.g. another page size or sort, until ``_search_body``/``SEARCH_QUERY`` follow.
        """
        for case, ids in self.cases.items():
            self.select(case)
            sent = {}
            for name in ("adapter", "raw_httpx", "session"):
                calls[name](ids)
                sent[name] = self.last_request
            if not sent["adapter"] == sent["raw_httpx"] == sent["session"]:
                raise BenchError(f"{case}: the raw request differs from the adapter's: {sent!r}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[dict[str, Callable[[list[int]], dict[Any, Any]]]]:
        """Point the bridge at the canned server; yield the three comparable calls."""
        import httpx
        from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
        from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

        real_url = gConfigurationData.extractOptionFromCFG("/DiracX/URL")
        gConfigurationData.setOptionInCFG("/DiracX/URL", CANNED_URL)
        _set_switch(True)
        raw = httpx.Client(
            base_url=CANNED_URL,
            transport=httpx.MockTransport(self._handler),
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            session = JobMonitoringClient()._getRPC().session
            if session.url != CANNED_URL or not hasattr(session.client, "_transport"):
                raise BenchError("canned answers: cannot give the bridge session a mock transport")
            session.client._transport = httpx.MockTransport(self._handler)
            yield {
                "raw_httpx": lambda ids: _by_id(
                    raw.post("/api/jobs/search", params=SEARCH_QUERY, json=_search_body(ids)).json()
                ),
                "session": lambda ids: _by_id(
                    session.request(
                        "POST", "/api/jobs/search", params=SEARCH_QUERY, json=_search_body(ids), idempotent=True
                    ).json()
                ),
                "adapter": lambda ids: _value(JobMonitoringClient().getJobsStates(ids), "canned adapter"),
            }
        finally:
            raw.close()
            gConfigurationData.setOptionInCFG("/DiracX/URL", real_url)

    def overhead(
        self, calls: dict[str, Callable[[list[int]], dict[Any, Any]]], batches: int = 40, number: int = 25
    ) -> dict[str, Any]:
        """Best time per call of each path: batches alternate, and the best batch counts,
        because other processes on the machine only ever add time."""
        out: dict[str, Any] = {"batches": batches, "number": number}
        for case, ids in self.cases.items():
            self.select(case)
            if len(calls["adapter"](ids)) != len(ids):
                raise BenchError(f"canned answers: the adapter did not return the {len(ids)} jobs")
            best = dict.fromkeys(calls, float("inf"))
            for _ in range(batches):
                for name, fn in calls.items():
                    best[name] = min(
                        best[name], timeit.timeit(lambda fn=fn, ids=ids: fn(ids), number=number) / number * 1e6
                    )
            out[case] = best
        return out


def measure(spec_path: Path) -> int:
    """The child: a DIRAC client process like a user's script, timing every path."""
    spec = json.loads(spec_path.read_text())
    load_before = os.getloadavg()
    import DIRAC

    DIRAC.initialize(require_auth=False)
    from DIRAC import gConfig

    url = gConfig.getValue("/DiracX/URL")
    paths, close = _build_paths(url)
    cases = {"one": spec["one"], "many": spec["many"]}
    canned = CannedDiracX(url, cases)
    try:
        # Both checks before the long timed rounds: a wrong comparison must fail fast.
        _check_same_answers(paths, cases)
        with canned.installed() as calls:
            canned.check_same_request(calls)
        results = {
            "calls": spec["calls"],
            "warmup": spec["warmup"],
            "cases": _measure_rounds(paths, cases, spec["calls"], spec["warmup"]),
        }
        load_after = os.getloadavg()
        by_name = {p.name: p for p in paths}
        results["stages"] = _time_stages(cases)
        n_profiled = spec["profile_calls"]
        text = Path(spec["profile_text"])
        results["profile"] = {}
        if n_profiled:
            # Against the real DiracX: how much of a call is waiting for the server at all.
            results["profile"]["one, real DiracX"] = _profile_adapter(
                by_name["adapter"], cases["one"], n_profiled, text.with_name(f"{text.stem}-one-real{text.suffix}")
            )
        with canned.installed() as calls:
            results["canned"] = canned.overhead(calls)
            # Against canned answers: the client-side work alone, i.e. where the overhead goes.
            for case, ids in cases.items() if n_profiled else ():
                canned.select(case)
                results["profile"][f"{case}, canned answer"] = _profile_adapter(
                    by_name["adapter"], ids, n_profiled, text.with_name(f"{text.stem}-{case}-canned{text.suffix}")
                )
    finally:
        close()
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_after": " ".join(f"{x:.2f}" for x in load_after),
    }
    Path(spec["results"]).write_text(json.dumps(results, indent=1))
    return 0


# =============================================================================================


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per path and case (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    parser.add_argument("--many", type=int, default=200, help="job IDs of the larger case (default 200)")
    parser.add_argument("--profile-calls", type=int, default=300, help="adapter calls profiled (0: no profile)")
    parser.add_argument("--workdir", type=Path, help="where the grid and results go (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results (raw samples included) here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's entry point
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.many < 2:
        parser.error("--calls must be >= 1, --warmup >= 0 and --many >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        return measure(args.measure)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
