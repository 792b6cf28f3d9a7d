"""The DIRACX block: DIRAC 9.1's format, encoded and decoded byte for byte, and the proxy around it.

DIRAC 9.1 (``DIRAC.Core.Security.DiracX.addTokenToPEM``) appends one DiracX token to a proxy file,
after the certificate(s) and the private key::

    -----BEGIN DIRACX-----
    <standard base64 of {"access_token": ..., "refresh_token": ..., "expires_on": <int epoch>}, 64 columns>
    -----END DIRACX-----

The JSON is what ``diracx.core.utils.serialize_credentials`` produces, so the block can be copied
as-is into a diracx credentials file. DIRAC's own ``diracxTokenFromPEM`` reads what we write, and
we read what DIRAC writes. Everything here is pure (text in, text or token out); the file, its
lock and its rewrite are :mod:`.store`'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from diracx_bridge.errors import MalformedTokenBlock, NotAProxyFile, NoTokenBlock
from diracx_bridge.tokens.claims import MAX_EPOCH

#: The markers of DIRAC 9.1.22 (``DIRAC/Core/Security/DiracX.py``, ``PEM_BEGIN``/``PEM_END``).
PEM_BEGIN = "-----BEGIN DIRACX-----"
PEM_END = "-----END DIRACX-----"
#: DIRAC wraps the base64 text with ``textwrap.fill(data, width=64)``.
_LINE_WIDTH = 64
#: ``diracx.core.utils.EXPIRES_GRACE_SECONDS``: a stored ``expires_on`` is ``now + expires_in - 15``.
#: Copied rather than imported so that reading a proxy does not import diracx (a test checks they agree).
EXPIRES_GRACE_SECONDS = 15
#: The keys of the block's JSON, in the order ``serialize_credentials`` writes them.
_TOKEN_KEYS = ("access_token", "refresh_token", "expires_on")
#: PEM files are ASCII; ``surrogateescape`` makes decode/encode lossless for any stray byte, so the
#: non-DIRACX part of the file is written back byte for byte whatever it contains.
ENCODING = "ascii"
ENCODING_ERRORS = "surrogateescape"

#: A proxy holds a handful of PEM blocks (proxy certificate, key, the chain, the token): more markers
#: than this is not a proxy, and is refused before any parsing (which runs under the proxy's lock).
MAX_PEM_MARKERS = 64
#: A token response's ``expires_in`` beyond a year is not DiracX's (its access tokens live 20 minutes).
_MAX_EXPIRES_IN = 366 * 86400


@dataclass(frozen=True, repr=False)
class DiracxToken:
    """The content of a DIRACX block: what diracx keeps in its credentials file.

    ``expires_on`` has diracx's meaning (epoch seconds, ``now + expires_in - 15`` when minted),
    so ``expired(margin=300)`` is diracx's own "refresh now" test. ``repr``/``str`` show the
    expiry and a fingerprint, never the tokens: these objects end up in logs and tracebacks.
    """

    access_token: str
    refresh_token: str
    expires_on: int

    def __post_init__(self) -> None:
        """Refuse values that would make a block DIRAC or diracx cannot use (the message names no value)."""
        for name in ("access_token", "refresh_token"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"DiracxToken.{name} must be a str, not {type(value).__name__}")
            if not value:
                raise ValueError(f"DiracxToken.{name} must not be empty")
        if isinstance(self.expires_on, bool) or not isinstance(self.expires_on, int):
            raise TypeError(
                f"DiracxToken.expires_on must be an int (epoch seconds), not {type(self.expires_on).__name__}"
            )
        if not 0 <= self.expires_on <= MAX_EPOCH:
            raise ValueError("DiracxToken.expires_on is out of range (epoch seconds from 1970 to 9999)")

    def expired(self, margin: float = 0, *, now: float | None = None) -> bool:
        """Whether the access token is expired, or will be within ``margin`` seconds."""
        current = time.time() if now is None else now
        return current + margin >= self.expires_on

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible tag that tells two tokens apart in logs without revealing either."""
        digest = hashlib.sha256(f"{self.access_token}\0{self.refresh_token}".encode()).hexdigest()
        return f"sha256:{digest[:12]}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the block, i.e. the content of a diracx credentials file."""
        return {"access_token": self.access_token, "refresh_token": self.refresh_token, "expires_on": self.expires_on}

    @classmethod
    def from_token_response(cls, resp: Mapping[str, Any], now: float | None = None) -> DiracxToken:
        """Build the token from a DiracX ``TokenResponse`` (as ProxyManager's exchange returns it).

        ``expires_on`` is computed like ``diracx.core.utils.serialize_credentials`` does, so a
        block we write is indistinguishable from DIRAC's. A pydantic ``TokenResponse`` is
        accepted too. A response without a refresh token is refused: the block would then be
        useless 20 minutes later, and DIRAC's ``DiracXClient`` crashes on it.
        """
        if not isinstance(resp, Mapping) and hasattr(resp, "model_dump"):
            resp = resp.model_dump()
        if not isinstance(resp, Mapping):
            raise TypeError(f"a token response must be a mapping, not {type(resp).__name__}")
        missing = [key for key in ("access_token", "refresh_token", "expires_in") if resp.get(key) is None]
        if missing:
            raise ValueError(f"the token response has no {', '.join(missing)}; cannot build a DiracX token block")
        expires_in = resp["expires_in"]
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise TypeError(f"the token response's expires_in must be a number, not {type(expires_in).__name__}")
        if not (0 <= expires_in <= _MAX_EXPIRES_IN and math.isfinite(expires_in)):  # NaN fails both
            raise ValueError("the token response's expires_in is out of range (0 to one year)")
        current = time.time() if now is None else now
        return cls(
            access_token=resp["access_token"],
            refresh_token=resp["refresh_token"],
            expires_on=int(current + expires_in - EXPIRES_GRACE_SECONDS),
        )

    def __repr__(self) -> str:
        try:
            when = datetime.fromtimestamp(self.expires_on, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):
            when = "out of range"
        return f"DiracxToken(expires_on={self.expires_on} [{when}], fingerprint={self.fingerprint})"

    __str__ = __repr__


