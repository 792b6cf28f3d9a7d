"""dirac-proxy-init's token step: whatever the ProxyManager answers, the user learns what is missing and why.

The messages of a stock DIRAC 9.1.22 ProxyManager below are the ones it really produces
(``RuntimeError`` from ``get_token`` through ``convertToReturnValue``, and requests' connection
errors); the grid tests cover the bridge's own ProxyManager end to end.
"""

from __future__ import annotations

import pytest
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge.proxy_token_exchange import exchange, proxy_init
from diracx_bridge.proxy_token_exchange.exchange import RegistryView
from diracx_bridge.proxy_token_exchange.proxy_init import Outcome, explain_failure

URL = "http://127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _cs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_init, "_diracx_url", lambda: URL)
    monkeypatch.setattr(proxy_init, "_proxy_username", lambda path: "nosubuser")
    monkeypatch.setattr(exchange, "registry_view", lambda user, group: RegistryView("civo", True, False))


def s_error(message: str, errno: int = 0) -> dict:
    from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR

    return S_ERROR(errno, message) if errno else S_ERROR(message)


def test_a_stock_proxymanager_refusal_is_diagnosed_against_the_cs() -> None:
    stock = (
        'RuntimeError(\'Error getting token from DiracX: 400 {"detail":"Invalid scope or preferred_username"}\'): '
        'Error getting token from DiracX: 400 {"detail":"Invalid scope or preferred_username"}'
    )
    outcome = explain_failure(s_error(stock), path="/tmp/p", group="civo_user", vo="civo")
    assert outcome.kind == "failed" and not outcome.transient
    assert outcome.message.startswith("user nosubuser has no subject in /DiracX/CsSync/VOs/civo/UserSubjects")


def test_a_stock_proxymanager_connection_error_means_try_again_later() -> None:
    stock = (
        "ConnectionError(MaxRetryError(\"HTTPConnectionPool(host='127.0.0.1', port=8000): Max retries exceeded with "
        "url: /api/auth/legacy-exchange?preferred_username=ciuser&scope=vo%3Acivo (Caused by NewConnectionError("
        "'Failed to establish a new connection: [Errno 111] Connection refused'))\")): ..."
    )
    outcome = explain_failure(s_error(stock), path="/tmp/p", group="civo_user", vo="civo")
    assert outcome.transient
    assert outcome.message.startswith(f"DiracX at {URL} is unreachable from the ProxyManager (connection refused)")
    assert outcome.code == DErrno.ERESUNA


def test_a_bridge_proxymanager_message_is_shown_as_it_is_without_the_errno_wrapper() -> None:
    text = "DiracX at http://x is unreachable from the ProxyManager (ConnectError: [Errno 111] Connection refused)"
    outcome = explain_failure(s_error(text, 2001), path="/tmp/p", group="g", vo="civo")
    assert outcome == Outcome("failed", text, transient=True, code=DErrno.ERESUNA)
    text = "user u has no subject in /DiracX/CsSync/VOs/civo/UserSubjects: ask your VO admin"
    assert explain_failure(s_error(text, 1111), path="/tmp/p", group="g", vo="civo").message == text


def test_an_unreachable_proxymanager_is_named() -> None:
    outcome = explain_failure(
        s_error("Can't connect to dips://localhost:9152/Framework/ProxyManager: [Errno 111] Connection refused"),
        path="/tmp/p",
        group="g",
        vo="civo",
    )
    assert outcome.transient
    assert "ProxyManager service (Framework/ProxyManager)" in outcome.message


def test_a_stock_proxymanager_without_diracx_configuration() -> None:
    outcome = explain_failure(
        s_error("ValueError('Missing mandatory /DiracX/LegacyExchangeApiKey configuration'): ..."),
        path="/tmp/p",
        group="g",
        vo="civo",
    )
    assert "has no /DiracX/LegacyExchangeApiKey" in outcome.message


def test_secrets_in_a_failure_never_reach_the_user() -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    outcome = explain_failure(
        s_error(f"something odd with Bearer diracx:legacy:abcdEFGH1234== and {jwt_like}"),
        path="/tmp/p",
        group="g",
        vo="civo",
    )
    assert "abcdEFGH1234" not in outcome.message and jwt_like not in outcome.message


def test_add_token_to_pem_answers_s_ok_even_when_the_bridge_itself_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Outcome] = []

    def broken(path: str, group: str) -> Outcome:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy_init, "obtain_token", broken)
    monkeypatch.setattr(proxy_init, "report", lambda outcome, path, group: reported.append(outcome))
    result = proxy_init.add_token_to_pem("/tmp/p", "civo_user")
    assert result["OK"] is True
    assert reported[0].kind == "failed" and "unexpected error in diracx-bridge" in reported[0].message


def test_the_warning_tells_what_still_works_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from DIRAC import gLogger

    lines: list[str] = []
    monkeypatch.setattr(gLogger, "warn", lambda message, *a: lines.append(message))
    proxy_init.report(Outcome("failed", "DiracX at X is unreachable", transient=True), "/tmp/x509up_u1", "civo_user")
    (text,) = lines
    assert "the proxy /tmp/x509up_u1 was created without a DiracX token: DiracX at X is unreachable." in text
    assert "Legacy DIRAC services keep working" in text
    assert text.endswith("run dirac-proxy-init -g civo_user again later.")


def test_strict_keeps_dirac_behaviour_a_missing_token_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dirac-proxy-init --strict`` (fail on each error) gets DIRAC 9.1.22's failure, with the precise reason."""
    import sys
    import types

    monkeypatch.setattr(proxy_init, "obtain_token", lambda path, group: Outcome("failed", "DiracX is down"))
    monkeypatch.setattr(proxy_init, "report", lambda *a: pytest.fail("strict mode must not only warn"))
    fake = types.ModuleType(proxy_init._PROXY_INIT_MODULE)
    fake.piParams = types.SimpleNamespace(strict=True)
    monkeypatch.setitem(sys.modules, proxy_init._PROXY_INIT_MODULE, fake)
    result = proxy_init.make_add_token_to_pem(None)("/tmp/p", "civo_user")
    assert result["OK"] is False
    assert result["Errno"] == DErrno.EATOKENFIND  # a DErrno code scripts can test (cmpError)
    assert "no DiracX token for the proxy /tmp/p: DiracX is down" in result["Message"]
    monkeypatch.setattr(proxy_init, "obtain_token", lambda path, group: Outcome("failed", "down", code=DErrno.ERESUNA))
    assert proxy_init.make_add_token_to_pem(None)("/tmp/p", "civo_user")["Errno"] == DErrno.ERESUNA
    fake.piParams.strict = False
    monkeypatch.setattr(proxy_init, "report", lambda *a: None)
    assert proxy_init.make_add_token_to_pem(None)("/tmp/p", "civo_user")["OK"] is True
