"""One cs-sync run: read, convert, validate, and commit only a real change.

The order is what makes "nothing lost" hold: everything that can refuse the CS (consistency
check, conversion, validation) runs before the repository is touched, and the commit is
published by one atomic ref update, after which the working tree is refreshed.

What makes it cheap (:mod:`.state`): a source whose version master already holds the export of,
by this exporter, is not even parsed (:func:`sync`); a VO whose legacy data did not change is not
validated again; the summary compares with the recorded export instead of parsing the previous
``default.yml``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from diracx_bridge.cs_sync.convert import Conversion, convert
from diracx_bridge.cs_sync.errors import CSSyncError, RepositoryError
from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.state import (
    EXPORTER_TRAILER,
    SOURCE_TRAILER,
    ExportState,
    StateFile,
    exporter,
    exporter_id,
    read_trailers,
    trailers,
)
from diracx_bridge.cs_sync.summary import ChangeSummary, summarise
from diracx_bridge.cs_sync.yamlio import load_yaml

if TYPE_CHECKING:
    from pydantic import BaseModel

    from diracx_bridge.cs_sync.sources import Snapshot, Source


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


@dataclass
class Unchanged:
    """The source is the one master holds the export of: nothing was parsed, nothing written."""

    source: str
    #: ``sha256:<hex>`` or ``cs-version:<version>``
    source_id: str
    commit: str
    #: The report of that export (from its commit message, or from the export state).
    report: str


def commit_message(
    summary: ChangeSummary, conversion: Conversion, origin: str, source_id: str, exporter_ident: str
) -> str:
    vos, users, groups = conversion.counts()
    parts = [summary.subject(), ""]
    if body := summary.body():
        parts += [body, ""]
    parts += [
        f"Source: {origin}",
        f"Exported: {vos} VOs, {users} users, {groups} groups.",
        f"Exported by: {exporter()[1]}",
        "",
        f"Report on the legacy CS entries ({conversion.report.counts()}):",
        conversion.report.render(indent="  "),
        "",
        trailers(source_id, exporter_ident),
    ]
    return "\n".join(parts)


def report_of(message: str) -> str:
    """The report part of a cs-sync commit message (see :func:`commit_message`)."""
    _, sep, rest = message.partition("\nReport on the legacy CS entries")
    if not sep:
        return ""
    body = rest.split("\n", 1)[1] if "\n" in rest else ""
    return body.rsplit(f"\n\n{SOURCE_TRAILER}: ", 1)[0].rstrip("\n")


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


class _Nothing:
    """No registry validated before: every VO is validated (and fingerprinted for next time)."""

    @staticmethod
    def validated(vo: str, fingerprint: str) -> None:
        return None


def _state_file(repository: ConfigRepository) -> StateFile | None:
    git_dir = repository.git_dir()
    return StateFile(git_dir) if git_dir is not None else None


def recorded(repository: ConfigRepository, kind: str, ident: str) -> Unchanged | None:
    """The export master holds, if it is of a ``kind`` source by this exporter (read before any parse).

    From the export state when it describes master's commit (the latest run that verified it,
    possibly without committing, e.g. after an upgrade that changed nothing), else from the
    commit's trailers.
    """
    found = repository.head_and_message()
    if found is None:
        return None
    commit, message = found
    state_file = _state_file(repository)
    state = state_file.load(data=False) if state_file is not None else None
    if state is not None and state.commit == commit and state.exporter == ident and state.source.startswith(f"{kind}:"):
        return Unchanged("", state.source, commit, state.report)
    marks = read_trailers(message)
    if marks.get(EXPORTER_TRAILER) == ident and marks.get(SOURCE_TRAILER, "").startswith(f"{kind}:"):
        return Unchanged("", marks[SOURCE_TRAILER], commit, report_of(message))
    return None


def sync(
    source: Source,
    repository: ConfigRepository,
    *,
    dry_run: bool = False,
    known_version: str | None = None,
    config_class: type[BaseModel] | None = None,
) -> SyncResult | Unchanged | None:
    """Export ``source`` unless master already holds its export.

    Returns :class:`Unchanged` when the source still has the version master's export was made
    from (nothing parsed); ``None`` when it is still ``known_version`` (a version this process
    already dealt with: watch mode) or not ready to be read (a file being written); else the
    :class:`SyncResult` of :func:`sync_once`.
    """
    held = recorded(repository, source.kind, exporter_id(config_class)) if known_version is None else None
    held_version = held.source_id.partition(":")[2] if held is not None else None
    snapshot = source.fetch(known_version or held_version)
    if snapshot is not None:
        try:
            return sync_once(snapshot, repository, dry_run=dry_run, config_class=config_class)
        except CSSyncError as exc:
            exc.version = snapshot.version
            raise
    if held is not None and source.waiting is None:
        held.source = source.description
        return held
    return None


def sync_once(
    snapshot: Snapshot,
    repository: ConfigRepository,
    *,
    dry_run: bool = False,
    config_class: type[BaseModel] | None = None,
) -> SyncResult:
    head = repository.head()
    state_file = _state_file(repository)
    state = state_file.load() if state_file is not None else None
    ident = exporter_id(config_class)
    known = state if state is not None and state.exporter == ident else _Nothing()
    conversion = convert(snapshot.cfg, config_class, known=known, notes=snapshot.notes)
    new_state = _state_of(conversion, ident, head or "", snapshot.source_id)

    previous_bytes = repository.read(head)
    content = conversion.text.encode("utf-8")
    unchanged = previous_bytes == content  # the usual watch-mode case: no YAML parse needed
    if not unchanged:
        if state is not None and head is not None and state.commit == head:
            previous: Any = state.config()  # what master holds, without parsing its YAML
        else:
            previous = _parse_previous(previous_bytes)
        # Compared as data, not bytes: a file formatted by another tool is not a change.
        unchanged = previous == conversion.config
    if unchanged:
        if not dry_run and state_file is not None and head is not None:
            _save(state_file, new_state)
        return SyncResult(snapshot, conversion, ChangeSummary(), head, dry_run=dry_run)
    summary = summarise(previous if isinstance(previous, dict) else None, conversion.config)
    result = SyncResult(snapshot, conversion, summary, head, dry_run=dry_run)
    if dry_run:
        old_text = previous_bytes.decode("utf-8", errors="replace") if previous_bytes else ""
        result.diff = unified_diff(old_text, conversion.text, repository.filename)
        return result
    repository.ensure()
    repository.check_worktree(head)
    message = commit_message(summary, conversion, snapshot.origin, snapshot.source_id, ident)
    result.commit = repository.commit(content, message, head)
    try:
        repository.refresh_worktree(content)
    except (RepositoryError, OSError) as exc:
        result.warnings.append(
            f"committed {result.commit[:12]} (DiracX reads it), but the working-tree copy of "
            f"{repository.filename} could not be refreshed: {exc}"
        )
    new_state.commit = result.commit
    state_file = state_file or _state_file(repository)
    if state_file is not None and (problem := _save(state_file, new_state)):
        result.warnings.append(problem)
    return result


def _state_of(conversion: Conversion, ident: str, commit: str, source_id: str) -> ExportState:
    registry = conversion.config.get("Registry", {})
    fingerprints = conversion.validation.fingerprints if conversion.validation is not None else {}
    return ExportState(
        exporter=ident,
        commit=commit,
        source=source_id,
        report=conversion.report.render(indent="  "),
        rest={k: v for k, v in conversion.config.items() if k != "Registry"},
        vos={vo: (fingerprints[vo], data) for vo, data in registry.items() if vo in fingerprints},
    )


def _save(state_file: StateFile, state: ExportState) -> str | None:
    """Record the export; a failure only costs the next run its shortcuts (said, not raised)."""
    try:
        state_file.save(state)
    except (OSError, TypeError, ValueError) as exc:
        state_file.forget()
        return f"the export state {state_file.path} could not be written ({exc}): the next run converts the CS again"
    return None
