"""The proxy file as a token store: read, write, update and remove its DIRACX block.

DIRAC 9.1 rewrites the proxy in place (``Path.write_text``), so a concurrent reader (an agent, a
payload) can see a truncated proxy, and two writers can lose each other's token. Here:

* **Atomic rewrites** (:mod:`.atomic`): a temporary file with an unpredictable name (``mkstemp``:
  ``O_EXCL``, 0600) next to the proxy, ``fsync``, rename, directory ``fsync``. A reader sees the
  old file or the new one, so readers need no lock. No name another user could take first is
  ever needed (see :mod:`._locking` for the lock).
* **Serialised read-modify-write** (:mod:`._locking`, a ``flock`` on the proxy itself):
  ``update_token`` re-reads the file under the lock, so the loser of a refresh race sees the
  winner's token and need not refresh again.
* **The certificate and key are never damaged.** Only the DIRACX block is replaced; everything
  else is kept byte for byte, and nothing is written when that rest does not look like a proxy,
  or when the token block is cut off, because we could not tell where the key material ends.
* **Proxy hygiene.** Like the grid tools, we refuse a proxy that group or others may access, or
  that belongs to another user; links are followed only when they are the user's or root's
  (:mod:`._files`); a proxy with another hard link is not rewritten (the other name would keep
  the old key and token); the rewrite keeps the proxy's mode (0400 stays 0400) and group.
* **Failures are the token-file errors of** :mod:`diracx_bridge.errors`: ``TokenFileWriteError``
  for anything that only prevents saving (disk full, read-only directory, lock held too long,
  hard links), so a session can keep a refreshed token in memory. Their tracebacks start at the
  public function: no frame holding file text or token text travels with them.
* **Tokens are secrets.** No exception message, log line or ``repr`` contains token text.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from diracx_bridge import log
from diracx_bridge.errors import (
    BridgeError,
    NotAProxyFile,
    TokenFileError,
    TokenFileWriteError,
)
from diracx_bridge.tokens import _locking
from diracx_bridge.tokens._files import check_proxy_stat, open_proxy, resolve_proxy_path
from diracx_bridge.tokens._format import (
    ENCODING,
    ENCODING_ERRORS,
    DiracxToken,
    Layout,
    check_proxy_rest,
    decode_block,
    decode_body,
    encode_block,
    join,
    split,
)
from diracx_bridge.tokens.atomic import TMP_SUFFIX, atomic_write

#: A proxy is a few kB; anything this large is not one, and is not read into memory.
MAX_PROXY_BYTES = 1 << 20
#: How many times a rewrite is retried when a writer that does not use our lock (DIRAC's own
#: ``addTokenToPEM``, ``dirac-proxy-init``) changed the file while we were preparing ours.
MAX_REWRITE_ATTEMPTS = 5

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _public(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise the bridge's errors from here, without the inner frames (whose locals hold file and token text).

    A traceback formatter that prints frame locals (``capture_locals``, error reporters) would
    otherwise show the proxy's text, or a freshly refreshed token, from the frames below.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except BridgeError as exc:
            error = exc
        error.__cause__ = error.__context__ = None
        raise error.with_traceback(None)

    return wrapper


@dataclass(frozen=True)
class _Snapshot:
    """One read of the proxy: its text and the ``fstat`` of the very descriptor it was read from."""

    text: str = field(repr=False)
    st: os.stat_result


def _read_snapshot(path: str, given: str) -> _Snapshot:
    """Open once (no link followed: ``path`` is resolved), check the open file, then read it."""
    fd = open_proxy(path, given)
    try:
        st = os.fstat(fd)
        check_proxy_stat(st, path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_PROXY_BYTES:
                raise NotAProxyFile(f"{path} is larger than {MAX_PROXY_BYTES} bytes, so it is not a proxy file", path)
    except OSError as exc:
        raise TokenFileError(f"cannot read the proxy file {path}: {exc.strerror}", path) from None
    finally:
        os.close(fd)
    return _Snapshot(text=b"".join(chunks).decode(ENCODING, ENCODING_ERRORS), st=st)


@_public
def read_token(path: str | os.PathLike[str]) -> DiracxToken:
    """The DiracX token of the proxy at ``path``.

    Needs no lock: writers replace the file atomically, so one read sees one whole version.
    Raises ``ProxyFileNotFound`` (a ``FileNotFoundError`` too), ``NotAProxyFile`` (e.g. an empty
    file), ``UnsafeTokenFile``, ``NoTokenBlock`` or ``MalformedTokenBlock``: all ``TokenFileError``.
    """
    given = os.fspath(path)
    resolved = resolve_proxy_path(given)
    snapshot = _read_snapshot(resolved, given)
    if not snapshot.text.strip():
        raise NotAProxyFile(f"the proxy file {given} is empty (an interrupted write can leave it so)", given)
    return decode_block(snapshot.text, given)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _FileChanged(Exception):
    """The proxy changed between our read and our rename (a writer that ignores our lock)."""


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _replace_contents(path: str, text: str, read_st: os.stat_result) -> None:
    """Atomically make ``text`` the content of ``path``, moving our lock to the new file.

    Just before the rename, the proxy is checked to still be the file we read: DIRAC's own
    writers do not take our lock, and renaming our copy over a proxy that ``dirac-proxy-init``
    has just renewed would bring back the old certificate.
    """
    new_lock: list[int] = []

    def lock_and_check(fd: int) -> None:
        locked_fd = os.dup(fd)  # the lock must outlive the writer's descriptor
        new_lock.append(locked_fd)
        fcntl.flock(locked_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file yet
        try:
            now_st = os.lstat(path)
        except FileNotFoundError:
            raise _FileChanged from None
        if _identity(now_st) != _identity(read_st):
            raise _FileChanged

    mode = stat.S_IMODE(read_st.st_mode) & 0o600 or 0o600
    _remove_our_leftovers(path)
    try:
        atomic_write(
            path, text.encode(ENCODING, ENCODING_ERRORS), mode=mode, group=read_st.st_gid, check=lock_and_check
        )
    except _FileChanged:
        for fd in new_lock:
            os.close(fd)
        raise
    except OSError as exc:
        renamed = bool(new_lock) and _names(path, new_lock[0])
        if renamed:
            _locking.adopt(path, new_lock[0])
            problem = f"the proxy file {path} was rewritten, but its directory could not be synced ({exc.strerror})"
            fix = "the new token may not survive a crash of this machine; nothing else is needed"
        else:
            for fd in new_lock:
                os.close(fd)
            problem = f"cannot rewrite the proxy file {path} ({exc.strerror}); it was left as it was"
            fix = "free some space, or keep the proxy in a directory you can write to (e.g. /tmp/x509up_u<uid>)"
        raise TokenFileWriteError(problem, path, fix=fix) from None
    _locking.adopt(path, new_lock[0])


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` is now the file open as ``fd``."""
    try:
        now, ours = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino)


