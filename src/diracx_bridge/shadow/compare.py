"""Is the adapter's answer the legacy one? The rules shared by shadow mode and the parity tests.

Two ``S_OK``/``S_ERROR`` answers are the same when they are equal *and* of the same types all the
way down (``1 == 1.0`` and ``True == 1`` in Python, not on the wire), ignoring what is local to a
process (``CallStack``, ``ExecInfo``). The documented differences (README, "Known differences")
are the only exceptions, stated here once (:data:`ORDER_FREE`, :data:`NESTED_ORDER_FREE`).

:func:`compare` says where the first difference is and of what kind, in words an administrator
can group (:attr:`Comparison.cause`), and shows values only where they identify the case without
carrying a job's payload (:data:`SHOWN_KEYS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diracx_bridge.errors import redact

#: Keys of an answer that are local to the process that made it.
PROCESS_LOCAL = frozenset({"CallStack", "ExecInfo"})
#: Methods whose list ``Value`` has no defined order in legacy (MySQL without ORDER BY).
ORDER_FREE = frozenset({"getJobs", "selectPilots"})
#: Methods whose ``Value`` maps keys to dicts holding such a list, under this key (PilotManager's ``Jobs``).
NESTED_ORDER_FREE = {"getPilotInfo": "Jobs", "getPilots": "Jobs"}
#: Keys whose values may be shown in a record (job states, not payload): they name the case.
SHOWN_KEYS = frozenset({"OK", "Errno", "Status", "MinorStatus", "ApplicationStatus", "Site", "JobType", "VO"})
_SHOWN_CHARS = 60


@dataclass(frozen=True)
class Comparison:
    equal: bool
    #: "equal", "legacy-error" (legacy failed, DiracX did not), "diracx-error", "error-text",
    #: "value", "type", "missing" (only legacy has it), "extra" (only DiracX has it), "length".
    cause: str = "equal"
    #: Where, e.g. ``Value['1234']['Status']``; empty when equal.
    path: str = ""
    #: The two values at ``path``, when they may be shown (else their types).
    legacy: str = ""
    adapted: str = ""


def comparable(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in PROCESS_LOCAL}


def compare(legacy: Mapping[str, Any], adapted: Mapping[str, Any], method: str = "") -> Comparison:
    """The first difference between two answers of ``method``, or equality."""
    left, right = comparable(legacy), comparable(adapted)
    if bool(left.get("OK")) != bool(right.get("OK")):
        cause = "diracx-error" if left.get("OK") else "legacy-error"
        return Comparison(
            False, cause, "OK", _shown("OK", left.get("Message", "OK")), _shown("OK", right.get("Message", "OK"))
        )
    if (
        method in ORDER_FREE
        and left.get("OK")
        and isinstance(left.get("Value"), list)
        and isinstance(right.get("Value"), list)
    ):
        left = {**left, "Value": sorted(left["Value"], key=repr)}
        right = {**right, "Value": sorted(right["Value"], key=repr)}
    nested = NESTED_ORDER_FREE.get(method)
    if nested and left.get("OK") and isinstance(left.get("Value"), dict) and isinstance(right.get("Value"), dict):
        left = {**left, "Value": _nested_sorted(left["Value"], nested)}
        right = {**right, "Value": _nested_sorted(right["Value"], nested)}
    difference = _first_difference(left, right, "")
    if difference is None:
        return Comparison(True)
    if not left.get("OK") and difference.path.startswith(("Message", "Errno")):
        return Comparison(False, "error-text", difference.path, difference.legacy, difference.adapted)
    return difference


def _nested_sorted(value: dict[Any, Any], key: str) -> dict[Any, Any]:
    return {
        k: {**v, key: sorted(v[key], key=repr)} if isinstance(v, dict) and isinstance(v.get(key), list) else v
        for k, v in value.items()
    }


def _shown(key: Any, value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"<{type(value).__name__} of {len(value)}>"
    if key in SHOWN_KEYS or key == "OK":
        return redact(repr(value))[:_SHOWN_CHARS]
    return f"<{type(value).__name__}>"


def _first_difference(left: Any, right: Any, path: str, key: Any = None) -> Comparison | None:
    if type(left) is not type(right):
        return Comparison(False, "type", path, f"<{type(left).__name__}>", f"<{type(right).__name__}>")
    if isinstance(left, dict):
        return _dict_difference(left, right, path)
    if isinstance(left, (list, tuple)):
        return _sequence_difference(left, right, path, key)
    if left != right:
        return Comparison(False, "value", path, _shown(key, left), _shown(key, right))
    return None


def _dict_difference(left: dict[Any, Any], right: dict[Any, Any], path: str) -> Comparison | None:
    for k, value in left.items():
        if k not in right:
            return Comparison(False, "missing", f"{path}[{k!r}]", _shown(k, value), "<absent>")
    for k, value in right.items():
        if k not in left:
            return Comparison(False, "extra", f"{path}[{k!r}]", "<absent>", _shown(k, value))
    for k, value in left.items():
        found = _first_difference(value, right[k], f"{path}[{k!r}]" if path else str(k), k)
        if found is not None:
            return found
    return None


def _sequence_difference(left: Any, right: Any, path: str, key: Any) -> Comparison | None:
    if len(left) != len(right):
        return Comparison(False, "length", path, f"<{len(left)} items>", f"<{len(right)} items>")
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        found = _first_difference(a, b, f"{path}[{i}]", key)
        if found is not None:
            return found
    return None
