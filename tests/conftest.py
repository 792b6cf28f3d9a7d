"""Shared pytest hooks: when a test that used the grid fails, its report carries the grid's logs."""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        grid = getattr(item, "funcargs", {}).get("grid")
        if grid is not None:
            report.sections.append(("grid-in-a-box logs (tails)", grid.log_report()))
