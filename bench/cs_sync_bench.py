"""cs-sync at scale: the bridge vs diracx 0.7.0's ``dirac internal legacy cs-sync``.

Generates a legacy CS of 20,000 users, 50 VOs and 2,000 sites (2 CEs and 2 queues each), then
converts it with each implementation in a fresh subprocess, so that one's imports, caches and
memory do not flatter the other. Measured per run:

* ``total``: wall time inside the child from reading the .cfg file to having written the YAML
  (parse + conversion + validation + dump), i.e. what an admin waits for, minus Python start-up;
  split into ``parse`` (time spent in ``diraccfg.CFG.loadFromBuffer``, the same library call in
  both) and ``rest`` (what each implementation owns);
* ``CPU``: user+system CPU time of the child over the same span (less sensitive than wall time to
  other load on the machine);
* ``process``: wall time of the whole child as seen by the parent (start-up and imports included);
* ``peak RSS``: ``ru_maxrss`` of the child itself (``RUSAGE_SELF`` read at its end: the peak
  resident set of that process, imports included, not just the conversion's allocations).

The bridge row is ``convert()`` (the same work as diracx's command, plus its report and the
second validation of the written file as the DiracX server reads it). The ``sync`` rows add the
git side: first export into an empty repository, then a re-run that finds nothing to change.

The two implementations run in interleaved rounds, in rotating order, after ``--warmup`` rounds
that are not counted (:mod:`harness`); the table shows medians (and the largest peak RSS), the
ratios both the ratio of the medians and the median of the per-round ratios.

Run: ``.venv/bin/python bench/cs_sync_bench.py [--users N --vos N --sites N --repeat N --warmup N --json F]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

LEGACY_MODE_VARIABLE = "DIRAC_COMPAT_ENABLE_CS_CONVERSION"


def generate_cs(users: int, vos: int, sites: int) -> str:
    """A CS shaped like a large production one: every user has a DN, a CA, an e-mail and a subject."""
    out: list[str] = []
    w = out.append
    vo_names = [f"vo{i:02d}" for i in range(vos)]
    w("DIRAC\n{\n  Setups\n  {\n    Production\n    {\n      WorkloadManagement = Production\n    }\n  }\n")
    w("  Configuration\n  {\n    Name = Bench\n    Version = 2025-01-01 00:00:00\n  }\n}\n")
    w("DiracX\n{\n  CsSync\n  {\n    VOs\n    {\n")
    for v, vo in enumerate(vo_names):
        w(f"      {vo}\n      {{\n        DefaultGroup = {vo}_user\n")
        w(f"        IdP\n        {{\n          URL = https://{vo}-auth.example.org\n          ClientID = {vo}-client\n")
        w("        }\n        UserSubjects\n        {\n")
        for u in range(v, users, vos):
            w(f"          user{u:05d} = {vo}-sub-{u:05d}\n")
        w("        }\n      }\n")
    w("    }\n  }\n}\n")
    w("Registry\n{\n  VO\n  {\n")
    for vo in vo_names:
        w(f"    {vo}\n    {{\n      VOMSName = {vo}\n    }}\n")
    w("  }\n  Users\n  {\n")
    for u in range(users):
        w(f"    user{u:05d}\n    {{\n      DN = /C=ch/O=Grid/OU=Users/CN=user{u:05d}\n")
        w(f"      CA = /C=ch/O=Grid/CN=Grid CA\n      Email = user{u:05d}@example.org\n    }}\n")
    w("  }\n  Groups\n  {\n")
    for v, vo in enumerate(vo_names):
        members = [f"user{u:05d}" for u in range(v, users, vos)]
        w(f"    {vo}_user\n    {{\n      Users = {', '.join(members)}\n      Properties = NormalUser\n")
        w(f"      VO = {vo}\n      VOMSRole = /{vo}\n    }}\n")
        w(f"    {vo}_admin\n    {{\n      Users = {', '.join(members[:5])}\n")
        w(f"      Properties = NormalUser, JobAdministrator\n      VO = {vo}\n    }}\n")
        w(f"    {vo}_pilot\n    {{\n      Users = {members[0]}\n      Properties = GenericPilot, LimitedDelegation\n")
        w(f"      VO = {vo}\n    }}\n")
    w("  }\n  Hosts\n  {\n    dirac.example.org\n    {\n      DN = /C=ch/O=Grid/CN=dirac.example.org\n")
    w("      Properties = TrustedHost\n    }\n  }\n}\n")
    w("Operations\n{\n  Defaults\n  {\n    JobDescription\n    {\n      AllowedJobTypes = User, Test\n    }\n  }\n")
    for vo in vo_names:
        w(f"  {vo}\n  {{\n    JobDescription\n    {{\n      MaxCPUTime = 300000\n    }}\n  }}\n")
    w("}\n")
    w("Resources\n{\n  Sites\n  {\n    LCG\n    {\n")
    for s in range(sites):
        w(f"      LCG.Site{s:04d}.org\n      {{\n        CE = ce1.site{s:04d}.org, ce2.site{s:04d}.org\n")
        w("        CEs\n        {\n")
        for ce in (1, 2):
            w(f"          ce{ce}.site{s:04d}.org\n          {{\n            CEType = HTCondorCE\n")
            w("            Queues\n            {\n")
            for q in ("long", "short"):
                w(f"              {q}\n              {{\n                maxCPUTime = 2880\n              }}\n")
            w("            }\n          }\n")
        w("        }\n      }\n")
    w("    }\n  }\n}\n")
    return "".join(out)


# --- children ---------------------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time_cfg_parsing() -> list[float]:
    """Accumulate the time spent in diraccfg's parser, which both implementations call."""
    import diraccfg

    spent = [0.0]
    original = diraccfg.CFG.loadFromBuffer

    def timed(self: diraccfg.CFG, data: str) -> diraccfg.CFG:
        start = time.perf_counter()
        try:
            return original(self, data)
        finally:
            spent[0] += time.perf_counter() - start

    diraccfg.CFG.loadFromBuffer = timed  # type: ignore[method-assign]
    return spent


