"""What a user sees when something is wrong, against the real DiracX server and legacy services.

Every fault gives the documented ``S_ERROR`` (DErrno code and a message saying what to do), never
an exception, and never a token in the text; routing faults (disabled VO, explicit URL, a
service without adapter) never send the user to DiracX without a way to succeed. The grid's
logs (:mod:`traffic`) show where each call went: to DiracX through the bridge, to the legacy
service, or nowhere (a refusal the bridge makes itself).
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

import jwt
import pytest
from DIRACCommon.Core.Utilities import DErrno
from traffic import SEARCH, observe

from diracx_bridge.tokens import (
    DiracxToken,
    read_token,
    remove_token,
    write_token,
)

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
CLIENT = "DIRAC.Core.Base.Client.Client"
RSS = "DIRAC.ResourceStatusSystem.Client.ResourceStatusClient.ResourceStatusClient"
ON = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": "yes"}
TOKEN = ("POST", "/api/auth/token")


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


def statuses(entries) -> list[int]:
    return [e.status for e in entries]


def assert_no_secret(result: dict, *tokens: str) -> None:
    text = repr(result)
    for token in tokens:
        assert token not in text
    assert "eyJ" not in result.get("Message", "")


def test_diracx_stopped(gs, grid, job_id):
    grid.diracx.stop_api()
    try:
        with observe(grid) as adapted_traffic:
            adapted = gs.worker().call(JM, "getJobsStates", [job_id], cs=ON)
        with observe(grid) as legacy_traffic:
            legacy = gs.worker().call(JM, "getJobsStates", [job_id])
    finally:
        grid.diracx.start_api()
    adapted_traffic.assert_answered_locally("getJobsStates")  # DiracX was down: nothing reached it
    legacy_traffic.assert_legacy("getJobsStates")
    assert not adapted["OK"]
    assert adapted["Errno"] == DErrno.ERESUNA
    assert grid.diracx.url in adapted["Message"] and "unreachable" in adapted["Message"]
    assert "/DiracX/URL" in adapted["Message"]
    assert legacy["OK"] and job_id in legacy["Value"]  # the legacy services do not depend on DiracX
    # ... and once DiracX is back, the same (pooled) session works again.
    with observe(grid) as back:
        assert gs.worker().call(JM, "getJobsStates", [job_id], cs=ON)["OK"]
    back.assert_adapted("getJobsStates")


def test_expired_access_token_is_refreshed_and_written_back(gs, grid, proxy_copy, job_id):
    stale = read_token(proxy_copy)
    write_token(proxy_copy, DiracxToken(stale.access_token, stale.refresh_token, int(time.time()) - 60))
    before = x509_part(proxy_copy)
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert result["OK"], result
    # Refreshed before the search (the token was known to be expired): one refresh, one search.
    assert statuses(e for e in traffic.diracx if (e.method, e.path) == TOKEN) == [200]
    assert statuses(traffic.from_bridge(*SEARCH)) == [200]
    traffic.assert_adapted("getJobsStates")
    fresh = read_token(proxy_copy)
    assert fresh.access_token != stale.access_token
    assert fresh.expires_on > time.time() + 600
    assert x509_part(proxy_copy) == before
    assert proxy_copy.stat().st_mode & 0o777 == 0o600


def test_access_token_refused_by_diracx_is_refreshed_once(gs, grid, proxy_copy, job_id):
    """A token DiracX refuses (401) although unexpired: refresh, retry, succeed."""
    good = read_token(proxy_copy)
    forged = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 3600}, "not-the-key-of-this-diracx-server-0123456789", algorithm="HS256"
    )
    write_token(proxy_copy, DiracxToken(forged, good.refresh_token, int(time.time()) + 3600))
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    assert result["OK"], result
    assert read_token(proxy_copy).access_token not in (forged, good.access_token)
    assert statuses(traffic.from_bridge(*SEARCH)) == [401, 200]  # refused, then retried once
    assert statuses(e for e in traffic.diracx if (e.method, e.path) == TOKEN) == [200]
    traffic.assert_adapted("getJobsStates")


def test_refresh_token_refused(gs, grid, proxy_copy, job_id):
    good = read_token(proxy_copy)
    claims = {"jti": "x", "exp": int(time.time()) + 3600, "legacy_exchange": True}
    forged_refresh = jwt.encode(claims, "not-the-key-of-this-diracx-server-0123456789", algorithm="HS256")
    write_token(proxy_copy, DiracxToken(good.access_token, forged_refresh, int(time.time()) - 60))
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    # DiracX itself refused the refresh; no search was sent with a token known to be expired.
    assert statuses(e for e in traffic.diracx if (e.method, e.path) == TOKEN) == [401]
    assert not traffic.from_bridge(*SEARCH), traffic.diracx
    assert not traffic.legacy_calls("getJobsStates")
    assert not result["OK"]
    assert result["Errno"] == errno.EKEYEXPIRED
    assert "dirac-proxy-init -g civo_user" in result["Message"] and "ciuser" in result["Message"]
    assert_no_secret(result, good.access_token, forged_refresh)


def test_refresh_token_expired(gs, grid, proxy_copy, job_id):
    good = read_token(proxy_copy)
    expired_refresh = jwt.encode({"jti": "x", "exp": int(time.time()) - 10}, "k" * 32, algorithm="HS256")
    write_token(proxy_copy, DiracxToken(good.access_token, expired_refresh, int(time.time()) - 60))
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    traffic.assert_answered_locally("getJobsStates")  # both tokens known to be expired: no request
    assert not result["OK"] and result["Errno"] == errno.EKEYEXPIRED
    assert "has expired" in result["Message"] and "dirac-proxy-init" in result["Message"]
    assert_no_secret(result, good.access_token, expired_refresh)


def test_proxy_without_diracx_block(gs, grid, proxy_copy, job_id):
    assert remove_token(proxy_copy)
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    traffic.assert_answered_locally("getJobsStates")
    assert not result["OK"] and result["Errno"] == DErrno.EATOKENFIND
    assert str(proxy_copy) in result["Message"] and "dirac-proxy-init" in result["Message"]
    assert "/DiracX/DisabledVOs" in result["Message"]


def test_no_proxy_at_all(gs, grid, tmp_path, job_id):
    with observe(grid) as traffic:
        result = call_with(gs, tmp_path / "missing.pem", "getJobsStates", [job_id])
    traffic.assert_answered_locally("getJobsStates")
    assert not result["OK"] and result["Errno"] == DErrno.EPROXYFIND
    assert "dirac-proxy-init" in result["Message"]


def test_damaged_token_block(gs, grid, proxy_copy, job_id):
    text = proxy_copy.read_text()
    proxy_copy.write_text(
        text.replace("-----END DIRACX-----", "-----END DIRACX-----\n-----BEGIN DIRACX-----\nAAAA\n-----END DIRACX-----")
    )
    with observe(grid) as traffic:
        result = call_with(gs, proxy_copy, "getJobsStates", [job_id])
    traffic.assert_answered_locally("getJobsStates")
    assert not result["OK"] and result["Errno"] == DErrno.EATOKENREAD
    assert str(proxy_copy) in result["Message"]


def test_caller_lacking_the_property(gs, grid, job_id):
    """A GenericPilot-only identity may not search jobs: the message says who lacks what."""
    worker = gs.worker("ciuser", "civo_pilot")
    with observe(grid) as traffic:
        result = worker.call(JM, "getJobsStates", [job_id], cs=ON)
    assert statuses(traffic.from_bridge(*SEARCH)) == [403]  # DiracX's refusal, not a guess of the bridge
    traffic.assert_adapted("getJobsStates")
    assert not result["OK"] and result["Errno"] == errno.EPERM
    message = result["Message"]
    assert "ciuser" in message and "civo_pilot" in message and "GenericPilot" in message
    assert "NormalUser" in message and "JobAdministrator" in message


def test_disabled_vo_stays_on_legacy(gs, grid, job_id):
    """DIRAC 9.1 sends a DisabledVO user to DiracX without a token; the bridge routes by VO."""
    worker = gs.worker("legacyuser", "legacyvo_user")
    with observe(grid) as traffic:
        result = worker.call(JM, "getJobsStates", [job_id], cs=ON)
    assert result["OK"] and job_id in result["Value"], result
    traffic.assert_legacy("getJobsStates")


def test_service_vo_list_keeps_other_vos_on_legacy(gs, grid, job_id):
    cs = ON | {"/DiracX/Bridge/WorkloadManagement/JobMonitoring/VOs": "someothervo"}
    with observe(grid) as traffic:
        result = gs.worker().call(JM, "getJobsStates", [job_id], cs=cs)
    assert result["OK"], result
    traffic.assert_legacy("getJobsStates")


def test_explicit_dips_url_goes_to_legacy(gs, grid, job_id):
    port = grid.ports["WorkloadManagement/JobMonitoring"]
    url = f"dips://localhost:{port}/WorkloadManagement/JobMonitoring"
    with observe(grid) as traffic:
        result = gs.worker().call(CLIENT, "getJobsStates", [job_id], client_kwargs={"url": url}, cs=ON)
    assert result["OK"], result
    traffic.assert_legacy("getJobsStates")


def test_deprecated_switch_name_still_works(gs, grid, job_id):
    cs = {"/DiracX/LegacyClientEnabled/WorkloadManagement/JobMonitoring": "yes"}
    with observe(grid) as traffic:
        result = gs.worker().call(JM, "getJobsStates", [job_id], cs=cs)
    assert result["OK"], result
    traffic.assert_adapted("getJobsStates")
    log = grid.log_dir / "worker-ciuser@civo_user.log"
    assert "LegacyClientEnabled/WorkloadManagement/JobMonitoring is deprecated" in log.read_text()


def test_service_without_adapter(gs, grid):
    """DIRAC 9.1 recurses ~250 levels here; the bridge answers at once, or falls back if allowed."""
    on = {"/DiracX/FutureClientEnabled/ResourceStatus/ResourceStatus": "yes"}  # a grid service no adapter stands for
    with observe(grid) as refused_traffic:
        refused = gs.worker().call(RSS, "select", "ResourceStatus", {"Name": "ProductionSandboxSE"}, cs=on)
    assert not refused["OK"] and refused["Errno"] == errno.ENOTSUP
    assert "ResourceStatus/ResourceStatus.select" in refused["Message"]
    refused_traffic.assert_answered_locally("select")
    fallback = on | {"/DiracX/Bridge/ResourceStatus/ResourceStatus/LegacyFallback": "yes"}
    with observe(grid) as fallback_traffic:
        legacy = gs.worker().call(RSS, "select", "ResourceStatus", {"Name": "ProductionSandboxSE"}, cs=fallback)
    assert legacy["OK"] and "rpcStub" in legacy  # the legacy service answered
    fallback_traffic.assert_legacy("select")


def test_unknown_method_is_an_s_error_not_an_exception(gs, grid):
    with observe(grid) as traffic:
        result = gs.worker().call(JM, "noSuchMethod", 1, cs=ON)
    traffic.assert_answered_locally("noSuchMethod")
    assert not result["OK"] and "noSuchMethod" in result["Message"]
