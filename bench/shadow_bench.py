"""What shadow mode costs the caller: ``getJobsStates`` on legacy with shadow off, at 1%, at 100%, and with DiracX down.

One run starts its own grid-in-a-box, submits jobs, and measures in ONE DIRAC client process
(JobMonitoring switched off: every caller is answered by the legacy DISET service), interleaved
round by round (:mod:`harness`):

``off``
    no ``Shadow`` option: the legacy call as without shadow mode;
``1%``, ``100%``
    ``/DiracX/Bridge/WorkloadManagement/JobMonitoring/Shadow = 0.01`` / ``1``: the caller's thread
    samples, deep-copies the sampled call and queues it; the background worker asks DiracX (at
    most ``ShadowMaxPerSecond``, 5/s by default, so at 100% most samples are dropped when the
    queue of 100 is full: that is the protection of DiracX being measured too);
``100%, DiracX down``
    the same with ``/DiracX/URL`` pointing at a closed port: the worker's calls all fail.

Reported per path: median, p90, mean of the caller's latency; the ratio to ``off`` (of medians
and per round); the median added milliseconds; and afterwards how many comparisons the journal
holds and how many samples were dropped. Never asserted in tests.

Run: ``.venv/bin/python bench/shadow_bench.py [--calls N] [--warmup N] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness

SERVICE = "WorkloadManagement/JobMonitoring"
SHADOW = f"/DiracX/Bridge/{SERVICE}/Shadow"
PATHS = ("off", "1%", "100%", "100%, DiracX down")
CASES = ("one", "many")


def run(args: argparse.Namespace) -> int:
    from diracx_bridge.testing.grid import Grid
    from diracx_bridge.testing.processes import GridError, tail
    from job_monitoring_bench import submit_jobs

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="shadow-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, results_path, log_path = workdir / "spec.json", workdir / "results.json", workdir / "measure.log"
    results_path.unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    grid = Grid(workdir / "grid")
    t0 = time.monotonic()
    try:
        print(f"starting the grid-in-a-box in {grid.workdir} ...", flush=True)
        grid.start()
        assert grid.diracx is not None
        proxy = grid.proxy_init("ciuser", "civo_user")
        ids = submit_jobs(grid.diracx.url, proxy, args.many, settle_timeout=180)
        spec = {
            "one": ids[:1],
            "many": ids,
            "calls": args.calls,
            "warmup": args.warmup,
            "journal": str(workdir / "journal"),
            "results": str(results_path),
        }
        spec_path.write_text(json.dumps(spec))
        print(f"measuring {args.calls} calls per path and case, interleaved ...", flush=True)
        with log_path.open("wb") as log:
            rc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--measure", str(spec_path)],
                env=grid.client_environment("ciuser", "civo_user"),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600 + 2.0 * (args.calls + args.warmup) * len(PATHS) * len(CASES),
                check=False,
            ).returncode
        if rc or not results_path.exists():
            print(f"shadow_bench: the measuring process failed (exit {rc}):\n{tail(log_path)}", file=sys.stderr)
            return 1
        results = json.loads(results_path.read_text())
        print(report(results))
        print(f"\nraw samples: {results_path}; bench wall time: {time.monotonic() - t0:.0f} s")
        return 0
    except (GridError, subprocess.TimeoutExpired) as exc:
        print(f"shadow_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        grid.stop()


def report(results: dict[str, Any]) -> str:
    lines = [
        f"getJobsStates on the legacy service, caller's latency (ms), {results['calls']} calls per path and case, "
        f"interleaved; ShadowMaxPerSecond {results['max_per_second']:g}, ShadowQueueSize {results['queue_size']}",
    ]
    for case in CASES:
        samples = results["samples"][case]["ms"]
        lines += ["", f"== {case}: {len(results['ids'][case])} job ID(s) per call =="]
        rows = harness.summary_rows({path: samples[path] for path in PATHS}, {p: p for p in PATHS})
        lines += harness.table(["path", "median", "p90", "mean"], rows)
        for path in PATHS[1:]:
            added = statistics.median(a - b for a, b in zip(samples[path], samples["off"], strict=True))
            lines.append(
                harness.comparison_line(path, "off", samples[path], samples["off"]) + f"   added {added:+.2f} ms"
            )
    journal = results["journal"]
    lines += [
        "",
        f"journal: {journal['compared']} comparisons ({journal['equal']} equal), {journal['diracx_errors']} DiracX "
        f"errors, {journal['dropped']} samples dropped (queue full)",
    ]
    return "\n".join(lines)


# =============================================================================================
# The measuring child (a DIRAC client process)
# =============================================================================================


def measure(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    import DIRAC

    DIRAC.initialize(require_auth=False)
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData as cs
    from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient

    from diracx_bridge.settings import shadow_settings
    from diracx_bridge.shadow import _worker
    from diracx_bridge.shadow.journal import read_records

    url = cs.extractOptionFromCFG("/DiracX/URL")
    cs.setOptionInCFG("/DiracX/Bridge/ShadowJournal", spec["journal"])
    cs.setOptionInCFG("/DiracX/Bridge/ShadowDrainSeconds", "30")
    ids = {case: spec[case] for case in CASES}
    options = {
        "off": {SHADOW: None, "/DiracX/URL": url},
        "1%": {SHADOW: "0.01", "/DiracX/URL": url},
        "100%": {SHADOW: "1", "/DiracX/URL": url},
        "100%, DiracX down": {SHADOW: "1", "/DiracX/URL": "http://127.0.0.1:9"},
    }

    def measure_one(case: str, path: str) -> dict[str, float]:
        for option, value in options[path].items():
            if value is None:
                cs.deleteOptionInCFG(option)
            else:
                cs.setOptionInCFG(option, value)
        started = time.perf_counter()
        result = JobMonitoringClient().getJobsStates(ids[case])
        elapsed = time.perf_counter() - started
        if not result["OK"] or len(result["Value"]) != len(ids[case]):
            raise RuntimeError(f"{path}/{case}: {result.get('Message', 'wrong number of jobs')}")
        return {"ms": elapsed * 1000}

    samples = harness.run_rounds(CASES, PATHS, measure_one, rounds=spec["calls"], warmup=spec["warmup"])
    worker = _worker._shadow
    if worker is not None:
        worker.drain(60)
    records = list(read_records([Path(spec["journal"])]))
    compared = [r for r in records if r.get("kind") == "compared"]
    settings = shadow_settings()
    results = {
        "calls": spec["calls"],
        "ids": ids,
        "samples": samples,
        "max_per_second": settings.max_per_second,
        "queue_size": settings.queue_size,
        "journal": {
            "compared": len(compared),
            "equal": sum(1 for r in compared if r.get("equal")),
            "diracx_errors": sum(1 for r in compared if not (r.get("diracx") or {}).get("ok", True)),
            "dropped": sum(int(r.get("count", 0)) for r in records if r.get("kind") == "dropped"),
        },
    }
    harness.write_json(Path(spec["results"]), results)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="timed calls per path and case (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--many", type=int, default=200, help="job IDs of the larger case (default 200)")
    parser.add_argument("--workdir", type=Path, help="where the grid and results go (default: a new temp dir)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return measure(args.measure) if args.measure else run(args)


if __name__ == "__main__":
    sys.exit(main())