def _child(kind: str, cfg_path: Path, out_path: Path) -> None:
    started = time.perf_counter()
    parse = _time_cfg_parsing()
    if kind == "diracx":
        os.environ[LEGACY_MODE_VARIABLE] = "1"
        from diracx.cli.internal.legacy import cs_sync

        imported, cpu = time.perf_counter(), _cpu()
        cs_sync(cfg_path, out_path)
    elif kind == "bridge":
        from diracx_bridge.cs_sync.convert import convert
        from diracx_bridge.cs_sync.sources import FileSource

        imported, cpu = time.perf_counter(), _cpu()
        out_path.write_text(convert(FileSource(cfg_path).fetch().cfg).text)  # type: ignore[union-attr]
    else:  # "sync": the whole command, into the repository given as out_path
        from diracx_bridge.cs_sync.export import ConfigRepository
        from diracx_bridge.cs_sync.sources import FileSource
        from diracx_bridge.cs_sync.sync import sync_once

        imported, cpu = time.perf_counter(), _cpu()
        result = sync_once(FileSource(cfg_path).fetch(), ConfigRepository(out_path))  # type: ignore[arg-type]
        print(json.dumps({"commit": result.commit}), file=sys.stderr)
    done, cpu = time.perf_counter(), _cpu() - cpu
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = {"import_s": imported - started, "convert_s": done - imported, "parse_s": parse[0], "cpu_s": cpu}
    print(json.dumps({**stats, "rss_kb": rss_kb}))


