"""The proxy file as a token store: read, write, update and remove its DIRACX block.

DIRAC 9.1 rewrites the proxy in place (``Path.write_text``), so a concurrent reader (an agent, a
payload) can see a truncated proxy. Here:

* **Atomic rewrites** (:mod:`.atomic`): a reader sees the old file or the new one, never half of
  one, so readers need no lock.
* **Serialised read-modify-write** (:mod:`._locking`): ``update_token`` re-reads the file under
  the lock, so the loser of a refresh race sees the winner's token and need not refresh again.
* **The certificate and key are never damaged.** Only the DIRACX block is replaced; everything
  else is kept byte for byte, and nothing is written when that rest does not look like a proxy,
  or when the token block is cut off, because we could not tell where the key material ends.
* **Proxy hygiene.** Like the grid tools, we refuse a proxy that group or others may access, or
  that belongs to another user.
* **Tokens are secrets.** No exception message, log line or ``repr`` contains token text.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from diracx_bridge import log
from diracx_bridge.errors import (
    NotAProxyFile,
    ProxyFileNotFound,
    TokenFileError,
    TokenFileWriteError,
    UnsafeTokenFile,
)
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
from diracx_bridge.tokens._locking import locked
from diracx_bridge.tokens.atomic import fsync_directory, write_all

#: Name of the temporary file of an atomic rewrite, next to the proxy.
_TMP_TEMPLATE = ".{name}.diracx-bridge.tmp"
#: A proxy is a few kB; anything this large is not one, and is not read into memory.
MAX_PROXY_BYTES = 1 << 20
#: Group and other permission bits: none of them may be set on a proxy (the grid tools require 0600/0400).
_UNSAFE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO
#: How many times a rewrite is retried when a writer that does not use our lock (DIRAC's own
#: ``addTokenToPEM``, ``dirac-proxy-init``) changed the file while we were preparing ours.
MAX_REWRITE_ATTEMPTS = 5


@dataclass(frozen=True)
class _Snapshot:
    """One read of the proxy: its text and the ``fstat`` of the very descriptor it was read from."""

    text: str
    st: os.stat_result


def _read_snapshot(path: str, *, for_write: bool) -> _Snapshot:
    """Open once, check the open file (``fstat``, no stat/open race), then read it.

    A writer opens with ``O_NOFOLLOW``: it must never write through a symlink. Readers follow
    links, as every grid tool does with ``X509_USER_PROXY``; the target's owner and mode are
    checked all the same. ``O_NONBLOCK`` keeps a FIFO from hanging the open.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if for_write:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ProxyFileNotFound(path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and for_write:
            raise _symlink_error(path) from None
        raise TokenFileError(
            f"cannot open the proxy file {path}: {exc.strerror}", path, fix="it must be a file you own with mode 0600"
        ) from None
    try:
        st = os.fstat(fd)
        _check_proxy_stat(st, path)
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


def _check_proxy_stat(st: os.stat_result, path: str) -> None:
    """The checks the grid tools make on a proxy: a regular file, ours, 0600 or stricter."""
    if not stat.S_ISREG(st.st_mode):
        raise NotAProxyFile(f"{path} is not a regular file, so it is not a proxy file", path)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeTokenFile(
            f"the proxy file {path} belongs to uid {st.st_uid}, not to you (uid {uid}); a proxy must belong to "
            "the user who uses it: run dirac-proxy-init to write one of your own, or have its owner fix it",
            path,
        )
    if st.st_mode & _UNSAFE_MODE_BITS:
        raise UnsafeTokenFile(
            f"the proxy file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); it holds "
            f"a private key and DiracX tokens, so it must be private: run 'chmod 600 {path}' "
            "(and consider the key and tokens compromised if others could read it)",
            path,
        )


def _symlink_error(path: str) -> UnsafeTokenFile:
    return UnsafeTokenFile(
        f"the proxy file {path} is a symbolic link; the bridge does not write through links (the rewrite would "
        f"replace the link, and a link can point anywhere). Use the real path ({os.path.realpath(path)}) "
        "in X509_USER_PROXY, or replace the link by the file",
        path,
    )


def read_token(path: str | os.PathLike[str]) -> DiracxToken:
    """The DiracX token of the proxy at ``path``.

    Needs no lock: writers replace the file atomically, so one read sees one whole version.
    Raises ``ProxyFileNotFound`` (a ``FileNotFoundError`` too), ``NotAProxyFile`` (e.g. an empty
    file), ``UnsafeTokenFile``, ``NoTokenBlock`` or ``MalformedTokenBlock``: all ``TokenFileError``.
    """
    fspath = os.fspath(path)
    snapshot = _read_snapshot(fspath, for_write=False)
    if not snapshot.text.strip():
        raise NotAProxyFile(f"the proxy file {fspath} is empty (an interrupted write can leave it so)", fspath)
    return decode_block(snapshot.text, fspath)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _FileChanged(Exception):
    """The proxy changed between our read and our rename (a writer that ignores our lock)."""


def _replace_contents(path: str, text: str, read_st: os.stat_result) -> None:
    """Atomically make ``text`` the content of ``path`` (caller holds the exclusive lock).

    Just before the rename, the proxy is checked to still be the file we read: DIRAC's own
    writers do not take our lock, and renaming our copy over a proxy that ``dirac-proxy-init``
    has just renewed would bring back the old certificate.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, _TMP_TEMPLATE.format(name=name))
    fd = _create_tmp(tmp, path)
    try:
        try:
            os.fchmod(fd, 0o600)
            if read_st.st_gid != os.fstat(fd).st_gid:
                with suppress(PermissionError):
                    os.fchown(fd, -1, read_st.st_gid)
            write_all(fd, text.encode(ENCODING, ENCODING_ERRORS))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            now_st = os.lstat(path)
        except FileNotFoundError:
            raise _FileChanged from None
        if _identity(now_st) != _identity(read_st):
            raise _FileChanged
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, TokenFileError):
            raise TokenFileWriteError(
                f"cannot rewrite the proxy file {path} ({exc.strerror}); it was left as it was", path
            ) from None
        raise
    fsync_directory(directory)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _create_tmp(tmp: str, path: str) -> int:
    """Create the temporary file exclusively; a leftover of ours (a writer killed mid-write) is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            return os.open(tmp, flags, 0o600)
        except FileExistsError:
            _remove_leftover_tmp(tmp, path)
        except OSError as exc:
            raise TokenFileWriteError(
                f"cannot create {tmp} to rewrite {path} atomically ({exc.strerror}); the proxy must be in a "
                "directory you can write to",
                path,
            ) from None
    raise TokenFileWriteError(f"cannot create {tmp} to rewrite {path}: it keeps reappearing", path)


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
        raise TokenFileWriteError(f"cannot remove the leftover {tmp} to rewrite {path}: {exc.strerror}", path) from None
    if not mine:
        raise UnsafeTokenFile(
            f"{tmp}, needed to rewrite {path} atomically, exists and is not a file of yours; "
            f"have it removed (rm {tmp})",
            path,
        )


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
        raise ProxyFileNotFound(path) from None
    with locked(path, timeout=timeout):
        for attempt in range(1, MAX_REWRITE_ATTEMPTS + 1):
            snapshot = _read_snapshot(path, for_write=True)
            text = change(snapshot)
            if text is None or text == snapshot.text:
                return
            try:
                _replace_contents(path, text, snapshot.st)
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
