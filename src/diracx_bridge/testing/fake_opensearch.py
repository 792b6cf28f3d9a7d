"""An in-memory stand-in for OpenSearch, shared by DIRAC and DiracX in the grid-in-a-box.

**This is not OpenSearch.** It is the only component of the grid-in-a-box that is not the real
software. It exists because DIRAC v9's JobMonitoring and JobStateUpdate services refuse to start
without JobParametersDB, which lives only in OpenSearch, no OpenSearch can be installed on the
test machines, and the parity tests need DIRAC and DiracX to read and write *one* parameter store.
Any result about job parameters obtained on the grid-in-a-box is only as good as this module.

It answers the HTTP calls that DIRAC 9.1's ``ElasticSearchDB``/``JobParametersDB`` (sync
``opensearchpy.OpenSearch``) and DiracX 0.7's ``BaseOSDB``/``JobParametersDB`` (async
``AsyncOpenSearch``) make, with the response shapes opensearch-py expects. Where a real cluster
would reject a request, so does the stand-in, because those rejections are what parity tests must
see: index names must be lowercase, values must fit the mapped type (``"abc"`` into a ``long``),
a document created by a composable template gets that template's mapping (highest priority wins,
overlapping patterns at equal priority are refused), ``_source`` comes back verbatim, ``_mget``
and the single-document APIs take concrete index names only (wildcards only in search, exists,
delete-by-query), a search returns 10 hits unless told otherwise, and ``from + size`` is capped at
10,000.

Known differences, acceptable for a test stand-in: everything is visible at once (no refresh
interval); scores are always 1.0; one failing index fails the whole search (a cluster would
return the other indices' hits with shard failures); text fields use a crude ``\\w+`` lowercase
analyzer; no aliases, aggregations, scrolls, date math or scripts other than
``ctx._source.remove('<field>')``. Anything unsupported is answered with HTTP 400 and a reason
naming this module, never silently ignored.

Run it as a process (``python -m diracx_bridge.testing.fake_opensearch --port N``) or in-process
with :class:`FakeOpenSearch`. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import logging
import math
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, cmp_to_key
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

logger = logging.getLogger("diracx_bridge.testing.fake_opensearch")  # not __main__ under -m

HOST = "127.0.0.1"
OPENSEARCH_VERSION = "2.11.1"  # the version whose behaviour is imitated; reported by GET /
DEFAULT_SIZE = 10
MAX_RESULT_WINDOW = 10_000
DEFAULT_TRACK_TOTAL_HITS = 10_000
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_NUMERIC = {"long", "integer", "short", "byte", "unsigned_long", "float", "double", "half_float", "scaled_float"}
_INTEGRAL = {"long", "integer", "short", "byte", "unsigned_long"}
_KEYWORD = {"keyword", "constant_keyword", "wildcard"}
_TEXT = {"text", "match_only_text"}
_SHARDS_OK = {"total": 2, "successful": 1, "failed": 0}
_ISO_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})(?:T(?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})"
    r"(?:[.,](?P<f>\d{1,9}))?)?)?(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?"
)
_INVALID_INDEX_CHARS = set('\\/*?"<>| ,#:')
_REMOVE_SCRIPT = re.compile(r"""\s*ctx\._source\.remove\(\s*(?:'([^']*)'|"([^"]*)")\s*\)\s*;?""")
_SEARCH_KEYS = {"query", "size", "from", "sort", "_source", "track_total_hits", "timeout"}


# --------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answered the way OpenSearch does: ``{"error": {"root_cause": [...], ...}, "status": N}``.

    opensearch-py turns the status into its exception class and prints ``root_cause[0].reason``,
    so the reason is what a failing test shows: it must say what went wrong in OpenSearch terms.
    """

    def __init__(self, status: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(f"{kind}: {reason}")
        self.status, self.kind, self.reason, self.extra = status, kind, reason, extra
        self.root_cause: dict[str, Any] | None = None

    def cause(self) -> dict[str, Any]:
        return {"type": self.kind, "reason": self.reason, **self.extra}

    def body(self) -> dict[str, Any]:
        return {"error": {"root_cause": [self.root_cause or self.cause()], **self.cause()}, "status": self.status}


def _bad(kind: str, reason: str, **extra: Any) -> ApiError:
    return ApiError(400, kind, reason, **extra)


def _unsupported(what: str) -> ApiError:
    return _bad(
        "illegal_argument_exception",
        f"{what} is not implemented by the in-memory OpenSearch stand-in (diracx_bridge.testing.fake_opensearch)",
    )


def _parsing(reason: str) -> ApiError:
    return _bad("parsing_exception", reason)


def _index_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        index=name,
        index_uuid="_na_",
        **{"resource.type": "index_or_alias", "resource.id": name},
    )


def _search_failed(index: str, err: ApiError) -> ApiError:
    """A per-index query failure, wrapped as a cluster wraps shard failures."""
    wrapped = _bad("search_phase_execution_exception", "all shards failed", phase="query", grouped=True)
    wrapped.extra["failed_shards"] = [{"shard": 0, "index": index, "node": "fake", "reason": err.cause()}]
    wrapped.root_cause = err.cause() | {"index": index}
    return wrapped


# ------------------------------------------------------------------------------ value handling
def _number(value: Any) -> int | float:
    """A JSON value as OpenSearch coerces it into a numeric field (numeric strings are accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"cannot parse [{value!r}] as a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f'For input string: "{text}"') from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"[{value}] is not a finite number")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _epoch_ms(value: Any) -> int:
    """A date in OpenSearch's default ``strict_date_optional_time||epoch_millis`` format, in ms."""
    if isinstance(value, bool):
        raise ValueError(f"failed to parse date field [{value}]")
    if isinstance(value, int | float):
        return math.floor(value)
    if not isinstance(value, str):
        raise ValueError(f"failed to parse date field [{value!r}]")
    text = value.strip()
    if text.startswith("now"):
        raise ValueError(f"date math [{text}] is not implemented by the in-memory OpenSearch stand-in")
    if m := _ISO_DATE.fullmatch(text):
        g = m.groupdict()
        stamp = datetime(int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1), int(g["h"] or 0), tzinfo=UTC)
        stamp += timedelta(minutes=int(g["mi"] or 0), seconds=int(g["s"] or 0))
        stamp += timedelta(microseconds=int((g["f"] or "0").ljust(6, "0")[:6]))
        if (tz := g["tz"]) and tz != "Z":
            sign, digits = (1 if tz[0] == "+" else -1), tz[1:].replace(":", "")
            stamp -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        return math.floor(stamp.timestamp() * 1000)
    try:
        return math.floor(float(text))
    except ValueError:
        raise ValueError(
            f"failed to parse date field [{text}] with format [strict_date_optional_time||epoch_millis]"
        ) from None


