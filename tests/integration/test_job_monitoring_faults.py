"""What a user sees when something is wrong, against the real DiracX server and legacy services.

Every fault gives the documented ``S_ERROR`` (DErrno code and a message saying what to do), never
an exception, and never a token in the text; routing faults (disabled VO, explicit URL, a
service without adapter) never send the user to DiracX without a way to succeed.
"""

from __future__ import annotations

import errno
import re
import shutil
import time
from pathlib import Path

import jwt
import pytest
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge.tokens import (
    DiracxToken,
    read_token,
    remove_token,
    write_token,
)

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
JOBMAN = "DIRAC.WorkloadManagementSystem.Client.JobManagerClient.JobManagerClient"
CLIENT = "DIRAC.Core.Base.Client.Client"
ON = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": "yes"}


def diracx_searches(grid) -> int:
    log = next(p for p in grid.diracx.processes if p.name == "diracx-uvicorn").log_path
    return len(re.findall(r'"POST /api/jobs/search', log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def job_id(grid_session) -> int:
    with grid_session.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=['[ Executable = "/bin/true"; JobName = "faults"; ]'])
        assert r.status_code == 201, r.text
        return r.json()[0]["JobID"]


@pytest.fixture
def proxy_copy(gs, tmp_path) -> Path:
    """A private copy of ciuser's proxy that a test may damage."""
    copy = tmp_path / "proxy.pem"
    shutil.copy(gs.proxy(), copy)
    copy.chmod(0o600)
    return copy


def x509_part(path: Path) -> str:
    return path.read_text().split("-----BEGIN DIRACX-----")[0]


def call_with(gs, proxy: Path, method: str, *args):
    return gs.worker().call(JM, method, *args, client_kwargs={"proxyLocation": str(proxy)}, cs=ON)


def assert_no_secret(result: dict, *tokens: str) -> None:
    text = repr(result)
    for token in tokens:
        assert token not in text
    assert "eyJ" not in result.get("Message", "")


def test_diracx_stopped(gs, grid, job_id):
    grid.diracx.stop_api()
    try:
        adapted = gs.worker().call(JM, "getJobsStates", [job_id], cs=ON)
        legacy = gs.worker().call(JM, "getJobsStates", [job_id])
    finally:
        grid.diracx.start_api()
    assert not adapted["OK"]
    assert adapted["Errno"] == DErrno.ERESUNA
    assert grid.diracx.url in adapted["Message"] and "unreachable" in adapted["Message"]
    assert "/DiracX/URL" in adapted["Message"]
    assert legacy["OK"] and job_id in legacy["Value"]  # the legacy services do not depend on DiracX
    # ... and once DiracX is back, the same (pooled) session works again.
    assert gs.worker().call(JM, "getJobsStates", [job_id], cs=ON)["OK"]


def test_expired_access_token_is_refreshed_and_written_back(gs, proxy_copy, job_id):
    stale = read_token(proxy_copy)
    write_token(proxy_copy, DiracxToken(stale.access_token, stale.refresh_token, int(time.time()) - 60))
    before = x509_part(proxy_copy)
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert result["OK"], result
    fresh = read_token(proxy_copy)
    assert fresh.access_token != stale.access_token
    assert fresh.expires_on > time.time() + 600
    assert x509_part(proxy_copy) == before
    assert proxy_copy.stat().st_mode & 0o777 == 0o600


def test_access_token_refused_by_diracx_is_refreshed_once(gs, proxy_copy, job_id):
    """A token DiracX refuses (401) although unexpired: refresh, retry, succeed."""
    good = read_token(proxy_copy)
    forged = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 3600}, "not-the-key-of-this-diracx-server-0123456789", algorithm="HS256"
    )
    write_token(proxy_copy, DiracxToken(forged, good.refresh_token, int(time.time()) + 3600))
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert result["OK"], result
    assert read_token(proxy_copy).access_token not in (forged, good.access_token)


def test_refresh_token_refused(gs, proxy_copy, job_id):
    good = read_token(proxy_copy)
    claims = {"jti": "x", "exp": int(time.time()) + 3600, "legacy_exchange": True}
    forged_refresh = jwt.encode(claims, "not-the-key-of-this-diracx-server-0123456789", algorithm="HS256")
    write_token(proxy_copy, DiracxToken(good.access_token, forged_refresh, int(time.time()) - 60))
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert not result["OK"]
    assert result["Errno"] == errno.EKEYEXPIRED
    assert "dirac-proxy-init -g civo_user" in result["Message"] and "ciuser" in result["Message"]
    assert_no_secret(result, good.access_token, forged_refresh)


