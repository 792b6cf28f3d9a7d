"""The DIRACX token block of proxy files: the only module that reads or writes it.

DIRAC 9.1 (``DIRAC.Core.Security.DiracX.addTokenToPEM``) appends one DiracX token to a proxy file,
after the certificate(s) and the private key::

    -----BEGIN DIRACX-----
    <standard base64 of {"access_token": ..., "refresh_token": ..., "expires_on": <int epoch>}, 64 columns>
    -----END DIRACX-----

The JSON is what ``diracx.core.utils.serialize_credentials`` produces, so that the block can be
copied as-is into a diracx credentials file. This module keeps that format exactly (DIRAC's own
``diracxTokenFromPEM`` reads what we write, and we read what DIRAC writes) and fixes what DIRAC
9.1 does not guarantee:

* **Atomic rewrites.** DIRAC rewrites the proxy in place with ``Path.write_text``, so a concurrent
  reader (an agent, a payload) can see a truncated proxy. We write a temporary file in the same
  directory, ``fsync`` it, ``os.replace`` it over the proxy and ``fsync`` the directory: a reader
  sees the old file or the new one, never half of one. Readers therefore need no lock.
* **Serialised read-modify-write.** Writers take an exclusive ``flock`` on a sidecar lock file,
  ``<proxy>.lock``. The proxy itself cannot carry the lock: every ``os.replace`` gives it a new
  inode, so a lock on the old inode would protect nothing. ``update_token`` re-reads the file under
  the lock, so the loser of a refresh race sees the winner's token and need not refresh again.
* **The certificate and key are never damaged.** Only the DIRACX block is replaced; everything
  else is kept byte for byte, and we refuse to write at all when that rest does not look like a
  proxy (no certificate, no private key, an unterminated PEM block), or when the token block is cut
  off (a ``BEGIN`` line without ``END``), because we could not tell where the key material ends.
* **Proxy hygiene.** Like the grid tools, we refuse a proxy that group or others may access, or
  that belongs to another user, and we never write through a symbolic link.
* **Tokens are secrets.** No exception message, log record or ``repr`` contains token text; a
  token shows its expiry and a short, non-reversible fingerprint at most.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EXPIRES_GRACE_SECONDS",
    "PEM_BEGIN",
    "PEM_END",
    "BundleError",
    "BundleLockError",
    "BundleLockTimeout",
    "DiracxToken",
    "MalformedTokenBlock",
    "NoTokenBlock",
    "NotAProxyFile",
    "ProxyFileNotFound",
    "UnsafeBundleFile",
    "decode_block",
    "encode_block",
    "lock_path_for",
    "locked",
    "read_token",
    "remove_token",
    "update_token",
    "write_token",
]

log = logging.getLogger(__name__)

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

_LOCK_SUFFIX = ".lock"
#: Name of the temporary file of an atomic rewrite, next to the proxy. A fixed name (rather than a
#: random one) means the leftover of a writer killed mid-write is found and removed by the next
#: writer, without scanning the directory; it is only ever created under the exclusive lock.
_TMP_TEMPLATE = ".{name}.diracx-bridge.tmp"
#: A proxy is a few kB; anything this large is not one, and is not read into memory.
_MAX_PROXY_BYTES = 1 << 20
#: Group and other permission bits: none of them may be set on a proxy (the grid tools require 0600/0400).
_UNSAFE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO
#: How many times a rewrite is retried when a writer that does not use our lock (DIRAC's own
#: ``addTokenToPEM``, ``dirac-proxy-init``) changed the file while we were preparing ours.
_MAX_REWRITE_ATTEMPTS = 5
#: PEM files are ASCII; ``surrogateescape`` makes decode/encode lossless for any stray byte, so the
#: non-DIRACX part of the file is written back byte for byte whatever it contains.
_ENCODING = "ascii"
_ENCODING_ERRORS = "surrogateescape"

_NEW_PROXY_HINT = "run dirac-proxy-init to write a new proxy"
_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z0-9][A-Z0-9 ]*)-----(.*?)-----END \1-----", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class BundleError(Exception):
    """A proxy file's DiracX token cannot be read or written.

    The message says what is wrong, names the file and says what to do; it never contains token
    text, so it can be logged and shown to users as it is. ``path`` is the file concerned.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        # Subclasses that are also OSErrors would otherwise render as "[Errno 2] ...: 'path'".
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``path`` across pickling (multiprocessing hands exceptions back to the parent).
        return (type(self), (self.message, self.path))


