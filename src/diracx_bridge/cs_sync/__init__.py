"""Export the legacy DIRAC CS into DiracX's read-only configuration, with history and nothing lost.

Pipeline: source (file or live CS) -> ``convert.convert`` (diracx's cs-sync rules, plus a report
of everything not carried over) -> validation by DiracX's own ``Config`` model -> one git commit of
``default.yml`` per real change (``sync.sync_once``, ``watch.watch``). The functions are not
re-exported here, so that ``diracx_bridge.cs_sync.convert`` always names the module.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names -> the module defining them, imported on first use: a run that finds the CS
#: unchanged never imports the conversion (pydantic, DiracX's models).
_EXPORTS = {
    "Conversion": "convert",
    "CSSyncError": "errors",
    "ConsistencyError": "errors",
    "InvalidCSError": "errors",
    "Problem": "errors",
    "RepositoryError": "errors",
    "SourceError": "errors",
    "ValidationFailed": "errors",
    "ConfigRepository": "export",
    "Kind": "report",
    "Report": "report",
    "ReportEntry": "report",
    "FileSource": "sources",
    "LiveSource": "sources",
    "Snapshot": "sources",
    "SyncResult": "sync",
    "Unchanged": "sync",
    "sync_once": "sync",
    "WatchOutcome": "watch",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "CSSyncError",
    "ConfigRepository",
    "ConsistencyError",
    "Conversion",
    "FileSource",
    "InvalidCSError",
    "Kind",
    "LiveSource",
    "Problem",
    "Report",
    "ReportEntry",
    "RepositoryError",
    "Snapshot",
    "SourceError",
    "SyncResult",
    "Unchanged",
    "ValidationFailed",
    "WatchOutcome",
    "sync_once",
]
