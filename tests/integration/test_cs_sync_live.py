"""cs-sync against the grid's real DIRAC Configuration Server, into the config the running DiracX serves.

The grid-in-a-box runs DIRAC's master Configuration Server, which DIRAC's services read their CS
from. Here ``diracx-bridge cs-sync --live`` reads it as ciuser (``civo_user`` proxy) from a client
configured as on a production machine (its ``dirac.cfg`` names the server); changes are committed
to it with DIRAC's own tools as ciuser with ``civo_admin`` (CSAdministrator): the real
``dirac-admin-add-user`` / ``dirac-admin-delete-user`` and DIRAC's ``CSAPI`` (what
VOMS2CSSynchronizer uses for user subjects). ``--watch`` writes into the config repository of the
grid's running DiracX, which then serves the new registry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from diracx_bridge.cs_sync.cfg_parser import parse
from diracx_bridge.cs_sync.state import SOURCE_TRAILER, read_trailers
from diracx_bridge.testing.grid import Grid
from diracx_bridge.testing.processes import GridError

pytestmark = pytest.mark.integration

NEW_USER = "csliveuser"
NEW_DN = f"/O=DIRAC CI/OU=DIRAC CI/CN={NEW_USER}"
NEW_SUBJECT = "csliveuser-subject-0099"
SUBJECT_PATH = f"/DiracX/CsSync/VOs/civo/UserSubjects/{NEW_USER}"
#: The watch's poll interval: short, so the test is short; nothing below waits for it by the clock.
INTERVAL = 2
BIN = Path(sys.executable).parent


def admin(grid: Grid, *argv: str, answer: str | None = None) -> str:
    """Run a DIRAC command as ciuser/civo_admin (CSAdministrator), answering its question if it asks one."""
    command = [str(BIN / argv[0]), *argv[1:]] if not argv[0].startswith("/") else list(argv)
    result = subprocess.run(
        command,
        env=grid.cs_client_environment("ciuser", "civo_admin"),
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=grid.workdir,
    )
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout


def cs_version(grid: Grid) -> str:
    """The version the master Configuration Server serves (it writes its file before answering a commit)."""
    return str(parse(grid.cs_path.read_text()).tree["DIRAC"]["Configuration"]["Version"])


def commit_with_csapi(grid: Grid, *changes: str) -> None:
    """Commit option changes (``"set PATH VALUE"`` or ``"del PATH"``) through DIRAC's CSAPI, as ciuser/civo_admin."""
    lines = ["import DIRAC", "DIRAC.initialize()", "from DIRAC.ConfigurationSystem.Client.CSAPI import CSAPI"]
    lines.append("api = CSAPI()")
    for change in changes:
        verb, path, *value = change.split(" ", 2)
        call = f"api.setOption({path!r}, {value[0]!r})" if verb == "set" else f"api.delOption({path!r})"
        lines.append(f"r = {call}; assert r['OK'], r")
    lines.append("r = api.commit(); assert r['OK'], r")
    admin(grid, sys.executable, "-c", "\n".join(lines))