class ProxyFileNotFound(BundleError, FileNotFoundError):
    """The proxy file does not exist (also a ``FileNotFoundError`` for callers that expect one)."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message, path)
        self.errno = errno.ENOENT
        self.strerror = message
        self.filename = self.path


class NotAProxyFile(BundleError):
    """The file is empty, not a regular file, or its non-DIRACX part is not a certificate + key PEM."""


class NoTokenBlock(BundleError):
    """The proxy carries no DIRACX block."""


class MalformedTokenBlock(BundleError):
    """The DIRACX block is there but unusable: two blocks, cut off, bad base64, bad JSON, bad keys."""


class UnsafeBundleFile(BundleError):
    """The proxy (or its lock file) may be read or changed by someone else, or is a symlink we would write through."""


class BundleLockError(BundleError):
    """The sidecar lock file cannot be created or used."""


class BundleLockTimeout(BundleLockError, TimeoutError):
    """Another process held the proxy's lock for longer than the caller was prepared to wait."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message, path)
        self.errno = errno.ETIMEDOUT
        self.strerror = message
        self.filename = self.path


# --------------------------------------------------------------------------------------------
# The token
# --------------------------------------------------------------------------------------------


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

    def expired(self, margin: float = 0, *, now: float | None = None) -> bool:
        """Whether the access token is expired, or will be within ``margin`` seconds.

        diracx refreshes when less than 300 s are left (``is_token_valid`` in
        ``diracx/client/patches/client/common.py``): pass ``margin=300`` to decide the same way.
        """
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
        accepted too. A response without a refresh token is refused: the bundle would then be
        useless 20 minutes later, and DIRAC's ``DiracXClient`` crashes on it.
        """
        if not isinstance(resp, Mapping) and hasattr(resp, "model_dump"):
            resp = resp.model_dump()
        if not isinstance(resp, Mapping):
            raise TypeError(f"a token response must be a mapping, not {type(resp).__name__}")
        missing = [key for key in ("access_token", "refresh_token", "expires_in") if resp.get(key) is None]
        if missing:
            raise ValueError(f"the token response has no {', '.join(missing)}; cannot build a DiracX token bundle")
        expires_in = resp["expires_in"]
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise TypeError(f"the token response's expires_in must be a number, not {type(expires_in).__name__}")
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


# --------------------------------------------------------------------------------------------
# Pure helpers: the block's text
# --------------------------------------------------------------------------------------------


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
    where = _describe(path_for_messages)
    layout = _split(text, path_for_messages)
    if not layout.bodies:
        raise NoTokenBlock(_no_block_message(where), path_for_messages)
    if len(layout.bodies) > 1:
        raise MalformedTokenBlock(
            f"{where} holds {len(layout.bodies)} DiracX token blocks, but a proxy carries exactly one "
            f"(DIRAC 9.1 refuses such a file too); {_NEW_PROXY_HINT}, or let the bridge rewrite the token",
            path_for_messages,
        )
    return _decode_body(layout.bodies[0], path_for_messages)


@dataclass(frozen=True)
class _Layout:
    """A proxy file split into what is ours (the DIRACX block bodies) and what is not (``rest``)."""

    rest: str
    bodies: tuple[str, ...]


def _split(text: str, path: str | os.PathLike[str] | None) -> _Layout:
    """Cut every DIRACX block out of ``text``; everything else is kept exactly as it was.

    A block spans from its BEGIN marker to the end of its END line (newline included), which is
    what ``remove`` must take away to give back the file as it was before the block was appended.
    DIRAC's own removal leaves that newline behind, so a file DIRAC rewrote twice keeps an empty
    line before the block; we keep it too (it is not ours to remove). Markers that do not pair up
    (a block cut off by an interrupted write) raise: we cannot tell where the key material ends.
    """
    markers = sorted(
        [(m.start(), PEM_BEGIN) for m in re.finditer(re.escape(PEM_BEGIN), text)]
        + [(m.start(), PEM_END) for m in re.finditer(re.escape(PEM_END), text)]
    )
    where = _describe(path)
    pieces: list[str] = []
    bodies: list[str] = []
    pos = 0
    for index in range(0, len(markers), 2):
        begin_at, first = markers[index]
        if first != PEM_BEGIN:
            raise MalformedTokenBlock(
                f"{where} has an '{PEM_END}' line without its '{PEM_BEGIN}' line; the proxy is damaged, "
                f"{_NEW_PROXY_HINT}",
                path,
            )
        if index + 1 >= len(markers) or markers[index + 1][1] != PEM_END:
            raise MalformedTokenBlock(
                f"{where} has a '{PEM_BEGIN}' line without its '{PEM_END}' line (the file looks truncated, "
                f"e.g. by an interrupted write); {_NEW_PROXY_HINT}",
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
    return _Layout(rest="".join(pieces), bodies=tuple(bodies))


def _decode_body(body: str, path: str | os.PathLike[str] | None) -> DiracxToken:
    """Decode one block body. Errors say what is wrong, never what the text was (``from None``)."""
    where = _describe(path)
    compact = "".join(body.split())
    if not compact:
        raise MalformedTokenBlock(f"the DiracX token block of {where} is empty; {_NEW_PROXY_HINT}", path)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedTokenBlock(
            f"the DiracX token block of {where} is not valid base64; {_NEW_PROXY_HINT}", path
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedTokenBlock(
            f"the DiracX token block of {where} does not hold JSON; {_NEW_PROXY_HINT}", path
        ) from None
    if not isinstance(data, dict):
        raise MalformedTokenBlock(
            f"the DiracX token block of {where} holds a JSON {type(data).__name__}, not an object; {_NEW_PROXY_HINT}",
            path,
        )
    missing = [key for key in _TOKEN_KEYS if data.get(key) is None]
    if missing:
        raise MalformedTokenBlock(
            f"the DiracX token block of {where} has no {', '.join(missing)}; {_NEW_PROXY_HINT}", path
        )
    try:
        return DiracxToken(data["access_token"], data["refresh_token"], data["expires_on"])
    except (TypeError, ValueError) as exc:
        # The DiracxToken messages name the field and the type, never the value.
        raise MalformedTokenBlock(
            f"the DiracX token block of {where} is invalid: {exc}; {_NEW_PROXY_HINT}", path
        ) from None


def _check_proxy_rest(rest: str, path: str | os.PathLike[str]) -> None:
    """Refuse to write unless what we keep looks like a proxy: certificate(s) and a private key.

    This is a PEM-level check (markers pair up, bodies are base64), not an X.509 parse: a
    certificate the strict ``cryptography`` parser dislikes is still the user's proxy, and it is
    not ours to judge, only not to destroy.
    """
    where = _describe(path)
    if not rest.strip():
        raise NotAProxyFile(
            f"{where} holds no certificate or private key besides the DiracX token; refusing to write a token "
            f"without a proxy. {_NEW_PROXY_HINT[0].upper()}{_NEW_PROXY_HINT[1:]}",
            path,
        )
    labels: list[str] = []
    for match in _PEM_BLOCK_RE.finditer(rest):
        label = match.group(1)
        # Skip RFC 1421 header lines ("Proc-Type: ...") that may precede the base64 text.
        body = "".join(line.strip() for line in match.group(2).splitlines() if ":" not in line)
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise NotAProxyFile(
                f"the {label} block of {where} is damaged (not base64); refusing to write; {_NEW_PROXY_HINT}", path
            ) from None
        labels.append(label)
    if rest.count("-----BEGIN ") != len(labels) or rest.count("-----END ") != len(labels):
        raise NotAProxyFile(
            f"{where} has a PEM block without its END line (truncated?); refusing to write; {_NEW_PROXY_HINT}", path
        )
    if "CERTIFICATE" not in labels:
        raise NotAProxyFile(
            f"{where} holds no certificate, so it is not a proxy; refusing to write; {_NEW_PROXY_HINT}", path
        )
    if not any(label.endswith("PRIVATE KEY") for label in labels):
        raise NotAProxyFile(
            f"{where} holds no private key, so it is not a proxy; refusing to write; {_NEW_PROXY_HINT}", path
        )


def _join(rest: str, block: str) -> str:
    """Append the block to the rest, on a line of its own (as DIRAC does, at the end of the file)."""
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block


def _describe(path: str | os.PathLike[str] | None) -> str:
    return "the proxy" if path is None else f"the proxy {os.fspath(path)}"


def _no_block_message(where: str) -> str:
    return (
        f"{where} carries no DiracX token (no '{PEM_BEGIN}' block). Run dirac-proxy-init (DIRAC >= 9.1) "
        "to get a proxy with one; if it still has none, the proxy's VO may be listed in /DiracX/DisabledVOs, "
        "or ProxyManager's token exchange failed (see dirac-proxy-init's output)"
    )


# --------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    """One read of the proxy: its text and the ``fstat`` of the very descriptor it was read from."""

    text: str
    st: os.stat_result


def _read_snapshot(path: str, *, for_write: bool) -> _Snapshot:
    """Open once, check the open file (``fstat``, no stat/open race), then read it.

    A writer opens with ``O_NOFOLLOW``: it must never write through a symlink (``os.replace``
    would replace the link by a regular file, and a link planted in /tmp could point anywhere).
    Readers follow links, as every grid tool does with ``X509_USER_PROXY``; the target's
    owner and mode are checked all the same. ``O_NONBLOCK`` keeps a FIFO from hanging the open.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if for_write:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ProxyFileNotFound(
            f"the proxy file {path} does not exist; {_NEW_PROXY_HINT} (or point X509_USER_PROXY at yours)", path
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and for_write:
            raise _symlink_error(path) from None
        raise BundleError(
            f"cannot open the proxy file {path}: {exc.strerror}; it must be a file you own with mode 0600", path
        ) from None
    try:
        st = os.fstat(fd)
        _check_proxy_stat(st, path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_PROXY_BYTES:
                raise NotAProxyFile(
                    f"{path} is larger than {_MAX_PROXY_BYTES} bytes, so it is not a proxy file; {_NEW_PROXY_HINT}",
                    path,
                )
    except OSError as exc:
        raise BundleError(f"cannot read the proxy file {path}: {exc.strerror}", path) from None
    finally:
        os.close(fd)
    return _Snapshot(text=b"".join(chunks).decode(_ENCODING, _ENCODING_ERRORS), st=st)


def _check_proxy_stat(st: os.stat_result, path: str) -> None:
    """The checks the grid tools make on a proxy: a regular file, ours, 0600 or stricter."""
    if not stat.S_ISREG(st.st_mode):
        raise NotAProxyFile(f"{path} is not a regular file, so it is not a proxy file; {_NEW_PROXY_HINT}", path)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeBundleFile(
            f"the proxy file {path} belongs to uid {st.st_uid}, not to you (uid {uid}); a proxy must belong to "
            f"the user who uses it: {_NEW_PROXY_HINT} of your own, or have its owner fix it",
            path,
        )
    if st.st_mode & _UNSAFE_MODE_BITS:
        raise UnsafeBundleFile(
            f"the proxy file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); it holds "
            f"a private key and DiracX tokens, so it must be private: run 'chmod 600 {path}' "
            "(and consider the key and tokens compromised if others could read it)",
            path,
        )


def _symlink_error(path: str) -> UnsafeBundleFile:
    return UnsafeBundleFile(
        f"the proxy file {path} is a symbolic link; the bridge does not write through links (the rewrite would "
        f"replace the link, and a link can point anywhere). Use the real path ({os.path.realpath(path)}) "
        "in X509_USER_PROXY, or replace the link by the file",
        path,
    )


def read_token(path: str | os.PathLike[str]) -> DiracxToken:
    """The DiracX token of the proxy at ``path``.

    Needs no lock: writers replace the file atomically, so one read sees one whole version.
    Raises ``ProxyFileNotFound`` (a ``FileNotFoundError`` too), ``NotAProxyFile`` (e.g. an empty
    file), ``UnsafeBundleFile``, ``NoTokenBlock`` or ``MalformedTokenBlock``, all ``BundleError``.
    """
    fspath = os.fspath(path)
    snapshot = _read_snapshot(fspath, for_write=False)
    if not snapshot.text.strip():
        raise NotAProxyFile(
            f"the proxy file {fspath} is empty (an interrupted write can leave it so); {_NEW_PROXY_HINT}", fspath
        )
    return decode_block(snapshot.text, fspath)


# --------------------------------------------------------------------------------------------
# Locking
# --------------------------------------------------------------------------------------------


def lock_path_for(path: str | os.PathLike[str]) -> str:
    """The sidecar lock file of a proxy: ``<proxy>.lock``, in the proxy's directory.

    The directory is resolved, so every spelling of the proxy's location (relative, through a
    linked directory) locks the same file; the name is not, since writers refuse symlinked proxies.
    """
    absolute = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(directory), name + _LOCK_SUFFIX)


@dataclass
class _HeldLock:
    shared: bool
    depth: int = 1


class _HeldLocks(threading.local):
    """The locks this thread holds, so that nested ``locked()`` calls do not deadlock on themselves.

    ``flock`` locks belong to an open file description: a second ``open`` + ``flock`` of the
    same file in the same thread would wait for ourselves. The pid guards against a child
    process inheriting the record (but not the right to use the lock) across ``fork``.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.locks: dict[str, _HeldLock] = {}

    def current(self) -> dict[str, _HeldLock]:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.locks = {}
        return self.locks


_held = _HeldLocks()


@contextmanager
def locked(path: str | os.PathLike[str], *, shared: bool = False, timeout: float | None = 30) -> Iterator[None]:
    """Hold the proxy's advisory lock (``flock`` on ``<proxy>.lock``) for a read-modify-write.

    ``write_token``, ``remove_token`` and ``update_token`` take the exclusive lock themselves;
    use this to make a longer sequence atomic with respect to other bridge writers. Re-entrant
    within a thread (an exclusive hold covers nested shared or exclusive requests; a shared hold
    cannot be upgraded, which ``flock`` cannot do without a gap). ``timeout=None`` waits forever.

    The lock file is left in place on release: deleting it would let a waiter lock an unlinked
    inode while a newcomer locks a new one. A leftover lock file is harmless, because ``flock``
    locks vanish with the process holding them; there is no stale lock to break.

    When the directory does not let us create the lock file, a shared request proceeds unlocked
    (no writer can hold a lock file that does not exist, and readers need no lock anyway), while
    an exclusive one raises ``BundleLockError``: the atomic rewrite needs that directory too.
    """
    lock_file = lock_path_for(path)
    held = _held.current()
    entry = held.get(lock_file)
    if entry is not None:
        if entry.shared and not shared:
            raise BundleLockError(
                f"this thread holds the shared lock {lock_file} and asked for the exclusive one; flock cannot "
                "upgrade a lock safely: take the exclusive lock from the start (programming error)",
                os.fspath(path),
            )
        entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
        return

    fd = _open_lock_file(lock_file, os.fspath(path), shared=shared)
    if fd is None:
        yield
        return
    try:
        _acquire(fd, lock_file, os.fspath(path), shared=shared, timeout=timeout)
        held[lock_file] = _HeldLock(shared=shared)
        try:
            yield
        finally:
            del held[lock_file]
    finally:
        os.close(fd)  # releases the flock


def _open_lock_file(lock_file: str, path: str, *, shared: bool) -> int | None:
    """Open (creating it 0600 if needed) the lock file, refusing one that is not ours."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeBundleFile(
                f"the lock file {lock_file} of {path} is a symbolic link; remove it (rm {lock_file})", path
            ) from None
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BundleLockError(f"cannot open the lock file {lock_file} of {path}: {exc.strerror}", path) from None
        if not shared:
            raise BundleLockError(
                f"cannot create the lock file {lock_file} ({exc.strerror}): updating the DiracX token of {path} "
                "needs a directory you can write to (for the lock and for the atomic rewrite). Keep the proxy in "
                "such a directory (e.g. the default /tmp/x509up_u<uid>, or set X509_USER_PROXY)",
                path,
            ) from None
        try:
            fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            log.debug("no lock file for %s and none can be created there; reading without a lock", path)
            return None
        except OSError as exc2:
            raise BundleLockError(f"cannot open the lock file {lock_file} of {path}: {exc2.strerror}", path) from None
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise UnsafeBundleFile(
                f"the lock file {lock_file} of {path} is not a regular file of yours (owner uid {st.st_uid}, you are "
                f"uid {uid}); whoever holds it could block your proxy updates: have it removed (rm {lock_file})",
                path,
            )
        if stat.S_IMODE(st.st_mode) != 0o600:
            # 0600 whatever the umask was at creation: others must not see it, we must reopen it O_RDWR.
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _acquire(fd: int, lock_file: str, path: str, *, shared: bool, timeout: float | None) -> None:
    """``flock`` with a deadline. ``flock`` has none, so a contended wait blocks in a helper thread.

    Polling with ``LOCK_NB`` would be simpler but unfair: a process that releases and re-takes
    the lock in a loop wins nearly every time against waiters asleep between polls, and a
    waiter can starve until its timeout. A blocked ``flock`` is woken by the kernel as soon as
    the lock is released. The helper blocks on a ``dup`` of our descriptor (same open file
    description, hence the same lock); if we give up first, it releases the lock as soon as it
    gets it, and closing the last descriptor would release it anyway.
    """
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    try:
        if timeout is None:
            fcntl.flock(fd, operation)
            return
        acquired = _LockWaiter(os.dup(fd), operation).wait(timeout)
    except OSError as exc:
        raise BundleLockError(f"cannot lock {lock_file} for {path}: {exc.strerror}", path) from None
    if not acquired:
        raise BundleLockTimeout(
            f"another process has held the lock {lock_file} of {path} for more than {timeout:g} s; it is "
            "probably refreshing the DiracX token: retry. Locks die with their process, so if this persists, "
            f"look for a hung process holding it (fuser {lock_file}); removing the file does not help",
            path,
        )


