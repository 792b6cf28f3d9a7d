"""What every benchmark of ``bench/`` shares: how samples are taken, summarised, compared and written.

Not a benchmark itself (``python -m bench`` runs only ``*_bench.py``). The rules, the same in
every bench so their numbers read alike:

* **interleaved rounds**: each round measures every path once, for every case, in an order
  that rotates from one round to the next. This 2-core machine is shared and its load drifts
  over seconds; interleaving spreads the drift over all paths alike instead of penalising
  whichever ran last;
* **warm-up rounds** first, measured the same way and thrown away (imports, first
  connections, caches);
* per path: **median, p90** (nearest rank) **and mean**;
* comparisons as **ratios of the medians** and as the **median of the per-round ratios**
  (paired samples, taken close together, so a slow moment of the machine hits both);
* the report is plain text tables; the results, raw samples included, go to JSON.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: samples[case][metric][path] -> one value per counted round, in round order.
Samples = dict[str, dict[str, dict[str, list[float]]]]


def rotation(paths: Sequence[str], round_number: int) -> list[str]:
    """The order of ``paths`` in round ``round_number``: each round starts one path further."""
    k = round_number % len(paths) if paths else 0
    return [*paths[k:], *paths[:k]]


def run_rounds(
    cases: Sequence[str],
    paths: Sequence[str],
    measure: Callable[[str, str], Mapping[str, float]],
    *,
    rounds: int,
    warmup: int = 0,
) -> Samples:
    """``warmup + rounds`` interleaved rounds of ``measure(case, path) -> {metric: value}``.

    Within a round, every case in turn, each with every path in the round's rotating order.
    Warm-up rounds are measured the same way (``measure`` may check their answers) and dropped.
    """
    samples: Samples = {case: {} for case in cases}
    for number in range(warmup + rounds):
        for case in cases:
            for path in rotation(paths, number):
                metrics = measure(case, path)
                if number < warmup:
                    continue
                for metric, value in metrics.items():
                    samples[case].setdefault(metric, {}).setdefault(path, []).append(value)
    # Paths in the order given, whichever the rotation measured first.
    return {
        case: {metric: {p: by_path[p] for p in paths if p in by_path} for metric, by_path in metrics.items()}
        for case, metrics in samples.items()
    }


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median, p90 (nearest rank) and mean of one path's samples."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return {"median": statistics.median(ordered), "p90": p90, "mean": statistics.fmean(ordered)}


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def ratio_of_medians(a: Sequence[float], b: Sequence[float]) -> float:
    return ratio(statistics.median(a), statistics.median(b))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of the per-round ratios ``a[i] / b[i]`` (the same rounds of two paths)."""
    return statistics.median(ratio(x, y) for x, y in zip(a, b, strict=True))


def comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``a`` against ``b``: ratio of the medians, of the means, and the paired per-round ratio."""
    return {
        "median": ratio_of_medians(a, b),
        "mean": ratio(statistics.fmean(a), statistics.fmean(b)),
        "paired": paired_ratio(a, b),
    }


def comparison_line(name: str, other: str, a: Sequence[float], b: Sequence[float], width: int = 13) -> str:
    c = comparison(a, b)
    return (
        f"{name} / {other:<{width}} median {c['median']:5.2f}x   mean {c['mean']:5.2f}x   per-round {c['paired']:5.2f}x"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> list[str]:
    """Rows of text cells as aligned columns (the first left-aligned, the others right-aligned)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [f"{cells[0]:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))]
        return f"| {' | '.join(parts)} |" if markdown else "  ".join(parts)

    out = [line(header)]
    if markdown:
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out + [line(row) for row in rows]


def summary_rows(
    samples: Mapping[str, Sequence[float]], labels: Mapping[str, str] | None = None, fmt: str = "{:.2f}"
) -> list[list[str]]:
    """One row per path: label, median, p90, mean (in the paths' order)."""
    rows = []
    for path, values in samples.items():
        s = summarise(values)
        rows.append([(labels or {}).get(path, path), *(fmt.format(s[k]) for k in ("median", "p90", "mean"))])
    return rows


def drop_grid_data(workdir: Path) -> None:
    """Delete a measured grid's databases and state (hundreds of MB, of no use once measured); its logs stay."""
    for entry in workdir.iterdir() if workdir.exists() else ():
        if entry.is_dir() and entry.name != "logs":
            shutil.rmtree(entry)
        elif entry.is_file():
            entry.unlink()


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """The results, raw samples included, for later analysis (NaN written as null)."""
    path.write_text(json.dumps(_finite(results), indent=1))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
