"""Refresh and write-back in the session's ``TokenAuth``, against a fake DiracX (the grid test uses the real one).

Each ``TokenAuth`` below stands for one process of the user: they share only the proxy file.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from ptx_helpers import FakeDiracX, access_token, refresh_token

from diracx_bridge import errors, tokens
from diracx_bridge.session import TokenAuth
from diracx_bridge.settings import BridgeSettings
from diracx_bridge.tokens import (
    DiracxToken,
)

URL = "http://diracx.invalid"
SETTINGS = BridgeSettings(URL, frozenset(), 5.0, 30.0, 0, 1000)


def process(proxy: Path, dx: FakeDiracX) -> tuple[TokenAuth, httpx.Client]:
    """One user process: its TokenAuth (with the fake DiracX behind its refresh client) and its HTTP client."""
    auth = TokenAuth(proxy, URL, SETTINGS)
    auth._refresh_client = httpx.Client(transport=dx.transport)
    return auth, httpx.Client(base_url=URL, auth=auth, transport=dx.transport)


def x509_part(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.index(tokens.PEM_BEGIN.encode())]


@pytest.fixture
def dx() -> FakeDiracX:
    return FakeDiracX()


@pytest.fixture
def stale_proxy(proxy_file: Path, dx: FakeDiracX) -> Path:
    """A proxy whose access token is used up (``expires_on`` in the past) but whose refresh token is good."""
    token = DiracxToken(access_token(exp=time.time() + 600), refresh_token(), int(time.time()) - 5)
    dx.valid.add(token.access_token)
    tokens.write_token(proxy_file, token)
    return proxy_file


def test_a_used_up_token_is_refreshed_once_written_back_and_reused_by_other_processes(
    stale_proxy: Path, dx: FakeDiracX
) -> None:
    before = tokens.read_token(stale_proxy)
    cert_and_key = x509_part(stale_proxy)
    _, first = process(stale_proxy, dx)
    assert first.get("/api/auth/userinfo").status_code == 200
    assert len(dx.refreshes) == 1
    after = tokens.read_token(stale_proxy)
    assert after.access_token != before.access_token
    assert after.refresh_token == before.refresh_token  # legacy-exchange refresh tokens are not rotated
    assert not after.expired(margin=600)
    assert x509_part(stale_proxy) == cert_and_key
    assert os.stat(stale_proxy).st_mode & 0o777 == 0o600
    # Another process of the user starts later: it reads the refreshed token, no new refresh.
    _, second = process(stale_proxy, dx)
    assert second.get("/api/auth/userinfo").status_code == 200
    assert len(dx.refreshes) == 1


def test_many_processes_refreshing_at_once_make_one_refresh(stale_proxy: Path, dx: FakeDiracX) -> None:
    dx.delay = 0.01
    clients = [process(stale_proxy, dx)[1] for _ in range(8)]
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda c=c: statuses.append(c.get("/api/auth/userinfo").status_code)) for c in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert len(dx.refreshes) == 1


def test_a_401_on_a_token_believed_valid_refreshes_once_and_retries(proxy_file: Path, dx: FakeDiracX) -> None:
    revoked = DiracxToken(access_token(), refresh_token(), int(time.time()) + 1000)  # DiracX does not know it
    tokens.write_token(proxy_file, revoked)
    _, client = process(proxy_file, dx)
    assert client.get("/api/auth/userinfo").status_code == 200
    assert len(dx.refreshes) == 1
    assert tokens.read_token(proxy_file).access_token in dx.valid


@pytest.mark.parametrize("status", [400, 401, 403])
def test_a_refresh_token_diracx_refuses_means_run_dirac_proxy_init(
    stale_proxy: Path, dx: FakeDiracX, status: int
) -> None:
    dx.refresh = lambda request: httpx.Response(status, json={"detail": "invalid_grant: Invalid JWT"})
    before = stale_proxy.read_bytes()
    _auth, client = process(stale_proxy, dx)
    with pytest.raises(errors.SessionExpired) as caught:
        client.get("/api/auth/userinfo")
    message = str(caught.value)
    assert "has expired" in message and message.endswith("run dirac-proxy-init -g civo_user")
    assert caught.value.result["Errno"] == errors.SessionExpired.code
    token = tokens.read_token(stale_proxy)
    for secret in (token.access_token, token.refresh_token):
        assert secret not in message
    assert stale_proxy.read_bytes() == before  # nothing written


def test_an_expired_refresh_token_is_known_without_asking_diracx(proxy_file: Path, dx: FakeDiracX) -> None:
    tokens.write_token(proxy_file, DiracxToken(access_token(), refresh_token(exp=time.time() - 1), 1))
    _, client = process(proxy_file, dx)
    with pytest.raises(errors.SessionExpired, match="run dirac-proxy-init -g civo_user"):
        client.get("/api/auth/userinfo")
    assert dx.refreshes == []


def test_a_refresh_answer_that_is_not_a_token_is_a_server_error(stale_proxy: Path, dx: FakeDiracX) -> None:
    dx.refresh = lambda request: httpx.Response(200, text="<html>maintenance</html>")
    _, client = process(stale_proxy, dx)
    with pytest.raises(errors.DiracXServerError, match="not a token response"):
        client.get("/api/auth/userinfo")
    dx.refresh = lambda request: httpx.Response(200, json={"access_token": "x"})  # no expires_in
    with pytest.raises(errors.DiracXServerError, match="not a token response"):
        client.get("/api/auth/userinfo")


def test_a_new_proxy_written_meanwhile_is_picked_up_without_refresh(proxy_file: Path, dx: FakeDiracX) -> None:
    first = DiracxToken(access_token(), refresh_token(), int(time.time()) + 1000)
    dx.valid.add(first.access_token)
    tokens.write_token(proxy_file, first)
    _, client = process(proxy_file, dx)
    assert client.get("/api/auth/userinfo").status_code == 200
    second = DiracxToken(access_token(), refresh_token(), int(time.time()) + 1000)
    dx.valid = {second.access_token}  # only the new one is good now
    tokens.write_token(proxy_file, second)  # as dirac-proxy-init would
    response = client.get("/api/auth/userinfo")
    assert response.status_code == 200
    assert response.request.headers["Authorization"] == f"Bearer {second.access_token}"
    assert dx.refreshes == []
