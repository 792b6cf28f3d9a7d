"""Where shadow comparisons are recorded: a per-host journal of JSON lines, merged by the report.

Why a journal file per host (and user) rather than DIRAC's monitoring or a central service: the
record is written by a background thread of whatever DIRAC process made the call (a user's
command on a login node, an agent, the web portal), so it must cost nothing, need no network and
no new server, and keep working when DiracX or the network is the thing being diagnosed. A
directory of small append-only files is all that takes, and bringing many hosts together is a
copy (``rsync``, a shared file system) plus :func:`read_records` over the lot, which is what
``diracx-bridge shadow-report`` does. DIRAC's MonitoringSystem would need OpenSearch and a
reporter in every process, and would mix a migration tool's data into production monitoring.

Layout: ``<directory>/<host>-<user>.jsonl``, one line per record, appended with a single
``write`` on an ``O_APPEND`` descriptor (lines of the user's processes never interleave); a file
over :data:`MAX_BYTES` is renamed ``.1`` (one generation kept). The directory is
``/DiracX/Bridge/ShadowJournal`` (an admin's shared, group-writable directory) or, unset, the
user's own ``$XDG_STATE_HOME/diracx-bridge/shadow``. Files are created 0640 and never written
through a link or when another user owns them.

A record never holds a token, a URL with credentials or a job's payload: identities are the
caller's group and VO, arguments are summarised (job IDs, attribute names, sizes), values are
shown only for job states (:mod:`.compare`), error texts are redacted.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from diracx_bridge.errors import redact

FORMAT_VERSION = 1
MAX_BYTES = 64 << 20
_ARG_CHARS = 64
_IDS_SHOWN = 5


def default_directory() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "diracx-bridge" / "shadow"


def directory(configured: str | None) -> Path:
    return Path(configured) if configured else default_directory()


def journal_file(folder: Path) -> Path:
    return folder / f"{socket.gethostname()}-{getpass.getuser()}.jsonl"


def summarise_arguments(args: Iterable[Any]) -> list[Any]:
    """What identifies a call without its payload: job IDs (a few), names, sizes."""

    def one(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, str):
            return redact(value)[:_ARG_CHARS]
        if isinstance(value, (list, tuple)):
            summary: dict[str, Any] = {"items": len(value)}
            if all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
                summary["first"] = [one(v) for v in value[:_IDS_SHOWN]]
            return summary
        if isinstance(value, dict):
            return {"keys": sorted(str(k) for k in value)[:20]}
        return f"<{type(value).__name__}>"

    return [one(a) for a in args]


class Journal:
    """Appends records to this host's and user's journal file in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = journal_file(folder)
        self.problem: str | None = None

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (with :attr:`problem` set) when it cannot be written."""
        line = (json.dumps({"v": FORMAT_VERSION, **record}, default=str, separators=(",", ":")) + "\n").encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._rotate_if_large()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self.problem = f"cannot open the shadow journal {self.path}: {exc.strerror or exc}"
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                self.problem = f"the shadow journal {self.path} is not a regular file of yours: not written"
                return False
            os.write(fd, line)
            return True
        except OSError as exc:
            self.problem = f"cannot write the shadow journal {self.path}: {exc.strerror or exc}"
            return False
        finally:
            os.close(fd)

    def _rotate_if_large(self) -> None:
        try:
            if os.lstat(self.path).st_size > MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM):
                raise


def journal_files(paths: Iterable[Path]) -> list[Path]:
    """Every journal file under ``paths`` (files, or directories of them; rotated ``.1`` included)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.1")) and p.is_file())
        elif path.is_file():
            found.append(path)
    return found


def read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The records of every journal under ``paths``; a damaged line is skipped (counted by the caller)."""
    for file in journal_files(paths):
        with file.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    yield {"kind": "unreadable", "file": str(file)}
                    continue
                if isinstance(record, dict):
                    record.setdefault("file", str(file))
                    yield record
