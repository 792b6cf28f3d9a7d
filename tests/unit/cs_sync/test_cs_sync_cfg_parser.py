"""The linear-time CFG reader gives the tree diraccfg gives, on every input (property test).

For each input, either both diraccfg (``CFG().loadFromBuffer(text).getAsDict()``) and
``cfg_parser.parse`` refuse it, or both accept it with the same tree: the same keys in the same
order, the same kinds (section or option) and the same values. Inputs are real CS files (DIRAC's
own ConfigTemplates, the grid-in-a-box's CS, the realistic test CS), edits of them, generated CS
trees written out in every layout DIRAC accepts (comments, ``+=`` appends, names and braces on one
line or two, odd whitespace, CRLF, unicode), and line soups built from the format's pieces, which
reach diraccfg's quirks and errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import DIRAC
import pytest
from cs_sync_helpers import REALISTIC
from diraccfg import CFG
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diracx_bridge.cs_sync.cfg_parser import CFGSyntaxError, parse
from diracx_bridge.testing import dirac_cfg

DIRAC_TEMPLATES = sorted(Path(DIRAC.__file__).parent.glob("*/ConfigTemplate.cfg"))


def grid_cs() -> str:
    params = dirac_cfg.DiracCfgParams(
        state="/opt/dirac", mysql_port=3306, opensearch_port=9200, diracx_url="http://127.0.0.1:8000",
        legacy_key="diracx:legacy:x", host_dn="/O=DIRAC CI/CN=localhost",
        ports={f"{s}/{n}": 9100 + i for i, (s, n) in enumerate(dirac_cfg.SERVICES)},
    )  # fmt: skip
    return dirac_cfg.render(params)


REAL_FILES = {
    "realistic": REALISTIC.read_text(),
    "grid": grid_cs(),
    **{f"{p.parent.name}/ConfigTemplate": p.read_text() for p in DIRAC_TEMPLATES},
}


def diraccfg_tree(text: str) -> dict[str, Any] | Exception:
    try:
        return CFG().loadFromBuffer(text).getAsDict()
    except Exception as exc:
        return exc


def ordered(tree: Mapping[str, Any]) -> list[Any]:
    """The tree with its order made visible (dict equality ignores it)."""
    return [(k, ordered(v) if isinstance(v, Mapping) else ("option", v)) for k, v in tree.items()]


def assert_same(text: str) -> None:
    expected = diraccfg_tree(text)
    if isinstance(expected, Exception):
        with pytest.raises(CFGSyntaxError):
            parse(text)
        return
    try:
        got = parse(text).tree
    except CFGSyntaxError as exc:
        raise AssertionError(f"diraccfg reads this text, the parser refuses it: {exc}\n{text!r}") from None
    assert ordered(got) == ordered(expected), repr(text)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )


# --- real files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_cs_files(name: str) -> None:
    text = REAL_FILES[name]
    assert_same(text)
    notes = [(n.line, n.path) for n in parse(text).notes]
    # DIRAC's own template sets an option twice: the parser says so (diraccfg keeps the second)
    assert notes == KNOWN_NOTES.get(name, [])


KNOWN_NOTES = {"TransformationSystem/ConfigTemplate": [(174, "/Agents/WorkflowTaskAgent/CheckReserved")]}


def test_the_generated_bench_cs() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[3] / "bench"))
    try:
        from cs_sync_bench import generate_cs
    finally:
        sys.path.pop(0)
    assert_same(generate_cs(users=300, vos=5, sites=20))


@st.composite
def edited(draw: st.DrawFn) -> str:
    """A real CS with a few lines deleted, duplicated, swapped or damaged."""
    lines = REAL_FILES[draw(st.sampled_from(sorted(REAL_FILES)))].split("\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert"]))
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap" and at + 1 < len(lines):
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
        else:
            lines.insert(at, draw(SOUP_LINE))
    return "\n".join(lines)


# --- generated CS trees, written in every layout DIRAC reads --------------------------------------

#: Characters of names and values: letters, digits, unicode, and the format's own punctuation
#: (names never hold '=', '{', '}', a leading '#' or a '/', which DIRAC's writer cannot produce).
NAME = st.text(st.sampled_from("abcXYZ019_.-@ éßΩ中"), min_size=1, max_size=8).map(str.strip).filter(bool)
VALUE = st.text(st.sampled_from("ab1 ,;:/#=+{}()'\"é中\t"), max_size=12)
SPACE = st.sampled_from(["", " ", "  ", "\t", " \t ", "\u00a0", "\u2003", "\x0b", "\x1c"])
NEWLINE = st.sampled_from(["\n", "\r\n", "\n\n", "\n  \n"])
TREES = st.recursive(
    st.dictionaries(NAME, VALUE, max_size=4),
    lambda children: st.dictionaries(NAME, st.one_of(VALUE, children), max_size=4),
    max_leaves=25,
)


@st.composite
def written(draw: st.DrawFn, tree: Mapping[str, Any] | None = None, depth: int = 0) -> str:
    """``tree`` as a CS file, with a random layout for every entry."""
    tree = draw(TREES) if tree is None else tree
    out: list[str] = []
    for name, value in tree.items():
        indent = draw(SPACE) + "  " * depth
        if draw(st.integers(0, 5)) == 0:
            out.append(f"{indent}#{draw(VALUE)}{draw(NEWLINE)}")
        if isinstance(value, Mapping):
            if draw(st.booleans()):
                out.append(f"{indent}{name}{draw(SPACE)}{{{draw(NEWLINE)}")
            else:
                out.append(f"{indent}{name}{draw(NEWLINE)}{indent}{{{draw(NEWLINE)}")
            out.append(draw(written(value, depth + 1)))
            out.append(f"{indent}}}{draw(SPACE)}{draw(NEWLINE)}")
        else:
            parts = value.split(",")
            if len(parts) > 1 and draw(st.booleans()):
                out.append(f"{indent}{name}{draw(SPACE)}={draw(SPACE)}{parts[0]}{draw(NEWLINE)}")
                out.extend(f"{indent}{name}{draw(SPACE)}+={draw(SPACE)}{p}{draw(NEWLINE)}" for p in parts[1:])
            else:
                out.append(f"{indent}{name}{draw(SPACE)}={draw(SPACE)}{value}{draw(SPACE)}{draw(NEWLINE)}")
    return "".join(out)


@given(edited())
@fuzz_settings(300)
def test_edited_real_files(text: str) -> None:
    assert_same(text)


@given(written())
@fuzz_settings(500)
def test_generated_cs_files(text: str) -> None:
    assert_same(text)


# --- line soups: the quirks and the errors ----------------------------------------------------------

SOUP_LINE = st.one_of(
    st.sampled_from(
        [
            "", "  ", "#", "# a comment", "  #x = 1", "a", "b", "Sec", "a = 1", "a = 2", "a=", "= 1", "a += 2",
            "b += 3", "+= 1", "a+=b=c", "a=b+=c", "a + = 1", "{", "}", "a {", "a{b=1", "} b", "}{", "x { }",
            "a { b = c }",
            "A/B = 1", "a/b += 2", "a/ = 3", "/a = 4", "/ = 5", "A/B {", "a/b {", "/ {", "// {", "A/ {", "a/x/y = 1",
            "a = {x}", "a = x", "x = a/x", "a = b # not a comment", "é = 中", "\u00a0a\u00a0=\u00a0b\u00a0",
            "a\r", "}\r", "{\t",
        ]
    ),
    st.text(st.sampled_from("ab=+{}/# \t"), max_size=6),
)  # fmt: skip


@given(st.lists(SOUP_LINE, max_size=14).map("\n".join))
@fuzz_settings(1500)
@example("a\n{\nb = 1\n}\na = 2")  # an option replaces a section
@example("Sec\ntion\n{\n}")  # a section name over two lines
@example("a\nb = 1")  # a name without '{' is dropped
@example("a {\n}\na {\n}")  # a section defined twice: diraccfg raises
@example("A/B {\nx = 1\n}")  # a section under a missing parent: diraccfg crashes on its first entry
@example("A/B {\n}")  # ... and ignores it when it is empty
@example("/ {\nx = 1\n}")  # '/' names the current section
@example("a = x\na/x/y = 1")  # a path through an option: diraccfg ignores the entry
@example("a = x\na/x/y += 1")  # ... or raises
def test_line_soups(text: str) -> None:
    assert_same(text)


# --- notes: what DIRAC's parser loses is said, with the line and the CS path -------------------------


def test_notes_name_what_diraccfg_loses() -> None:
    text = "Registry\n{\n  Users\n  {\n    alice\n    {\n      Email = a@x\n      Email = b@x\n    }\n  }\n"
    text += "  Groups\n  {\n  }\n  Groups = none\n  stray\n  VO/x = 1\n}\n"
    result = parse(text)
    assert result.tree == CFG().loadFromBuffer(text).getAsDict()
    assert [(n.line, n.path) for n in result.notes] == [
        (8, "/Registry/Users/alice/Email"),
        (14, "/Registry/Groups"),
        (16, "/Registry"),
        (16, "/Registry"),
    ]
    messages = [n.message for n in result.notes]
    assert "DIRAC keeps this value and loses 'a@x'" in messages[0]
    assert "replaces the section" in messages[1]
    assert "'stray' of line 15 is not an entry" in messages[2]
    assert "'VO/x': a section on this path does not exist" in messages[3]


def test_errors_name_the_line_and_the_path() -> None:
    with pytest.raises(CFGSyntaxError, match=r"line 7 \(/Registry/Users\): 'Users' is defined twice"):
        parse("Registry\n{\n  Users\n  {\n  }\n  Users\n  {\n  }\n}\n")
    with pytest.raises(CFGSyntaxError, match=r"line 3 \(/A/b\): '\+=' to option 'b', which is not declared"):
        parse("A\n{\n  b += 1\n}\n")
    with pytest.raises(CFGSyntaxError, match=r"line 5 \(/A/B\): this section is never closed \(2 '{' without '}'"):
        parse("A\n{\n  b = 1\n  B\n  {\n")
    with pytest.raises(CFGSyntaxError, match=r"line 1: '}' closes a section that was never opened"):
        parse("}\n")
