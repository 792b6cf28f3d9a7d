"""``default.yml`` exactly as PyYAML writes it, several times faster.

The file is ``yaml.dump(config, Dumper=CSafeDumper, sort_keys=True, allow_unicode=True,
default_flow_style=False)``: sorted keys, so that an unchanged configuration always gives the same
bytes and the same git blob. libyaml's emitter is C, but PyYAML's representer (one node object
per value, through a generic dispatch) and resolver (Python regular expressions, twice per
scalar) are not: 1.5 s of the export of 20,000 users. Two faster ways to the same bytes:

* :class:`_BlockWriter` writes the text itself for what an exported configuration holds: block
  mappings with string keys, block sequences, and scalars that libyaml writes plain or
  single-quoted on printable text (including its line folding at column 80). It follows libyaml's
  ``yaml_emitter_analyze_scalar``, ``select_scalar_style`` and ``write_plain``/``write_single_quoted``
  and uses PyYAML's own resolver to tell a plain string from a number or a boolean. Anything
  else (a shared object, which PyYAML writes as an anchor, a double-quoted scalar, a complex key)
  makes it give up, and
* :class:`_NodeBuilder` builds PyYAML's nodes directly (no dispatch) and hands them to the same
  emitter, for any data.

``tests/unit/cs_sync/test_cs_sync_yamlio.py`` compares both with ``yaml.dump`` on generated data.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _NodeBuilder:
    """SafeRepresenter's nodes for ``sort_keys=True, default_flow_style=False``, without its dispatch."""

    def __init__(self, dumper: yaml.SafeDumper) -> None:
        self.dumper = dumper
        self.shared: dict[int, Node] = {}
        self.keep: list[Any] = []  # objects whose id is in ``shared`` stay alive (PyYAML's object_keeper)

    def node(self, data: Any) -> Node:  # noqa: PLR0911 - one branch per type, as PyYAML's table
        kind = type(data)
        if kind is str:
            return ScalarNode(_STR, data)
        if kind is dict or kind is list:
            known = self.shared.get(id(data))
            if known is not None:
                return known
            self.keep.append(data)
            return self._mapping(data) if kind is dict else self._sequence(data)
        if kind is bool:
            return ScalarNode(_BOOL, "true" if data else "false")
        if kind is int:
            return ScalarNode(_INT, str(data))
        if data is None:
            return ScalarNode(_NULL, "null")
        # floats (their special values) and anything unexpected: PyYAML's own representer
        return self.dumper.represent_data(data)

    def _mapping(self, data: dict[Any, Any]) -> MappingNode:
        items: list[tuple[Node, Node]] = []
        node = MappingNode(_MAP, items, flow_style=False)
        self.shared[id(data)] = node
        pairs = list(data.items())
        with contextlib.suppress(TypeError):  # keys that cannot be compared stay in order, as in PyYAML
            pairs = sorted(pairs)
        node_of = self.node
        items.extend((node_of(key), node_of(value)) for key, value in pairs)
        return node

    def _sequence(self, data: list[Any]) -> SequenceNode:
        items: list[Node] = []
        node = SequenceNode(_SEQ, items, flow_style=False)
        self.shared[id(data)] = node
        items.extend(map(self.node, data))
        return node


#: Characters libyaml writes as they are (printable, not a line break) when unicode is allowed.
_PRINTABLE = re.compile("[\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*")
_FIRST_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")
_WIDTH = 80  # libyaml's best_width
_MAX_SIMPLE_KEY = 128


class _Unsupported(Exception):
    """Data the block writer does not write as libyaml would: the node path takes over."""


