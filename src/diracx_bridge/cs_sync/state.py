"""What the last export recorded, so that an unchanged CS costs nothing and a changed one little.

Two records, both cheap to read before anything is parsed:

* the **commit trailers** of every cs-sync commit (``CS-Sync-Source: sha256:<hex>`` or
  ``cs-version:<version>``, ``CS-Sync-Exporter: <id>``): what was exported, by which exporter.
  They travel with the repository, so any machine holding it can tell that ``master`` already
  holds the export of this file or of this CS version;
* the **export state**, a JSON file in the repository's git directory (never committed, never read
  by DiracX): the same facts for a run that found nothing to commit, the report, the exported
  configuration as data, and, per VO, the fingerprint of the legacy data that went into DiracX's
  model with what the model made of it. A VO whose fingerprint has not changed is not validated
  again; the summary of a change compares with this data instead of parsing the previous YAML.

The **exporter id** names everything that decides what a CS exports to: the bridge's conversion
code (a hash of its sources), and the versions of DiracX's ``Config`` entry point (an
extension's, if installed), pydantic, pydantic-core, email-validator and PyYAML. When any of them
changes, nothing recorded under the old id is trusted: the CS is converted and validated again.
It is computed without importing DiracX or pydantic (the no-change path stays under a second).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from diracx_bridge.tokens import atomic as tokens_atomic

SOURCE_TRAILER = "CS-Sync-Source"
EXPORTER_TRAILER = "CS-Sync-Exporter"
STATE_FORMAT = 1
#: Distributions whose code decides the exported configuration, besides the Config's own.
_MODEL_DISTRIBUTIONS = ("pydantic", "pydantic-core", "email-validator", "PyYAML")


@lru_cache(maxsize=1)
def exporter() -> tuple[str, str]:
    """(id, description) of the code that turns a CS into DiracX's configuration."""
    from diracx.core.extensions import DiracEntryPoint, select_from_extension

    parts: list[str] = []
    for entry in select_from_extension(group=DiracEntryPoint.CORE, name="config")[:1]:
        dist = entry.dist
        parts.append(f"Config {entry.value} ({dist.name if dist else '?'} {dist.version if dist else '?'})")
    for name in _MODEL_DISTRIBUTIONS:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} absent")
    code = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        code.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    description = f"diracx-bridge cs-sync {code.hexdigest()[:12]} with " + ", ".join(parts)
    return hashlib.sha256(description.encode()).hexdigest()[:16], description


def exporter_id(config_class: type | None = None) -> str:
    """The exporter id; with an explicit ``config_class`` (tests, embedding code), that class is part of it."""
    ident = exporter()[0]
    return ident if config_class is None else f"{ident}+{config_class.__module__}.{config_class.__qualname__}"


def trailers(source: str, exporter_ident: str) -> str:
    return f"{SOURCE_TRAILER}: {source}\n{EXPORTER_TRAILER}: {exporter_ident}\n"


def read_trailers(message: str) -> dict[str, str]:
    """The ``Key: value`` lines of the last paragraph of a commit message."""
    found: dict[str, str] = {}
    for line in message.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in (SOURCE_TRAILER, EXPORTER_TRAILER):
            found[key] = value.strip()
    return found


@dataclass
class ExportState:
    """What the export of ``source`` by ``exporter`` gave, committed as ``commit``."""

    exporter: str
    commit: str
    source: str
    report: str
    #: The exported configuration without its registry.
    rest: dict[str, Any]
    #: VO -> (fingerprint of the legacy data validated, the exported registry of the VO).
    vos: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The exported configuration, as DiracX reads it from ``commit``."""
        return {**self.rest, "Registry": {vo: data for vo, (_, data) in self.vos.items()}}

    def validated(self, vo: str, fingerprint: str) -> dict[str, Any] | None:
        """The exported registry of ``vo`` if its legacy data had this fingerprint."""
        entry = self.vos.get(vo)
        return entry[1] if entry is not None and entry[0] == fingerprint else None


class StateFile:
    """The export state of one repository, in its git directory.

    Two JSON lines: what was exported (small: read by the no-change check), then the exported
    data (read by a run that converts).
    """

    NAME = "diracx-bridge-cs-sync.json"

    def __init__(self, git_dir: Path) -> None:
        self.path = git_dir / self.NAME

    def load(self, *, data: bool = True) -> ExportState | None:
        """The recorded state (without the exported data if not ``data``), or ``None`` if there is
        none or it cannot be trusted: it is then ignored, and the next run converts the CS again."""
        try:
            with self.path.open("rb") as stream:
                head = json.loads(stream.readline())
                if head.get("format") != STATE_FORMAT:
                    return None
                state = ExportState(head["exporter"], head["commit"], head["source"], head["report"], {})
                if data:
                    body = json.loads(stream.readline())
                    state.rest = body["rest"]
                    state.vos = {vo: (entry["input"], entry["output"]) for vo, entry in body["vos"].items()}
                    if not isinstance(state.rest, dict):
                        return None
            return state
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, state: ExportState) -> None:
        head = {
            "format": STATE_FORMAT,
            "exporter": state.exporter,
            "commit": state.commit,
            "source": state.source,
            "report": state.report,
        }
        body = {"rest": state.rest, "vos": {vo: {"input": fp, "output": out} for vo, (fp, out) in state.vos.items()}}
        lines = [json.dumps(head, separators=(",", ":")), json.dumps(body, separators=(",", ":")), ""]
        tokens_atomic.atomic_write(self.path, "\n".join(lines).encode(), mode=0o644)

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
