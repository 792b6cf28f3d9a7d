"""``diracx-bridge status`` tells an admin which route each service takes for a given proxy, and why.

It only reports: DiracX's access log shows that ``--check`` asks DiracX (one readiness request:
the "answered 200" it prints is DiracX's) and only reads, and that without ``--check`` DiracX is
not contacted.
"""

from __future__ import annotations

import pytest
from traffic import observe

pytestmark = pytest.mark.integration

SWITCHED_ON = """DiracX
{
  FutureClientEnabled
  {
    WorkloadManagement
    {
      JobMonitoring = yes
      JobManager = yes
    }
    ResourceStatus
    {
      ResourceStatus = yes
    }
  }
}
"""


@pytest.fixture
def switched_on(tmp_path) -> dict[str, str]:
    """A per-process CS overlay (DIRAC's DIRACSYSCONFIG): the grid's shared dirac.cfg stays as is."""
    extra = tmp_path / "switches.cfg"
    extra.write_text(SWITCHED_ON)
    return {"DIRACSYSCONFIG": str(extra)}


def test_status_for_a_diracx_vo(gs, grid, switched_on):
    gs.proxy()
    with observe(grid) as traffic:
        out = grid.run(["diracx-bridge", "status", "--check"], env=switched_on).stdout
    ready = [(e.method, e.status) for e in traffic.diracx if e.path == "/api/health/ready"]
    assert ready == [("GET", 200)], traffic.diracx
    assert all(e.method == "GET" for e in traffic.diracx), traffic.diracx  # it reads, never changes
    assert f"/DiracX/URL               : {grid.diracx.url}" in out
    assert "/DiracX/DisabledVOs       : legacyvo" in out
    assert "VO civo" in out
    assert "WorkloadManagement/JobMonitoring         -> DiracX" in out
    assert "WorkloadManagement/JobManager            -> DiracX  (/DiracX/FutureClientEnabled" in out
    assert "no adapter" in out  # ResourceStatus's
    assert "not served by DiracX 0.7.0: echo, getInputData, getJobHeartBeatData, getJobJDL" in out
    assert "answered 200" in out
    # The server's own OpenAPI document says it has every route the adapters use.
    assert "DiracX routes: " in out and "from its OpenAPI document" in out
    assert "is not served: the server has no" not in out
    # Every hook is in place or waits for its DIRAC module; none failed.
    assert "DIRAC.FrameworkSystem.scripts.dirac_proxy_init.addTokenToPEM: replaced when DIRAC loads" in out
    assert "failed" not in out


def test_status_for_a_disabled_vo(gs, grid, switched_on):
    gs.proxy("legacyuser", "legacyvo_user")
    with observe(grid) as traffic:
        out = grid.run(["diracx-bridge", "status"], user="legacyuser", group="legacyvo_user", env=switched_on).stdout
    assert traffic.diracx == []
    assert "WorkloadManagement/JobMonitoring         -> legacy  (VO legacyvo is in /DiracX/DisabledVOs" in out


def test_status_check_reports_an_unreachable_diracx(gs, grid, tmp_path):
    down = tmp_path / "down.cfg"
    down.write_text("DiracX\n{\n  URL = http://127.0.0.1:9\n}\n")
    res = grid.run(["diracx-bridge", "status", "--check"], env={"DIRACSYSCONFIG": str(down)}, check=False)
    assert res.returncode == 1
    assert "http://127.0.0.1:9 unreachable" in res.stdout


def test_status_shows_shadow_mode_and_whether_it_applies_to_the_caller(gs, grid, tmp_path):
    shadow = tmp_path / "shadow.cfg"
    shadow.write_text(
        "DiracX\n{\n  Bridge\n  {\n    WorkloadManagement\n    {\n      JobMonitoring\n      {\n"
        "        Shadow = 0.01\n      }\n    }\n  }\n}\n"
    )
    gs.proxy()
    out = grid.run(["diracx-bridge", "status"], env={"DIRACSYSCONFIG": str(shadow)}).stdout
    line = next(line for line in out.splitlines() if "WorkloadManagement/JobMonitoring " in line)
    assert "-> legacy" in line and "shadow 1.00% (this caller is)" in line, out
    gs.proxy("legacyuser", "legacyvo_user")
    out = grid.run(
        ["diracx-bridge", "status"], user="legacyuser", group="legacyvo_user", env={"DIRACSYSCONFIG": str(shadow)}
    ).stdout
    assert "shadow 1.00% (not this caller)" in out, out  # a disabled VO has no token to shadow with
