"""The ProxyManager's exchange: one DiracX call per identity and lifetime, bounded, precise refusals, no secrets.

DiracX is an ``httpx.MockTransport`` here (the grid tests use the real one); the clock is fake,
so the TTL, the access-token margin and the refresh-lifetime matching are tested exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest
from ptx_helpers import FakeDiracX

from diracx_bridge import errors
from diracx_bridge.proxy_token_exchange.exchange import (
    ExchangeMisconfigured,
    Exchanger,
    ExchangeRefused,
    RegistryView,
    refusal,
)

URL = "https://diracx.example.org"
API_KEY = "diracx:legacy:c2VjcmV0LWtleS1mb3ItdW5pdC10ZXN0cy1vbmx5LTAxMjM0NQ=="


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reader(options: dict[str, str]) -> Callable[[str], str | None]:
    base = {"/DiracX/URL": URL, "/DiracX/LegacyExchangeApiKey": API_KEY}
    base.update(options)
    return base.get


def make(
    clock: Clock | None = None, options: dict[str, str] | None = None, view: RegistryView | None = None
) -> tuple[Exchanger, FakeDiracX, Clock]:
    clock = clock or Clock()
    dx = FakeDiracX(clock)
    ex = Exchanger(
        clock=clock,
        read=reader(options or {}),
        view=lambda user, group: view or RegistryView("civo", True, True),
        vo_of=lambda group: "civo",
        transport=dx.transport,
    )
    return ex, dx, clock


def day(ex: Exchanger, clock: Clock, user: str = "ciuser", props: tuple[str, ...] = ("NormalUser",), minutes=1441):
    return ex.get_token(user, "civo_user", set(props), expires_minutes=minutes, source="ProxyManager")


def test_two_exchanges_for_one_identity_within_the_ttl_make_one_diracx_call() -> None:
    ex, dx, clock = make()
    first = day(ex, clock)
    clock.now += 60
    # Same proxy, a minute later: DIRAC asks for one minute less.
    second = day(ex, clock, minutes=1440)
    assert len(dx.exchanges) == 1
    assert second["access_token"] == first["access_token"]
    assert second["refresh_token"] == first["refresh_token"]
    assert second["expires_in"] == first["expires_in"] - 60  # counted from now, not from minting
    # The key is never in the URL (DiracX logs URLs); it travels in the Authorization header.
    request = dx.exchanges[0]
    assert API_KEY not in str(request.url)
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.url.params["expires_minutes"] == "1441"
    assert request.url.params["scope"] == "vo:civo group:civo_user property:NormalUser"


def test_the_cache_forgets_after_the_ttl_and_never_hands_out_less_than_half_an_access_token() -> None:
    ex, dx, clock = make(options={"/DiracX/Bridge/ExchangeCacheSeconds": "300"})
    day(ex, clock)
    clock.now += 299
    day(ex, clock)
    assert len(dx.exchanges) == 1
    clock.now += 2
    day(ex, clock)
    assert len(dx.exchanges) == 2
    # A long TTL is still capped by the access token's life: 1200 s tokens are reused for 600 s at most.
    ex, dx, clock = make(options={"/DiracX/Bridge/ExchangeCacheSeconds": "3600"})
    day(ex, clock)
    clock.now += 599
    assert day(ex, clock)["expires_in"] == 601
    clock.now += 2
    day(ex, clock)
    assert len(dx.exchanges) == 2


def test_a_cached_refresh_token_never_outlives_the_proxy_that_asks_nor_falls_far_short_of_it() -> None:
    ex, dx, clock = make()
    long_lived = day(ex, clock, minutes=1441)
    clock.now += 10
    short = day(ex, clock, minutes=11)  # a 10-minute proxy of the same user and group
    assert len(dx.exchanges) == 2
    assert short["refresh_token"] != long_lived["refresh_token"]
    clock.now += 10
    day(ex, clock, minutes=1441)  # and a day-long proxy does not get the 10-minute session
    assert len(dx.exchanges) == 3


def test_identities_are_cached_apart_and_the_cache_is_bounded() -> None:
    ex, dx, clock = make(options={"/DiracX/Bridge/ExchangeCacheSize": "2"})
    day(ex, clock, user="a")
    day(ex, clock, user="b")
    day(ex, clock, user="a", props=("NormalUser", "JobAdministrator"))  # other properties: another identity
    assert len(dx.exchanges) == 3
    assert len(ex.cache) == 2
    day(ex, clock, user="b")  # still there
    day(ex, clock, user="a")  # the oldest, evicted
    assert len(dx.exchanges) == 4
    # Properties are a set: their order does not make a new identity.
    day(ex, clock, user="b", props=("NormalUser",))
    assert len(dx.exchanges) == 4


def test_a_zero_ttl_disables_the_cache() -> None:
    ex, dx, clock = make(options={"/DiracX/Bridge/ExchangeCacheSeconds": "0"})
    day(ex, clock)
    day(ex, clock)
    assert len(dx.exchanges) == 2


def test_concurrent_requests_for_one_identity_make_one_exchange() -> None:
    ex, dx, clock = make()
    dx.delay = 0.05
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(day(ex, clock))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dx.exchanges) == 1
    assert len({r["access_token"] for r in results}) == 1


@pytest.mark.parametrize(
    ("status", "detail", "view", "expected", "kind"),
    [
        (
            400,
            "Invalid scope or preferred_username",
            RegistryView("civo", True, False),
            "user ciuser has no subject in /DiracX/CsSync/VOs/civo/UserSubjects: ask your VO admin",
            ExchangeRefused,
        ),
        (
            400,
            "Invalid scope or preferred_username",
            RegistryView("civo", False, False),
            "VO civo is not in /DiracX/CsSync/VOs",
            ExchangeRefused,
        ),
        (400, "x", RegistryView(None, False, False), "belongs to no VO", ExchangeRefused),
        (400, "x", RegistryView("civo", True, True), "run cs-sync", ExchangeRefused),
        (401, "Invalid credentials", RegistryView("civo", True, True), "LegacyExchangeApiKey", ExchangeMisconfigured),
        (
            403,
            "User is not a member of the requested group (ciuser, civo_user)",
            RegistryView("civo", True, True),
            "not a member of the requested group",
            ExchangeRefused,
        ),
        (
            503,
            "Legacy exchange is not enabled",
            RegistryView("civo", True, True),
            "DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY",
            ExchangeMisconfigured,
        ),
        (500, "boom", RegistryView("civo", True, True), "see the DiracX server logs", errors.DiracXServerError),
    ],
)
def test_each_refusal_names_its_cause_and_its_fix(status, detail, view, expected, kind) -> None:
    ex, dx, clock = make(view=view)
    dx.exchange = lambda request: httpx.Response(status, json={"detail": detail})
    with pytest.raises(kind) as caught:
        day(ex, clock)
    assert expected in str(caught.value)
    assert caught.value.result["OK"] is False
    assert expected in caught.value.result["Message"]
    # Refusals are not cached: the next request asks DiracX again.
    with pytest.raises(kind):
        day(ex, clock)
    assert len(dx.exchanges) == 2


def test_an_unreachable_diracx_is_said_so_with_its_url() -> None:
    ex, dx, clock = make()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    dx.exchange = down
    with pytest.raises(errors.DiracXUnreachable, match=f"DiracX at {URL} is unreachable from the ProxyManager"):
        day(ex, clock)


def test_missing_configuration_is_reported_before_any_call() -> None:
    ex, dx, clock = make(options={"/DiracX/URL": ""})
    with pytest.raises(ExchangeMisconfigured, match="no /DiracX/URL"):
        day(ex, clock)
    ex, dx, clock = make(options={"/DiracX/LegacyExchangeApiKey": ""})
    with pytest.raises(ExchangeMisconfigured, match="no /DiracX/LegacyExchangeApiKey"):
        day(ex, clock)
    assert dx.exchanges == []


def test_a_200_that_is_not_a_token_response_is_a_server_error() -> None:
    ex, dx, clock = make()
    dx.exchange = lambda request: httpx.Response(200, text="<html>maintenance</html>")
    with pytest.raises(errors.DiracXServerError, match="not a token response"):
        day(ex, clock)


def test_no_message_carries_the_api_key_or_a_token() -> None:
    """Even when DiracX echoes them back in its detail (a misbehaving proxy in front of it, say)."""
    ex, dx, clock = make()
    leaked = dx.mint("ciuser", "civo_user", ("NormalUser",), clock() + 60).json()
    echo = f"Bearer {API_KEY} {leaked['access_token']} {leaked['refresh_token']}"
    for status in (400, 401, 403, 418, 500, 503):
        dx.exchange = lambda request, status=status: httpx.Response(status, json={"detail": echo})
        with pytest.raises(errors.BridgeError) as caught:
            day(ex, clock)
        text = f"{caught.value} {caught.value.result} {caught.value!r}"
        for secret in (API_KEY, API_KEY.rsplit(":", maxsplit=1)[-1], leaked["access_token"], leaked["refresh_token"]):
            assert secret not in text
    assert "api_key" not in repr(ex) and API_KEY not in repr(ex.cache._entries)


def test_refusal_messages_are_the_documented_ones() -> None:
    error = refusal(
        400, "Invalid scope or preferred_username", user="nosubuser", group="civo_user", url=URL,
        view=RegistryView("civo", True, False),
    )  # fmt: skip
    assert str(error).startswith("user nosubuser has no subject in /DiracX/CsSync/VOs/civo/UserSubjects")
