"""Fixtures around the grid-in-a-box: one real grid per test session.

The grid is started by the first test that needs it and stopped at the end of the session;
if it cannot start, every test that needs it fails with the culprit's name and log (never a
skip). Proxies and DIRAC client workers are made on demand and cached for the session. Every
failed test that used the grid, through any fixture, carries the tails of its logs (grid_logs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from diracx_bridge.testing.dirac_worker import DiracWorker
from diracx_bridge.testing.grid import Grid
from diracx_bridge.tokens import read_token
from grid_logs import GRID

pytestmark = pytest.mark.integration


class GridSession:
    """The grid plus the per-session caches the tests share."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._proxies: dict[tuple[str, str], Path] = {}
        self._workers: dict[tuple[str, str], DiracWorker] = {}

    def proxy(self, user: str = "ciuser", group: str = "civo_user") -> Path:
        key = (user, group)
        if key not in self._proxies or not self._proxies[key].exists():
            self._proxies[key] = self.grid.proxy_init(user, group)
        return self._proxies[key]

    def worker(self, user: str = "ciuser", group: str = "civo_user") -> DiracWorker:
        key = (user, group)
        if key not in self._workers or self._workers[key].proc.poll() is not None:
            self.proxy(user, group)
            self._workers[key] = self.grid.worker(user, group)
        return self._workers[key]

    def token(self, user: str = "ciuser", group: str = "civo_user") -> str:
        return read_token(self.proxy(user, group)).access_token

    def diracx(self, user: str = "ciuser", group: str = "civo_user") -> httpx.Client:
        """A plain httpx client on DiracX, authenticated with the user's proxy token."""
        assert self.grid.diracx is not None
        return httpx.Client(
            base_url=self.grid.diracx.url,
            headers={"Authorization": f"Bearer {self.token(user, group)}"},
            timeout=30,
        )

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()


@pytest.fixture(scope="session")
def grid_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridSession]:
    grid = Grid(tmp_path_factory.mktemp("grid"))
    request.config.stash[GRID] = grid  # before starting: a grid that fails to start shows its logs too
    grid.start()
    session = GridSession(grid)
    pids = [p.proc.pid for p in grid.all_processes() if p.proc]
    yield session
    session.close()
    grid.stop()
    survivors = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not survivors, f"grid processes outlived the session: {survivors}"


@pytest.fixture
def grid(grid_session: GridSession) -> Grid:
    grid_session.grid.check_alive()
    return grid_session.grid


@pytest.fixture
def gs(grid_session: GridSession, grid: Grid) -> GridSession:
    """The grid session, checked alive (through ``grid``)."""
    return grid_session


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine kind's CA bundle variables must not leak into what tests start."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if var in os.environ:
            monkeypatch.delenv(var)
