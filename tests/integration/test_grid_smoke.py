"""The grid-in-a-box is one grid: what one side does, the other side sees."""

from __future__ import annotations

import re
import time

import psutil
import pytest
from traffic import observe

from diracx_bridge.tokens import (
    read_token,
)

pytestmark = pytest.mark.integration

JDL = """[
  Executable = "/bin/echo";
  Arguments = "hello from the grid-in-a-box";
  JobName = "smoke";
  StdOutput = "std.out";
  StdError = "std.err";
  OutputSandbox = {"std.out", "std.err"};
]"""


def test_proxy_init_carries_a_diracx_token_diracx_accepts(gs):
    proxy = gs.proxy("ciuser", "civo_user")
    text = proxy.read_text()
    assert text.count("-----BEGIN DIRACX-----") == 1
    assert "-----BEGIN CERTIFICATE-----" in text
    # DIRAC 9.1.22's own reader understands the block the real dirac-proxy-init wrote.
    token = gs.worker().call("eval", "DIRAC.Core.Security.DiracX:diracxTokenFromPEM", str(proxy))
    assert token["access_token"] == read_token(proxy).access_token
    with gs.diracx() as dx:
        info = dx.get("/api/auth/userinfo").json()
    assert (info["preferred_username"], info["vo"], info["dirac_group"]) == ("ciuser", "civo", "civo_user")


def test_job_submitted_with_dirac_wms_job_submit_is_found_by_diracx(gs, grid, tmp_path):
    jdl = tmp_path / "smoke.jdl"
    jdl.write_text(JDL)
    gs.proxy()
    out = grid.run(["dirac-wms-job-submit", str(jdl)]).stdout
    job_id = int(re.search(r"JobID = (\d+)", out).group(1))
    with gs.diracx() as dx:
        r = dx.post(
            "/api/jobs/search",
            json={
                "parameters": ["JobID", "Owner", "JobName", "Status"],
                "search": [{"parameter": "JobID", "operator": "eq", "value": job_id}],
            },
        )
    assert r.status_code == 200, r.text
    (job,) = r.json()
    assert (job["JobID"], job["Owner"], job["JobName"]) == (job_id, "ciuser", "smoke")
    assert job["Status"] in {"Received", "Checking", "Waiting"}


def test_job_submitted_to_diracx_is_seen_by_legacy_job_monitoring(gs, grid):
    with gs.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL])
    assert r.status_code == 201, r.text
    job_id = r.json()[0]["JobID"]
    with observe(grid) as traffic:
        result = gs.worker().call(
            "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient",
            "getJobsStates",
            [job_id],
            cs={"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": None},  # legacy path
        )
    traffic.assert_legacy("getJobsStates")  # the legacy service read what DiracX wrote
    assert result["OK"], result
    assert result["Value"][job_id]["Status"] in {"Received", "Checking", "Waiting"}


def test_diracx_submitted_job_is_picked_up_by_dirac_optimizers(gs):
    """DiracX 0.7.0 notifies no optimizer; DIRAC's OptimizationMind scan (every 10 s here) does."""
    with gs.diracx() as dx:
        job_id = dx.post("/api/jobs/jdl", json=[JDL]).json()[0]["JobID"]
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            search = {"parameters": ["Status"], "search": [{"parameter": "JobID", "operator": "eq", "value": job_id}]}
            status = dx.post("/api/jobs/search", json=search).json()[0]["Status"]
            if status == "Waiting":
                break
            time.sleep(1)
    assert status == "Waiting"


def test_every_grid_server_listens_on_loopback_only(grid):
    allowed = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    listening = []
    for proc in grid.all_processes():
        root = psutil.Process(proc.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            for conn in p.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((proc.name, conn.laddr.ip, conn.laddr.port))
    assert {name for name, _, _ in listening} >= {"mariadb", "diracx-uvicorn", "dirac-service-WorkloadManagement"}
    assert [entry for entry in listening if entry[1] not in allowed] == []


def test_the_release_route_table_is_what_the_real_server_documents(gs):
    """capabilities.ROUTES (used when a server hides its OpenAPI document) is the real server's own list."""
    from diracx_bridge import capabilities

    with gs.diracx() as dx:
        document = dx.get(capabilities.OPENAPI_PATH).json()
    served = capabilities.from_openapi("grid", document)
    assert served is not None
    missing = sorted(map(str, capabilities.ROUTES - served.routes))
    assert missing == [], f"capabilities.ROUTES lists routes this DiracX does not have: {missing}"