class _LockWaiter:
    """A blocking ``flock`` in a daemon thread, which the caller may stop waiting for."""

    def __init__(self, fd: int, operation: int) -> None:
        self._fd = fd
        self._operation = operation
        self._mutex = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._error: OSError | None = None
        threading.Thread(target=self._run, name="diracx-bridge-flock", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self._fd, self._operation)
        except OSError as exc:
            self._error = exc
        with self._mutex:
            if self._abandoned and self._error is None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)  # the caller's descriptor keeps the lock if it still wants it
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once the lock is ours; False (and the lock will be dropped) after ``timeout`` seconds."""
        self._done.wait(max(timeout, 0))
        with self._mutex:
            if not self._done.is_set():
                self._abandoned = True
                return False
        if self._error is not None:
            raise self._error
        return True


# --------------------------------------------------------------------------------------------
# Writing the file
# --------------------------------------------------------------------------------------------


class _FileChanged(Exception):
    """The proxy changed between our read and our rename (a writer that ignores our lock)."""


def _replace_contents(path: str, text: str, read_st: os.stat_result) -> None:
    """Atomically make ``text`` the content of ``path`` (caller holds the exclusive lock).

    Temp file created 0600 with ``O_EXCL`` next to the proxy (same filesystem, so the rename is
    atomic), written, ``fsync``ed, renamed over the proxy, then the directory ``fsync``ed so the
    rename itself survives a crash. Just before the rename, the proxy is checked to still be the
    file we read: DIRAC's own writers do not take our lock, and renaming our copy over a proxy
    that ``dirac-proxy-init`` has just renewed would bring back the old certificate.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, _TMP_TEMPLATE.format(name=name))
    fd = _create_tmp(tmp, path)
    try:
        try:
            # The umask may have taken bits away from 0600 (never added: O_CREAT only clears).
            os.fchmod(fd, 0o600)
            if read_st.st_gid != os.fstat(fd).st_gid:
                try:
                    os.fchown(fd, -1, read_st.st_gid)
                except PermissionError:
                    log.debug("could not keep group %s on %s", read_st.st_gid, path)
            view = memoryview(text.encode(_ENCODING, _ENCODING_ERRORS))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            now_st = os.lstat(path)
        except FileNotFoundError:
            raise _FileChanged from None
        if (now_st.st_dev, now_st.st_ino, now_st.st_size, now_st.st_mtime_ns) != (
            read_st.st_dev,
            read_st.st_ino,
            read_st.st_size,
            read_st.st_mtime_ns,
        ):
            raise _FileChanged
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BundleError):
            raise BundleError(
                f"cannot rewrite the proxy file {path} ({exc.strerror}); it was left as it was", path
            ) from None
        raise
    _fsync_directory(directory)


