"""Crash-safe replacement of a small file: readers see the old content or the new one, never half.

A temporary file is created next to the target (same filesystem, so the rename is atomic) with an
unpredictable name, ``O_EXCL`` and mode 0600 (``mkstemp``), written, ``fsync``ed, given its final
mode, renamed over the target, and the directory is ``fsync``ed so the rename survives a crash.
Used for proxies (:mod:`diracx_bridge.tokens.store`) and for cs-sync's ``default.yml``; it raises
plain ``OSError``s, which each caller turns into its own error.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from contextlib import suppress

#: Temporary files end with this, after ``.<target name>.<random>``: a leftover is recognisable.
TMP_SUFFIX = ".diracx-bridge.tmp"


def atomic_write(
    target: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int,
    group: int | None = None,
    check: Callable[[int], None] | None = None,
) -> None:
    """Make ``data`` the content of ``target`` atomically, with permission bits ``mode``.

    ``group``: the group to give the file, if the caller may (kept silently otherwise).
    ``check(fd)`` runs once the data is on disk, just before the rename, on the temporary file's
    descriptor; raising there abandons the write (the temporary file is removed, the target
    untouched).
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(target)))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TMP_SUFFIX)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            os.fchmod(fd, mode)
            if group is not None and os.fstat(fd).st_gid != group:
                with suppress(PermissionError):
                    os.fchown(fd, -1, group)
            if check is not None:
                check(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until everything is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(directory: str) -> None:
    """Persist a rename. Filesystems that cannot fsync a directory are tolerated; an I/O error is not."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        return  # a directory we may write but not read (mode 0300): the rename is done all the same
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)