def _remove_our_leftovers(path: str) -> None:
    """Remove temporary files of ours left by a writer killed mid-write (only lock holders create them).

    Only regular files of the user are touched; a file of someone else's is none of ours.
    """
    directory, name = os.path.split(path)
    prefix = f".{name}."
    uid = os.geteuid()
    with suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX):
                with suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                        os.unlink(entry.path)


def _rewrite(path: str, change: Callable[[_Snapshot], str | None], *, timeout: float | None) -> None:
    """Run ``change`` on a fresh read under the exclusive lock; write its result (None: no write).

    ``change`` runs again on a new read if a writer that ignores our lock changed the file
    before our rename; it must therefore be a decision on the snapshot it is given.
    """
    resolved = resolve_proxy_path(path)
    with _locking.locked(resolved, timeout=timeout):
        for attempt in range(1, MAX_REWRITE_ATTEMPTS + 1):
            snapshot = _read_snapshot(resolved, path)
            text = change(snapshot)
            if text is None or text == snapshot.text:
                return
            if snapshot.st.st_nlink > 1:
                raise TokenFileWriteError(
                    f"the proxy file {path} has {snapshot.st.st_nlink - 1} other hard link(s); the bridge does not "
                    "rewrite it, since the other names would keep the old key and token",
                    path,
                    fix=f"remove the other names (find / -xdev -samefile {resolved}), or run dirac-proxy-init",
                )
            try:
                _replace_contents(resolved, text, snapshot.st)
                return
            except _FileChanged:
                log.logger().warn(
                    f"{path} changed while its DiracX token was being written (attempt {attempt}); retrying"
                )
    raise TokenFileWriteError(
        f"{path} kept changing while the bridge tried to write its DiracX token (another program rewrites it "
        "without the bridge's lock)",
        path,
        fix="retry once dirac-proxy-init or that program has finished",
    )