def test_refresh_token_expired(gs, proxy_copy, job_id):
    good = read_token(proxy_copy)
    expired_refresh = jwt.encode({"jti": "x", "exp": int(time.time()) - 10}, "k" * 32, algorithm="HS256")
    write_token(proxy_copy, DiracxToken(good.access_token, expired_refresh, int(time.time()) - 60))
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert not result["OK"] and result["Errno"] == errno.EKEYEXPIRED
    assert "has expired" in result["Message"] and "dirac-proxy-init" in result["Message"]
    assert_no_secret(result, good.access_token, expired_refresh)


def test_proxy_without_diracx_block(gs, proxy_copy, job_id):
    assert remove_token(proxy_copy)
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert not result["OK"] and result["Errno"] == DErrno.EATOKENFIND
    assert str(proxy_copy) in result["Message"] and "dirac-proxy-init" in result["Message"]
    assert "/DiracX/DisabledVOs" in result["Message"]


def test_no_proxy_at_all(gs, tmp_path, job_id):
    result = call_with(gs, tmp_path / "missing.pem", "getJobsStates", [job_id])
    assert not result["OK"] and result["Errno"] == DErrno.EPROXYFIND
    assert "dirac-proxy-init" in result["Message"]


def test_damaged_token_block(gs, proxy_copy, job_id):
    text = proxy_copy.read_text()
    proxy_copy.write_text(
        text.replace("-----END DIRACX-----", "-----END DIRACX-----\n-----BEGIN DIRACX-----\nAAAA\n-----END DIRACX-----")
    )
    result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert not result["OK"] and result["Errno"] == DErrno.EATOKENREAD
    assert str(proxy_copy) in result["Message"]


def test_caller_lacking_the_property(gs, job_id):
    """A GenericPilot-only identity may not search jobs: the message says who lacks what."""
    worker = gs.worker("ciuser", "civo_pilot")
    result = worker.call(JM, "getJobsStates", [job_id], cs=ON)
    assert not result["OK"] and result["Errno"] == errno.EPERM
    message = result["Message"]
    assert "ciuser" in message and "civo_pilot" in message and "GenericPilot" in message
    assert "NormalUser" in message and "JobAdministrator" in message


def test_disabled_vo_stays_on_legacy(gs, grid, job_id):
    """DIRAC 9.1 sends a DisabledVO user to DiracX without a token; the bridge routes by VO."""
    worker = gs.worker("legacyuser", "legacyvo_user")
    before = diracx_searches(grid)
    result = worker.call(JM, "getJobsStates", [job_id], cs=ON)
    assert result["OK"] and job_id in result["Value"], result
    assert diracx_searches(grid) == before


def test_service_vo_list_keeps_other_vos_on_legacy(gs, grid, job_id):
    before = diracx_searches(grid)
    cs = ON | {"/DiracX/Bridge/WorkloadManagement/JobMonitoring/VOs": "someothervo"}
    result = gs.worker().call(JM, "getJobsStates", [job_id], cs=cs)
    assert result["OK"], result
    assert diracx_searches(grid) == before


def test_explicit_dips_url_goes_to_legacy(gs, grid, job_id):
    port = grid.ports["WorkloadManagement/JobMonitoring"]
    before = diracx_searches(grid)
    url = f"dips://localhost:{port}/WorkloadManagement/JobMonitoring"
    result = gs.worker().call(CLIENT, "getJobsStates", [job_id], client_kwargs={"url": url}, cs=ON)
    assert result["OK"], result
    assert diracx_searches(grid) == before


def test_deprecated_switch_name_still_works(gs, grid, job_id):
    before = diracx_searches(grid)
    cs = {"/DiracX/LegacyClientEnabled/WorkloadManagement/JobMonitoring": "yes"}
    result = gs.worker().call(JM, "getJobsStates", [job_id], cs=cs)
    assert result["OK"], result
    assert diracx_searches(grid) > before
    log = grid.log_dir / "worker-ciuser@civo_user.log"
    assert "LegacyClientEnabled/WorkloadManagement/JobMonitoring is deprecated" in log.read_text()


def test_service_without_adapter(gs, job_id):
    """DIRAC 9.1 recurses ~250 levels here; the bridge answers at once, or falls back if allowed."""
    on = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobManager": "yes"}
    refused = gs.worker().call(JOBMAN, "rescheduleJob", [job_id], cs=on)
    assert not refused["OK"] and refused["Errno"] == errno.ENOTSUP
    assert "WorkloadManagement/JobManager.rescheduleJob" in refused["Message"]
    fallback = on | {"/DiracX/Bridge/WorkloadManagement/JobManager/LegacyFallback": "yes"}
    legacy = gs.worker().call(JOBMAN, "rescheduleJob", [job_id], cs=fallback)
    assert "rpcStub" in legacy and legacy.get("Errno") != errno.ENOTSUP  # the legacy service answered


def test_unknown_method_is_an_s_error_not_an_exception(gs):
    result = gs.worker().call(JM, "noSuchMethod", 1, cs=ON)
    assert not result["OK"] and "noSuchMethod" in result["Message"]
