"""session.py against a MockTransport DiracX: bearer, caching, refresh and write-back, retries, errors, pooling."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_test_helpers import (
    GROUP,
    PROPERTIES,
    URL,
    USER,
    FakeDiracX,
    access_jwt,
    assert_no_secret,
    bridge_settings,
    make_token,
)
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import errors, session, tokens
from diracx_bridge.session import CLIENT_ID, REFRESH_MARGIN, DiracXSession, TokenAuth, get_session
from diracx_bridge.session import _session as session_pool
from diracx_bridge.tokens import (
    PEM_BEGIN,
    DiracxToken,
    read_token,
    write_token,
)

HEALTH = "/api/health/live"
TOKEN = "/api/auth/token"
DISCOVERY = "/.well-known/openid-configuration"


def new_session(proxy: Path, **overrides: Any) -> DiracXSession:
    return DiracXSession(URL, proxy, bridge_settings(**overrides))


def bearer(sent: Any) -> str:
    return sent.headers["Authorization"].removeprefix("Bearer ")


def always(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    return lambda _request: httpx.Response(status, json=body if body is not None else {}, headers=headers)


def sequence(*answers: int | type[Exception]) -> Callable[[httpx.Request], httpx.Response]:
    """Answer with these statuses (or raise these transport errors) in turn, then 200."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if queue else 200
        if isinstance(answer, type):
            raise answer("[Errno 111] Connection refused", request=request)
        return httpx.Response(answer, json={"detail": f"status {answer}"} if answer != 200 else {"ok": True})

    return handler


def x509_part(path: Path) -> str:
    return path.read_text().split(PEM_BEGIN)[0]


# --- the bearer token ------------------------------------------------------------------------------