@_public
def write_token(path: str | os.PathLike[str], token: DiracxToken, *, timeout: float | None = 30) -> None:
    """Put ``token`` in the proxy at ``path``: the single DIRACX block is replaced (or appended).

    Every existing DIRACX block goes (two blocks are repaired into one); the certificate and
    key part stays byte for byte. Refuses, without touching the file, a file whose non-DIRACX
    part is not a proxy, or whose token block is cut off.
    """
    if not isinstance(token, DiracxToken):
        raise TypeError(f"write_token needs a DiracxToken, not {type(token).__name__}")
    fspath = os.fspath(path)
    block = encode_block(token)

    def change(snapshot: _Snapshot) -> str:
        layout = split(snapshot.text, fspath)
        check_proxy_rest(layout.rest, fspath)
        return join(layout.rest, block)

    _rewrite(fspath, change, timeout=timeout)


@_public
def remove_token(path: str | os.PathLike[str], *, timeout: float | None = 30) -> bool:
    """Strip the DIRACX block(s) from the proxy (e.g. when its VO is disabled); True if any was there.

    The certificate and key part stays byte for byte; a file that would be left without one is
    refused rather than emptied.
    """
    fspath = os.fspath(path)
    removed = False

    def change(snapshot: _Snapshot) -> str | None:
        nonlocal removed
        layout = split(snapshot.text, fspath)
        removed = bool(layout.bodies)
        if not removed:
            return None
        check_proxy_rest(layout.rest, fspath)
        return layout.rest

    _rewrite(fspath, change, timeout=timeout)
    return removed


@_public
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
    that ignores the lock (DIRAC's own writers) rewrote the proxy meanwhile. When the new token
    cannot be saved, ``TokenFileWriteError`` is raised after ``fn`` ran: the caller decides
    whether to keep what ``fn`` made.
    """
    fspath = os.fspath(path)
    result: DiracxToken | None = None

    def change(snapshot: _Snapshot) -> str | None:
        nonlocal result
        layout = split(snapshot.text, fspath)
        check_proxy_rest(layout.rest, fspath)
        current = _usable_token(layout, fspath)
        new = fn(current)
        if new is None or new is current:
            result = current
            return None
        if not isinstance(new, DiracxToken):
            raise TypeError(f"update_token's function must return a DiracxToken or None, not {type(new).__name__}")
        result = new
        return join(layout.rest, encode_block(new))

    _rewrite(fspath, change, timeout=timeout)
    return result


def _usable_token(layout: Layout, path: str) -> DiracxToken | None:
    """The file's token, or None (with a warning) when it has none we could use."""
    if not layout.bodies:
        return None
    if len(layout.bodies) > 1:
        log.logger().warn(f"{path} holds {len(layout.bodies)} DiracX token blocks; treating it as holding none")
        return None
    try:
        return decode_body(layout.bodies[0], path)
    except TokenFileError as exc:
        log.logger().warn(f"ignoring the DiracX token of {path}: {exc}")
        return None
