"""The DiracX config repository: ``default.yml`` on branch ``master``, one commit per change.

DiracX's ``git+file://`` backend reads ``git show master:default.yml`` (never the working tree),
so the commit is built with git plumbing (blob, tree, commit) and published by one
``git update-ref`` that also checks ``master`` has not moved since it was read: a DiracX server
sees the old commit or the new one, never a half-written file, and two cs-sync runs cannot
overwrite each other's commit. The working-tree copy, which admins read, is then replaced by
write-to-temp + rename.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from diracx_bridge.cs_sync.errors import RepositoryError
from diracx_bridge.tokens import atomic as tokens_atomic

BRANCH = "master"
FILENAME = "default.yml"
_ZERO = "0" * 40
#: Variables that would make git act on another repository or index than ``self.path``.
_GIT_LOCATION_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX")


@dataclass
class ConfigRepository:
    path: Path
    branch: str = BRANCH
    filename: str = FILENAME

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARIABLES}
        identity = ("diracx-bridge cs-sync", f"cs-sync@{socket.gethostname() or 'localhost'}")
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", identity[0])
            env.setdefault(f"GIT_{role}_EMAIL", identity[1])
        return env

    def git(self, *args: str, data: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        try:
            result = subprocess.run(
                ["git", "-C", str(self.path), *args],
                input=data,
                capture_output=True,
                env=self._environment(),
                check=False,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RepositoryError(f"git {args[0]} in {self.path} failed: {exc}") from exc
        if check and result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise RepositoryError(f"git {' '.join(args[:2])} in {self.path} failed: {message}")
        return result

    def exists(self) -> bool:
        if not self.path.is_dir():
            return False
        if self.git("rev-parse", "--git-dir", check=False).returncode != 0:
            return False
        if self.git("rev-parse", "--is-bare-repository").stdout.strip() == b"true":
            git_dir = self.git("rev-parse", "--absolute-git-dir").stdout.decode().strip()
            return Path(git_dir).resolve() == self.path.resolve()
        # A directory inside some other checkout is not the config repository.
        return self._toplevel() == self.path.resolve()

    def _toplevel(self) -> Path | None:
        result = self.git("rev-parse", "--show-toplevel", check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return None
        return Path(result.stdout.decode().strip()).resolve()

    def ensure(self) -> None:
        """Create the repository on first use; refuse a directory that is something else."""
        if self.exists():
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RepositoryError(
                f"{self.path} exists and is not a git repository: give an empty or new directory, "
                "or the git repository DiracX reads (DIRACX_CONFIG_BACKEND_URL=git+file://...)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", self.branch)

    def head(self) -> str | None:
        """The commit ``master`` points at, or ``None`` before the first export."""
        if not self.exists():
            return None
        result = self.git("rev-parse", "--verify", "-q", f"{self.ref}^{{commit}}", check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def head_and_message(self) -> tuple[str, str] | None:
        """``master``'s commit and its message (one git call), or ``None`` before the first export."""
        if not self.path.is_dir():
            return None
        result = self.git("log", "-1", "--format=%H%n%B", self.ref, "--", check=False)
        if result.returncode != 0 or not result.stdout.strip() or not self.exists():
            return None
        commit, _, message = result.stdout.decode(errors="replace").partition("\n")
        return commit.strip(), message

    def git_dir(self) -> Path | None:
        """Where git keeps this repository's own files (cs-sync's export state goes there)."""
        if not self.exists():
            return None
        return Path(self.git("rev-parse", "--absolute-git-dir").stdout.decode().strip())

    def read(self, commit: str | None) -> bytes | None:
        if commit is None:
            return None
        result = self.git("cat-file", "blob", f"{commit}:{self.filename}", check=False)
        return result.stdout if result.returncode == 0 else None

    def worktree_file(self) -> Path | None:
        """The checked-out ``default.yml``, if this is a non-bare repository with ``master`` checked out."""
        if self.git("rev-parse", "--is-bare-repository").stdout.strip() == b"true":
            return None
        symbolic = self.git("symbolic-ref", "-q", "HEAD", check=False)
        if symbolic.stdout.decode().strip() != self.ref:
            return None
        return self.path / self.filename

    def check_worktree(self, head: str | None) -> None:
        """Refuse to replace a ``default.yml`` that holds edits git does not have.

        The file may legitimately hold the previous commit's content (a run stopped between the
        commit and the rename): git has that content, so it can be replaced without loss.
        """
        target = self.worktree_file()
        if target is None or not target.exists():
            return
        current = target.read_bytes()
        known = [self.read(head)]
        if head is not None:
            parent = self.git("rev-parse", "--verify", "-q", f"{head}^", check=False)
            if parent.returncode == 0:
                known.append(self.read(parent.stdout.decode().strip()))
        if head is None or current not in known:
            raise RepositoryError(
                f"{target} has changes that are not committed on {self.branch}: cs-sync owns this file and "
                f"would overwrite them. Commit them, or discard them with "
                f"'git -C {self.path} checkout -- {self.filename}', then run cs-sync again."
            )

    def commit(self, content: bytes, message: str, parent: str | None) -> str:
        """Publish ``content`` as a new commit of ``master`` whose parent must still be ``parent``."""
        blob = self.git("hash-object", "-w", "--stdin", data=content).stdout.decode().strip()
        entries: list[bytes] = []
        if parent is not None:
            listing = self.git("ls-tree", "-z", parent).stdout
            entries = [e for e in listing.split(b"\0") if e and not e.endswith(b"\t" + self.filename.encode())]
        entries.append(f"100644 blob {blob}\t{self.filename}".encode())
        tree = self.git("mktree", "-z", data=b"\0".join(entries) + b"\0").stdout.decode().strip()
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"]
        commit = self.git(*args, data=message.encode()).stdout.decode().strip()
        update = self.git("update-ref", "-m", "cs-sync", self.ref, commit, parent or _ZERO, check=False)
        if update.returncode != 0:
            raise RepositoryError(
                f"{self.branch} in {self.path} changed while cs-sync was exporting (another cs-sync, or a manual "
                f"commit): nothing was published. Run cs-sync again. git said: "
                f"{update.stderr.decode(errors='replace').strip()}"
            )
        return commit

    def refresh_worktree(self, content: bytes) -> None:
        """Make the checked-out ``default.yml`` and the index match the new commit."""
        target = self.worktree_file()
        if target is None:
            return
        atomic_write(target, content)
        self.git("update-index", "-q", "--add", "--", self.filename)


def atomic_write(target: Path, content: bytes) -> None:
    """Readers see the old ``default.yml`` or the new one (the mode of the old one is kept)."""
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
    tokens_atomic.atomic_write(target, content, mode=mode)
