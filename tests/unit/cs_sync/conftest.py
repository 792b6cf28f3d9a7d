"""Fixtures for the cs-sync tests: a realistic legacy CS, diracx's own conversion, repositories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cs_sync_helpers import minimal, realistic
from diraccfg import CFG

from diracx_bridge.cs_sync.export import ConfigRepository


@pytest.fixture
def realistic_cfg() -> CFG:
    return realistic()


@pytest.fixture
def minimal_cfg() -> CFG:
    return minimal()


@pytest.fixture
def diracx_cs_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[CFG], dict[str, Any]]:
    """Run diracx 0.7.0's real conversion (the function behind ``dirac internal legacy cs-sync``).

    It reads a file, so the CFG is serialised first; diraccfg normalises lists on the way
    (``a, ,b`` is written as ``a`` and ``+= b``), so compare with the bridge on
    ``reparsed(cfg)``, the CS diracx actually read.
    """
    from diracx.cli.internal.legacy import cs_sync

    counter = iter(range(1000))

    def run(cfg: CFG) -> dict[str, Any]:
        n = next(counter)
        source, target = tmp_path / f"diracx-in-{n}.cfg", tmp_path / f"diracx-out-{n}.yaml"
        source.write_text(str(cfg))
        with monkeypatch.context() as m:
            m.setenv("DIRAC_COMPAT_ENABLE_CS_CONVERSION", "1")
            cs_sync(source, target)
        return yaml.safe_load(target.read_text())

    return run


@pytest.fixture
def repository(tmp_path: Path) -> ConfigRepository:
    return ConfigRepository(tmp_path / "config-repo")
