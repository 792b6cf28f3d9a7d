"""Values as DISET delivers them: the wire round trip every adapted argument and answer goes through.

DIRAC 9 encodes RPC arguments and answers as JSON (``MixedEncode``): tuples arrive as lists,
integer dictionary keys as strings, datetimes intact. Running the adapter's arguments and answers
through the same round trip makes them indistinguishable from the legacy ones; client classes
then apply their usual fix-ups (``strToIntDict``) to both alike.
"""

from __future__ import annotations

import math
from typing import Any


def over_the_wire(value: Any) -> Any:
    """``value`` as a DISET call delivers it: through DIRAC's own encoder and back.

    DIRAC 9 encodes RPC arguments and answers as JSON (``MixedEncode``): tuples arrive as lists,
    integer dictionary keys as strings, datetimes intact. Running the adapter's arguments and
    answers through the same round trip makes them indistinguishable from the legacy ones;
    client classes then apply their usual fix-ups (``strToIntDict``) to both alike.
    """
    fast = _flat_over_the_wire(value)
    if fast is not _NOT_FLAT:
        return fast
    from DIRAC.Core.Utilities import MixedEncode

    return MixedEncode.decode(MixedEncode.encode(value))[0]


_NOT_FLAT = object()
_SCALARS = (str, int, float, type(None))


def _scalar(value: object) -> bool:
    """A value JSON gives back unchanged (bool is an int, and JSON keeps it; floats if finite)."""
    return isinstance(value, _SCALARS) and not (isinstance(value, float) and not math.isfinite(value))


def _flat_item(item: Any) -> Any:
    if isinstance(item, dict):
        if "__dCls" in item or not all(type(k) is str and _scalar(v) for k, v in item.items()):
            return _NOT_FLAT
        return dict(item)
    return item if _scalar(item) else _NOT_FLAT


def _flat_over_the_wire(value: Any) -> Any:
    """The JSON round trip of the common flat answers, without the JSON (measured: -0.5 ms per 200 jobs).

    Only shapes whose round trip is known exactly: scalars, lists of scalars, and dictionaries with
    str or (non-bool) int keys whose values are scalars or such dictionaries with str keys. Int keys
    become str, as JSON makes them; anything else (datetimes, tuples, nested lists, keys DIRAC's
    decoder treats specially) takes the real round trip.
    """
    if _scalar(value):
        return value
    if isinstance(value, list):
        return list(value) if all(_scalar(v) for v in value) else _NOT_FLAT
    if not isinstance(value, dict):
        return _NOT_FLAT
    out: dict[str, Any] = {}
    for key, item in value.items():
        converted = _flat_item(item)
        if converted is _NOT_FLAT or isinstance(key, bool) or not isinstance(key, (str, int)) or key == "__dCls":
            return _NOT_FLAT
        out[str(key)] = converted
    # 1 and "1" as keys: the round trip keeps one of them.
    return out if len(out) == len(value) else _NOT_FLAT
