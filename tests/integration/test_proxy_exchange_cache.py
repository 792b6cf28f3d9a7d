"""The ProxyManager's exchange cache, observed from outside: DiracX's access log and the service's own log.

Each legacy exchange is one ``GET /api/auth/legacy-exchange`` entry, with the ProxyManager's
``User-Agent``, in the grid's DiracX access log (and one refresh-token row in its AuthDB). The
entry is written before DiracX answers, so once the command or call that caused it has returned
it is on disk: no waiting. The proxies below use lifetimes no other test uses, so no cache entry
made earlier in the session can serve them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import jwt
import pytest

from diracx_bridge.testing.access_log import PROXY_MANAGER_UA
from diracx_bridge.tokens import read_token

pytestmark = pytest.mark.integration


def exchanges(grid, mark: int = 0) -> list[int]:
    """The statuses of the legacy exchanges DiracX received since ``mark``, all from the ProxyManager."""
    entries = [e for e in grid.diracx.access_log.since(mark) if e.path == "/api/auth/legacy-exchange"]
    assert all(e.method == "GET" and e.user_agent == PROXY_MANAGER_UA for e in entries), entries
    return [e.status for e in entries]


def rpc_exchange(gs, path: Path) -> dict:
    """What ``addTokenToPEM`` does: ProxyManager's ``exchangeProxyForToken``, authenticated with ``path``."""
    return gs.worker().call(
        "DIRAC.Core.Base.Client.Client",
        "exchangeProxyForToken",
        client_kwargs={"url": "Framework/ProxyManager", "proxyLocation": str(path)},
    )


def test_exchanges_for_one_identity_within_the_ttl_make_one_diracx_call(gs, grid, tmp_path):
    path = tmp_path / "admin.pem"
    gs.worker()  # started first: its own proxy-init is an exchange of its own
    mark = grid.diracx.access_log.mark()
    grid.run(["dirac-proxy-init", "-g", "civo_admin", "-v", "5:43", "--out", str(path)], group="civo_admin")
    assert exchanges(grid, mark) == [200]
    in_file = read_token(path)
    first, second = rpc_exchange(gs, path), rpc_exchange(gs, path)
    assert first["OK"] and second["OK"], (first, second)
    assert exchanges(grid, mark) == [200], "the ProxyManager asked DiracX again within the cache's lifetime"
    # The same token as in the file, its remaining life counted down rather than reset.
    assert first["Value"]["refresh_token"] == second["Value"]["refresh_token"] == in_file.refresh_token
    assert 0 < second["Value"]["expires_in"] <= 1200


def test_a_proxy_of_another_lifetime_gets_its_own_refresh_token(gs, grid, tmp_path):
    """The refresh token lives as long as the proxy: the cache never serves one minted for a longer proxy."""
    day = tmp_path / "day.pem"
    short = tmp_path / "short.pem"
    grid.run(["dirac-proxy-init", "-g", "civo_admin", "-v", "6:07", "--out", str(day)], group="civo_admin")
    mark = grid.diracx.access_log.mark()
    started = time.time()
    grid.run(["dirac-proxy-init", "-g", "civo_admin", "-v", "0:23", "--out", str(short)], group="civo_admin")
    assert exchanges(grid, mark) == [200]
    refresh_exp = jwt.decode(read_token(short).refresh_token, options={"verify_signature": False})["exp"]
    assert refresh_exp <= started + 23 * 60 + 180  # the proxy's 23 minutes, DIRAC's rounding, a little clock
    assert read_token(short).refresh_token != read_token(day).refresh_token


def test_the_proxymanager_log_carries_neither_the_api_key_nor_a_token(gs, grid, tmp_path):
    path = tmp_path / "log-check.pem"
    grid.run(["dirac-proxy-init", "-g", "civo_user", "-v", "7:01", "--out", str(path)])
    assert rpc_exchange(gs, path)["OK"]
    log = (grid.log_dir / "dirac-service-Framework.log").read_text(errors="replace")
    # The bridge's exchange ran in the service (its log line), and said nothing secret.
    assert "DiracXBridge INFO: DiracX token minted for ciuser (civo_user, refresh token for" in log
    key = grid.legacy_key.dirac_value
    assert key not in log and key.split(":")[-1] not in log
    token = read_token(path)
    for secret in (token.access_token, token.refresh_token, *token.access_token.split(".")[1:]):
        assert secret not in log
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", log), "a JWT in the ProxyManager log"
