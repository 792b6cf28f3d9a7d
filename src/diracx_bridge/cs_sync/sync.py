"""One cs-sync run: read, convert, validate, and commit only a real change.

The order is what makes "nothing lost" hold: everything that can refuse the CS (consistency
check, conversion, both validations) runs before the repository is touched, and the commit is
published by one atomic ref update, after which the working tree is refreshed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from diracx_bridge.cs_sync.convert import Conversion, convert
from diracx_bridge.cs_sync.errors import RepositoryError
from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.summary import ChangeSummary, summarise
from diracx_bridge.cs_sync.validate import load_yaml

if TYPE_CHECKING:
    from pydantic import BaseModel

    from diracx_bridge.cs_sync.sources import Snapshot


@dataclass
class SyncResult:
    snapshot: Snapshot
    conversion: Conversion
    summary: ChangeSummary
    previous_commit: str | None
    #: The commit made by this run; ``None`` when nothing changed or in a dry run.
    commit: str | None = None
    dry_run: bool = False
    diff: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.summary.changed


def commit_message(summary: ChangeSummary, conversion: Conversion, origin: str) -> str:
    vos, users, groups = conversion.counts()
    parts = [summary.subject(), ""]
    if body := summary.body():
        parts += [body, ""]
    parts += [
        f"Source: {origin}",
        f"Exported: {vos} VOs, {users} users, {groups} groups.",
        "",
        f"Report on the legacy CS entries ({conversion.report.counts()}):",
        conversion.report.render(indent="  "),
    ]
    return "\n".join(parts) + "\n"


def unified_diff(old: str, new: str, filename: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{filename}", f"b/{filename}"
    )
    return "".join(lines)


def _parse_previous(content: bytes | None) -> Any:
    if content is None:
        return None
    try:
        return load_yaml(content.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None  # unreadable: the summary treats the export as a fresh start


def sync_once(
    snapshot: Snapshot,
    repository: ConfigRepository,
    *,
    dry_run: bool = False,
    config_class: type[BaseModel] | None = None,
) -> SyncResult:
    conversion = convert(snapshot.cfg, config_class)
    head = repository.head()
    previous_bytes = repository.read(head)
    content = conversion.text.encode("utf-8")
    if previous_bytes == content:  # the usual watch-mode case: no YAML parse needed
        return SyncResult(snapshot, conversion, ChangeSummary(), head, dry_run=dry_run)
    previous = _parse_previous(previous_bytes)
    # Compared as data, not bytes: a file formatted by another tool is not a change.
    if previous == conversion.config:
        return SyncResult(snapshot, conversion, ChangeSummary(), head, dry_run=dry_run)
    summary = summarise(previous if isinstance(previous, dict) else None, conversion.config)
    result = SyncResult(snapshot, conversion, summary, head, dry_run=dry_run)
    if dry_run:
        old_text = previous_bytes.decode("utf-8", errors="replace") if previous_bytes else ""
        result.diff = unified_diff(old_text, conversion.text, repository.filename)
        return result
    repository.ensure()
    repository.check_worktree(head)
    result.commit = repository.commit(content, commit_message(summary, conversion, snapshot.origin), head)
    try:
        repository.refresh_worktree(content)
    except (RepositoryError, OSError) as exc:
        result.warnings.append(
            f"committed {result.commit[:12]} (DiracX reads it), but the working-tree copy of "
            f"{repository.filename} could not be refreshed: {exc}"
        )
    return result
