"""bench/harness.py, the rules every benchmark shares: rotation, warm-up, summaries, ratios."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("harness", Path(__file__).parents[2] / "bench" / "harness.py")
assert _SPEC is not None and _SPEC.loader is not None
harness = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(harness)


def test_rounds_rotate_the_order_and_drop_the_warmup() -> None:
    calls: list[tuple[int, str, str]] = []
    counter = iter(range(1000))

    def measure(case: str, path: str) -> dict[str, float]:
        n = next(counter)
        calls.append((n, case, path))
        return {"t": float(n)}

    samples = harness.run_rounds(["one", "many"], ["a", "b", "c"], measure, rounds=2, warmup=1)
    assert [(case, path) for _, case, path in calls] == [
        *[("one", p) for p in "abc"],
        *[("many", p) for p in "abc"],  # warm-up round, measured but not counted
        *[("one", p) for p in "bca"],
        *[("many", p) for p in "bca"],
        *[("one", p) for p in "cab"],
        *[("many", p) for p in "cab"],
    ]
    assert list(samples["one"]["t"]) == ["a", "b", "c"]  # the paths' order, not the first round's
    assert samples["one"]["t"] == {"a": [8.0, 13.0], "b": [6.0, 14.0], "c": [7.0, 12.0]}


def test_summaries_and_ratios() -> None:
    values = [float(v) for v in range(1, 11)]
    assert harness.summarise(values) == {"median": 5.5, "p90": 9.0, "mean": 5.5}
    a, b = [2.0, 4.0, 30.0], [1.0, 1.0, 10.0]
    assert harness.ratio_of_medians(a, b) == 4.0
    assert harness.paired_ratio(a, b) == 3.0  # per round: 2, 4, 3
    assert harness.comparison(a, b) == {"median": 4.0, "mean": 3.0, "paired": 3.0}
    assert math.isnan(harness.ratio(1.0, 0.0))
    with pytest.raises(ValueError):
        harness.paired_ratio([1.0], [1.0, 2.0])  # not the same rounds


def test_table_and_json(tmp_path: Path) -> None:
    rows = harness.summary_rows({"adapter": [1.0, 2.0, 3.0]}, {"adapter": "bridge adapter"})
    assert harness.table(["path", "median", "p90", "mean"], rows) == [
        "path            median   p90  mean",
        "bridge adapter    2.00  3.00  2.00",
    ]
    assert harness.table(["x", "y"], [["a", "1"]], markdown=True) == ["| x | y |", "|---|---|", "| a | 1 |"]
    harness.write_json(tmp_path / "r.json", {"ratio": math.nan, "samples": (1.0, 2.0)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"ratio": None, "samples": [1.0, 2.0]}


def test_a_path_that_measures_nothing_for_a_case_is_left_out_of_it() -> None:
    """A path a case cannot take (DIRAC 9.1.22 has no FutureClient for JobManager) answers ``{}``."""

    def measure(case: str, path: str) -> dict[str, float]:
        return {} if (case, path) == ("kill", "future") else {"ms": 1.0}

    samples = harness.run_rounds(["status", "kill"], ["adapter", "future"], measure, rounds=2)
    assert samples["status"]["ms"] == {"adapter": [1.0, 1.0], "future": [1.0, 1.0]}
    assert samples["kill"]["ms"] == {"adapter": [1.0, 1.0]}


def test_drop_grid_data_keeps_only_the_logs(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "diracx.log").write_text("kept")
    (tmp_path / "mariadb" / "data").mkdir(parents=True)
    (tmp_path / "cs.cfg").write_text("gone")
    harness.drop_grid_data(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    assert (tmp_path / "logs" / "diracx.log").read_text() == "kept"
    harness.drop_grid_data(tmp_path / "never-made")  # a grid that never started: nothing to do