def encode_block(token: DiracxToken) -> str:
    """The DIRACX block for ``token``, newline-terminated, byte-identical to what DIRAC 9.1.22 writes.

    ``json.dumps`` with default separators and diracx's key order, standard base64, 64 columns
    (``textwrap.fill`` on text without spaces is exactly this slicing).
    """
    payload = json.dumps(token.as_dict()).encode("utf-8")
    data = base64.b64encode(payload).decode("ascii")
    lines = [data[i : i + _LINE_WIDTH] for i in range(0, len(data), _LINE_WIDTH)]
    return "\n".join([PEM_BEGIN, *lines, PEM_END]) + "\n"


def decode_block(text: str, path_for_messages: str | os.PathLike[str] | None = None) -> DiracxToken:
    """The token of the single DIRACX block in ``text`` (a whole proxy file, or just the block).

    Raises ``NoTokenBlock`` when there is none and ``MalformedTokenBlock`` when there are two or
    the block is unusable; ``path_for_messages`` only names the file in those messages.
    """
    layout = split(text, path_for_messages)
    if not layout.bodies:
        raise NoTokenBlock(path_for_messages)
    if len(layout.bodies) > 1:
        raise MalformedTokenBlock(
            f"is repeated: the file holds {len(layout.bodies)} DiracX token blocks, but a proxy carries exactly one "
            "(DIRAC 9.1 refuses such a file too; the bridge repairs it when it next writes the token)",
            path_for_messages,
        )
    return decode_body(layout.bodies[0], path_for_messages)


@dataclass(frozen=True)
class Layout:
    """A proxy file split into what is ours (the DIRACX block bodies) and what is not (``rest``)."""

    rest: str
    bodies: tuple[str, ...]


def split(text: str, path: str | os.PathLike[str] | None) -> Layout:
    """Cut every DIRACX block out of ``text``; everything else is kept exactly as it was.

    A block spans from its BEGIN marker to the end of its END line (newline included), which is
    what removing it must take away to give back the file as it was before the block was
    appended. DIRAC's own removal leaves that newline behind, so a file DIRAC rewrote twice keeps
    an empty line before the block; we keep it too (it is not ours to remove). Markers that do
    not pair up (a block cut off by an interrupted write) raise: we cannot tell where the key
    material ends.
    """
    _check_marker_count(text, path)
    markers = sorted(
        [(m.start(), PEM_BEGIN) for m in re.finditer(re.escape(PEM_BEGIN), text)]
        + [(m.start(), PEM_END) for m in re.finditer(re.escape(PEM_END), text)]
    )
    pieces: list[str] = []
    bodies: list[str] = []
    pos = 0
    for index in range(0, len(markers), 2):
        begin_at, first = markers[index]
        if first != PEM_BEGIN:
            raise MalformedTokenBlock(f"has an '{PEM_END}' line without its '{PEM_BEGIN}' line", path)
        if index + 1 >= len(markers) or markers[index + 1][1] != PEM_END:
            raise MalformedTokenBlock(
                f"has a '{PEM_BEGIN}' line without its '{PEM_END}' line (the file looks truncated, e.g. by an "
                "interrupted write)",
                path,
            )
        end_at = markers[index + 1][0]
        pieces.append(text[pos:begin_at])
        bodies.append(text[begin_at + len(PEM_BEGIN) : end_at])
        pos = end_at + len(PEM_END)
        if text.startswith("\r\n", pos):
            pos += 2
        elif text.startswith("\n", pos):
            pos += 1
    pieces.append(text[pos:])
    return Layout(rest="".join(pieces), bodies=tuple(bodies))


