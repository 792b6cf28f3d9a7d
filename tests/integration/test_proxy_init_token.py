"""The unchanged ``dirac-proxy-init`` on the grid-in-a-box: proxy + token when DiracX gives one, a good proxy always.

Every command here is DIRAC 9.1.22's own script run as a subprocess; the bridge acts only
through its activation hooks (in the client and in the ProxyManager's ``dirac-service``).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import httpx
import pytest
from traffic import observe

from diracx_bridge.tokens import (
    PEM_BEGIN,
    read_token,
)

pytestmark = pytest.mark.integration

JOB_MONITORING = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
ADAPTER_ON = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": "yes"}


def proxy_init(grid, path: Path, *, user: str = "ciuser", group: str = "civo_user", extra=(), env=None, check=True):
    return grid.run(
        ["dirac-proxy-init", "-g", group, "--out", str(path), *extra], user=user, group=group, env=env, check=check
    )


def legacy_call_works(grid, path: Path, user: str, group: str) -> None:
    """A legacy DISET call authenticated with ``path``: ProxyManager's list of the user's uploaded proxies.

    ``dirac-proxy-info -m`` exits 1 with "Could not retrieve the uploaded proxies info" when the call fails.
    """
    res = grid.run(["dirac-proxy-info", "-m"], user=user, group=group, env={"X509_USER_PROXY": str(path)})
    assert re.search(r"== (No p|P)roxies uploaded ==", res.stdout), res.stdout + res.stderr


def test_proxy_init_writes_a_bundle_dirac_the_bridge_and_diracx_all_accept(gs, grid, tmp_path):
    path = tmp_path / "ciuser.pem"
    out = proxy_init(grid, path).stdout
    text = path.read_text()
    assert text.count(PEM_BEGIN) == 1 and text.index("-----BEGIN CERTIFICATE-----") < text.index(PEM_BEGIN)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # DIRAC 9.1.22's own reader, in a DIRAC process, reads what the bridge wrote.
    dirac_view = gs.worker().call("eval", "DIRAC.Core.Security.DiracX:diracxTokenFromPEM", str(path))
    token = read_token(path)
    assert dirac_view == token.as_dict()
    r = httpx.get(
        f"{grid.diracx.url}/api/auth/userinfo", headers={"Authorization": f"Bearer {token.access_token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    info = r.json()
    assert (info["preferred_username"], info["vo"], info["dirac_group"]) == ("ciuser", "civo", "civo_user")
    # dirac-proxy-init's own summary now names the token's identity and both expiries.
    assert "DiracX       : True" in out and "DiracX user  : ciuser" in out
    assert re.search(r"access token : \d{4}-\d\d-\d\d .* UTC \(\d+m \d\ds left\)", out), out
    assert re.search(r"refresh token: \d{4}-\d\d-\d\d .* UTC \(\d+h \d\dm left\)", out), out
    assert "WARNING" not in out


def test_dirac_proxy_info_and_whoami_show_identity_and_both_expiries(gs, grid, tmp_path):
    path = tmp_path / "admin.pem"
    proxy_init(grid, path, group="civo_admin")
    out = grid.run(["dirac-proxy-info", "-f", str(path)], group="civo_admin").stdout
    assert "DiracX group : civo_admin" in out
    assert re.search(r"DiracX props : .*JobAdministrator", out), out
    assert "access token : " in out and "refresh token: " in out
    res = grid.run(["diracx-bridge", "whoami", "--proxy", str(path), "--check"], group="civo_admin", check=False)
    assert res.returncode == 0, res.stderr
    assert "DiracX group  : civo_admin" in res.stdout and "proxy cert    : " in res.stdout
    assert f"DiracX at {grid.diracx.url} accepts the token" in res.stdout
    assert "user ciuser, VO civo, group civo_admin" in res.stdout
    token = read_token(path)
    assert token.access_token not in res.stdout + res.stderr + out


def test_user_missing_from_the_diracx_registry_gets_a_proxy_and_a_precise_warning(gs, grid, tmp_path):
    path = tmp_path / "nosub.pem"
    res = proxy_init(grid, path, user="nosubuser")
    assert res.returncode == 0
    out = res.stdout + res.stderr
    assert (
        "user nosubuser has no subject in /DiracX/CsSync/VOs/civo/UserSubjects: ask your VO admin to add nosubuser's"
        in out
    ), out
    assert "Legacy DIRAC services keep working with this proxy" in out
    assert PEM_BEGIN not in path.read_text()
    legacy_call_works(grid, path, "nosubuser", "civo_user")
    # A service switched to DiracX says what is missing instead of failing obscurely (the bridge
    # itself: neither DiracX nor the legacy service was asked).
    with observe(grid) as traffic:
        result = gs.worker().call(
            JOB_MONITORING, "getJobsStates", [1], client_kwargs={"proxyLocation": str(path)}, cs=ADAPTER_ON
        )
    traffic.assert_answered_locally("getJobsStates")
    assert not result["OK"] and "carries no DiracX token" in result["Message"], result
    assert "dirac-proxy-init" in result["Message"]


def test_without_the_bridge_dirac_9_1_22_fails_proxy_creation_for_the_same_user(grid, tmp_path):
    """The difference the bridge makes (DIRACX_BRIDGE_DISABLE=1 gives DIRAC's own addTokenToPEM back)."""
    res = proxy_init(grid, tmp_path / "stock.pem", user="nosubuser", env={"DIRACX_BRIDGE_DISABLE": "1"}, check=False)
    assert res.returncode == 1
    # Even then the reason is precise: the ProxyManager runs the bridge's exchange.
    assert "has no subject in /DiracX/CsSync/VOs/civo/UserSubjects" in res.stdout + res.stderr


def test_disabled_vo_gets_no_token_and_no_warning(gs, grid, tmp_path):
    path = tmp_path / "legacy.pem"
    res = proxy_init(grid, path, user="legacyuser", group="legacyvo_user")
    out = res.stdout + res.stderr
    assert PEM_BEGIN not in path.read_text()
    assert "WARNING" not in out and "DiracX note" not in out, out
    assert "DiracX       : False" in out
    legacy_call_works(grid, path, "legacyuser", "legacyvo_user")


def test_strict_proxy_init_keeps_dirac_failure(grid, tmp_path):
    res = proxy_init(grid, tmp_path / "strict.pem", user="nosubuser", extra=("--strict",), check=False)
    assert res.returncode == 1
    assert "no DiracX token for the proxy" in res.stdout + res.stderr


def test_diracx_outage_still_gives_a_working_proxy_and_says_try_later(gs, grid, tmp_path):
    path = tmp_path / "outage.pem"
    assert grid.diracx is not None
    url = grid.diracx.url
    grid.diracx.stop_api()
    try:
        # An unusual lifetime: no exchange cached by the ProxyManager can serve it (see test_proxy_exchange_cache).
        res = proxy_init(grid, path, extra=("-v", "3:17"))
    finally:
        grid.diracx.start_api()
    out = res.stdout + res.stderr
    assert res.returncode == 0
    assert f"DiracX at {url} is unreachable from the ProxyManager" in out, out
    assert "Legacy DIRAC services keep working" in out and "run dirac-proxy-init -g civo_user again later" in out
    assert PEM_BEGIN not in path.read_text()
    legacy_call_works(grid, path, "ciuser", "civo_user")
    # Once DiracX is back, the same command adds the token.
    proxy_init(grid, path, extra=("-v", "3:17"))
    assert read_token(path).refresh_token
