"""Helpers of the exchange/refresh/whoami unit tests: DiracX-shaped tokens and a fake DiracX."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt

SIGNING_SECRET = "unit-tests-only-not-a-diracx-key-0123456789abcdef"


def access_token(
    *,
    username: str = "ciuser",
    group: str = "civo_user",
    vo: str = "civo",
    properties: tuple[str, ...] = ("NormalUser",),
    exp: float | None = None,
) -> str:
    """A JWT with DiracX's access-token claims (signed with a test secret: nobody verifies it here)."""
    claims = {
        "jti": str(uuid.uuid4()),
        "sub": f"{vo}:{username}-subject",
        "vo": vo,
        "iss": "http://diracx.invalid",
        "dirac_properties": list(properties),
        "preferred_username": username,
        "dirac_group": group,
        "exp": int(exp if exp is not None else time.time() + 1200),
        "dirac_policies": {},
    }
    return jwt.encode(claims, SIGNING_SECRET, algorithm="HS256")


def refresh_token(*, exp: float | None = None) -> str:
    claims = {
        "jti": str(uuid.uuid4()),
        "exp": int(exp if exp is not None else time.time() + 86400),
        "legacy_exchange": True,
        "dirac_policies": {},
    }
    return jwt.encode(claims, SIGNING_SECRET, algorithm="HS256")


class FakeDiracX:
    """An ``httpx.MockTransport`` handler counting the legacy exchanges and refreshes it answers.

    ``exchange`` / ``refresh`` may be replaced by functions returning an ``httpx.Response`` (or
    raising an ``httpx`` transport error) to play a refusal or an outage.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.exchanges: list[httpx.Request] = []
        self.refreshes: list[httpx.Request] = []
        self.userinfo_calls = 0
        self.lock = threading.Lock()
        self.delay = 0.0
        self.exchange: Callable[[httpx.Request], httpx.Response] = self._exchange
        self.refresh: Callable[[httpx.Request], httpx.Response] = self._refresh
        #: Access tokens this server accepts (every token it minted, unless revoked by a test).
        self.valid: set[str] = set()

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            time.sleep(self.delay)
        path = request.url.path
        if path == "/api/auth/legacy-exchange":
            with self.lock:
                self.exchanges.append(request)
            return self.exchange(request)
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200, json={"token_endpoint": f"{request.url.scheme}://{request.url.host}/api/auth/token"}
            )
        if path == "/api/auth/token":
            with self.lock:
                self.refreshes.append(request)
            return self.refresh(request)
        if path == "/api/auth/userinfo":
            self.userinfo_calls += 1
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in self.valid:
                return httpx.Response(401, json={"detail": "Invalid JWT"})
            claims = jwt.decode(bearer, options={"verify_signature": False})
            return httpx.Response(200, json={"preferred_username": claims["preferred_username"], "vo": claims["vo"]})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _exchange(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        minutes = float(params.get("expires_minutes", 60))
        scope = params["scope"].split()
        group = next(s.split(":", 1)[1] for s in scope if s.startswith("group:"))
        props = tuple(sorted(s.split(":", 1)[1] for s in scope if s.startswith("property:")))
        return self.mint(params["preferred_username"], group, props, refresh_exp=self.clock() + 60 * minutes)

    def mint(self, username: str, group: str, props: tuple[str, ...], refresh_exp: float) -> httpx.Response:
        access = access_token(username=username, group=group, properties=props, exp=self.clock() + 1200)
        self.valid.add(access)
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": 1200,
            "token_type": "Bearer",
            "refresh_token": refresh_token(exp=refresh_exp),
        }
        return httpx.Response(200, json=body)

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        claims = jwt.decode(form["refresh_token"], options={"verify_signature": False})
        access = access_token(exp=self.clock() + 1200)
        self.valid.add(access)
        assert claims["legacy_exchange"]
        return httpx.Response(
            200,
            json={
                "access_token": access,
                "expires_in": 1200,
                "token_type": "Bearer",
                "refresh_token": form["refresh_token"],
            },
        )