def _keyword(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"cannot index [{value!r}] as a keyword")


def _coerce(ftype: str, value: Any) -> Any:
    """The value OpenSearch indexes for ``value`` in a field of type ``ftype`` (ValueError if rejected).

    Used at write time (to reject what a cluster rejects) and at query time (to compare like a
    cluster: ``"12"`` equals ``12`` in a ``long`` field, dates compare as epoch milliseconds).
    """
    if ftype in _INTEGRAL:
        number = _number(value)
        number = math.trunc(number) if isinstance(number, float) else number
        if not _LONG_MIN <= number <= _LONG_MAX:
            raise ValueError(f"value [{value}] is out of range for a long")
        return number
    if ftype in _NUMERIC:
        return float(_number(value))
    if ftype == "date":
        return _epoch_ms(value)
    if ftype in _KEYWORD or ftype in _TEXT:
        return _keyword(value)
    if ftype == "boolean":
        if value in (True, False, "true", "false", ""):
            return value in (True, "true")
        raise ValueError(f"failed to parse value [{value}] as only [true] or [false] are allowed")
    return value


def _tokens(text: str) -> list[str]:
    """A crude stand-in for the standard analyzer: term queries on text fields match single tokens."""
    return re.findall(r"\w+", text.lower())


def _dynamic_type(value: Any) -> dict[str, Any]:
    """The mapping a cluster's dynamic mapping gives a new field, from the first value it sees."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, str) and (m := _ISO_DATE.fullmatch(value.strip())) and m["d"]:
        return {"type": "date"}
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


def _leaves(value: Any, path: str, out: dict[str, list[Any]]) -> None:
    """Flatten a document the way OpenSearch indexes it: dotted paths, arrays as multi-values."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _leaves(sub, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, path, out)
    elif value is not None:
        out.setdefault(path, []).append(value)


