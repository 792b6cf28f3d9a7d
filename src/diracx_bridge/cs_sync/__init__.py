"""Export the legacy DIRAC CS into DiracX's read-only configuration, with history and nothing lost.

Pipeline: source (file or live CS) -> ``convert.convert`` (diracx's cs-sync rules, plus a report
of everything not carried over) -> validation by DiracX's own ``Config`` model -> one git commit of
``default.yml`` per real change (``sync.sync_once``, ``watch.watch``). The functions are not
re-exported here, so that ``diracx_bridge.cs_sync.convert`` always names the module.
"""

from __future__ import annotations

from diracx_bridge.cs_sync.convert import Conversion
from diracx_bridge.cs_sync.errors import (
    ConsistencyError,
    CSSyncError,
    InvalidCSError,
    Problem,
    RepositoryError,
    SourceError,
    ValidationFailed,
)
from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.report import Kind, Report, ReportEntry
from diracx_bridge.cs_sync.sources import FileSource, LiveSource, Snapshot
from diracx_bridge.cs_sync.sync import SyncResult, sync_once
from diracx_bridge.cs_sync.watch import WatchOutcome

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
    "ValidationFailed",
    "WatchOutcome",
    "sync_once",
]