def _measure(kind: str, cfg_path: Path, out_path: Path) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(cfg_path), str(out_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["process_s"] = wall
    stats["rest_s"] = stats["convert_s"] - stats["parse_s"]
    return stats


COLUMNS = ("parse", "rest", "total", "CPU", "process", "peak RSS")
#: The metrics of one run, as the table's columns show them (``rest_s``: what each implementation owns).
SECONDS = ("parse_s", "rest_s", "convert_s", "cpu_s", "process_s")
KINDS = ("diracx", "bridge")
CASE = "convert"


def _row(name: str, metrics: dict[str, list[float]]) -> list[str]:
    """Medians of the times, largest peak RSS: one table row."""
    cells = [f"{statistics.median(metrics[key]):.2f} s" for key in SECONDS]
    return [name, *cells, f"{max(metrics['rss_kb']) / 1024:.0f} MiB"]


def _by_metric(stats: dict[str, float]) -> dict[str, list[float]]:
    return {key: [value] for key, value in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--vos", type=int, default=50)
    parser.add_argument("--sites", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation (the median is shown)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="uncounted rounds first (default 0: each run is a new process)"
    )
    parser.add_argument("--json", type=Path, help="also write the results (raw samples included) here")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CFG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    import yaml

    with tempfile.TemporaryDirectory(prefix="cs-sync-bench-") as tmp:
        work = Path(tmp)
        cfg_path = work / "bench.cfg"
        cfg_path.write_text(generate_cs(args.users, args.vos, args.sites))
        size_mib = cfg_path.stat().st_size / 2**20
        print(f"CS: {args.users} users, {args.vos} VOs, {args.sites} sites ({size_mib:.1f} MiB of cfg)")
        print(
            f"{args.repeat} run(s) each after {args.warmup} warm-up round(s), interleaved in rotating order; "
            f"median times, max peak RSS; Python {sys.version.split()[0]}"
        )
        first_output: dict[str, Path] = {}
        run_number = itertools.count()

        def measure(_case: str, kind: str) -> dict[str, float]:
            out_path = work / f"{kind}-{next(run_number)}.yaml"
            first_output.setdefault(kind, out_path)
            return _measure(kind, cfg_path, out_path)

        samples = harness.run_rounds([CASE], KINDS, measure, rounds=args.repeat, warmup=args.warmup)[CASE]
        by_kind = {kind: {metric: samples[metric][kind] for metric in samples} for kind in KINDS}
        repo = work / "repo"
        initial = _measure("sync", cfg_path, repo)
        noop = _measure("sync", cfg_path, repo)

        theirs = yaml.load(first_output["diracx"].read_text(), Loader=yaml.CSafeLoader)
        ours = yaml.load(first_output["bridge"].read_text(), Loader=yaml.CSafeLoader)
        same = theirs == ours

        rows = [
            _row("diracx 0.7.0 cs-sync", by_kind["diracx"]),
            _row("bridge convert", by_kind["bridge"]),
            _row("bridge sync, first commit", _by_metric(initial)),
            _row("bridge sync, nothing changed", _by_metric(noop)),
        ]
        print()
        print("\n".join(harness.table(["implementation", *COLUMNS], rows, markdown=True)))
        print()
        for key, label in (("convert_s", "total"), ("rest_s", "rest (no shared parse)"), ("cpu_s", "CPU")):
            print(
                harness.comparison_line(
                    "bridge", f"diracx, {label}", samples[key]["bridge"], samples[key]["diracx"], 30
                )
            )
        print(f"same configuration as diracx: {'yes' if same else 'NO'}")
        if args.json:
            harness.write_json(
                args.json,
                {
                    "cs": {"users": args.users, "vos": args.vos, "sites": args.sites, "cfg_mib": round(size_mib, 2)},
                    "repeat": args.repeat,
                    "warmup": args.warmup,
                    "samples": samples,
                    "summary": {
                        metric: {kind: harness.summarise(values) for kind, values in per_kind.items()}
                        for metric, per_kind in samples.items()
                    },
                    "ratios": {
                        key: harness.comparison(samples[key]["bridge"], samples[key]["diracx"])
                        for key in ("convert_s", "rest_s", "cpu_s")
                    },
                    "sync": {"first_commit": initial, "nothing_changed": noop},
                    "same_configuration": same,
                },
            )


if __name__ == "__main__":
    main()
