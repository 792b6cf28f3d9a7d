"""The proxy's advisory lock: one writer at a time for the read-modify-write of the DIRACX block.

Writers take an exclusive ``flock`` on a sidecar lock file, ``<proxy>.lock``. The proxy itself
cannot carry the lock: every rewrite gives it a new inode, so a lock on the old inode would
protect nothing. Readers need no lock: writers replace the file atomically.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from diracx_bridge.errors import TokenFileLockError, TokenFileLockTimeout, UnsafeTokenFile

_LOCK_SUFFIX = ".lock"


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
def locked(path: str | os.PathLike[str], *, timeout: float | None = 30) -> Iterator[None]:
    """Hold the proxy's exclusive advisory lock for a read-modify-write.

    ``write_token``, ``remove_token`` and ``update_token`` take it themselves; use this to make a
    longer sequence atomic with respect to other bridge writers. Re-entrant within a thread.
    ``timeout=None`` waits forever.

    The lock file is left in place on release: deleting it would let a waiter lock an unlinked
    inode while a newcomer locks a new one. A leftover lock file is harmless, because ``flock``
    locks vanish with the process holding them; there is no stale lock to break.
    """
    lock_file = lock_path_for(path)
    held = _held.current()
    entry = held.get(lock_file)
    if entry is not None:
        entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
        return

    fd = _open_lock_file(lock_file, os.fspath(path))
    try:
        _acquire(fd, lock_file, os.fspath(path), timeout=timeout)
        held[lock_file] = _HeldLock()
        try:
            yield
        finally:
            del held[lock_file]
    finally:
        os.close(fd)  # releases the flock


def _open_lock_file(lock_file: str, path: str) -> int:
    """Open (creating it 0600 if needed) the lock file, refusing one that is not ours."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeTokenFile(
                f"the lock file {lock_file} of {path} is a symbolic link; remove it (rm {lock_file})", path
            ) from None
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise TokenFileLockError(
                f"cannot open the lock file {lock_file} of {path}: {exc.strerror}", path, fix="retry"
            ) from None
        raise TokenFileLockError(
            f"cannot create the lock file {lock_file} ({exc.strerror}): updating the DiracX token of {path} "
            "needs a directory you can write to (for the lock and for the atomic rewrite)",
            path,
            fix="keep the proxy in such a directory (e.g. the default /tmp/x509up_u<uid>, or set X509_USER_PROXY)",
        ) from None
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise UnsafeTokenFile(
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


def _acquire(fd: int, lock_file: str, path: str, *, timeout: float | None) -> None:
    """``flock`` with a deadline. ``flock`` has none, so a contended wait blocks in a helper thread.

    Polling with ``LOCK_NB`` would be simpler but unfair: a process that releases and re-takes
    the lock in a loop wins nearly every time against waiters asleep between polls, and a
    waiter can starve until its timeout. A blocked ``flock`` is woken by the kernel as soon as
    the lock is released. The helper blocks on a ``dup`` of our descriptor (same open file
    description, hence the same lock); if we give up first, it releases the lock as soon as it
    gets it, and closing the last descriptor would release it anyway.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        acquired = _LockWaiter(os.dup(fd), fcntl.LOCK_EX).wait(timeout)
    except OSError as exc:
        raise TokenFileLockError(f"cannot lock {lock_file} for {path}: {exc.strerror}", path, fix="retry") from None
    if not acquired:
        raise TokenFileLockTimeout(path, timeout)


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