def _flatten(source: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    _leaves(source, "", out)
    return out


def _ftype(definition: dict[str, Any]) -> str:
    return str(definition.get("type", "object"))


def _lookup(mappings: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """The mapping of ``path`` and the source path it reads (``x.keyword`` reads ``x``)."""
    props: dict[str, Any] = mappings.get("properties", {})
    parts = path.split(".")
    for i, part in enumerate(parts):
        node = props.get(part)
        if node is None:
            return None
        if i == len(parts) - 1:
            return node, path
        if "properties" in node:
            props = node["properties"]
        elif i == len(parts) - 2 and parts[-1] in node.get("fields", {}):
            return node["fields"][parts[-1]], ".".join(parts[:-1])
        else:
            return None
    return None


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Partial-document update semantics: objects merge recursively, everything else is replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@cache
def _patterns_overlap(p: str, q: str) -> bool:
    """Whether some index name matches both ``*`` patterns (the template conflict rule)."""
    if not p or not q:
        return set(p + q) <= {"*"}
    if p[0] == "*":
        return _patterns_overlap(p[1:], q) or _patterns_overlap(p, q[1:])
    if q[0] == "*":
        return _patterns_overlap(q, p)
    return p[0] == q[0] and _patterns_overlap(p[1:], q[1:])


def _source_filter(
    source: dict[str, Any], includes: list[str], excludes: list[str], prefix: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in source.items():
        path = prefix + key
        if any(_glob(p).fullmatch(path) for p in excludes):
            continue
        whole = not includes or any(_glob(p).fullmatch(path) for p in includes)
        if isinstance(value, dict):
            sub = _source_filter(value, [] if whole else includes, excludes, path + ".")
            if whole or sub:
                out[key] = sub
        elif whole:
            out[key] = value
    return out


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class _SourceSpec:
    """What ``_source`` a response carries: the body or ``_source*`` URL parameters decide."""

    enabled: bool = True
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: Any, params: dict[str, str]) -> _SourceSpec:
        if "_source" in params:
            spec = {"true": True, "false": False}.get(params["_source"], params["_source"])
        if isinstance(spec, bool):
            result = cls(spec)
        elif isinstance(spec, str | list):
            result = cls(True, tuple(_as_list(spec)))
        elif isinstance(spec, dict):
            inc = _as_list(spec.get("includes", spec.get("include")))
            exc = _as_list(spec.get("excludes", spec.get("exclude")))
            result = cls(True, tuple(inc), tuple(exc))
        elif spec is None:
            result = cls()
        else:
            raise _parsing(f"[_source] must be a boolean, a string, an array or an object, got [{spec!r}]")
        inc = result.includes + tuple(_as_list(params.get("_source_includes")))
        exc = result.excludes + tuple(_as_list(params.get("_source_excludes")))
        return cls(result.enabled, inc, exc)

    def apply(self, source: dict[str, Any]) -> dict[str, Any]:
        return _source_filter(source, list(self.includes), list(self.excludes))


# ----------------------------------------------------------------------------------- the store
@dataclass
class _Doc:
    source: dict[str, Any]
    version: int
    seq_no: int
    flat: dict[str, list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.flat = _flatten(self.source)


@dataclass
class _Index:
    name: str
    mappings: dict[str, Any]
    settings: dict[str, Any]
    uuid: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    created: int = field(default_factory=lambda: int(time.time() * 1000))
    docs: dict[str, _Doc] = field(default_factory=dict)
    seq_no: int = -1

    def next_seq_no(self) -> int:
        self.seq_no += 1
        return self.seq_no

    def field_type(self, path: str) -> str | None:
        found = _lookup(self.mappings, path)
        return _ftype(found[0]) if found else None

    def values(self, doc: _Doc, path: str) -> list[Any]:
        """The indexed values of ``path`` in ``doc``, as this index's mapping makes them."""
        found = _lookup(self.mappings, path)
        if found is None:
            return []
        definition, source_path = found
        ftype = _ftype(definition)
        if ftype == "object" or definition.get("index") is False:
            return []
        out = []
        for raw in doc.flat.get(source_path, []):
            with contextlib.suppress(ValueError):
                value = _coerce(ftype, raw)
                if ftype in _KEYWORD and len(value) > definition.get("ignore_above", math.inf):
                    continue
                out.append(value)
        return out

    def check_document(self, doc_id: str, source: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Reject what a cluster rejects; return the dynamic mappings the document adds."""
        added: list[tuple[str, dict[str, Any]]] = []
        for path, values in _flatten(source).items():
            found = _lookup(self.mappings, path)
            definition = found[0] if found else None
            if definition is None:
                props = self.mappings.get("properties", {})
                for parent in path.split(".")[:-1]:
                    node = props.get(parent)
                    if node is None:
                        break
                    if "properties" not in node:
                        raise _bad(
                            "mapper_parsing_exception",
                            f"Could not dynamically add mapping for field [{path}]. Existing mapping for "
                            f"[{parent}] must be of type object but found [{_ftype(node)}].",
                        )
                    props = node["properties"]
                definition = _dynamic_type(values[0])
                added.append((path, definition))
            ftype = _ftype(definition)
            if ftype == "object":
                raise _bad(
                    "mapper_parsing_exception",
                    f"object mapping for [{path}] tried to parse field [{path}] as object, but found a concrete value",
                )
            for value in values:
                try:
                    _coerce(ftype, value)
                except ValueError as exc:
                    raise _bad(
                        "mapper_parsing_exception",
                        f"failed to parse field [{path}] of type [{ftype}] in document with id '{doc_id}'. "
                        f"Preview of field's value: '{value}'",
                        caused_by={"type": "illegal_argument_exception", "reason": str(exc)},
                    ) from None
        return added

    def add_mappings(self, added: list[tuple[str, dict[str, Any]]]) -> None:
        for path, definition in added:
            props = self.mappings.setdefault("properties", {})
            *parents, leaf = path.split(".")
            for parent in parents:
                props = props.setdefault(parent, {"properties": {}})["properties"]
            props.setdefault(leaf, definition)

    def write(self, doc_id: str, source: dict[str, Any], version: int) -> _Doc:
        self.add_mappings(self.check_document(doc_id, source))
        doc = _Doc(source, version, self.next_seq_no())
        self.docs[doc_id] = doc
        return doc

    def result(self, doc_id: str, doc: _Doc | None, result: str, version: int | None = None) -> dict[str, Any]:
        return {
            "_index": self.name,
            "_id": doc_id,
            "_version": doc.version if doc else version,
            "result": result,
            "_shards": {"total": 0, "successful": 0, "failed": 0} if result == "noop" else _SHARDS_OK,
            "_seq_no": doc.seq_no if doc else self.next_seq_no(),
            "_primary_term": 1,
        }


DocTest = Callable[[str, _Doc], bool]
Query = Callable[[_Index], DocTest]  # binding to an index coerces operands by its mapping


def _single_field(kind: str, spec: Any) -> tuple[str, Any]:
    fields = {k: v for k, v in spec.items() if k not in ("boost", "_name")} if isinstance(spec, dict) else {}
    if len(fields) != 1:
        raise _parsing(f"[{kind}] query must name exactly one field, got {spec!r}")
    return next(iter(fields.items()))


def _query_value(ftype: str, value: Any) -> Any:
    """A query operand coerced like the field; a failure is a (shard) query error, as on a cluster."""
    try:
        return _keyword(value) if ftype in _TEXT else _coerce(ftype, value)
    except ValueError as exc:
        raise _bad("query_shard_exception", f"failed to create query: {exc}") from None


def _never(_doc_id: str, _doc: _Doc) -> bool:
    return False


def _always(_doc_id: str, _doc: _Doc) -> bool:
    return True


def _compile(query: Any) -> Query:  # noqa: PLR0911, PLR0912 - one branch per query type reads best
    """Validate a query once; the result, bound to each index, tests that index's documents.

    Structural errors are request errors (HTTP 400 before any index is read). Operand errors
    (``"abc"`` against a ``long``) depend on each index's mapping, so they surface when binding,
    where a cluster reports them as shard failures.
    """
    if not isinstance(query, dict) or len(query) != 1:
        raise _parsing(f"query malformed, must be an object with exactly one query type, got {query!r}")
    ((kind, spec),) = query.items()
    if kind in ("match_all", "match_none"):
        return lambda _idx: _always if kind == "match_all" else _never
    if kind == "bool":
        return _compile_bool(spec)
    if kind == "ids":
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), list):
            raise _parsing("[ids] query requires [values]")
        ids = {str(v) for v in spec["values"]}
        return lambda _idx: lambda doc_id, _doc: doc_id in ids
    if kind == "exists":
        name = spec.get("field") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise _parsing("[exists] query requires a [field]")
        return lambda idx: lambda _id, doc: bool(idx.values(doc, name))
    if kind == "term":
        name, operand = _single_field(kind, spec)
        if isinstance(operand, dict):
            if set(operand) - {"value", "boost", "_name"} or "value" not in operand:
                raise _unsupported(f"[term] options {sorted(operand)}")
            operand = operand["value"]
        return _compile_terms(name, [operand])
    if kind == "terms":
        name, operand = _single_field(kind, spec)
        if not isinstance(operand, list):
            raise _unsupported(f"[terms] lookup {operand!r}")
        return _compile_terms(name, operand)
    if kind == "range":
        return _compile_range(*_single_field(kind, spec))
    raise _unsupported(f"query [{kind}]")


def _compile_terms(name: str, operands: list[Any]) -> Query:
    def bind(idx: _Index) -> DocTest:
        if (ftype := idx.field_type(name)) is None:
            return _never
        wanted = {_query_value(ftype, v) for v in operands}
        if ftype in _TEXT:  # terms are not analyzed, the text is: "Foo" never matches
            return lambda _id, doc: any(t in wanted for v in idx.values(doc, name) for t in _tokens(v))
        return lambda _id, doc: any(v in wanted for v in idx.values(doc, name))

    return bind


def _compile_range(name: str, bounds: Any) -> Query:
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    if not isinstance(bounds, dict):
        raise _parsing(f"[range] query malformed for [{name}]: {bounds!r}")
    if extra := set(bounds) - set(ops) - {"boost"}:
        raise _unsupported(f"[range] parameters {sorted(extra)}")

    def bind(idx: _Index) -> DocTest:
        if (ftype := idx.field_type(name)) is None:
            return _never
        checks = [(ops[op], _query_value(ftype, v)) for op, v in bounds.items() if op in ops and v is not None]

        def test(_doc_id: str, doc: _Doc) -> bool:
            values = idx.values(doc, name)
            values = [t for v in values for t in _tokens(v)] if ftype in _TEXT else values
            return any(all(op(v, bound) for op, bound in checks) for v in values)

        return test

    return bind


def _compile_bool(spec: Any) -> Query:
    if not isinstance(spec, dict):
        raise _parsing(f"[bool] query malformed: {spec!r}")
    if extra := set(spec) - {"must", "filter", "should", "must_not", "boost", "minimum_should_match", "_name"}:
        raise _parsing(f"[bool] query does not support {sorted(extra)}")

    def clauses(key: str) -> list[Query]:
        value = spec.get(key, [])
        return [_compile(q) for q in (value if isinstance(value, list) else [value])]

    must, must_not, should = clauses("must") + clauses("filter"), clauses("must_not"), clauses("should")
    minimum = spec.get("minimum_should_match", 0 if must else 1)
    if isinstance(minimum, str) and not minimum.lstrip("-").isdigit():
        raise _unsupported(f"minimum_should_match [{minimum}]")
    minimum = min(int(minimum), len(should)) if should else 0

    def bind(idx: _Index) -> DocTest:
        all_of, none_of, some_of = ([q(idx) for q in qs] for qs in (must, must_not, should))

        def test(doc_id: str, doc: _Doc) -> bool:
            return (
                all(t(doc_id, doc) for t in all_of)
                and not any(t(doc_id, doc) for t in none_of)
                and sum(t(doc_id, doc) for t in some_of) >= minimum
            )

        return test

    return bind


@dataclass(frozen=True)
class _Sort:
    field: str
    descending: bool
    missing_first: bool
    unmapped_type: str | None

    @classmethod
    def parse(cls, spec: Any) -> list[_Sort]:
        if spec is None:
            return []
        out = []
        for item in spec if isinstance(spec, list) else [spec]:
            if isinstance(item, str):
                name, _, order = item.partition(":")
                options: dict[str, Any] = {"order": order} if order else {}
            elif isinstance(item, dict) and len(item) == 1:
                ((name, options),) = item.items()
                options = {"order": options} if isinstance(options, str) else options
            else:
                raise _parsing(f"malformed sort {item!r}")
            if extra := set(options) - {"order", "missing", "unmapped_type"}:
                raise _unsupported(f"sort options {sorted(extra)}")
            order = options.get("order", "desc" if name == "_score" else "asc")
            if order not in ("asc", "desc"):
                raise _parsing(f"sort order must be [asc] or [desc], got [{order}]")
            missing = options.get("missing", "_last")
            if missing not in ("_first", "_last"):
                raise _unsupported(f"sort missing value [{missing}]")
            out.append(cls(name, order == "desc", missing == "_first", options.get("unmapped_type")))
        return out

    def check(self, idx: _Index) -> None:
        if self.field in ("_score", "_doc"):
            return
        found = _lookup(idx.mappings, self.field)
        if found is None and self.unmapped_type is None:
            raise _search_failed(
                idx.name,
                _bad("query_shard_exception", f"No mapping found for [{self.field}] in order to sort on"),
            )
        if found is not None and _ftype(found[0]) in _TEXT | {"object"}:
            raise _search_failed(
                idx.name,
                _bad(
                    "illegal_argument_exception",
                    f"Text fields are not optimised for operations that require per-document field data like "
                    f"aggregations and sorting, so these operations are disabled by default. Fielddata is disabled "
                    f"on [{self.field}] in [{idx.name}].",
                ),
            )

    def value(self, idx: _Index, doc: _Doc, position: int) -> Any:
        if self.field == "_score":
            return 1.0
        if self.field == "_doc":
            return position
        values = idx.values(doc, self.field)
        if not values:
            return None
        return max(values) if self.descending else min(values)


def _compare(specs: list[_Sort], a: list[Any], b: list[Any]) -> int:
    for spec, x, y in zip(specs, a, b, strict=True):
        if x == y:
            continue
        if x is None or y is None:
            return (-1 if spec.missing_first else 1) * (1 if x is None else -1)
        try:
            less = x < y
        except TypeError:
            raise _bad(
                "illegal_argument_exception", f"Can't sort on field [{spec.field}]; incompatible sort types"
            ) from None
        return (1 if less else -1) if spec.descending else (-1 if less else 1)
    return 0


class Store:
    """Indices, index templates and documents, behind one lock (the HTTP server is threaded)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.indices: dict[str, _Index] = {}
        self.templates: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        with self.lock:
            self.indices.clear()
            self.templates.clear()

    # ---------------------------------------------------------------------------- resolution
    def resolve(self, expression: str | None, *, ignore_unavailable: bool = False) -> list[_Index]:
        """Indices named by a search expression: comma lists, ``*`` patterns, ``-`` exclusions, ``_all``."""
        names: list[str] = []
        for raw in (expression or "_all").split(","):
            token = raw.strip()
            exclude = token.startswith("-")
            token = token.removeprefix("-")
            if token in ("_all", "*"):
                matched = sorted(self.indices)
            elif "*" in token:
                matched = sorted(n for n in self.indices if _glob(token).fullmatch(n))
            elif token in self.indices:
                matched = [token]
            elif exclude or ignore_unavailable:
                matched = []
            else:
                raise _index_not_found(token)
            names = (
                [n for n in names if n not in matched] if exclude else names + [n for n in matched if n not in names]
            )
        return [self.indices[n] for n in names]

    def concrete(self, name: str) -> _Index:
        """Single-document APIs take a concrete name: a pattern is not expanded, as on a cluster."""
        if name not in self.indices:
            raise _index_not_found(name)
        return self.indices[name]

    def auto_create(self, name: str) -> _Index:
        """Writes create a missing index (``action.auto_create_index``), templates included."""
        if name not in self.indices:
            self.create_index(name, {})
        return self.indices[name]

    # ------------------------------------------------------------------------------ templates
    def put_template(self, name: str, body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        patterns = body.get("index_patterns")
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise _bad("action_request_validation_exception", "Validation Failed: 1: index patterns are missing;")
        if extra := set(body) - {"index_patterns", "template", "priority", "version", "_meta", "composed_of"}:
            raise _unsupported(f"index template keys {sorted(extra)}")
        template = body.get("template") or {}
        if body.get("composed_of") or template.get("aliases") or set(template.get("mappings", {})) - {"properties"}:
            raise _unsupported("component templates, aliases and mapping options other than properties")
        priority = int(body.get("priority", 0))
        with self.lock:
            if params.get("create") == "true" and name in self.templates:
                raise _bad("illegal_argument_exception", f"index template [{name}] already exists")
            for other, tpl in self.templates.items():
                clash = [q for p in patterns for q in tpl["index_patterns"] if _patterns_overlap(p, q)]
                if other != name and tpl["priority"] == priority and clash:
                    raise _bad(
                        "illegal_argument_exception",
                        f"index template [{name}] has index patterns {patterns} matching patterns from existing "
                        f"templates [{other}] with patterns ({other} => {tpl['index_patterns']}) that have the same "
                        f"priority [{priority}], multiple index templates may not match during index creation, "
                        f"please use a different priority",
                    )
            self.templates[name] = {**copy.deepcopy(body), "index_patterns": patterns, "priority": priority}
        return {"acknowledged": True}

    def get_templates(self, name: str | None) -> dict[str, Any]:
        with self.lock:
            found = [(n, t) for n, t in sorted(self.templates.items()) if name is None or _glob(name).fullmatch(n)]
            if name is not None and not found:
                raise ApiError(404, "resource_not_found_exception", f"index template matching [{name}] not found")
            return {"index_templates": [{"name": n, "index_template": {**t, "composed_of": []}} for n, t in found]}

    def delete_template(self, name: str) -> dict[str, Any]:
        with self.lock:
            if self.templates.pop(name, None) is None:
                raise ApiError(404, "index_template_missing_exception", f"index_template [{name}] missing")
        return {"acknowledged": True}

    # -------------------------------------------------------------------------------- indices
    def create_index(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Create ``name``, starting from the highest-priority matching template (as a cluster does)."""
        if name != name.lower() or name.startswith(("_", "-", "+")) or name in (".", ".."):
            raise _bad(
                "invalid_index_name_exception",
                f"Invalid index name [{name}], must be lowercase and must not start with '_', '-', or '+'",
                index=name,
                index_uuid="_na_",
            )
        if bad := sorted(set(name) & _INVALID_INDEX_CHARS):
            raise _bad(
                "invalid_index_name_exception",
                f"Invalid index name [{name}], must not contain the following characters {bad}",
                index=name,
                index_uuid="_na_",
            )
        if extra := set(body) - {"settings", "mappings", "aliases"}:
            raise _parsing(f"unknown key {sorted(extra)} for create index")
        if body.get("aliases"):
            raise _unsupported("index aliases")
        with self.lock:
            if name in self.indices:
                raise _bad(
                    "resource_already_exists_exception",
                    f"index [{name}/{self.indices[name].uuid}] already exists",
                    index=name,
                )
            matching = [
                t for t in self.templates.values() if any(_glob(p).fullmatch(name) for p in t["index_patterns"])
            ]
            template = max(matching, key=lambda t: t["priority"], default={}).get("template", {})
            mappings = copy.deepcopy(template.get("mappings", {}))
            explicit = body.get("mappings", {})
            if set(explicit) - {"properties"}:
                raise _unsupported(f"mapping options {sorted(explicit)}")
            mappings.setdefault("properties", {}).update(copy.deepcopy(explicit.get("properties", {})))
            settings = copy.deepcopy(template.get("settings", {})) | copy.deepcopy(body.get("settings", {}))
            self.indices[name] = _Index(name, mappings, settings)
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def describe(self, expression: str, what: str) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            for idx in self.resolve(expression):
                index_settings = {"provided_name": idx.name, "uuid": idx.uuid, "creation_date": str(idx.created)}
                full = {
                    "aliases": {},
                    "mappings": copy.deepcopy(idx.mappings),
                    "settings": {"index": {**idx.settings.get("index", {}), **index_settings}},
                }
                out[idx.name] = full if what == "all" else {what: full[what]}
            return out

    def delete_index(self, expression: str) -> dict[str, Any]:
        with self.lock:
            for idx in self.resolve(expression):
                del self.indices[idx.name]
        return {"acknowledged": True}

    # ------------------------------------------------------------------------------ documents
    def index_doc(
        self, name: str, doc_id: str | None, source: Any, op_type: str = "index"
    ) -> tuple[int, dict[str, Any]]:
        if not isinstance(source, dict):
            raise _parsing("request body must be a JSON object")
        if op_type not in ("index", "create"):
            raise _bad("illegal_argument_exception", f"opType must be 'create' or 'index', found: [{op_type}]")
        doc_id = doc_id if doc_id is not None else secrets.token_urlsafe(15)
        _check_id(doc_id)
        with self.lock:
            idx = self.auto_create(name)
            old = idx.docs.get(doc_id)
            if old and op_type == "create":
                raise ApiError(
                    409,
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, document already exists (current version [{old.version}])",
                    index=name,
                )
            doc = idx.write(doc_id, copy.deepcopy(source), old.version + 1 if old else 1)
            return (200, idx.result(doc_id, doc, "updated")) if old else (201, idx.result(doc_id, doc, "created"))

    def update_doc(self, name: str, doc_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Partial ``doc`` (with ``doc_as_upsert``/``upsert``) or the field-removal script DIRAC sends."""
        if not isinstance(body, dict):
            raise _parsing("request body must be a JSON object")
        if extra := set(body) - {"doc", "doc_as_upsert", "upsert", "script", "detect_noop", "scripted_upsert"}:
            raise _bad("x_content_parse_exception", f"[UpdateRequest] unknown field {sorted(extra)}")
        if ("doc" in body) == ("script" in body):
            raise _bad("action_request_validation_exception", "Validation Failed: 1: script or doc is missing;")
        removals = _parse_script(body["script"]) if "script" in body else []
        _check_id(doc_id)
        with self.lock:
            idx = self.auto_create(name)
            old = idx.docs.get(doc_id)
            if old is None:
                upsert = body["doc"] if body.get("doc_as_upsert") else body.get("upsert")
                if upsert is None:
                    raise ApiError(
                        404, "document_missing_exception", f"[{doc_id}]: document missing", index=name, shard="0"
                    )
                doc = idx.write(doc_id, copy.deepcopy(upsert), 1)
                return 201, idx.result(doc_id, doc, "created")
            source = copy.deepcopy(old.source)
            if "doc" in body:
                _merge(source, body["doc"])
                if source == old.source and body.get("detect_noop", True):
                    return 200, idx.result(doc_id, old, "noop")
            for field_name in removals:
                source.pop(field_name, None)
            doc = idx.write(doc_id, source, old.version + 1)
            return 200, idx.result(doc_id, doc, "updated")

    def get_doc(self, name: str, doc_id: str, spec: _SourceSpec) -> tuple[int, dict[str, Any]]:
        with self.lock:
            idx = self.concrete(name)
            doc = idx.docs.get(doc_id)
            if doc is None:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            found = {"_index": name, "_id": doc_id, "_version": doc.version, "_seq_no": doc.seq_no}
            found |= {"_primary_term": 1, "found": True}
            if spec.enabled:
                found["_source"] = spec.apply(doc.source)
            return 200, found

    def delete_doc(self, name: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            idx = self.concrete(name)  # a cluster does not auto-create an index for a delete
            doc = idx.docs.pop(doc_id, None)
            if doc is None:
                return 404, idx.result(doc_id, None, "not_found", version=1)
            doc.version += 1
            doc.seq_no = idx.next_seq_no()
            return 200, idx.result(doc_id, doc, "deleted")

    def mget(self, default_index: str | None, body: Any, params: dict[str, str]) -> dict[str, Any]:
        if not isinstance(body, dict) or not ({"docs", "ids"} & set(body)):
            raise _bad("action_request_validation_exception", "Validation Failed: 1: no documents to get;")
        items = body.get("docs") or [{"_id": i} for i in body.get("ids", [])]
        out = []
        with self.lock:
            for item in items:
                name, doc_id = item.get("_index", default_index), item.get("_id")
                if name is None or doc_id is None:
                    raise _bad("action_request_validation_exception", "Validation Failed: index/id missing")
                doc_id = str(doc_id)
                spec = _SourceSpec.parse(item.get("_source"), params)
                try:
                    out.append(self.get_doc(name, doc_id, spec)[1])
                except ApiError as err:
                    out.append({"_index": name, "_id": doc_id, "error": err.cause() | {"root_cause": [err.cause()]}})
        return {"docs": out}

    def bulk(self, default_index: str | None, payload: bytes) -> dict[str, Any]:
        """NDJSON bulk: every item succeeds or fails on its own, as on a cluster."""
        lines = [line for line in payload.decode(errors="replace").split("\n") if line.strip()]
        items: list[dict[str, Any]] = []
        pos = 0
        while pos < len(lines):
            action = _json(lines[pos].encode())
            if not isinstance(action, dict) or len(action) != 1 or next(iter(action)) not in _BULK_OPS:
                raise _bad("illegal_argument_exception", f"Malformed action/metadata line [{pos + 1}]")
            ((op, meta),) = action.items()
            pos += 1
            source = None
            if op != "delete":
                if pos >= len(lines):
                    raise _bad("illegal_argument_exception", "The bulk request must be terminated by a newline")
                source, pos = _json(lines[pos].encode()), pos + 1
            name = meta.get("_index", default_index)
            doc_id = str(meta["_id"]) if meta.get("_id") is not None else None
            if name is None or (doc_id is None and op in ("update", "delete")):
                raise _bad("action_request_validation_exception", "Validation Failed: index or id is missing;")
            try:
                if op == "update":
                    status, result = self.update_doc(name, str(doc_id), source)
                elif op == "delete":
                    status, result = self.delete_doc(name, str(doc_id))
                else:
                    status, result = self.index_doc(name, doc_id, source, op)
                items.append({op: result | {"status": status}})
            except ApiError as err:
                items.append({op: {"_index": name, "_id": doc_id, "status": err.status, "error": err.cause()}})
        failed = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return {"took": 0, "errors": failed, "items": items}

    # --------------------------------------------------------------------------------- search
    def search(self, expression: str | None, body: Any, params: dict[str, str]) -> dict[str, Any]:
        started = time.monotonic()
        body = body or {}
        query, offset, size, sorts, spec = _parse_search(body, params)
        with self.lock:
            indices = self.resolve(expression, ignore_unavailable=params.get("ignore_unavailable") == "true")
            hits: list[tuple[_Index, str, _Doc, list[Any]]] = []
            for idx in indices:
                for sort in sorts:
                    sort.check(idx)
                try:
                    test = query(idx)
                except ApiError as err:
                    raise _search_failed(idx.name, err) from None
                for position, (doc_id, doc) in enumerate(idx.docs.items()):
                    if test(doc_id, doc):
                        hits.append((idx, doc_id, doc, [s.value(idx, doc, position) for s in sorts]))
            if sorts:
                hits.sort(key=cmp_to_key(lambda a, b: _compare(sorts, a[3], b[3])))
            page = [self._hit(h, sorts, spec) for h in hits[offset : offset + size]]
        scored = not sorts or sorts[0].field == "_score"
        response: dict[str, Any] = {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "_shards": {"total": len(indices), "successful": len(indices), "skipped": 0, "failed": 0},
            "hits": {"max_score": 1.0 if hits and scored else None, "hits": page},
        }
        if (total := _total(len(hits), body, params)) is not None:
            response["hits"]["total"] = total
        return response

    @staticmethod
    def _hit(hit: tuple[_Index, str, _Doc, list[Any]], sorts: list[_Sort], spec: _SourceSpec) -> dict[str, Any]:
        idx, doc_id, doc, values = hit
        scored = not sorts or sorts[0].field == "_score"
        out: dict[str, Any] = {"_index": idx.name, "_id": doc_id, "_score": 1.0 if scored else None}
        if spec.enabled:
            out["_source"] = spec.apply(doc.source)
        if sorts:
            out["sort"] = values
        return out

    def delete_by_query(self, expression: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "query" not in body or set(body) - {"query"}:
            raise _bad("action_request_validation_exception", "Validation Failed: 1: query is missing;")
        query = _compile(body["query"])
        started = time.monotonic()
        deleted = 0
        with self.lock:
            for idx in self.resolve(expression):
                test = query(idx)
                doomed = [doc_id for doc_id, doc in idx.docs.items() if test(doc_id, doc)]
                for doc_id in doomed:
                    del idx.docs[doc_id]
                    idx.next_seq_no()
                deleted += len(doomed)
        return {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "total": deleted,
            "deleted": deleted,
            "batches": 1 if deleted else 0,
            "version_conflicts": 0,
            "noops": 0,
            "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0,
            "requests_per_second": -1.0,
            "throttled_until_millis": 0,
            "failures": [],
        }


def _parse_search(body: Any, params: dict[str, str]) -> tuple[Query, int, int, list[_Sort], _SourceSpec]:
    """Everything a search request asks for, validated before any index is read."""
    if not isinstance(body, dict):
        raise _parsing("request body must be a JSON object")
    if keys := set(body) - _SEARCH_KEYS:
        raise _unsupported(f"search body keys {sorted(keys)}")
    if keys := {"q", "scroll", "search_type"} & set(params):
        raise _unsupported(f"search parameters {sorted(keys)}")
    query = _compile(body.get("query", {"match_all": {}}))
    try:
        size = int(params.get("size", body.get("size", DEFAULT_SIZE)))
        offset = int(params.get("from", body.get("from", 0)))
    except (TypeError, ValueError):
        raise _parsing("[from] and [size] must be integers") from None
    if size < 0 or offset < 0:
        raise _bad("illegal_argument_exception", "[from] and [size] must be non-negative")
    if offset + size > MAX_RESULT_WINDOW:
        raise _bad(
            "illegal_argument_exception",
            f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but "
            f"was [{offset + size}]. See the scroll api for a more efficient way to request large data sets.",
        )
    sorts = _Sort.parse(params["sort"].split(",") if "sort" in params else body.get("sort"))
    spec = _SourceSpec.parse(body.get("_source"), params)
    return query, offset, size, sorts, spec


_BULK_OPS = ("index", "create", "update", "delete")


def _total(count: int, body: dict[str, Any], params: dict[str, str]) -> Any:
    track = params.get("track_total_hits", body.get("track_total_hits", DEFAULT_TRACK_TOTAL_HITS))
    track = {"true": True, "false": False}.get(track, track) if isinstance(track, str) else track
    if track is False:
        return None
    limit = math.inf if track is True else int(track)
    return {"value": min(count, limit), "relation": "eq" if count <= limit else "gte"}


def _check_id(doc_id: str) -> None:
    if len(doc_id.encode()) > 512:
        raise _bad(
            "action_request_validation_exception",
            f"Validation Failed: 1: id [{doc_id[:40]}...] is too long, must be no longer than 512 bytes",
        )


def _parse_script(script: Any) -> list[str]:
    """The fields removed by ``ctx._source.remove('<field>')`` statements, the only script supported.

    DIRAC's ``deleteJobParameters`` sends exactly that (one statement per parameter); anything
    else would need a Painless interpreter, so it is refused loudly rather than mis-executed.
    """
    source = script.get("source", script.get("inline")) if isinstance(script, dict) else script
    if isinstance(script, dict) and (script.get("lang", "painless") != "painless" or script.get("params")):
        raise _unsupported(f"script {script!r}")
    statements = list(_REMOVE_SCRIPT.finditer(source)) if isinstance(source, str) else []
    if not statements or "".join(m.group(0) for m in statements) != source:
        raise _unsupported(f"script [{source}] (only ctx._source.remove('<field>') is)")
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in statements]


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad("parse_exception", f"request body is not valid JSON: {exc}") from None


# ------------------------------------------------------------------------------------ the HTTP
_INFO = {
    "name": "fake-opensearch",
    "cluster_name": "diracx-bridge-fake-opensearch",
    "cluster_uuid": "fake-opensearch-in-memory-standin",
    "version": {
        "distribution": "opensearch",
        "number": OPENSEARCH_VERSION,
        "build_type": "in-memory-stand-in (diracx_bridge.testing.fake_opensearch, not OpenSearch)",
        "build_hash": "none",
        "build_date": "1970-01-01T00:00:00Z",
        "build_snapshot": False,
        "lucene_version": "9.7.0",
        "minimum_wire_compatibility_version": "7.10.0",
        "minimum_index_compatibility_version": "7.0.0",
    },
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}


class _Request:
    """One parsed HTTP request: method, unquoted path segments, query parameters, raw body."""

    def __init__(self, method: str, target: str, body: bytes) -> None:
        url = urlsplit(target)
        self.method = method
        self.path = url.path
        self.parts = [unquote(p) for p in url.path.split("/") if p]  # split first: ids may hold %2F
        self.params = dict(parse_qsl(url.query, keep_blank_values=True))
        self.raw = body

    @property
    def json(self) -> Any:
        return _json(self.raw) if self.raw.strip() else None


def dispatch(store: Store, req: _Request) -> tuple[int, Any]:  # noqa: PLR0911, PLR0912 - a routing table
    """Route one request to the store; ``(status, JSON body)``. Unknown routes are a clear 400."""
    m, parts, params = req.method, req.parts, req.params
    head = parts[0] if parts else ""
    if not parts:
        if m in ("GET", "HEAD"):
            return 200, _INFO
    elif head == "_index_template" and len(parts) <= 2:
        name = parts[1] if len(parts) == 2 else None
        if m in ("PUT", "POST") and name:
            return 200, store.put_template(name, req.json or {}, params)
        if m in ("GET", "HEAD"):
            return 200, store.get_templates(name)
        if m == "DELETE" and name:
            return 200, store.delete_template(name)
    else:
        index = None if head.startswith("_") else head
        rest = parts[1:] if index else parts
        action = rest[0] if rest else ""
        if len(rest) == 1 and action == "_search" and m in ("GET", "POST"):
            return 200, store.search(index, req.json, params)
        if len(rest) == 1 and action == "_mget" and m in ("GET", "POST"):
            return 200, store.mget(index, req.json, params)
        if len(rest) == 1 and action == "_bulk" and m in ("POST", "PUT"):
            return 200, store.bulk(index, req.raw)
        if len(rest) == 1 and action == "_refresh" and m in ("GET", "POST"):
            count = len(store.resolve(index))
            return 200, {"_shards": {"total": count, "successful": count, "failed": 0}}
        if index and len(rest) == 1 and action == "_delete_by_query" and m == "POST":
            return 200, store.delete_by_query(index, req.json)
        if index and len(rest) == 1 and action == "_mapping" and m == "GET":
            return 200, store.describe(index, "mappings")
        if index and not rest:
            if m == "HEAD":
                return (200 if store.resolve(index, ignore_unavailable=True) else 404), None
            if m == "GET":
                return 200, store.describe(index, "all")
            if m == "PUT":
                return store.create_index(index, req.json or {})
            if m == "DELETE":
                return 200, store.delete_index(index)
        if index and action == "_doc" and len(rest) == 1 and m == "POST":
            return store.index_doc(index, None, req.json, params.get("op_type", "create"))
        if index and action in ("_doc", "_create", "_update") and len(rest) == 2:
            doc_id = rest[1]
            if action == "_update" and m == "POST":
                return store.update_doc(index, doc_id, req.json)
            if action == "_create" and m in ("PUT", "POST"):
                return store.index_doc(index, doc_id, req.json, "create")
            if action == "_doc" and m in ("PUT", "POST"):
                return store.index_doc(index, doc_id, req.json, params.get("op_type", "index"))
            if action == "_doc" and m in ("GET", "HEAD"):
                return store.get_doc(index, doc_id, _SourceSpec.parse(None, params))
            if action == "_doc" and m == "DELETE":
                return store.delete_doc(index, doc_id)
    raise _unsupported(f"endpoint [{m} {req.path}]")


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: both clients pool connections, as they would with a cluster."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-opensearch"
    # Headers and body leave in one segment with Nagle off: otherwise every call pays a 40 ms
    # delayed-ACK stall, which would show up in the latencies the benchmarks measure.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # the unread body would be taken for the next request
            raise _unsupported("Transfer-Encoding (opensearch-py sends Content-Length)")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw  # http_compress

    def _handle(self) -> None:
        try:
            status, body = dispatch(self.server.store, _Request(self.command, self.path, self._body()))
        except ApiError as err:
            status, body = err.status, err.body()
            level = logging.DEBUG if err.status == 404 else logging.INFO
            logger.log(level, "%s %s -> %d %s: %s", self.command, self.path, err.status, err.kind, err.reason)
        except Exception as exc:
            logger.exception("%s %s failed inside the stand-in", self.command, self.path)
            status, body = 500, ApiError(500, "exception", f"fake_opensearch internal error: {exc!r}").body()
        payload = b"" if self.command == "HEAD" or body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s %s", self.command, self.path, code)

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("%s: " + fmt, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    """Tracks open connections, so that stopping does not wait for idle keep-alive clients."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, store: Store) -> None:
        self.store = store
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class FakeOpenSearch:
    """The stand-in run in-process: ``start()`` binds 127.0.0.1 (port 0 picks a free one)."""

    def __init__(self, port: int = 0) -> None:
        self.store = Store()
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the OpenSearch stand-in is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the OpenSearch stand-in is already started")
        self._server = _Server(self._requested_port, self.store)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-opensearch", daemon=True
        )
        self._thread.start()
        logger.info("listening on %s:%d", HOST, self.port)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def reset(self) -> None:
        """Forget every index, template and document (cheaper than a new server between tests)."""
        self.store.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diracx_bridge.testing.fake_opensearch",
        description="In-memory OpenSearch stand-in for the grid-in-a-box (NOT OpenSearch). Binds 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=9200, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request (DEBUG lines)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.quiet else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server = FakeOpenSearch(args.port).start()
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
