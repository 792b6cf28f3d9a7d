"""cs-sync at scale: the bridge vs diracx 0.7.0's ``dirac internal legacy cs-sync``.

Generates a legacy CS of 20,000 users, 50 VOs and 2,000 sites (2 CEs and 2 queues each), then
converts it with each implementation in a fresh subprocess, so that one's imports, caches and
memory do not flatter the other. Measured per run:

* ``total``: wall time inside the child from reading the .cfg file to having written the YAML
  (parse + conversion + validation + dump; for ``sync``, the commit too), i.e. what an admin waits
  for, minus Python start-up; split into ``parse`` (for diracx, ``diraccfg.CFG.loadFromBuffer``;
  for the bridge, its own linear reader) and ``rest``;
* ``CPU``: user+system CPU time of the child over the same span (less sensitive than wall time to
  other load on the machine);
* ``process``: wall time of the whole child as seen by the parent (start-up and imports included);
* ``peak RSS``: the peak resident set of the child itself (``VmHWM`` of ``/proc/self/status``
  read at its end: imports included, not just the conversion's allocations). Not ``ru_maxrss``:
  Linux carries a process's ``ru_maxrss`` across ``execve`` from the process it was forked from,
  so children of a parent that holds big data would all report the parent's peak.

Rows: diracx's command; the bridge's ``convert()`` (the same work as diracx's command, plus its
report); the bridge's ``sync`` into a new repository (the whole ``cs-sync FILE REPO``: the
no-change check, the conversion, the commit, the export state). The three run in interleaved
rounds, in rotating order, after ``--warmup`` rounds that are not counted (:mod:`harness`); the
table shows medians (and the largest peak RSS), the ratios both the ratio of the medians and the
median of the per-round ratios.

Then, on the repository of the last ``sync``: the real command ``diracx-bridge cs-sync FILE REPO``
re-run on the unchanged file (``--repeat`` times, each a new process: nothing parsed), and a
``sync`` after one user was added to one VO (one VO validated again, the others reused). Last,
the curve: ``sync`` into a new repository for growing CSes (``--curve``), diracx beside it up to
``--diracx-max-users`` (it is quadratic: minutes at 100,000 users).

Run: ``.venv/bin/python bench/cs_sync_bench.py [--users N --vos N --sites N --repeat N --warmup N
--curve N,N,... --diracx-max-users N --json F]``.
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
from typing import Any

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


def _timed(owner: Any, name: str) -> list[float]:
    """Accumulate the time spent in ``owner.name`` (the CS parser of each implementation)."""
    spent = [0.0]
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    setattr(owner, name, timed)
    return spent


def _peak_rss_kb() -> int:
    """The peak resident set of this process since its ``execve`` (``VmHWM``), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the closest there is


def _child(kind: str, cfg_path: Path, out_path: Path) -> None:
    started = time.perf_counter()
    if kind == "diracx":
        import diraccfg

        parse = _timed(diraccfg.CFG, "loadFromBuffer")
        os.environ[LEGACY_MODE_VARIABLE] = "1"
        from diracx.cli.internal.legacy import cs_sync

        imported, cpu = time.perf_counter(), _cpu()
        cs_sync(cfg_path, out_path)
    elif kind == "bridge":
        from diracx_bridge.cs_sync import sources
        from diracx_bridge.cs_sync.convert import convert

        parse = _timed(sources, "parse")
        imported, cpu = time.perf_counter(), _cpu()
        snapshot = sources.FileSource(cfg_path).fetch()
        assert snapshot is not None
        out_path.write_text(convert(snapshot.cfg, notes=snapshot.notes).text)
    else:  # "sync": the whole command, into the repository given as out_path
        from diracx_bridge.cs_sync import sources
        from diracx_bridge.cs_sync.export import ConfigRepository
        from diracx_bridge.cs_sync.sync import SyncResult, sync

        parse = _timed(sources, "parse")
        imported, cpu = time.perf_counter(), _cpu()
        result = sync(sources.FileSource(cfg_path), ConfigRepository(out_path))
        if isinstance(result, SyncResult):
            validation = result.conversion.validation
            validated = len(validation.validated) if validation else -1
            print(json.dumps({"commit": result.commit, "validated_vos": validated}), file=sys.stderr)
        else:
            print(json.dumps({"unchanged": True}), file=sys.stderr)
    done, cpu = time.perf_counter(), _cpu() - cpu
    rss_kb = _peak_rss_kb()
    stats = {"import_s": imported - started, "convert_s": done - imported, "parse_s": parse[0], "cpu_s": cpu}
    print(json.dumps({**stats, "rss_kb": rss_kb}))


