"""``PilotManagerClient.getPilotSummary`` and ``getPilotInfo`` of 1,000 pilots: the bridge vs legacy DISET.

One run starts its own grid-in-a-box (real DIRAC 9.1.22 DISET services and real DiracX 0.7.0
sharing MariaDB, :mod:`diracx_bridge.testing.grid`), registers ``--pilots`` pilots through the
legacy PilotManager (two VOs), spreads them over states and sites and gives most of them jobs
(a JobDB job each, some two, a few jobs on two pilots: the ``JobToPilotMapping`` rows DIRAC's
Matcher writes), then measures, in ONE DIRAC client process acting as an administrator
(``civo_admin``: Operator, ServiceAdministrator), interleaved round by round (:mod:`harness`):

``adapter``
    ``PilotManagerClient().<method>(...)`` with
    ``/DiracX/FutureClientEnabled/WorkloadManagement/PilotManager = yes``: the bridge's routing,
    the PilotManager adapter and the process's pooled DiracX session. For ``getPilotInfo`` that
    is one pilot search, then the jobs of those pilots and their pairing (2 + 2 log2(n) job
    searches, plus one per job that ran on two of the pilots); for ``getPilotSummary``, one
    summary and two one-row searches.
``legacy``
    the same call with the switch off: DIRAC's PilotManager DISET service (one or eleven SQL
    queries in the service).

Before timing, the two answers of each case must be the same by the rules shadow mode uses
(:func:`diracx_bridge.shadow.compare.compare`), or the bench fails rather than compare different
work. Reported per case and path: median, p90 and mean wall time; adapter/legacy as the ratio of
the medians, of the means, and the median of the per-round ratios; and the number of DiracX
requests one adapted call makes (from the grid's access log). Never asserted in tests.

Run: ``.venv/bin/python bench/pilots_bench.py [--calls N] [--warmup N] [--pilots N] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness

SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/PilotManager"
PM = "DIRAC.WorkloadManagementSystem.Client.PilotManagerClient.PilotManagerClient"
PATHS = ("adapter", "legacy")
CASES = ("getPilotSummary", "getPilotInfo")
STATES = ("Submitted", "Waiting", "Running", "Done", "Failed", "Aborted", "Deleted", "Unknown")
SITES = 20


def seed(grid: Any, pilots: int, jobs: list[int]) -> list[str]:
    """Register ``pilots`` pilots through the legacy service; states, sites and jobs as DIRAC's agents set them."""
    import sqlalchemy as sa

    rng = random.Random(20250101)
    refs = [f"htcondorce://ce{i % SITES:02d}.bench.example.org/{i:06d}.0" for i in range(pilots)]
    worker = grid.worker("ciuser", "civo_admin")
    try:
        cut = pilots * 4 // 5
        for vo, part in (("civo", refs[:cut]), ("legacyvo", refs[cut:])):
            stamps = {ref: f"bench{i:06d}{vo}" for i, ref in enumerate(part)}
            res = worker.call(PM, "addPilotReferences", part, vo, "HTCondorCE", stamps, cs={SWITCH: None})
            if not res["OK"]:
                raise RuntimeError(f"registering the pilots failed: {res['Message']}")
    finally:
        worker.close()
    engine = sa.create_engine(grid.mysql.url("PilotAgentsDB", "mysql+pymysql"))
    with engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT PilotJobReference, PilotID FROM PilotAgents")).all())
        conn.execute(
            sa.text(
                "UPDATE PilotAgents SET Status = :status, DestinationSite = :site, GridSite = 'DIRAC.CI.ch', "
                "LastUpdateTime = UTC_TIMESTAMP() - INTERVAL :minutes MINUTE WHERE PilotID = :id"
            ),
            [
                {
                    "status": rng.choice(STATES),
                    "site": f"ce{i % SITES:02d}.bench.example.org",
                    "minutes": rng.choice((5, 30, 300, 3000)),
                    "id": ids[ref],
                }
                for i, ref in enumerate(refs)
            ],
        )
        # Most pilots ran a job, some two, a few jobs ran on two pilots (rescheduled), some pilots none.
        mapping = [(ids[refs[i]], jobs[i]) for i in range(min(len(jobs), pilots * 7 // 10))]
        spare = jobs[len(mapping) :]
        mapping += [(ids[refs[i]], spare[i]) for i in range(min(len(spare), pilots // 7))]
        mapping += [(ids[refs[-1 - i]], jobs[i]) for i in range(10)]
        conn.execute(
            sa.text("INSERT INTO JobToPilotMapping (PilotID, JobID, StartTime) VALUES (:p, :j, UTC_TIMESTAMP())"),
            [{"p": p, "j": j} for p, j in mapping],
        )
    engine.dispose()
    return refs


def run(args: argparse.Namespace) -> int:
    from diracx_bridge.testing.grid import Grid
    from diracx_bridge.testing.processes import GridError, tail
    from job_monitoring_bench import submit_jobs

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="pilots-bench-"))).resolve()
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
        user = grid.proxy_init("ciuser", "civo_user")
        grid.proxy_init("ciuser", "civo_admin")
        print(f"grid up in {grid.startup_seconds:.0f} s; submitting jobs, registering {args.pilots} pilots ...")
        jobs = submit_jobs(grid.diracx.url, user, args.pilots, settle_timeout=240)
        refs = seed(grid, args.pilots, jobs)
        spec = {
            "refs": refs,
            "calls": args.calls,
            "warmup": args.warmup,
            "access_log": str(grid.diracx.access_log.path),
            "results": str(results_path),
        }
        spec_path.write_text(json.dumps(spec))
        print(f"measuring {args.calls} calls per path and case, interleaved ...", flush=True)
        with log_path.open("wb") as log:
            rc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--measure", str(spec_path)],
                env=grid.client_environment("ciuser", "civo_admin"),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=900 + 30.0 * (args.calls + args.warmup),
                check=False,
            ).returncode
        if rc or not results_path.exists():
            print(f"pilots_bench: the measuring process failed (exit {rc}):\n{tail(log_path)}", file=sys.stderr)
            return 1
        results = json.loads(results_path.read_text())
        print(report(results))
        print(f"\nraw samples: {results_path}; bench wall time: {time.monotonic() - t0:.0f} s")
        return 0
    except (GridError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"pilots_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        grid.stop()


def report(results: dict[str, Any]) -> str:
    lines = [
        f"PilotManagerClient as an administrator, {results['pilots']} pilots, wall time (ms), "
        f"{results['calls']} calls per path and case, interleaved"
    ]
    for case in CASES:
        samples = results["samples"][case]["ms"]
        requests = results["requests"][case]
        lines += ["", f"== {results['labels'][case]} (adapted: {requests} DiracX requests per call) =="]
        lines += harness.table(["path", "median", "p90", "mean"], harness.summary_rows(samples))
        lines.append(harness.comparison_line("adapter", "legacy", samples["adapter"], samples["legacy"]))
    return "\n".join(lines)


# =============================================================================================
# The measuring child (a DIRAC client process)
# =============================================================================================


def measure(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    import DIRAC

    DIRAC.initialize(require_auth=False)
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData as cs
    from DIRAC.WorkloadManagementSystem.Client.PilotManagerClient import PilotManagerClient

    from diracx_bridge.shadow.compare import compare
    from diracx_bridge.testing.access_log import AccessLog

    refs = spec["refs"]
    calls = {"getPilotSummary": (), "getPilotInfo": (refs,)}

    def call(case: str, path: str) -> dict[str, Any]:
        if path == "adapter":
            cs.setOptionInCFG(SWITCH, "yes")
        else:
            cs.deleteOptionInCFG(SWITCH)
        return getattr(PilotManagerClient(), case)(*calls[case])  # type: ignore[no-any-return]

    access = AccessLog(Path(spec["access_log"]))
    requests: dict[str, int] = {}
    for case in CASES:
        legacy, adapted = call(case, "legacy"), call(case, "adapter")
        verdict = compare(legacy, adapted, case)
        if not legacy["OK"] or not verdict.equal:
            raise RuntimeError(f"{case}: the adapter does not answer what legacy answers: {verdict}")
        mark = access.mark()
        call(case, "adapter")
        requests[case] = len([e for e in access.since(mark) if e.from_bridge])
    if len(call("getPilotInfo", "legacy")["Value"]) != len(refs):
        raise RuntimeError("getPilotInfo did not answer every pilot")

    def measure_one(case: str, path: str) -> dict[str, float]:
        started = time.perf_counter()
        result = call(case, path)
        elapsed = time.perf_counter() - started
        if not result["OK"]:
            raise RuntimeError(f"{path}/{case}: {result['Message']}")
        return {"ms": elapsed * 1000}

    samples = harness.run_rounds(CASES, PATHS, measure_one, rounds=spec["calls"], warmup=spec["warmup"])
    harness.write_json(
        Path(spec["results"]),
        {
            "pilots": len(refs),
            "calls": spec["calls"],
            "labels": {"getPilotSummary": "getPilotSummary()", "getPilotInfo": f"getPilotInfo({len(refs)} references)"},
            "requests": requests,
            "samples": samples,
        },
    )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="timed calls per path and case (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--pilots", type=int, default=1000, help="pilots registered (default 1000)")
    parser.add_argument("--workdir", type=Path, help="where the grid and results go (default: a new temp dir)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return measure(args.measure) if args.measure else run(args)


if __name__ == "__main__":
    sys.exit(main())
