"""A real DiracX 0.7.0 server serves what cs-sync exported, and picks up the next export.

The server is started here, on the exported repository (``git+file://``); if it cannot start, the
test fails with the server's log path (``GridError``), it is never skipped. Any failure of this
module shows the tails of that server's logs (registered with ``register_logs``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from diraccfg import CFG

from diracx_bridge.cs_sync.export import ConfigRepository
from diracx_bridge.cs_sync.sources import FileSource
from diracx_bridge.cs_sync.sync import SyncResult, sync_once
from diracx_bridge.testing.diracx_server import DiracXServer
from diracx_bridge.testing.processes import GridError
from grid_logs import register_logs

pytestmark = pytest.mark.integration

REALISTIC = Path(__file__).parents[1] / "unit" / "cs_sync" / "data" / "realistic.cfg"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cs-sync-diracx")


@pytest.fixture(scope="module")
def exported(workdir: Path) -> tuple[Path, SyncResult]:
    cs_file = workdir / "CS.cfg"
    cs_file.write_text(REALISTIC.read_text())
    repo = workdir / "config"
    snapshot = FileSource(cs_file).fetch()
    assert snapshot is not None
    result = sync_once(snapshot, ConfigRepository(repo))
    assert result.commit is not None
    return cs_file, result


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, workdir: Path, exported: tuple[Path, SyncResult]) -> Iterator[DiracXServer]:
    diracx = DiracXServer(workdir=workdir / "diracx", config_repo=workdir / "config")
    register_logs(request.node, diracx.logs)  # the module: every test here uses this server
    try:
        diracx.start()
        yield diracx
    finally:
        diracx.stop()


def _served_config(server: DiracXServer, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/config/", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _token(server: DiracXServer, user: str, vo: str, group: str, properties: list[str]) -> str:
    return str(server.legacy_exchange(user, vo, group, properties)["access_token"])


def test_diracx_serves_the_exported_registry(server: DiracXServer, exported: tuple[Path, SyncResult]) -> None:
    _, result = exported
    token = _token(server, "alice", "biomed", "biomed_user", ["NormalUser"])
    response = _served_config(server, token)
    assert response.status_code == 200, response.text
    assert response.headers["etag"].strip('"') == result.commit
    served: dict[str, Any] = response.json()
    ours = result.conversion.config

    assert sorted(served["Registry"]) == ["biomed", "compass", "ilc"]
    for vo, exported_vo in ours["Registry"].items():
        served_vo = served["Registry"][vo]
        assert served_vo["DefaultGroup"] == exported_vo["DefaultGroup"]
        assert served_vo["IdP"] == exported_vo["IdP"]
        assert set(served_vo["Users"]) == set(exported_vo["Users"]), vo
        for subject, user in exported_vo["Users"].items():
            assert served_vo["Users"][subject]["PreferedUsername"] == user["PreferedUsername"]
            assert served_vo["Users"][subject]["DNs"] == user["DNs"]
        assert set(served_vo["Groups"]) == set(exported_vo["Groups"]), vo
        for name, group in exported_vo["Groups"].items():
            assert sorted(served_vo["Groups"][name]["Users"]) == group["Users"]
            assert sorted(served_vo["Groups"][name]["Properties"]) == group["Properties"]


def test_diracx_serves_operations_merged_and_platforms_intact(server: DiracXServer) -> None:
    token = _token(server, "carol", "ilc", "ilc_prod", ["NormalUser", "ProductionManagement"])
    served = _served_config(server, token).json()
    # the server merges Operations/Defaults into each VO; the export keeps Defaults for humans
    assert served["Operations"]["biomed"]["JobDescription"]["MaxCPUTime"] == 200000
    assert served["Operations"]["ilc"]["JobDescription"]["MaxCPUTime"] == 1000000
    platforms = served["Resources"]["Computing"]["OSCompatibility"]
    assert sorted(platforms["x86_64-el9"]) == ["x86_64-centos7", "x86_64-el9"]


def test_a_reported_user_is_really_unknown_to_diracx(server: DiracXServer, exported: tuple[Path, SyncResult]) -> None:
    _, result = exported
    assert "/Registry/Users/dave" in result.conversion.report.paths()
    with pytest.raises(GridError, match="400"):
        server.legacy_exchange("dave", "compass", "compass_prod", [])


def test_diracx_picks_up_the_next_export(server: DiracXServer, exported: tuple[Path, SyncResult]) -> None:
    cs_file, first = exported
    cfg = CFG().loadFromFile(str(cs_file))
    cfg.setOption("DiracX/CsSync/VOs/compass/UserSubjects/dave", "c0-dave")
    assert cfg.getOption("DiracX/CsSync/VOs/compass/UserSubjects/dave") == "c0-dave"
    cs_file.write_text(str(cfg))
    snapshot = FileSource(cs_file).fetch(first.snapshot.version)
    assert snapshot is not None
    second = sync_once(snapshot, ConfigRepository(server.config_repo))
    assert second.commit is not None
    assert second.summary.subject() == "cs-sync: +1 user; ~1 group"

    deadline = time.monotonic() + 90
    while True:
        try:
            token = _token(server, "dave", "compass", "compass_prod", [])
            break
        except GridError:
            assert time.monotonic() < deadline, "DiracX did not pick up the new commit within 90 s"
            time.sleep(1)
    served = _served_config(server, token)
    assert served.headers["etag"].strip('"') == second.commit
    assert served.json()["Registry"]["compass"]["Users"]["c0-dave"]["PreferedUsername"] == "dave"
