"""``default.yml`` is written byte for byte as ``yaml.dump`` writes it (property test)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diracx_bridge.cs_sync.convert import convert
from diracx_bridge.cs_sync.yamlio import _BlockWriter, _dump_nodes, _Unsupported, dump_yaml


def pyyaml(data: Any) -> str:
    return yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=True, allow_unicode=True, default_flow_style=False)


#: Pieces of strings that change libyaml's choices: spaces (folding at column 80), quotes, the
#: indicators, number- and boolean-like words, unicode it writes as it is.
WORDS = [
    "a", "x y", " ", "  ", "'", "''", ":", ": ", "#", " #", "-", "- ", "?", "---", "...", "yes", "No", "null", "~",
    "12", "0x1f", "1.5e3", "2025-01-01", "=", "<<", "é", "中文", "\u00a0", "/C=ch/O=Grid/CN=J Doe",
    "user@example.org", ",", "[", "{", "&", "*", "!", "|", ">", '"', "%", "@", "`",
]  # fmt: skip
#: ... and characters it escapes (double quotes: the writer gives up, the nodes take over).
ESCAPED = ["\t", "\u2028", "\x85", "\ufeff", "😀", "\x00"]
PRINTABLE_TEXT = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=8).map("".join),
    st.lists(st.sampled_from(["word", "wo'rd", "w", "  ", " ", ": x"]), min_size=10, max_size=60).map(" ".join),
    st.text(st.characters(max_codepoint=0xFFFD, exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30),
)
#: Mostly printable text; now and then a character libyaml escapes (the writer gives up on the document).
ESCAPED_TEXT = st.lists(st.sampled_from(WORDS + ESCAPED), max_size=6).map("".join)
TEXT = st.integers(0, 19).flatmap(lambda n: ESCAPED_TEXT if n == 0 else PRINTABLE_TEXT)
SCALARS = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True))
DATA = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=30,
)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )


def same_text(data: dict[str, Any]) -> None:
    expected = pyyaml(data)
    assert dump_yaml(data) == expected
    assert _dump_nodes(data) == expected
    try:
        written = _BlockWriter().document(data)
    except _Unsupported:
        return
    assert written == expected


@given(st.dictionaries(TEXT, DATA, max_size=5))
@fuzz_settings(300)
@example({"k": "x " * 60, "l": ["y " * 45, {"m": "z" * 85 + " z", "n": ["q " * 50]}]})  # folding at every depth
@example({"a": "'q " * 30, "b": "x  y " * 30})  # single quotes doubled and folded; two spaces never fold
@example({"": "", "yes": ["", "no", "12"]})  # quoted keys and values
def test_same_bytes_as_pyyaml(data: dict[str, Any]) -> None:
    same_text(data)


def test_shared_objects_are_anchored_as_pyyaml_does() -> None:
    shared = ["a", "b"]
    data = {"x": shared, "y": {"z": shared}}
    with pytest.raises(_Unsupported):
        _BlockWriter().document(data)
    assert dump_yaml(data) == pyyaml(data)
    assert "&id001" in dump_yaml(data)


def test_special_floats() -> None:
    same_text({"f": [math.inf, -math.inf, math.nan, 1e20, -0.0, 0.1, 100.0]})


def test_an_exported_configuration_takes_the_fast_path(realistic_cfg) -> None:
    config = convert(realistic_cfg).config
    assert _BlockWriter().document(config) == pyyaml(config)


def test_folding_at_every_column() -> None:
    """A space at every column around 80, at every depth, in plain and single-quoted scalars."""
    patterns = [
        lambda n: "x" * n + " y",
        lambda n: "x" * n + " y z",
        lambda n: "x" * n + "  y",
        lambda n: " " + "x" * n + " y",  # single-quoted (leading space)
        lambda n: "x" * n + " y ",  # single-quoted (trailing space)
        lambda n: "'" + "x" * n + " 'y",  # single-quoted, quotes doubled
        lambda n: "a: " + "x" * n + " y",  # single-quoted (': ')
        lambda n: ("x " * n).strip(),
    ]
    for depth in range(4):
        for key in ("k", "key" * 9, "k" * 90):
            for n in range(50, 95):
                for pattern in patterns:
                    value: Any = pattern(n)
                    for _ in range(depth):
                        value = {key: value, "s": [value]}
                    same_text({key: value})
