"""DiracX tokens in proxy files: the DIRACX block, the proxy file as a store, and token claims.

* :mod:`._format`: DIRAC 9.1's DIRACX block, byte for byte (``DiracxToken``, ``encode_block``,
  ``decode_block``); pure text in, text or token out.
* :mod:`.store`: the proxy file (``read_token``, ``write_token``, ``update_token``,
  ``remove_token``): checks, lock (:mod:`._locking`, a ``flock`` on the proxy itself), crash-safe
  rewrite (:mod:`.atomic`), which file a path names (:mod:`._files`: the symbolic-link policy).
* :mod:`.claims`: the one reader of a JWT's claims, type-checked.

Every failure is a :class:`diracx_bridge.errors.TokenFileError` (or a subclass) naming the file
and the fix. Layer rule: this package imports only the foundations (``errors``, ``settings``,
``log``, ``tls``, ``capabilities``), and never DIRAC at import time.
"""

from __future__ import annotations

from diracx_bridge.tokens._files import resolve_proxy_path
from diracx_bridge.tokens._format import (
    EXPIRES_GRACE_SECONDS,
    PEM_BEGIN,
    PEM_END,
    DiracxToken,
    decode_block,
    encode_block,
)
from diracx_bridge.tokens._locking import locked
from diracx_bridge.tokens.claims import Claims
from diracx_bridge.tokens.store import read_token, remove_token, update_token, write_token

__all__ = [
    "EXPIRES_GRACE_SECONDS",
    "PEM_BEGIN",
    "PEM_END",
    "Claims",
    "DiracxToken",
    "decode_block",
    "encode_block",
    "locked",
    "read_token",
    "remove_token",
    "resolve_proxy_path",
    "update_token",
    "write_token",
]