def _measure(kind: str, cfg_path: Path, out_path: Path) -> dict[str, Any]:
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
    stats: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["process_s"] = wall
    stats["rest_s"] = stats["convert_s"] - stats["parse_s"]
    details = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    if details:
        stats["details"] = json.loads(details[-1])
    return stats


def _command(cfg_path: Path, repo: Path) -> dict[str, float]:
    """The real ``diracx-bridge cs-sync FILE REPO``, as an admin or cron runs it: one process."""
    command = Path(sys.executable).parent / "diracx-bridge"
    started = time.perf_counter()
    proc = subprocess.run(
        [str(command), "cs-sync", str(cfg_path), str(repo)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if proc.returncode or "No change" not in proc.stdout:
        raise SystemExit(f"the no-change re-run did not find the CS unchanged:\n{proc.stdout[-2000:]}{proc.stderr}")
    return {"process_s": wall}


def add_one_user(text: str, vo: str = "vo00") -> str:
    """The CS with one more user in ``vo``'s user group, with a subject."""
    text = text.replace("  Users\n  {\n", "  Users\n  {\n    newuser\n    {\n      DN = /C=ch/CN=newuser\n    }\n", 1)
    text = text.replace(
        "        UserSubjects\n        {\n", f"        UserSubjects\n        {{\n          newuser = {vo}-new\n", 1
    )
    marker = f"    {vo}_user\n    {{\n      Users = "
    return text.replace(marker, marker + "newuser, ", 1)


COLUMNS = ("parse", "rest", "total", "CPU", "process", "peak RSS")
#: The metrics of one run, as the table's columns show them (``rest_s``: what each implementation owns).
SECONDS = ("parse_s", "rest_s", "convert_s", "cpu_s", "process_s")
KINDS = ("diracx", "bridge", "sync")
LABELS = {"diracx": "diracx 0.7.0 cs-sync", "bridge": "bridge convert", "sync": "bridge cs-sync, new repository"}
CASE = "convert"


def _row(name: str, metrics: dict[str, list[float]]) -> list[str]:
    """Medians of the times, largest peak RSS: one table row."""
    cells = [f"{statistics.median(metrics[key]):.2f} s" for key in SECONDS]
    return [name, *cells, f"{max(metrics['rss_kb']) / 1024:.0f} MiB"]


def _by_metric(stats: dict[str, Any]) -> dict[str, list[float]]:
    return {key: [value] for key, value in stats.items() if isinstance(value, int | float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--vos", type=int, default=50)
    parser.add_argument("--sites", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation (the median is shown)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="uncounted rounds first (default 0: each run is a new process)"
    )
    parser.add_argument(
        "--curve", default="5000,20000,50000,100000", help="users of the CSes of the curve ('' for none)"
    )
    parser.add_argument("--diracx-max-users", type=int, default=50_000, help="largest CS of the curve diracx runs")
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
        text = generate_cs(args.users, args.vos, args.sites)
        cfg_path.write_text(text)
        size_mib = cfg_path.stat().st_size / 2**20
        print(f"CS: {args.users} users, {args.vos} VOs, {args.sites} sites ({size_mib:.1f} MiB of cfg)")
        print(
            f"{args.repeat} run(s) each after {args.warmup} warm-up round(s), interleaved in rotating order; "
            f"median times, max peak RSS; Python {sys.version.split()[0]}, {os.cpu_count()} cores"
        )
        first_output: dict[str, Path] = {}
        run_number = itertools.count()

        def measure(_case: str, kind: str) -> dict[str, float]:
            out_path = work / f"{kind}-{next(run_number)}{'' if kind == 'sync' else '.yaml'}"
            first_output.setdefault(kind, out_path)
            stats = _measure(kind, cfg_path, out_path)
            return {k: v for k, v in stats.items() if isinstance(v, int | float)}

        samples = harness.run_rounds([CASE], KINDS, measure, rounds=args.repeat, warmup=args.warmup)[CASE]
        by_kind = {kind: {metric: samples[metric][kind] for metric in samples} for kind in KINDS}
        repo = first_output["sync"]

        committed = subprocess.run(
            ["git", "-C", str(repo), "show", "master:default.yml"], capture_output=True, text=True, check=True
        ).stdout
        same_commit = committed == first_output["bridge"].read_text()
        del committed

        # Nothing changed: the real command, each time a new process (nothing is parsed).
        noop = [_command(cfg_path, repo) for _ in range(max(args.repeat, 5))]
        noop_inside = _measure("sync", cfg_path, repo)
        # One user added to one VO: that VO validated again, the others taken from the last export.
        changed_path = work / "changed.cfg"
        changed_path.write_text(add_one_user(text))
        one_change = _measure("sync", changed_path, repo)

        # Compared at the end: the parent stays small while it measures (see peak RSS above).
        theirs = yaml.load(first_output["diracx"].read_text(), Loader=yaml.CSafeLoader)
        ours = yaml.load(first_output["bridge"].read_text(), Loader=yaml.CSafeLoader)
        same = same_commit and theirs == ours
        del theirs, ours

        noop_s = [n["process_s"] for n in noop]
        rows = [_row(LABELS[kind], by_kind[kind]) for kind in KINDS]
        rows.append(
            [
                "bridge cs-sync, nothing changed",
                *(f"{noop_inside[k]:.2f} s" for k in ("parse_s", "rest_s", "convert_s", "cpu_s")),
                f"{statistics.median(noop_s):.2f} s",
                f"{noop_inside['rss_kb'] / 1024:.0f} MiB",
            ]
        )
        rows.append(_row("bridge cs-sync, +1 user in 1 VO", _by_metric(one_change)))
        print()
        print("\n".join(harness.table(["implementation", *COLUMNS], rows, markdown=True)))
        print()
        for kind in ("bridge", "sync"):
            for key, label in (("convert_s", "total"), ("process_s", "process"), ("cpu_s", "CPU")):
                line = harness.comparison_line(
                    LABELS[kind], f"diracx, {label}", samples[key][kind], samples[key]["diracx"]
                )
                print(line)
        rss = {kind: max(by_kind[kind]["rss_kb"]) / 1024 for kind in KINDS}
        print(
            f"peak RSS: bridge convert {rss['bridge']:.0f} MiB, bridge cs-sync {rss['sync']:.0f} MiB, "
            f"diracx {rss['diracx']:.0f} MiB"
        )
        print(
            f"nothing changed: the command takes {statistics.median(noop_s):.2f} s (median of {len(noop_s)} "
            f"processes, max {max(noop_s):.2f} s), {noop_inside['convert_s']:.3f} s of it after the imports"
        )
        details = one_change.get("details", {})
        print(
            f"+1 user in 1 VO: {one_change['convert_s']:.2f} s, {details.get('validated_vos', '?')} VO validated "
            f"of {args.vos}"
        )
        print(f"same configuration as diracx: {'yes' if same else 'NO'}")

        curve: list[dict[str, Any]] = []
        sizes = [int(n) for n in args.curve.split(",") if n.strip()]
        if sizes:
            print()
            print(
                f"Curve ({args.vos} VOs, {args.sites} sites; one run each; diracx up to {args.diracx_max_users} users):"
            )
            for users in sizes:
                path = work / f"curve-{users}.cfg"
                path.write_text(generate_cs(users, args.vos, args.sites))
                point: dict[str, Any] = {"users": users, "cfg_mib": path.stat().st_size / 2**20}
                point["sync"] = _measure("sync", path, work / f"curve-{users}-repo")
                if users <= args.diracx_max_users:
                    point["diracx"] = _measure("diracx", path, work / f"curve-{users}.yaml")
                curve.append(point)
                path.unlink()
            header = ["users", "cfg", "bridge total", "per 1k users", "bridge RSS", "diracx total", "per 1k users"]
            table_rows = []
            for point in curve:
                ours_s, k = point["sync"]["convert_s"], point["users"] / 1000
                theirs_s = point["diracx"]["convert_s"] if "diracx" in point else None
                table_rows.append(
                    [
                        f"{point['users']}",
                        f"{point['cfg_mib']:.0f} MiB",
                        f"{ours_s:.2f} s",
                        f"{ours_s / k * 1000:.0f} ms",
                        f"{point['sync']['rss_kb'] / 1024:.0f} MiB",
                        f"{theirs_s:.1f} s" if theirs_s is not None else "-",
                        f"{theirs_s / k * 1000:.0f} ms" if theirs_s is not None else "-",
                    ]
                )
            print("\n".join(harness.table(header, table_rows, markdown=True)))

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
                        kind: {
                            key: harness.comparison(samples[key][kind], samples[key]["diracx"])
                            for key in ("convert_s", "process_s", "cpu_s")
                        }
                        for kind in ("bridge", "sync")
                    },
                    "nothing_changed": {"command": noop, "inside": noop_inside},
                    "one_user_added": one_change,
                    "curve": curve,
                    "same_configuration": same,
                },
            )


if __name__ == "__main__":
    main()
