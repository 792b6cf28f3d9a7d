"""DIRAC's CFG text format, read in linear time into the tree ``diraccfg`` itself would build.

``diraccfg.CFG.loadFromBuffer`` reads a file character by character and checks, for every new
entry, whether the name is already in the section's ordered *list*: a section of n entries costs
n²/2 comparisons (20,000 users in ``/Registry/Users`` take seconds, 100,000 take minutes). This
module reads the same text line by line with dictionaries and gives exactly the tree
``CFG().loadFromBuffer(text).getAsDict()`` gives: same sections, options and values, options
before sections in each section, in the same order. That includes diraccfg's quirks, because a CS
that DIRAC reads one way must not be exported another way:

* a line is stripped, then ``#`` at its start makes it a comment; a ``#`` anywhere else is part
  of the value;
* ``name = value`` (everything after the first ``=`` is the value, braces included), and
  ``name += value`` appends ``", value"`` to an option declared earlier in the same section;
* ``{`` opens a section whose name is all the text read since the last entry, possibly over
  several lines (``Sec`` then ``tion {`` is a section ``Section``); ``}`` closes one;
* an option set twice keeps its first position and its last value; an option set where a section
  of the same name exists replaces the section;
* a ``/`` in a name addresses a sub-section relative to the current one (``A/B = 1`` sets ``B``
  in ``A`` if ``A`` exists, and nothing at all otherwise).

Where diraccfg raises (unbalanced braces, a section defined twice, an append to an undeclared
option, an empty name...), :func:`parse` raises :class:`CFGSyntaxError` with the line number and
the CS path. Where diraccfg silently loses text (a value replaced by a later one, a section
replaced by an option, an entry under a missing section, text that is neither an option nor a
section name), the tree is the same, and :attr:`ParsedCFG.notes` says what was lost and where, so
the report can list it. ``tests/unit/cs_sync/test_cs_sync_cfg_parser.py`` checks the equivalence
against diraccfg on generated and real-shaped files. Comments are not kept: nothing exported
reads them.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CFGSyntaxError", "ParseNote", "ParsedCFG", "parse", "without_cycle_collection"]

Tree = dict[str, Any]  # values: str (an option) or Tree (a section)

_BRACES = re.compile(r"([{}])")


class CFGSyntaxError(ValueError):
    """The text is not a CS that DIRAC can read (``diraccfg`` raises on it too)."""

    def __init__(self, line: int, path: str, message: str) -> None:
        self.line = line
        self.path = path
        where = f"line {line}" + (f" ({path})" if path else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class ParseNote:
    """Text DIRAC's own parser reads but loses: the tree is DIRAC's, the note says what went."""

    line: int
    path: str
    message: str


@dataclass
class ParsedCFG:
    tree: Tree
    notes: list[ParseNote] = field(default_factory=list)


class _Void:
    """The section diraccfg enters when ``A/B {`` names a missing parent: it is a ``False``."""


_VOID = _Void()


def _join(path: list[str], name: str | None = None) -> str:
    parts = [*path, name] if name is not None else path
    return "/" + "/".join(parts)


class _Parser:
    def __init__(self) -> None:
        self.root: Tree = {}
        self.current: Tree | _Void = self.root
        #: the enclosing sections: (section, its CS path, the line that opened the one inside it)
        self.stack: list[tuple[Tree | _Void, list[str], int]] = []
        self.path: list[str] = []  # the CS path of ``current`` (for messages only)
        self.pending = ""  # diraccfg's currentlyParsedString: text read since the last entry
        self.pending_from = 0  # the line where the pending text started
        self._pending_line = 0
        self.pending_lines = 0  # how many lines it comes from (a name, then '{' on the next line: 1)
        self.notes: list[ParseNote] = []
        self.line = 0

    # --- errors and notes --------------------------------------------------------------------

    def error(self, message: str, name: str | None = None) -> CFGSyntaxError:
        return CFGSyntaxError(self.line, _join(self.path, name) if name or self.path else "", message)

    def note(self, message: str, name: str | None = None) -> None:
        self.notes.append(ParseNote(self.line, _join(self.path, name), message))

    # --- diraccfg's getRecursive(path, -1): the section that holds the last name of a path ----

    @staticmethod
    def _parent(node: Tree, name: str) -> tuple[Any, str] | None:
        """(the value at all but the last part, the last part); ``None`` where diraccfg finds nothing."""
        parts = [p.strip() for p in name.split("/") if p.strip() != ""]
        if not parts:
            return None
        value: Any = node
        for part in parts[:-1]:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value, parts[-1]

    def _target(self, name: str, what: str) -> tuple[Tree, str] | None:
        """The section and name an entry called ``name`` (which may hold ``/``) goes to, or ``None``."""
        if isinstance(self.current, _Void):
            raise self.error(f"{what} {name!r} is inside a section that does not exist (see the line that opened it)")
        if "/" not in name:
            return self.current, name
        found = self._parent(self.current, name)
        if found is None:
            return None
        parent, last = found
        if not isinstance(parent, dict):
            raise self.error(f"{what} {name!r}: a part of this path is an option, not a section")
        return parent, last

    # --- the three operations ------------------------------------------------------------------

    def open_section(self) -> None:
        name = self.pending.strip()
        if self.pending_lines > 1:
            self.note(f"the section name {name!r} is made of the text of lines {self.pending_from} to {self.line}")
        self.pending = ""
        if name == "":
            raise self.error("a section without a name ('{' with no name before it)")
        target = self._target(name, "section")
        self.stack.append((self.current, self.path, self.line))
        if target is None:  # a missing parent, or a name made of '/' only (the current section itself)
            if any(p.strip() for p in name.split("/")):
                self.note(f"section {name!r}: a section on this path does not exist, so DIRAC ignores it")
                self.current = _VOID
            return
        parent, last = target
        if last in parent:
            kind = "section" if isinstance(parent[last], dict) else "option"
            raise self.error(f"{last!r} is defined twice in this section (already as an {kind})", last)
        section: Tree = {}
        parent[last] = section
        self.current = section
        self.path = (
            [*self.path, name] if "/" not in name else [*self.path, *(p.strip() for p in name.split("/") if p.strip())]
        )

    def close_section(self) -> None:
        if not self.stack:
            raise self.error("'}' closes a section that was never opened")
        self.current, self.path, _ = self.stack.pop()

    def set_option(self, name: str, value: str) -> None:
        if name == "":
            raise self.error("an option without a name ('=' at the start of the line)")
        target = self._target(name, "option")
        if target is None:
            self.note(f"option {name!r}: a section on this path does not exist, so DIRAC ignores it")
            return
        section, last = target
        previous = section.get(last)
        if isinstance(previous, dict):
            self.note(f"option {last!r} replaces the section of the same name (DIRAC keeps the option)", last)
        elif previous is not None and previous != value:
            self.note(f"option {last!r} is set again: DIRAC keeps this value and loses {previous!r}", last)
        section[last] = value

    def append_option(self, name: str, value: str) -> None:
        if name == "":
            raise self.error("'+=' without an option name")
        if isinstance(self.current, _Void):
            raise self.error(f"option {name!r} is inside a section that does not exist (see the line that opened it)")
        found = (self.current, name) if "/" not in name else self._parent(self.current, name)
        if found is None:
            raise self.error(f"'+=' to {name!r}: a section on this path does not exist")
        section, last = found
        if not isinstance(section, dict):
            raise self.error(f"'+=' to {name!r}: a part of this path is an option, not a section")
        current = section.get(last)
        if current is None:
            raise self.error(f"'+=' to option {last!r}, which is not declared before it in this section", last)
        if isinstance(current, dict):
            raise self.error(f"'+=' to {last!r}, which is a section", last)
        section[last] = f"{current}, {value}"

    # --- the text ------------------------------------------------------------------------------

    def _pend(self, text: str) -> None:
        if not self.pending:
            self.pending_from, self.pending_lines, self._pending_line = self.line, 0, 0
        if self._pending_line != self.line:
            self.pending_lines += 1
            self._pending_line = self.line
        self.pending += text

    def feed(self, data: str) -> ParsedCFG:
        # The common lines (a name, '{', '}', 'name = value') take the short paths; everything
        # else goes through the general one, which follows diraccfg character class by class.
        for self.line, raw in enumerate(data.split("\n"), start=1):
            line = raw.strip()
            if not line or line[0] == "#":
                continue
            at = line.find("=")
            if at < 0:
                if line == "{":
                    self.open_section()
                elif line == "}":
                    if not self.stack:
                        raise self.error("'}' closes a section that was never opened")
                    self.current, self.path, _ = self.stack.pop()
                elif "{" in line or "}" in line:
                    self._general(line, at)
                else:
                    self._pend(line)
                continue
            current = self.current
            if not self.pending and line[at - 1] != "+" and type(current) is dict:
                name = line[:at].strip()
                if name and "{" not in name and "}" not in name and "/" not in name and name not in current:
                    current[name] = line[at + 1 :].strip()
                    continue
            self._general(line, at)
        if self.stack:
            opened = self.stack[-1][2]
            raise CFGSyntaxError(
                opened,
                _join(self.path),
                f"this section is never closed ({len(self.stack)} '{{' without '}}' at the end)",
            )
        if self.pending.strip():
            self.note(
                f"the text {self.pending.strip()!r} of line {self.pending_from} is not an entry: DIRAC ignores it"
            )
        return ParsedCFG(_diraccfg_order(self.root), self.notes)

    def _general(self, line: str, at: int) -> None:
        """One line as diraccfg reads it: braces and text up to the first '=' or '+=', then the entry."""
        append = at > 0 and line[at - 1] == "+"
        head = line if at < 0 else line[: at - 1 if append else at]
        carried = self.pending
        if "{" in head or "}" in head:
            for piece in _BRACES.split(head):
                if piece == "{":
                    self.open_section()
                    carried = ""
                elif piece == "}":
                    self.close_section()
                elif piece:
                    self._pend(piece)
        elif head:
            self._pend(head)
        if at < 0:
            return
        if carried.strip():
            self.note(f"the text {carried.strip()!r} of line {self.pending_from} is not an entry: DIRAC ignores it")
        self.pending = ""
        if append:
            self.append_option(line[: at - 1].strip(), line[at + 1 :].strip())
        else:
            self.set_option(line[:at].strip(), line[at + 1 :].strip())


def _diraccfg_order(tree: Tree) -> Tree:
    """Options first, then sections, each in file order: the order of ``CFG.getAsDict``."""
    seen_section = reorder = False
    for key, value in tree.items():
        if isinstance(value, dict):
            seen_section = True
            tree[key] = _diraccfg_order(value)
        elif seen_section:
            reorder = True
    if not reorder:
        return tree
    return {k: v for k, v in tree.items() if not isinstance(v, dict)} | {
        k: v for k, v in tree.items() if isinstance(v, dict)
    }


@contextlib.contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a CS (or its conversion) is built.

    A CS and what cs-sync makes of it are trees of hundreds of thousands of dicts, lists and
    strings, freed by reference counting. The cycle collector, triggered by allocations, walks
    all of them again at each full collection and finds nothing: 30% of the time of a
    100,000-user export, growing faster than the CS. Peak memory is the same without it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse(data: str) -> ParsedCFG:
    """The tree of ``diraccfg.CFG().loadFromBuffer(data).getAsDict()``, in linear time.

    Raises :class:`CFGSyntaxError` exactly where diraccfg raises.
    """
    with without_cycle_collection():
        return _Parser().feed(data)
