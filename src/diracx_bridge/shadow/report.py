"""``diracx-bridge shadow-report``: what shadow mode found, per service and method, from many hosts' journals.

For each (service, method): how many calls were compared, how many answers were equal, the
differing cases grouped by cause (with the place of the first difference and, for job states,
the two values), the latency of the legacy service and of DiracX (p50/p95), DiracX's errors,
and the calls DiracX cannot serve. Journals copied from several hosts are read together: give
their files or directories.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES_PER_CAUSE = 3


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass
class MethodStats:
    compared: int = 0
    equal: int = 0
    unserved: int = 0
    diracx_errors: int = 0
    legacy_ms: list[float] = field(default_factory=list)
    diracx_ms: list[float] = field(default_factory=list)
    causes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    vos: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        """One ``compared`` or ``unserved`` record."""
        self.vos[str(record.get("vo"))] += 1
        legacy = record.get("legacy") or {}
        if isinstance(legacy.get("ms"), (int, float)):
            self.legacy_ms.append(float(legacy["ms"]))
        if record.get("kind") == "unserved":
            self.unserved += 1
            return
        self.compared += 1
        diracx = record.get("diracx") or {}
        if isinstance(diracx.get("ms"), (int, float)):
            self.diracx_ms.append(float(diracx["ms"]))
        if not diracx.get("ok", True) and legacy.get("ok"):
            self.diracx_errors += 1
        if record.get("equal"):
            self.equal += 1
            return
        cause = str(record.get("cause"))
        self.causes[cause] += 1
        if len(self.examples[cause]) < EXAMPLES_PER_CAUSE:
            example = dict(record.get("difference") or {})
            example["args"] = record.get("args")
            if diracx.get("error"):
                example["diracx_error"] = diracx["error"]
            self.examples[cause].append(example)

    @property
    def equal_rate(self) -> float:
        return self.equal / self.compared if self.compared else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "equal": self.equal,
            "equal_rate": self.equal_rate,
            "unserved": self.unserved,
            "diracx_errors": self.diracx_errors,
            "legacy_ms": {"p50": percentile(self.legacy_ms, 0.5), "p95": percentile(self.legacy_ms, 0.95)},
            "diracx_ms": {"p50": percentile(self.diracx_ms, 0.5), "p95": percentile(self.diracx_ms, 0.95)},
            "causes": dict(self.causes.most_common()),
            "examples": {cause: examples for cause, examples in self.examples.items()},
            "vos": dict(self.vos),
        }


@dataclass
class ShadowReport:
    methods: dict[tuple[str, str], MethodStats] = field(default_factory=dict)
    dropped: int = 0
    unreadable: int = 0
    files: set[str] = field(default_factory=set)

    def stats(self, service: str, method: str) -> MethodStats:
        return self.methods.setdefault((service, method), MethodStats())

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": sorted(self.files),
            "dropped": self.dropped,
            "unreadable": self.unreadable,
            "methods": {f"{s}.{m}": stats.summary() for (s, m), stats in sorted(self.methods.items())},
        }


def aggregate(records: Iterable[dict[str, Any]], *, since: float | None = None) -> ShadowReport:
    """Bring the records of any number of journals together."""
    report = ShadowReport()
    for record in records:
        if "file" in record:
            report.files.add(record["file"])
        kind = record.get("kind")
        if kind == "unreadable":
            report.unreadable += 1
            continue
        if since is not None and float(record.get("t", 0)) < since:
            continue
        if kind == "dropped":
            report.dropped += int(record.get("count", 0))
            continue
        if kind in ("compared", "unserved"):
            report.stats(str(record.get("service")), str(record.get("method"))).add(record)
    return report


def render(report: ShadowReport) -> str:
    lines = [f"shadow comparisons from {len(report.files)} journal file(s)"]
    if report.dropped:
        lines.append(f"  {report.dropped} sampled call(s) dropped (queue full): raise ShadowQueueSize or lower Shadow")
    if report.unreadable:
        lines.append(f"  {report.unreadable} unreadable line(s) skipped")
    if not report.methods:
        lines.append("  no comparison recorded yet")
        return "\n".join(lines)
    header = (
        f"  {'service.method':<52} {'compared':>8} {'equal':>7} {'legacy p50/p95 ms':>18} {'DiracX p50/p95 ms':>18}"
    )
    lines += ["", header]
    for (service, method), stats in sorted(report.methods.items()):
        rate = "-" if not stats.compared else f"{100 * stats.equal_rate:.1f}%"
        legacy = f"{percentile(stats.legacy_ms, 0.5):.1f}/{percentile(stats.legacy_ms, 0.95):.1f}"
        diracx = (
            f"{percentile(stats.diracx_ms, 0.5):.1f}/{percentile(stats.diracx_ms, 0.95):.1f}"
            if stats.diracx_ms
            else "-"
        )
        lines.append(f"  {service + '.' + method:<52} {stats.compared:>8} {rate:>7} {legacy:>18} {diracx:>18}")
        if stats.unserved:
            lines.append(f"      {stats.unserved} call(s) of a method DiracX cannot serve (not compared)")
        for cause, count in stats.causes.most_common():
            lines.append(f"      differs ({cause}): {count}")
            for example in stats.examples[cause]:
                where = example.get("path", "")
                values = f"legacy {example.get('legacy')} / DiracX {example.get('diracx')}" if where else ""
                error = f"; DiracX said: {example['diracx_error']}" if example.get("diracx_error") else ""
                lines.append(f"        e.g. {where} {values} args {example.get('args')}{error}".rstrip())
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "shadow-report",
        help="what shadow mode found: equal rates, differences by cause, latencies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "journals",
        nargs="*",
        type=Path,
        help="journal files or directories (default: /DiracX/Bridge/ShadowJournal, or the user's own)",
    )
    parser.add_argument("--since", type=float, metavar="HOURS", help="only records of the last HOURS hours")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def default_journal() -> Path:
    from diracx_bridge.shadow.journal import directory

    try:
        import DIRAC

        DIRAC.initialize(require_auth=False)
        from diracx_bridge.settings import shadow_settings

        return directory(shadow_settings().journal)
    except Exception:  # noqa: BLE001 - no DIRAC configuration here: the user's own journal
        return directory(None)


def run(args: argparse.Namespace) -> int:
    from diracx_bridge.shadow.journal import read_records

    paths = list(args.journals) or [default_journal()]
    since = time.time() - 3600 * args.since if args.since else None
    report = aggregate(read_records(paths), since=since)
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else render(report))
    return 0
