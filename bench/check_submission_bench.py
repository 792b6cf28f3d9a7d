"""The client-side submission checks alone: CPU of ``check_submission`` on one parametric JDL of N jobs.

No grid: DIRAC's CS is this process's own (DIRAC's defaults, no ``dirac.cfg``, no proxy), so the
numbers are the checks' CPU in that CS, not the grid's (there ``Operations`` finds the caller's
VO from the proxy; here it looks for a proxy and fails, which costs more per CS read). The
adapter's ``submitJob`` runs exactly this function before it sends anything
(``bench/job_writes_bench.py`` measures the whole call on a grid).

``--compare SRC`` measures two source trees of the bridge, alternately, each in its own process:
``SRC`` (e.g. an exported older commit's ``src``) and this tree's; the order alternates round by
round. Without it, this tree only.

Run: ``.venv/bin/python bench/check_submission_bench.py [--jobs N] [--rounds N] [--compare SRC]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
JDL = (
    '[ Executable = "/bin/echo"; Arguments = "%s"; JobName = "wb-parametric-%n"; JobGroup = "write-bench"; '
    "Parameters = {n}; ParameterStart = 1; ParameterStep = 1; ]"
)
OWNER, GROUP, VO = "ciuser", "civo_user", "civo"


def measure_once(jobs: int) -> dict[str, float]:
    """One warm-up call of 2 jobs (imports, first CS reads), then one timed call of ``jobs`` jobs."""
    import diracx_bridge
    from diracx_bridge.adapters.job_manager import check_submission

    check_submission(JDL.replace("{n}", "2"), OWNER, GROUP, VO, jobs)
    cpu, wall = time.process_time(), time.perf_counter()
    submission = check_submission(JDL.replace("{n}", str(jobs)), OWNER, GROUP, VO, jobs)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(submission.jobs) == jobs, len(submission.jobs)
    return {"cpu": cpu, "wall": wall, "source": str(Path(diracx_bridge.__file__).parents[1])}


def in_process(src: Path, jobs: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, __file__, "--jobs", str(jobs), "--once"], env=env, check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(out.splitlines()[-1])
    if Path(result["source"]).resolve() != src.resolve():
        raise SystemExit(f"measured {result['source']}, not {src}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the parametric JDL (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per tree (default 3)")
    parser.add_argument("--compare", type=Path, help="another tree's src directory, measured alternately")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once:
        print(json.dumps(measure_once(args.jobs)))
        return 0
    trees = {"compared": args.compare, "this tree": SRC} if args.compare else {"this tree": SRC}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    print(f"check_submission of one parametric JDL of {args.jobs} jobs; load {os.getloadavg()[0]:.2f}", flush=True)
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            result = in_process(trees[name], args.jobs)
            samples[name].append(result)
            cpu, wall = result["cpu"], result["wall"]
            print(f"  round {round_ + 1} {name:<9} cpu {cpu:6.3f} s  wall {wall:6.3f} s", flush=True)
    for name, results in samples.items():
        cpu = statistics.median(r["cpu"] for r in results)
        wall = statistics.median(r["wall"] for r in results)
        per_job = 1000 * cpu / args.jobs
        print(f"{name:<9} ({trees[name]}): median cpu {cpu:.3f} s, wall {wall:.3f} s ({per_job:.2f} ms/job)")
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
