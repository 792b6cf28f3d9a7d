"""The proxy's advisory lock: one writer at a time for the read-modify-write of the DIRACX block.

**The lock is an exclusive ``flock`` on the proxy file itself**, not on a file next to it. A
sidecar (``<proxy>.lock``) or any other name derived from the proxy's sits, by default, in the
sticky /tmp, where another local user can create it first: the owner can then neither use it nor
remove it, and every refresh of the user fails or waits forever. The proxy is the one file there
that only the user can open (it is the user's, 0600; the bridge refuses it otherwise), so nobody
else can hold its lock. A per-user 0700 lock directory would also do, but it needs a place of its
own that another user cannot take first either (``$XDG_RUNTIME_DIR`` is not set in batch jobs),
and it would not be shared by processes on another host that share the proxy file.

A rewrite gives the proxy a new inode (rename), so the lock must follow the file:

* the writer locks the new file (the temporary one) *before* renaming it over the proxy, and
  only then releases the old one: the new proxy is never unlocked while the writer holds it;
* a waiter that gets the lock checks that the path still names the inode it locked; if the file
  was replaced meanwhile, it unlocks and locks the new one.

Release is explicit (``LOCK_UN`` before ``close``): a ``flock`` belongs to the open file
description, which a child forked while the lock was held shares; closing our descriptor alone
would leave the lock held by the child, and every other process of the user waiting for it. A
forked child only closes its copy, never unlocks the parent's lock. Readers need no lock:
writers replace the file atomically.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from diracx_bridge.errors import NotAProxyFile, ProxyFileNotFound, TokenFileLockError, TokenFileLockTimeout
from diracx_bridge.tokens._files import open_proxy, resolve_proxy_path


@dataclass
class _Held:
    """A lock this thread holds: the descriptor of the inode the proxy path names now."""

    fd: int
    pid: int = field(default_factory=os.getpid)
    depth: int = 1


class _HeldLocks(threading.local):
    """The locks this thread holds, so that nested ``locked()`` calls do not deadlock on themselves.

    ``flock`` locks belong to an open file description: a second ``open`` + ``flock`` of the
    same file in the same thread would wait for ourselves. The pid guards against a child
    process inheriting the record (but not the right to use the lock) across ``fork``.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.locks: dict[str, _Held] = {}

    def current(self) -> dict[str, _Held]:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.locks = {}
        return self.locks


_held = _HeldLocks()


@contextmanager
def locked(path: str | os.PathLike[str], *, timeout: float | None = 30) -> Iterator[None]:
    """Hold the exclusive lock of the proxy at ``path`` for a read-modify-write.

    ``write_token``, ``remove_token`` and ``update_token`` take it themselves; use this to make a
    longer sequence atomic with respect to other bridge writers. Re-entrant within a thread;
    ``timeout=None`` waits forever. Locks vanish with their process: there is no stale lock.
    """
    key = resolve_proxy_path(path)
    held = _held.current()
    entry = held.get(key)
    if entry is not None:
        entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
        return
    entry = held[key] = _Held(_lock_current_file(key, timeout))
    try:
        yield
    finally:
        if entry.pid == os.getpid():
            held.pop(key, None)
        _release(entry)


def adopt(path: str, fd: int) -> None:
    """The proxy at ``path`` is now the inode of ``fd``, already locked by us: hold that lock instead.

    Called by the writer right after its rename, so the new file is never unlocked in between.
    """
    entry = _held.current()[os.path.abspath(path)]
    old = _Held(entry.fd, entry.pid)
    entry.fd = fd
    _release(old)


def _release(entry: _Held) -> None:
    try:
        if entry.pid == os.getpid():  # a forked child must not unlock its parent's lock
            fcntl.flock(entry.fd, fcntl.LOCK_UN)
    finally:
        os.close(entry.fd)


def _lock_current_file(path: str, timeout: float | None) -> int:
    """Open and lock the file ``path`` names, until the locked file is still the one it names."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = open_proxy(path, path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAProxyFile(f"{path} is not a regular file, so it is not a proxy file", path)
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            _acquire(fd, path, timeout=left, waited=timeout)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                raise ProxyFileNotFound(path) from None
        except BaseException:
            os.close(fd)
            raise
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            return fd
        _release(_Held(fd))  # replaced while we waited: lock the file that is there now


def _acquire(fd: int, path: str, *, timeout: float | None, waited: float | None) -> None:
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
        raise TokenFileLockError(f"cannot lock the proxy file {path}: {exc.strerror}", path, fix="retry") from None
    if not acquired:
        raise TokenFileLockTimeout(path, waited if waited is not None else timeout)


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
