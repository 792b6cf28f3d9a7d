"""Pytest plugin: a failed test that used servers of the grid-in-a-box carries their logs.

A grid-backed failure is rarely explained by the assertion alone; the answer is in a server's
log. Two kinds of tests use servers:

* those whose fixture closure includes the session's grid (``grid_session``, directly or through
  ``grid``, ``gs``, ``worker``, ``jobs``...): the integration conftest stores the grid on
  ``config.stash[GRID]`` before starting it, so even a failed start is reported with the logs;
* those that start servers of their own (a DiracX on an exported config, a broken server on
  purpose): they register what they start with :func:`register_logs` on their node (a
  module-scoped fixture on its module, a test through the ``report_logs`` fixture).

A log source is anything with a ``log_report() -> str`` method (``Grid``), or a directory, whose
``*.log`` files are shown (their tails).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from diracx_bridge.testing.processes import log_tails

GRID_FIXTURE = "grid_session"
GRID_SECTION = "grid-in-a-box logs (tails)"


class Reports(Protocol):
    def log_report(self) -> str: ...


LogSource = Reports | Path
S = TypeVar("S", bound=LogSource)

#: The started grid of this session (set by the integration conftest's ``grid_session``).
GRID = pytest.StashKey[Reports]()
#: Log sources registered on a node (an item, a module...); they apply to every test below it.
SOURCES = pytest.StashKey[list[LogSource]]()


def register_logs(node: pytest.Item | pytest.Collector, source: S) -> S:
    """Show ``source``'s logs when a test at or below ``node`` fails; returns ``source``."""
    node.stash.setdefault(SOURCES, []).append(source)
    return source


def _report(source: LogSource) -> str:
    if isinstance(source, Path):
        return log_tails(source)
    return source.log_report()


def log_sections(item: pytest.Item, report: pytest.TestReport) -> list[tuple[str, str]]:
    """The report sections a failed ``report`` of ``item`` gets: one per log source it used."""
    if not report.failed:
        return []
    sections = []
    grid = item.config.stash.get(GRID, None)
    if grid is not None and GRID_FIXTURE in getattr(item, "fixturenames", ()):
        sections.append((GRID_SECTION, _report(grid)))
    sources: Iterable[LogSource] = (s for node in item.listchain() for s in node.stash.get(SOURCES, []))
    for source in dict.fromkeys(sources, None):  # once each, in registration order
        title = f"logs in {source}" if isinstance(source, Path) else f"logs of {source!r}"
        sections.append((f"{title} (tails)", _report(source)))
    return sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    for section in log_sections(item, report):
        report.sections.append(section)


@pytest.fixture
def report_logs(request: pytest.FixtureRequest) -> Callable[[S], S]:
    """``report_logs(source)``: show ``source``'s logs if this test fails (returns ``source``)."""

    def register(source: S) -> S:
        return register_logs(request.node, source)

    return register