def _create_tmp(tmp: str, path: str) -> int:
    """Create the temporary file exclusively; a leftover of ours (a writer killed mid-write) is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            return os.open(tmp, flags, 0o600)
        except FileExistsError:
            _remove_leftover_tmp(tmp, path)
        except OSError as exc:
            raise BundleError(
                f"cannot create {tmp} to rewrite {path} atomically ({exc.strerror}); the proxy must be in a "
                "directory you can write to",
                path,
            ) from None
    raise BundleError(f"cannot create {tmp} to rewrite {path}: it keeps reappearing", path)


def _remove_leftover_tmp(tmp: str, path: str) -> None:
    """Only writers holding the exclusive lock create the temp file: one found now is a crashed writer's."""
    try:
        st = os.lstat(tmp)
        mine = st.st_uid == os.geteuid() and stat.S_ISREG(st.st_mode)
        if mine:
            os.unlink(tmp)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BundleError(f"cannot remove the leftover {tmp} to rewrite {path}: {exc.strerror}", path) from None
    if not mine:
        raise UnsafeBundleFile(
            f"{tmp}, needed to rewrite {path} atomically, exists and is not a file of yours; "
            f"have it removed (rm {tmp})",
            path,
        )


def _fsync_directory(directory: str) -> None:
    """Persist the rename. Some filesystems cannot fsync a directory; the rename happened anyway."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", directory, exc.strerror)
        return
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)


def _rewrite(path: str, change: Callable[[_Snapshot], str | None], *, timeout: float | None) -> None:
    """Run ``change`` on a fresh read under the exclusive lock; write its result (None: no write).

    ``change`` runs again on a new read if a writer that ignores our lock changed the file
    before our rename; it must therefore be a decision on the snapshot it is given.
    """
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise _symlink_error(path)
    except FileNotFoundError:
        # Checked before creating a lock file next to a proxy that is not there.
        raise ProxyFileNotFound(
            f"the proxy file {path} does not exist; {_NEW_PROXY_HINT} (or point X509_USER_PROXY at yours)", path
        ) from None
    with locked(path, timeout=timeout):
        for attempt in range(1, _MAX_REWRITE_ATTEMPTS + 1):
            snapshot = _read_snapshot(path, for_write=True)
            text = change(snapshot)
            if text is None or text == snapshot.text:
                return
            try:
                _replace_contents(path, text, snapshot.st)
                return
            except _FileChanged:
                log.warning("%s changed while its DiracX token was being written (attempt %d); retrying", path, attempt)
    raise BundleError(
        f"{path} kept changing while the bridge tried to write its DiracX token (another program rewrites it "
        "without the bridge's lock); retry once dirac-proxy-init or that program has finished",
        path,
    )


def write_token(path: str | os.PathLike[str], token: DiracxToken, *, timeout: float | None = 30) -> None:
    """Put ``token`` in the proxy at ``path``: the single DIRACX block is replaced (or appended).

    Every existing DIRACX block goes (two blocks are repaired into one); the certificate and
    key part stays byte for byte. Refuses, without touching the file, a file whose non-DIRACX
    part is not a proxy, or whose token block is cut off. The result is mode 0600.
    """
    if not isinstance(token, DiracxToken):
        raise TypeError(f"write_token needs a DiracxToken, not {type(token).__name__}")
    fspath = os.fspath(path)
    block = encode_block(token)

    def change(snapshot: _Snapshot) -> str:
        layout = _split(snapshot.text, fspath)
        _check_proxy_rest(layout.rest, fspath)
        return _join(layout.rest, block)

    _rewrite(fspath, change, timeout=timeout)
    log.debug("wrote DiracX token %r to %s", token, fspath)


def remove_token(path: str | os.PathLike[str], *, timeout: float | None = 30) -> bool:
    """Strip the DIRACX block(s) from the proxy (e.g. when its VO is disabled); True if any was there.

    The certificate and key part stays byte for byte; a file that would be left without one is
    refused rather than emptied.
    """
    fspath = os.fspath(path)
    removed = False

    def change(snapshot: _Snapshot) -> str | None:
        nonlocal removed
        layout = _split(snapshot.text, fspath)
        removed = bool(layout.bodies)
        if not removed:
            return None
        _check_proxy_rest(layout.rest, fspath)
        return layout.rest

    _rewrite(fspath, change, timeout=timeout)
    if removed:
        log.debug("removed the DiracX token from %s", fspath)
    return removed


def update_token(
    path: str | os.PathLike[str],
    fn: Callable[[DiracxToken | None], DiracxToken | None],
    *,
    timeout: float | None = 30,
) -> DiracxToken | None:
    """Read-modify-write the token under the exclusive lock; return the token the file now holds.

    ``fn`` gets the token currently in the file, read under the lock: a process that lost a
    refresh race sees the winner's token and can return it unchanged. ``fn`` returning ``None``
    or the very object it was given means "no write". ``fn`` gets ``None`` when the file has no
    usable token: no block, or a damaged one (two blocks, bad base64, ...), which the write then
    repairs; a warning is logged for the latter. A file that could not be written (not a proxy,
    a cut-off block, unsafe) raises before ``fn`` is called, so no refresh is wasted.

    ``fn`` runs while the lock is held (keep it to one refresh), and may run again if a program
    that ignores the lock (DIRAC's own writers) rewrote the proxy meanwhile.
    """
    fspath = os.fspath(path)
    result: DiracxToken | None = None

    def change(snapshot: _Snapshot) -> str | None:
        nonlocal result
        layout = _split(snapshot.text, fspath)
        _check_proxy_rest(layout.rest, fspath)
        current = _usable_token(layout, fspath)
        new = fn(current)
        if new is None or new is current:
            result = current
            return None
        if not isinstance(new, DiracxToken):
            raise TypeError(f"update_token's function must return a DiracxToken or None, not {type(new).__name__}")
        result = new
        return _join(layout.rest, encode_block(new))

    _rewrite(fspath, change, timeout=timeout)
    return result


def _usable_token(layout: _Layout, path: str) -> DiracxToken | None:
    """The file's token, or None (with a warning) when it has none we could use."""
    if not layout.bodies:
        return None
    if len(layout.bodies) > 1:
        log.warning("%s holds %d DiracX token blocks; treating it as holding none", path, len(layout.bodies))
        return None
    try:
        return _decode_body(layout.bodies[0], path)
    except MalformedTokenBlock as exc:
        log.warning("ignoring the DiracX token of %s: %s", path, exc)
        return None
