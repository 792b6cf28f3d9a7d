"""The fast path of ``over_the_wire`` gives exactly what DIRAC's own JSON round trip gives."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from DIRAC.Core.Utilities import MixedEncode

from diracx_bridge.adapters._wire import _NOT_FLAT, _flat_over_the_wire, over_the_wire


def real_round_trip(value: Any) -> Any:
    return MixedEncode.decode(MixedEncode.encode(value))[0]


def typed(value: Any) -> Any:
    """The value with every type spelled out, so 1 == 1.0 == True cannot hide a difference."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, *(typed(v) for v in value)]
    return (type(value).__name__, value)


SCALARS = [None, True, False, 0, 7, -3, 2**40, 1.5, -0.25, "", "Done", "é ☃ \\ \" '", "\ud800", "123"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    if depth >= 2 or choice < 0.4:
        return rng.choice(SCALARS)
    if choice < 0.55:
        return [rng.choice(SCALARS) for _ in range(rng.randint(0, 4))]
    keys = [rng.choice([rng.randint(0, 50), str(rng.randint(0, 50)), rng.choice(["Status", "Site", True])])]
    keys += [rng.randint(0, 50) for _ in range(rng.randint(0, 4))]
    return {k: random_value(rng, depth + 1) for k in keys}


def test_random_values_match_the_real_round_trip():
    rng = random.Random(20261122)
    fast_taken = 0
    for _ in range(5000):
        value = random_value(rng)
        fast = _flat_over_the_wire(value)
        if fast is not _NOT_FLAT:
            fast_taken += 1
            assert typed(fast) == typed(real_round_trip(value)), value
        assert typed(over_the_wire(value)) == typed(real_round_trip(value)), value
    assert fast_taken > 1000  # the property is exercised on the fast path, not only on the fallback


@pytest.mark.parametrize(
    "value",
    [
        {1: {"Status": "Done", "MinorStatus": "x", "ApplicationStatus": None}},
        ["1", "2", "3"],
        {"1": {"Site": "ANY"}, 2: {"Site": "DIRAC.CI.ch"}},
        42,
        "text",
    ],
)
def test_common_answers_take_the_fast_path(value):
    assert _flat_over_the_wire(value) is not _NOT_FLAT
    assert typed(over_the_wire(value)) == typed(real_round_trip(value))


@pytest.mark.parametrize(
    "value",
    [
        {1: {"LastUpdateTime": dt.datetime(2025, 1, 2, 3, 4, 5, 678)}},  # JSON drops the microseconds
        [("a", 1)],  # tuples become lists
        {True: 1},  # a bool key becomes "true"
        {1: 1, "1": 2},  # two keys become one
        {"__dCls": "dt", "obj": "2025-01-02 03:04:05"},  # DIRAC's decoder turns this into a datetime
        {1: [1, 2]},
        float("nan"),
    ],
)
def test_other_shapes_take_the_real_round_trip(value):
    assert _flat_over_the_wire(value) is _NOT_FLAT
