"""Run every benchmark script of ``bench/``: ``.venv/bin/python -m bench [NAME ...] [--list]``.

A benchmark is any ``bench/*_bench.py``, found at run time, so a new one is picked up without
editing this file. Each runs in its own Python process, one after the other (never in parallel:
they time things on the same 2-core machine and would perturb each other), with its default
arguments, its output passed straight through. A failing benchmark does not stop the others;
the exit status is non-zero if any failed, and a summary lists each one's status and duration.

``NAME`` selects benchmarks by name (``job_monitoring`` or ``job_monitoring_bench``); arguments
after ``--`` are passed to every selected script (e.g. ``-m bench job_monitoring -- --calls 50``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SUFFIX = "_bench"


def discover() -> dict[str, Path]:
    """``{name: script}`` of every ``*_bench.py`` in this directory, by name."""
    return {path.stem.removesuffix(SUFFIX): path for path in sorted(BENCH_DIR.glob(f"*{SUFFIX}.py"))}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    found = discover()
    if args.list:
        print("\n".join(f"{name:<20} {path.relative_to(BENCH_DIR.parent)}" for name, path in found.items()))
        return 0
    wanted = [name.removesuffix(".py").removesuffix(SUFFIX) for name in args.names] or list(found)
    unknown = [name for name in wanted if name not in found]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(found)})")
    if not wanted:
        print(f"no *{SUFFIX}.py script in {BENCH_DIR}")
        return 0

    summary: list[tuple[str, int, float]] = []
    for name in wanted:
        print(f"\n=== {name} ({found[name].name}) ===", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run([sys.executable, str(found[name]), *passthrough], check=False).returncode
        except KeyboardInterrupt:
            # The child got the same Ctrl-C and cleans up after itself; do not start the next one.
            summary.append((name, 130, time.monotonic() - t0))
            break
        summary.append((name, rc, time.monotonic() - t0))

    print("\n=== summary ===")
    for name, rc, seconds in summary:
        print(f"{name:<20} {'ok' if rc == 0 else f'FAILED (exit {rc})':<18} {seconds:7.0f} s")
    return 0 if summary and all(rc == 0 for _, rc, _ in summary) and len(summary) == len(wanted) else 1


if __name__ == "__main__":
    sys.exit(main())