def decode_body(body: str, path: str | os.PathLike[str] | None) -> DiracxToken:
    """Decode one block body; ``MalformedTokenBlock`` says what is wrong, never what the text was."""
    token, defect = _parse_body(body)
    if token is None:
        raise MalformedTokenBlock(defect, path)
    return token


def _parse_body(body: str) -> tuple[DiracxToken | None, str]:  # noqa: PLR0911 - one return per defect
    """(token, "") or (None, what is wrong). Never raises: the frame holding the decoded JSON is gone
    before the caller raises, so no traceback (even one printing frame locals) carries token text."""
    compact = "".join(body.split())
    if not compact:
        return None, "is empty"
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None, "is not valid base64"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None, "does not hold JSON"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    missing = [key for key in _TOKEN_KEYS if data.get(key) is None]
    if missing:
        return None, f"has no {', '.join(missing)}"
    try:
        return DiracxToken(data["access_token"], data["refresh_token"], data["expires_on"]), ""
    except (TypeError, ValueError) as exc:  # their messages name the field and the type, never the value
        return None, f"is invalid: {exc}"


def _check_marker_count(text: str, path: str | os.PathLike[str] | None) -> None:
    """Refuse, in one linear pass, a file with more PEM markers than any proxy has."""
    count = text.count("-----BEGIN ") + text.count("-----END ")
    if count > MAX_PEM_MARKERS:
        raise NotAProxyFile(
            f"{_describe(path)} has {count} PEM BEGIN/END lines; a proxy has a handful, and a file with more than "
            f"{MAX_PEM_MARKERS} PEM markers is not one, so it is refused unread",
            path,
        )


def check_proxy_rest(rest: str, path: str | os.PathLike[str]) -> None:
    """Refuse to write unless what we keep looks like a proxy: certificate(s) and a private key.

    This is a PEM-level check (markers pair up, bodies are base64), not an X.509 parse: a
    certificate the strict ``cryptography`` parser dislikes is still the user's proxy, and it is
    not ours to judge, only not to destroy. One pass over the lines, after a bound on the number
    of markers: linear in the file's size, since it runs while the proxy's lock is held.
    """
    where = _describe(path)
    if not rest.strip():
        raise NotAProxyFile(
            f"{where} holds no certificate or private key besides the DiracX token; refusing to write a token "
            "without a proxy",
            path,
        )
    _check_marker_count(rest, path)
    labels: list[str] = []
    label: str | None = None
    body: list[str] = []
    unpaired = f"{where} has a PEM block without its END line (truncated?); refusing to write"
    for line in rest.splitlines():
        stripped = line.strip()
        if stripped.startswith("-----BEGIN ") and stripped.endswith("-----"):
            if label is not None:
                raise NotAProxyFile(unpaired, path)
            label, body = stripped[len("-----BEGIN ") : -len("-----")], []
        elif stripped.startswith("-----END ") and stripped.endswith("-----"):
            if label is None or stripped[len("-----END ") : -len("-----")] != label:
                raise NotAProxyFile(unpaired, path)
            # Skip RFC 1421 header lines ("Proc-Type: ...") that may precede the base64 text.
            try:
                base64.b64decode("".join(part for part in body if ":" not in part), validate=True)
            except (binascii.Error, ValueError):
                raise NotAProxyFile(
                    f"the {label} block of {where} is damaged (not base64); refusing to write", path
                ) from None
            labels.append(label)
            label = None
        elif label is not None:
            body.append(stripped)
    if label is not None or rest.count("-----BEGIN ") != len(labels) or rest.count("-----END ") != len(labels):
        raise NotAProxyFile(unpaired, path)  # a marker cut off, or not on a line of its own
    if "CERTIFICATE" not in labels:
        raise NotAProxyFile(f"{where} holds no certificate, so it is not a proxy; refusing to write", path)
    if not any(label.endswith("PRIVATE KEY") for label in labels):
        raise NotAProxyFile(f"{where} holds no private key, so it is not a proxy; refusing to write", path)


def join(rest: str, block: str) -> str:
    """Append the block to the rest, on a line of its own (as DIRAC does, at the end of the file)."""
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block


def _describe(path: str | os.PathLike[str] | None) -> str:
    return "the proxy" if path is None else f"the proxy {os.fspath(path)}"


__all__ = [
    "ENCODING",
    "ENCODING_ERRORS",
    "EXPIRES_GRACE_SECONDS",
    "MAX_PEM_MARKERS",
    "PEM_BEGIN",
    "PEM_END",
    "DiracxToken",
    "Layout",
    "check_proxy_rest",
    "decode_block",
    "decode_body",
    "encode_block",
    "join",
    "split",
]
