"""The report hook of grid_logs: which failed tests carry which servers' logs.

Proving it on a real failing grid-backed test would start a second grid; the hook's logic is
checked here on fake items and reports, and its wiring in a small pytest run (``pytester``)
whose "grid" is a stand-in object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grid_logs import GRID, GRID_SECTION, log_sections, register_logs


class FakeGrid:
    def log_report(self) -> str:
        return "----- mariadb.log -----\nthe culprit"


@dataclass
class FakeNode:
    stash: pytest.Stash = field(default_factory=pytest.Stash)


@dataclass
class FakeConfig:
    stash: pytest.Stash = field(default_factory=pytest.Stash)


@dataclass
class FakeItem:
    fixturenames: list[str]
    config: FakeConfig = field(default_factory=FakeConfig)
    stash: pytest.Stash = field(default_factory=pytest.Stash)
    parents: list[FakeNode] = field(default_factory=list)

    def listchain(self) -> list:
        return [*self.parents, self]


@dataclass
class FakeReport:
    failed: bool


def started_grid(item: FakeItem) -> FakeGrid:
    grid = FakeGrid()
    item.config.stash[GRID] = grid
    return grid


@pytest.mark.parametrize("fixtures", [["grid_session"], ["worker", "jobs", "grid_session", "tmp_path"]])
def test_a_failed_test_that_used_the_grid_through_any_fixture_gets_its_logs(fixtures) -> None:
    item = FakeItem(fixtures)
    started_grid(item)
    assert log_sections(item, FakeReport(failed=True)) == [(GRID_SECTION, FakeGrid().log_report())]


def test_a_passed_test_gets_nothing() -> None:
    item = FakeItem(["grid_session"])
    started_grid(item)
    register_logs(item, FakeGrid())
    assert log_sections(item, FakeReport(failed=False)) == []


def test_a_test_that_did_not_use_the_grid_gets_nothing_of_it() -> None:
    item = FakeItem(["tmp_path"])
    started_grid(item)
    assert log_sections(item, FakeReport(failed=True)) == []


def test_no_grid_started_yet_is_no_error() -> None:
    assert log_sections(FakeItem(["grid_session"]), FakeReport(failed=True)) == []


def test_servers_a_module_or_a_test_started_are_shown_once_each(tmp_path: Path) -> None:
    (tmp_path / "diracx-uvicorn.log").write_text("line 1\nTraceback: it broke\n")
    (tmp_path / "notes.txt").write_text("not a log")
    module = FakeNode()
    item = FakeItem(["server"], parents=[module])
    register_logs(module, tmp_path)  # a module-scoped server fixture
    register_logs(item, tmp_path)  # ... and the test registering the same directory again
    own = register_logs(item, FakeGrid())
    sections = log_sections(item, FakeReport(failed=True))
    assert [title for title, _ in sections] == [f"logs in {tmp_path} (tails)", f"logs of {own!r} (tails)"]
    assert "Traceback: it broke" in sections[0][1] and "not a log" not in sections[0][1]
    assert sections[1][1] == own.log_report()


def test_a_directory_without_logs_says_so(tmp_path: Path) -> None:
    item = FakeItem([])
    register_logs(item, tmp_path)
    assert log_sections(item, FakeReport(failed=True)) == [(f"logs in {tmp_path} (tails)", f"(no log in {tmp_path})")]


def test_the_hook_attaches_the_logs_in_a_real_pytest_run(pytester: pytest.Pytester) -> None:
    """Setup, call and teardown failures of a test using the (stand-in) grid all carry its logs."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        """
        import pytest
        from grid_logs import GRID

        pytest_plugins = ["grid_logs"]

        class StandIn:
            def log_report(self):
                return "STAND-IN GRID LOG TAIL"

        @pytest.fixture(scope="session")
        def grid_session(request):
            request.config.stash[GRID] = StandIn()
            return "session"

        @pytest.fixture(scope="module")
        def worker(grid_session):
            return "worker"

        @pytest.fixture
        def broken_teardown(grid_session):
            yield
            raise RuntimeError("teardown broke")
        """
    )
    pytester.makepyfile(
        """
        def test_fails_through_a_module_fixture(worker):
            assert worker == "another worker"

        def test_fails_in_teardown(broken_teardown):
            pass

        def test_fails_without_the_grid():
            assert False

        def test_passes(worker):
            pass

        def test_own_server_fails(tmp_path, report_logs):
            (tmp_path / "server.log").write_text("OWN SERVER LOG TAIL")
            report_logs(tmp_path)
            assert False
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3, errors=1)
    lines = result.stdout.lines
    assert sum(f" {GRID_SECTION} " in line for line in lines) == 2  # the module-fixture failure, the teardown
    assert lines.count("STAND-IN GRID LOG TAIL") == 2
    assert lines.count("OWN SERVER LOG TAIL") == 1  # the log's line, not the test's source
