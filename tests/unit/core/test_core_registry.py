"""adapters/_registry.py: the bridge's adapters are found by module, an extension's by entry point."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from diracx_bridge.adapters import ENTRY_POINT_GROUP, Adapter, adapter_for, registry
from diracx_bridge.adapters._registry import forget
from diracx_bridge.adapters.job_monitoring import JobMonitoringAdapter

EXTENSION = """
from typing import Any, ClassVar

from diracx_bridge.adapters import Adapter, adapted


class MyServiceAdapter(Adapter):
    SERVICE = "MyExt/MyService"
    TYPES: ClassVar[dict[str, list[Any]]] = {"hello": [str]}

    @adapted
    def hello(self, name: str) -> str:
        return f"hello {name}"


class BetterJobMonitoring(Adapter):
    SERVICE = "WorkloadManagement/JobMonitoring"
"""


def install_extension(root: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str, module: str = EXTENSION) -> None:
    """A DIRAC extension installed into sys.path: a module and a dist-info with entry points."""
    (root / "myext_bridge.py").write_text(module)
    dist = root / "myext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{textwrap.dedent(entry_points)}")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "myext_bridge", raising=False)  # each test its own extension
    forget()


@pytest.fixture(autouse=True)
def _fresh_registry() -> None:
    forget()
    yield
    forget()


def test_the_bridges_adapters_are_found_by_their_service() -> None:
    assert adapter_for("WorkloadManagement/JobMonitoring") is JobMonitoringAdapter
    assert adapter_for("WorkloadManagement/NoSuchService") is None
    assert registry().origins["WorkloadManagement/JobMonitoring"] == "module diracx_bridge.adapters.job_monitoring"
    assert registry().problems == []


def test_every_adapter_names_a_service_and_its_legacy_surface() -> None:
    for service, cls in registry().adapters.items():
        assert service == cls.SERVICE and service.count("/") == 1
        assert issubclass(cls, Adapter)
        assert set(cls.served()) - {"ping"} <= set(cls.TYPES), f"{cls.__name__} serves methods legacy does not have"


def test_an_extension_ships_an_adapter_for_its_own_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_extension(tmp_path, monkeypatch, "mine = myext_bridge:MyServiceAdapter\n")
    cls = adapter_for("MyExt/MyService")
    assert cls is not None and cls.__name__ == "MyServiceAdapter"
    assert registry().origins["MyExt/MyService"] == "entry point mine = myext_bridge:MyServiceAdapter"
    assert adapter_for("WorkloadManagement/JobMonitoring") is JobMonitoringAdapter  # untouched


def test_an_extension_module_entry_point_registers_all_its_adapters_and_overrides_the_bridges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_extension(tmp_path, monkeypatch, "mine = myext_bridge\n")
    assert adapter_for("MyExt/MyService").__name__ == "MyServiceAdapter"  # type: ignore[union-attr]
    assert adapter_for("WorkloadManagement/JobMonitoring").__name__ == "BetterJobMonitoring"  # type: ignore[union-attr]


def test_a_broken_extension_never_breaks_the_bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_extension(
        tmp_path,
        monkeypatch,
        "broken = myext_bridge:Missing\nnotanadapter = myext_bridge:textwrap\n",
        module="import textwrap\n",
    )
    assert adapter_for("WorkloadManagement/JobMonitoring") is JobMonitoringAdapter
    problems = registry().problems
    assert any("broken = myext_bridge:Missing failed to load" in p for p in problems), problems
    assert any("notanadapter" in p and "neither an Adapter subclass" in p for p in problems), problems


def test_two_extensions_for_one_service_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_extension(tmp_path, monkeypatch, "a = myext_bridge:MyServiceAdapter\nb = myext_bridge\n")
    assert adapter_for("MyExt/MyService").__name__ == "MyServiceAdapter"  # type: ignore[union-attr]
    assert any("MyExt/MyService is adapted by both" in p for p in registry().problems)