class _BlockWriter:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.col = 0
        self.seen: set[int] = set()
        self.resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = _Dumper.yaml_implicit_resolvers
        self.float = _Dumper(io.StringIO()).represent_float
        self.styles: dict[str, bool] = {}  # string -> can be written plain

    def document(self, data: dict[Any, Any]) -> str:
        if not data:
            return "{}\n"
        self.mapping(data, 0, inline=True)
        self.out.append("\n")
        return "".join(self.out)

    def _container(self, data: Any) -> None:
        if id(data) in self.seen:
            raise _Unsupported("a shared object (PyYAML writes an anchor)")
        self.seen.add(id(data))

    def _newline(self, indent: int) -> None:
        self.out.append("\n" + " " * indent)
        self.col = indent

    def mapping(self, data: dict[Any, Any], indent: int, *, inline: bool) -> None:
        self._container(data)
        try:
            pairs = sorted(data.items())
        except TypeError:
            pairs = list(data.items())
        for number, (key, value) in enumerate(pairs):
            if number or not inline:
                self._newline(indent)
            if type(key) is not str or len(key) > _MAX_SIMPLE_KEY:
                raise _Unsupported("a key that is not a short string")
            self.scalar(key, indent, key=True)
            self.out.append(":")
            self.col += 1
            self.value(value, indent, in_sequence=False)

    def sequence(self, data: list[Any], indent: int, *, inline: bool) -> None:
        self._container(data)
        for number, item in enumerate(data):
            if number or not inline:
                self._newline(indent)
            self.out.append("-")
            self.col += 1
            self.value(item, indent, in_sequence=True)

    def value(self, data: Any, indent: int, *, in_sequence: bool) -> None:
        """What follows ``key:`` or ``-`` written at column ``indent``."""
        kind = type(data)
        if kind is dict or kind is list:
            if not data:
                self.out.append(" {}" if kind is dict else " []")
                self.col += 3
            elif kind is dict and not in_sequence:
                self.mapping(data, indent + 2, inline=False)
            elif kind is dict:
                self.out.append(" ")
                self.col += 1
                self.mapping(data, indent + 2, inline=True)
            elif not in_sequence:  # block sequences in a mapping are not indented
                self.sequence(data, indent, inline=False)
            else:
                self.out.append(" ")
                self.col += 1
                self.sequence(data, indent + 2, inline=True)
            return
        self.out.append(" ")
        self.col += 1
        self.scalar(data, indent + 2)

    def scalar(self, data: Any, indent: int, *, key: bool = False) -> None:
        """Write a scalar at the current column; ``indent``: where a folded line continues."""
        kind = type(data)
        if kind is str:
            plain = self.styles.get(data)
            if plain is None:
                plain = self.styles[data] = self._plain(data)
            if plain:
                self._plain_scalar(data, indent, key)
            else:
                self._single_quoted(data, indent, key)
            return
        if kind is bool:
            text = "true" if data else "false"
        elif kind is int:
            text = str(data)
        elif data is None:
            text = "null"
        elif kind is float:
            text = self.float(data).value
        else:
            raise _Unsupported(f"a {kind.__name__}")
        self.out.append(text)
        self.col += len(text)

    def _plain(self, text: str) -> bool:
        """Whether libyaml writes this string plain (else single-quoted); raise if neither."""
        if not _PRINTABLE.fullmatch(text):
            raise _Unsupported("a string libyaml writes double-quoted")
        if not text:
            return False
        resolvers = self.resolvers.get(text[0], []) + self.resolvers.get(None, [])
        if any(regex.match(text) for _, regex in resolvers):
            return False  # it would read back as a number, a boolean, null...
        first = text[0]
        if first in _FIRST_INDICATORS or text[:3] in ("---", "..."):
            return False
        if first in "?:-" and (len(text) == 1 or text[1] == " "):
            return False
        if first == " " or text[-1] == " " or text[-1] == ":":
            return False
        return ": " not in text and " #" not in text

    def _plain_scalar(self, text: str, indent: int, key: bool) -> None:
        """libyaml's write_plain: a space met past column 80 becomes a new line (not in a key)."""
        if key or " " not in text or self.col + len(text) <= _WIDTH + 1:
            self.out.append(text)
            self.col += len(text)
            return
        col, start, spaces = self.col, 0, False
        for index, char in enumerate(text):
            if char != " ":
                spaces = False
                continue
            if not spaces and col + index - start > _WIDTH and text[index + 1] != " ":
                self.out.append(text[start:index] + "\n" + " " * indent)
                col, start = indent, index + 1
            spaces = True
        self.out.append(text[start:])
        self.col = col + len(text) - start

    def _single_quoted(self, text: str, indent: int, key: bool) -> None:
        """libyaml's write_single_quoted: quotes doubled; folded as plain, never at the ends."""
        quoted = "'" + text.replace("'", "''") + "'"
        if key or " " not in text or self.col + len(quoted) <= _WIDTH + 1:
            self.out.append(quoted)
            self.col += len(quoted)
            return
        out = ["'"]
        col = self.col + 1
        spaces = False
        last = len(text) - 1
        for index, char in enumerate(text):
            if char == " ":
                if not spaces and col > _WIDTH and 0 < index < last and text[index + 1] != " ":
                    out.append("\n" + " " * indent)
                    col = indent
                else:
                    out.append(" ")
                    col += 1
                spaces = True
                continue
            out.append("''" if char == "'" else char)
            col += 2 if char == "'" else 1
            spaces = False
        out.append("'")
        self.out.append("".join(out))
        self.col = col + 1


def dump_yaml(config: Mapping[str, Any]) -> str:
    """Exactly ``yaml.dump(dict(config), Dumper=CSafeDumper, sort_keys=True, allow_unicode=True,
    default_flow_style=False)``."""
    try:
        return _BlockWriter().document(dict(config))
    except _Unsupported:
        return _dump_nodes(config)


def _dump_nodes(config: Mapping[str, Any]) -> str:
    stream = io.StringIO()
    dumper = _Dumper(stream, allow_unicode=True, default_flow_style=False, sort_keys=True)
    try:
        dumper.open()
        dumper.serialize(_NodeBuilder(dumper).node(dict(config)))
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader (the C one when available)