def test_bearer_header_is_the_proxy_token(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    response = new_session(proxy).request("GET", HEALTH)
    assert response.status_code == 200
    assert [s.path for s in diracx.sent] == [HEALTH]  # no discovery, no refresh for a fresh token
    assert diracx.sent[0].headers["Authorization"] == f"Bearer {token.access_token}"
    assert diracx.sent[0].headers["DiracX-Client-Version"]


def test_token_is_cached_while_the_file_is_unchanged(
    proxy: Path, diracx: FakeDiracX, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []
    real_read = tokens.read_token

    def counting_read(path: Any, *args: Any, **kwargs: Any) -> DiracxToken:
        reads.append(Path(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(tokens, "read_token", counting_read)
    s = new_session(proxy)
    for _ in range(5):
        s.request("GET", HEALTH)
    assert reads == [proxy]

    newer = make_token()
    write_token(proxy, newer)  # e.g. dirac-proxy-init, or another process's refresh
    s.request("GET", HEALTH)
    assert len(reads) == 2
    assert bearer(diracx.sent[-1]) == newer.access_token
    s.request("GET", HEALTH)
    assert len(reads) == 2


# --- refresh -----------------------------------------------------------------------------------------


def test_refresh_before_expiry_and_write_back(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX
) -> None:
    expiring = make_token(access_lifetime=REFRESH_MARGIN / 2)
    proxy = write_proxy_token(expiring)
    x509_before = x509_part(proxy)
    assert "-----BEGIN CERTIFICATE-----" in x509_before

    s = new_session(proxy)
    before = time.time()
    s.request("GET", HEALTH)

    assert [x.path for x in diracx.sent] == [DISCOVERY, TOKEN, HEALTH]
    form = diracx.sent[1].body
    assert form == {"grant_type": "refresh_token", "refresh_token": expiring.refresh_token, "client_id": CLIENT_ID}
    issued = diracx.issued[0]
    assert bearer(diracx.sent[2]) == issued["access_token"]

    on_disk = read_token(proxy)
    assert on_disk.access_token == issued["access_token"]
    assert on_disk.refresh_token == issued["refresh_token"]
    assert before + 1200 - 15 - 1 <= on_disk.expires_on <= time.time() + 1200 - 15
    assert x509_part(proxy) == x509_before
    assert stat.S_IMODE(os.stat(proxy).st_mode) == 0o600

    # The refreshed token is used from memory afterwards: no second refresh, no re-read needed.
    s.request("GET", HEALTH)
    assert [x.path for x in diracx.sent].count(TOKEN) == 1


def test_refreshes_say_who_asks_and_discovery_is_once_per_process(
    write_proxy_token: Callable[[DiracxToken], Path], bare_proxy: Path, proxy_pem: str, diracx: FakeDiracX
) -> None:
    """Refreshes carry the bridge's User-Agent (DiracX's access log tells them apart), and the token
    endpoint is discovered once per DiracX URL, not once per proxy."""
    first = write_proxy_token(make_token(access_lifetime=10))
    second = bare_proxy.with_name("second-proxy")
    fd = os.open(second, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(proxy_pem)
    write_token(second, make_token(access_lifetime=10))
    new_session(first).request("GET", HEALTH)
    new_session(second).request("GET", HEALTH)
    assert len(diracx.requests_to(TOKEN)) == 2
    assert len(diracx.requests_to(DISCOVERY)) == 1
    assert {sent.headers["user-agent"] for sent in diracx.sent} == {"diracx-bridge"}


def test_unrotated_refresh_token_is_kept(write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX) -> None:
    diracx.rotate_refresh_token = False  # legacy-exchange refresh tokens are not rotated
    expiring = make_token(access_lifetime=10)
    proxy = write_proxy_token(expiring)
    new_session(proxy).request("GET", HEALTH)
    on_disk = read_token(proxy)
    assert on_disk.refresh_token == expiring.refresh_token
    assert on_disk.access_token == diracx.issued[0]["access_token"]


def test_refresh_once_on_401_then_retry(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    diracx.accepted = set()  # DiracX rejects the (unexpired) token of the file, e.g. revoked signing key
    response = new_session(proxy).request("GET", HEALTH)
    assert response.status_code == 200
    health = diracx.requests_to(HEALTH)
    assert [bearer(h) for h in health] == [token.access_token, diracx.issued[0]["access_token"]]
    assert len(diracx.requests_to(TOKEN)) == 1
    assert read_token(proxy).access_token == diracx.issued[0]["access_token"]


def test_persistent_401_refreshes_only_once(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", HEALTH)] = always(401, {"detail": f"Invalid JWT {token.access_token}"})
    with pytest.raises(errors.Unauthenticated) as caught:
        new_session(proxy).request("GET", HEALTH)
    assert len(diracx.requests_to(HEALTH)) == 2
    assert len(diracx.requests_to(TOKEN)) == 1
    message = str(caught.value)
    assert USER in message
    assert "dirac-proxy-init" in message
    assert_no_secret(message, token, read_token(proxy))
    assert caught.value.result["Errno"] == DErrno.ENOAUTH


def test_lost_refresh_race_takes_the_winners_token(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    """Another process refreshed (and wrote the file) while our request was in flight: no second refresh."""
    winner = make_token()
    diracx.accepted = {winner.access_token}

    def health(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {token.access_token}":
            write_token(proxy, winner)
            return httpx.Response(401, json={"detail": "expired"})
        return httpx.Response(200, json={})

    diracx.overrides[("GET", HEALTH)] = health
    new_session(proxy).request("GET", HEALTH)
    assert diracx.requests_to(TOKEN) == []
    assert [bearer(h) for h in diracx.requests_to(HEALTH)] == [token.access_token, winner.access_token]


@pytest.mark.parametrize("status", [400, 401])
def test_refused_refresh_is_session_expired(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX, status: int
) -> None:
    expiring = make_token(access_lifetime=10)
    proxy = write_proxy_token(expiring)
    diracx.overrides[("POST", TOKEN)] = always(status, {"detail": f"invalid_grant for {expiring.refresh_token}"})
    with pytest.raises(errors.SessionExpired) as caught:
        new_session(proxy).request("GET", HEALTH)
    message = str(caught.value)
    assert f"dirac-proxy-init -g {GROUP}" in message
    assert USER in message
    assert "invalid_grant" in message  # DiracX's reason, redacted
    assert_no_secret(message, expiring)
    assert_no_secret(caught.value.result, expiring)
    assert caught.value.result["Errno"] == errno.EKEYEXPIRED
    assert diracx.requests_to(HEALTH) == []
    assert read_token(proxy) == expiring  # nothing written


def test_refused_refresh_of_an_opaque_refresh_token_is_session_expired(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX
) -> None:
    """A refresh token that is not a readable JWT has no known expiry: the message must still be built."""
    opaque = DiracxToken(access_jwt(10), "opaque-refresh-token-value", int(time.time()) - 5)
    proxy = write_proxy_token(opaque)
    diracx.overrides[("POST", TOKEN)] = always(400, {"detail": "invalid_grant"})
    with pytest.raises(errors.SessionExpired) as caught:
        new_session(proxy).request("GET", HEALTH)
    assert "dirac-proxy-init" in str(caught.value)
    assert "opaque-refresh-token-value" not in str(caught.value)


def test_expired_refresh_token_fails_without_any_http_call(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX
) -> None:
    dead = make_token(access_lifetime=-3600, refresh_lifetime=-60)
    proxy = write_proxy_token(dead)
    with pytest.raises(errors.SessionExpired) as caught:
        new_session(proxy).request("GET", HEALTH)
    assert diracx.sent == []
    message = str(caught.value)
    assert f"dirac-proxy-init -g {GROUP}" in message
    assert "has expired" in message
    assert_no_secret(message, dead)


def test_refresh_server_error_is_diracx_server_error(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX
) -> None:
    expiring = make_token(access_lifetime=10)
    proxy = write_proxy_token(expiring)
    diracx.overrides[("POST", TOKEN)] = always(500, {"detail": "database is down"})
    with pytest.raises(errors.DiracXServerError) as caught:
        new_session(proxy).request("GET", HEALTH)
    assert "database is down" in str(caught.value)
    assert_no_secret(caught.value, expiring)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy error page</html>"),
        httpx.Response(200, json={"token_type": "Bearer"}),  # no access_token / expires_in
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
def test_refresh_answer_that_is_not_a_token_is_a_server_error(
    write_proxy_token: Callable[[DiracxToken], Path], diracx: FakeDiracX, answer: httpx.Response
) -> None:
    expiring = make_token(access_lifetime=10)
    proxy = write_proxy_token(expiring)
    diracx.overrides[("POST", TOKEN)] = lambda _request: answer
    with pytest.raises(errors.DiracXServerError) as caught:
        new_session(proxy).request("GET", HEALTH)
    assert "not a token response" in str(caught.value)
    assert_no_secret(caught.value, expiring)
    assert read_token(proxy) == expiring


def test_token_endpoint_is_discovered_once_per_token_auth(proxy: Path, diracx: FakeDiracX) -> None:
    s = new_session(proxy)
    for _ in range(3):
        diracx.accepted = set()  # every current token is refused once: three refreshes
        s.request("GET", HEALTH)
    assert len(diracx.requests_to(TOKEN)) == 3
    assert len(diracx.requests_to(DISCOVERY)) == 1


def test_discovered_token_endpoint_is_used(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", DISCOVERY)] = always(200, {"token_endpoint": f"{URL}/custom/token"})
    diracx.overrides[("POST", "/custom/token")] = lambda request: diracx._token(diracx.sent[-1].body)
    diracx.accepted = set()
    new_session(proxy).request("GET", HEALTH)
    assert len(diracx.requests_to("/custom/token")) == 1
    assert diracx.requests_to(TOKEN) == []


# --- credentials -------------------------------------------------------------------------------------


def test_no_diracx_block_is_token_not_found(bare_proxy: Path, diracx: FakeDiracX) -> None:
    with pytest.raises(errors.NoTokenBlock) as caught:
        new_session(bare_proxy).request("GET", HEALTH)
    message = str(caught.value)
    assert "dirac-proxy-init" in message
    assert "/DiracX/DisabledVOs" in message
    assert str(bare_proxy) in message
    assert caught.value.result["Errno"] == DErrno.EATOKENFIND
    assert diracx.sent == []


def test_missing_proxy_is_credentials_not_found(tmp_path: Path, diracx: FakeDiracX) -> None:
    missing = tmp_path / "x509up_missing"
    with pytest.raises(errors.ProxyFileNotFound) as caught:
        new_session(missing).request("GET", HEALTH)
    assert str(missing) in str(caught.value)
    assert "dirac-proxy-init" in str(caught.value)
    assert caught.value.result["Errno"] == DErrno.EPROXYFIND
    assert diracx.sent == []


def test_proxy_removed_after_first_use_is_credentials_not_found(proxy: Path, diracx: FakeDiracX) -> None:
    s = new_session(proxy)
    s.request("GET", HEALTH)
    proxy.unlink()
    with pytest.raises(errors.ProxyFileNotFound):
        s.request("GET", HEALTH)


def test_damaged_block_is_token_unreadable(bare_proxy: Path, diracx: FakeDiracX) -> None:
    with bare_proxy.open("a") as handle:
        handle.write(f"{PEM_BEGIN}\nnot base64 !!!\n-----END DIRACX-----\n")
    with pytest.raises(errors.TokenFileError) as caught:
        new_session(bare_proxy).request("GET", HEALTH)
    assert caught.value.result["Errno"] == DErrno.EATOKENREAD


# --- transport errors and retries --------------------------------------------------------------------


def test_transport_error_is_diracx_unreachable(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    diracx.overrides[("POST", "/api/jobs/search")] = sequence(httpx.ConnectError, httpx.ConnectError)
    with pytest.raises(errors.DiracXUnreachable) as caught:
        new_session(proxy).request("POST", "/api/jobs/search", json={}, action="searching jobs")
    message = str(caught.value)
    assert URL in message
    assert "ConnectError" in message
    assert "Connection refused" in message
    assert "searching jobs" in message
    assert caught.value.result["Errno"] == DErrno.ERESUNA
    assert len(diracx.requests_to("/api/jobs/search")) == 1  # not idempotent: never retried
    assert_no_secret(message, token)


def test_transport_error_without_text_still_says_something(proxy: Path, diracx: FakeDiracX) -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)

    diracx.overrides[("GET", HEALTH)] = silent
    with pytest.raises(errors.DiracXUnreachable) as caught:
        new_session(proxy, read_retries=0).request("GET", HEALTH, idempotent=True)
    assert "ReadTimeout: no answer" in str(caught.value)


def test_idempotent_requests_retry_connect_errors(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", HEALTH)] = sequence(httpx.ConnectError, httpx.ConnectError)
    response = new_session(proxy, read_retries=2).request("GET", HEALTH, idempotent=True)
    assert response.status_code == 200
    assert len(diracx.requests_to(HEALTH)) == 3


def test_idempotent_retries_are_bounded(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", HEALTH)] = sequence(*[httpx.ConnectError] * 10)
    with pytest.raises(errors.DiracXUnreachable):
        new_session(proxy, read_retries=2).request("GET", HEALTH, idempotent=True)
    assert len(diracx.requests_to(HEALTH)) == 3


@pytest.mark.parametrize("status", [502, 503, 504])
def test_idempotent_requests_retry_gateway_errors(proxy: Path, diracx: FakeDiracX, status: int) -> None:
    diracx.overrides[("GET", HEALTH)] = sequence(status)
    assert new_session(proxy).request("GET", HEALTH, idempotent=True).status_code == 200
    assert len(diracx.requests_to(HEALTH)) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
def test_non_idempotent_requests_are_not_retried(proxy: Path, diracx: FakeDiracX, status: int) -> None:
    diracx.overrides[("POST", "/api/jobs/")] = sequence(status)
    with pytest.raises(errors.DiracXServerError):
        new_session(proxy).request("POST", "/api/jobs/", json=["jdl"])
    assert len(diracx.requests_to("/api/jobs/")) == 1


def test_gateway_errors_after_the_last_retry_are_server_errors(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", HEALTH)] = sequence(503, 503, 503, 503)
    with pytest.raises(errors.DiracXServerError) as caught:
        new_session(proxy, read_retries=2).request("GET", HEALTH, idempotent=True)
    assert "HTTP 503" in str(caught.value)
    assert len(diracx.requests_to(HEALTH)) == 3


def test_other_5xx_are_not_retried(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", HEALTH)] = sequence(500)
    with pytest.raises(errors.DiracXServerError) as caught:
        new_session(proxy).request("GET", HEALTH, idempotent=True, action="ping")
    assert len(diracx.requests_to(HEALTH)) == 1
    message = str(caught.value)
    assert "HTTP 500" in message
    assert URL in message
    assert "ping" in message
    assert caught.value.result["Errno"] == DErrno.ERESUNA


# --- HTTP refusals -----------------------------------------------------------------------------------


def test_403_is_forbidden_naming_who_lacks_what(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    diracx.overrides[("POST", "/api/jobs/search")] = always(403, {"detail": "Forbidden"})
    with pytest.raises(errors.Forbidden) as caught:
        new_session(proxy).request(
            "POST", "/api/jobs/search", json={}, action="getJobsStates", requires="JobAdministrator"
        )
    message = str(caught.value)
    for part in (USER, GROUP, *PROPERTIES, "JobAdministrator", "getJobsStates"):
        assert part in message
    assert caught.value.result["Errno"] == errno.EPERM
    assert_no_secret(message, token)


def test_4xx_is_diracx_rejected_with_detail_redacted(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    detail = [{"loc": ["body", "search"], "msg": f"bad value near Bearer {token.access_token}"}]
    diracx.overrides[("POST", "/api/jobs/search")] = always(422, {"detail": detail})
    with pytest.raises(errors.DiracXRejected) as caught:
        new_session(proxy).request("POST", "/api/jobs/search", json={}, action="searching")
    exc = caught.value
    assert exc.status == 422
    assert "bad value near" in exc.detail
    assert "HTTP 422" in str(exc)
    assert exc.result["Errno"] == DErrno.EVALUE
    assert_no_secret(exc.detail, token)
    assert_no_secret(str(exc), token)


def test_4xx_with_a_non_json_body(proxy: Path, diracx: FakeDiracX) -> None:
    diracx.overrides[("GET", "/api/nowhere")] = lambda _request: httpx.Response(404, text="<html>not here</html>")
    with pytest.raises(errors.DiracXRejected) as caught:
        new_session(proxy).request("GET", "/api/nowhere")
    assert caught.value.status == 404
    assert caught.value.detail == "<html>not here</html>"


# --- sessions ----------------------------------------------------------------------------------------


def test_get_session_reuses_one_session_per_url_proxy_and_settings(
    proxy: Path, tmp_path: Path, diracx: FakeDiracX
) -> None:
    first = get_session(URL, proxy, bridge_settings())
    assert get_session(URL, proxy, bridge_settings()) is first  # equal settings: same pool
    other_proxy = get_session(URL, tmp_path / "other", bridge_settings())
    other_url = get_session("http://other.test", proxy, bridge_settings())
    assert len({id(first), id(other_proxy), id(other_url)}) == 3

    changed = get_session(URL, proxy, bridge_settings(read_timeout=7.0))
    assert changed is not first
    assert changed.settings.read_timeout == 7.0
    # The old pool is retired, not closed: another thread may still be in a call on it.
    assert not first.client.is_closed
    assert first in session_pool._retired
    assert get_session(URL, proxy, bridge_settings(read_timeout=7.0)) is changed


def test_settings_that_do_not_concern_the_pool_apply_to_the_live_session(proxy: Path, diracx: FakeDiracX) -> None:
    first = get_session(URL, proxy, bridge_settings())
    tuned = get_session(URL, proxy, bridge_settings(search_page_size=50, read_retries=0))
    assert tuned is first
    assert first.settings.search_page_size == 50 and first.auth.settings.read_retries == 0


def test_retired_sessions_are_closed_at_exit(proxy: Path, diracx: FakeDiracX) -> None:
    first = get_session(URL, proxy, bridge_settings())
    get_session(URL, proxy, bridge_settings(read_timeout=3.0))
    session.close_all()
    assert first.client.is_closed
    assert session_pool._retired == []


def test_one_client_for_many_calls(proxy: Path, diracx: FakeDiracX) -> None:
    created = session_pool.httpx.clients
    s = get_session(URL, proxy, bridge_settings())
    for _ in range(20):
        get_session(URL, proxy, bridge_settings()).request("GET", HEALTH)
    assert s.client is created[0]
    assert len(created) == 1


def test_forked_child_gets_its_own_client(proxy: Path, diracx: FakeDiracX) -> None:
    s = new_session(proxy)
    s.request("GET", HEALTH)
    parent_client = s.client
    parent_refresh_client = s.auth._refresh_http()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            report = {
                "new_client": s.client is not parent_client,
                "stable": s.client is s.client,
                "new_refresh_client": s.auth._refresh_http() is not parent_refresh_client,
                "status": s.request("GET", HEALTH).status_code,
            }
        except BaseException as exc:
            report = {"error": repr(exc)}
        os.write(write_fd, json.dumps(report).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert report == {"new_client": True, "stable": True, "new_refresh_client": True, "status": 200}
    assert s.client is parent_client  # the parent keeps its own


def test_close_all_closes_every_session(proxy: Path, diracx: FakeDiracX) -> None:
    s = get_session(URL, proxy, bridge_settings())
    session.close_all()
    assert s.client.is_closed
    assert get_session(URL, proxy, bridge_settings()) is not s


# --- TokenAuth directly ------------------------------------------------------------------------------


def test_token_auth_current_and_claims(proxy: Path, token: DiracxToken, diracx: FakeDiracX) -> None:
    auth = TokenAuth(proxy, URL, bridge_settings())
    assert auth.current() == token
    claims = session.Claims.of(token.access_token)
    assert (claims.username, claims.group, claims.vo, claims.properties) == (USER, GROUP, "testvo", PROPERTIES)
    assert claims.describe() == f"{USER} (group {GROUP}, properties {', '.join(PROPERTIES)})"
    assert session.Claims.of("not a jwt").describe() == "? (group ?, properties none)"
    assert diracx.sent == []