class Watch:
    """``diracx-bridge cs-sync --live --watch`` as a daemon, its output read as it comes."""

    def __init__(self, grid: Grid, repo: Path) -> None:
        argv = [str(BIN / "diracx-bridge"), "cs-sync", "--live", "--watch", "--interval", str(INTERVAL), str(repo)]
        self.proc = subprocess.Popen(
            argv,
            env=grid.cs_client_environment("ciuser", "civo_user"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=grid.workdir,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self.changed:
                lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
        """Until ``condition()`` holds (checked at each line the watch writes, and at least every few seconds)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                assert self.proc.poll() is None, f"the watch exited ({self.proc.returncode}) before {what}:\n{self}"
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {what} within {timeout:.0f} s:\n{self}"
                self.changed.wait(min(remaining, 2))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)  # a bound for a hang: SIGTERM ends the loop after its poll
        finally:
            for reader in self.readers:
                reader.join(timeout=10)

    def __str__(self) -> str:
        return f"--- stdout ---\n{''.join(self.out)}--- stderr ---\n{''.join(self.err)}"


@pytest.fixture
def config_repo(grid: Grid) -> Path:
    assert grid.diracx is not None
    return grid.diracx.config_repo


@pytest.fixture
def watching(gs, grid: Grid, config_repo: Path) -> Iterator[Watch]:
    """A watch on the grid's DiracX config repository, stopped (SIGTERM) at the end."""
    gs.proxy("ciuser", "civo_user")
    gs.proxy("ciuser", "civo_admin")
    watch = Watch(grid, config_repo)
    try:
        # the first poll either finds the repository holds this CS or exports it
        watch.wait_for("first poll", lambda: any("cs-sync: " in line for line in watch.out[1:]))
        yield watch
    finally:
        code = watch.stop()
        assert code == 0, f"the watch exited with {code}:\n{watch}"


def served_user(gs, grid: Grid) -> tuple[str, dict]:
    """(the commit DiracX serves, the csliveuser entry of civo it serves, if any)."""
    with gs.diracx("ciuser", "civo_user") as dx:
        response = dx.get("/api/config/")
    assert response.status_code == 200, response.text
    users = response.json()["Registry"]["civo"]["Users"]
    return response.headers["etag"].strip('"'), users.get(NEW_SUBJECT, {})


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(1)  # polling a server's state: there is no event to wait on


def test_live_reads_the_configuration_server(gs, grid: Grid, tmp_path: Path) -> None:
    gs.proxy("ciuser", "civo_user")
    repo = tmp_path / "config"
    production = {"DIRAC_ROOT_PATH": str(grid.server_root)}  # a dirac.cfg that names the Configuration Server
    first = grid.run(["diracx-bridge", "cs-sync", "--live", str(repo)], env=production)
    version = cs_version(grid)
    assert f"Configuration Server, CS version {version}" in first.stdout
    assert "Committed " in first.stdout
    message = git(repo, "log", "-1", "--format=%B")
    assert read_trailers(message)[SOURCE_TRAILER] == f"cs-version:{version}"
    default = git(repo, "show", "master:default.yml")
    assert "ciuser-subject-0001" in default and "PreferedUsername: ciuser" in default
    # The CS the Configuration Server serves is the one the grid's services run on: its Systems section.
    assert "Port: " in default and "JobMonitoring" in default

    again = grid.run(["diracx-bridge", "cs-sync", "--live", str(repo)], env=production)
    assert "No change: master" in again.stdout
    assert f"(cs-version:{version})" in again.stdout
    assert git(repo, "rev-list", "--count", "master").strip() == "1"


def test_a_change_committed_through_dirac_reaches_the_running_diracx(gs, grid: Grid, config_repo, watching):
    assert grid.diracx is not None
    with pytest.raises(GridError, match="400"):
        grid.diracx.legacy_exchange(NEW_USER, "civo", "civo_user", ["NormalUser"])
    head = git(config_repo, "rev-parse", "master").strip()
    try:
        # as VOMS2CSSynchronizer does for an IAM VO: the subject, then the user (dirac-admin-add-user)
        commit_with_csapi(grid, f"set {SUBJECT_PATH} {NEW_SUBJECT}")
        admin(
            grid,
            "dirac-admin-add-user",
            "-N",
            NEW_USER,
            "-D",
            NEW_DN,
            "-M",
            f"{NEW_USER}@example.org",
            "-G",
            "civo_user",
        )
        version = cs_version(grid)
        watching.wait_for("the export", lambda: any(f"CS version {version}" in line for line in watching.out))
        exported = git(config_repo, "log", "-1", "--format=%H%n%s%n%B").split("\n", 2)
        assert exported[0] != head
        assert exported[1] == "cs-sync: +1 user; ~1 group"
        assert read_trailers(exported[2])[SOURCE_TRAILER] == f"cs-version:{version}"
        # Within one interval: the watch receives a CS only when its version is newer than the one it
        # exported last, so the first poll after the commit got it; none of them failed.
        assert watching.err == [], str(watching)
        assert git(config_repo, "status", "--porcelain") == ""

        wait_until("DiracX serving the export", lambda: served_user(gs, grid)[0] == exported[0])
        assert served_user(gs, grid)[1]["PreferedUsername"] == NEW_USER
        token = grid.diracx.legacy_exchange(NEW_USER, "civo", "civo_user", ["NormalUser"])
        assert token["access_token"]
    finally:
        admin(grid, "dirac-admin-delete-user", NEW_USER, answer="yes\n")
        commit_with_csapi(grid, f"del {SUBJECT_PATH}")
    version = cs_version(grid)
    watching.wait_for("the removal", lambda: any(f"CS version {version}" in line for line in watching.out))
    assert git(config_repo, "log", "-1", "--format=%s").strip() == "cs-sync: -1 user; ~1 group"


def test_a_stopped_configuration_server_is_retried_and_nothing_is_committed(grid: Grid, config_repo, watching):
    head = git(config_repo, "rev-parse", "master")
    grid.stop_configuration_server()
    try:
        watching.wait_for("two failed polls", lambda: sum("Retrying in" in line for line in watching.err) >= 2)
    finally:
        grid.start_configuration_server()
    errors = "".join(watching.err)
    assert "cs-sync: error: the Configuration Server did not send the CS (" in errors
    assert grid.cs_url in errors  # the server it could not reach, by URL
    assert f"Retrying in {INTERVAL} s." in errors
    assert git(config_repo, "rev-parse", "master") == head  # nothing committed, nothing half-written
    assert git(config_repo, "status", "--porcelain") == ""
    # back: the next change is exported
    try:
        commit_with_csapi(grid, f"set {SUBJECT_PATH} {NEW_SUBJECT}")
        version = cs_version(grid)
        watching.wait_for(
            "the export after the outage", lambda: any(f"CS version {version}" in line for line in watching.out)
        )
    finally:
        commit_with_csapi(grid, f"del {SUBJECT_PATH}")
    assert git(config_repo, "rev-parse", "master") == head  # a subject without a user changes no registry
    assert httpx.get(f"{grid.diracx.url}/api/health/ready", timeout=10).status_code == 200  # type: ignore[union-attr]
