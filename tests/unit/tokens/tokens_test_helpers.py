"""Helpers of the tokens tests: DiracX-shaped JWTs, a refreshing fake DiracX, and a second local user."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt

KEY = "tokens-unit-tests-only-signing-key-0123456789abcdef"
NOBODY = 65534


def uuid7(at: float) -> str:
    """A UUIDv7 for time ``at`` (DiracX 0.7.0's ``jti``: ``exp`` is derived from it, no ``iat``)."""
    value = (int(at * 1000) << 80) | (0x7 << 76) | (secrets.randbits(12) << 64) | (0b10 << 62) | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def access(lifetime: float = 1200, *, issued: float | None = None, **claims: Any) -> str:
    """An access token as DiracX 0.7.0 mints it: UUIDv7 ``jti``, ``exp`` = its time + lifetime."""
    now = time.time() if issued is None else issued
    payload = {
        "sub": "civo:alice",
        "vo": "civo",
        "preferred_username": "alice",
        "dirac_group": "civo_user",
        "dirac_properties": ["NormalUser"],
        "jti": uuid7(now),
        "exp": int(now + lifetime),
        **claims,
    }
    return jwt.encode(payload, KEY, algorithm="HS256")


def refresh(lifetime: float = 86400, **claims: Any) -> str:
    payload = {"jti": uuid.uuid4().hex, "exp": int(time.time() + lifetime), "legacy_exchange": True, **claims}
    return jwt.encode(payload, KEY, algorithm="HS256")


class Refresher:
    """A DiracX that refreshes (``POST /api/auth/token``) and accepts what it minted on ``/api/ping``."""

    def __init__(self, lifetime: float = 1200) -> None:
        self.lifetime = lifetime
        self.refreshes = 0
        self.minted: list[str] = []
        self.answer: Callable[[httpx.Request], httpx.Response] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/token":
            self.refreshes += 1
            if self.answer is not None:
                return self.answer(request)
            token = access(self.lifetime)
            self.minted.append(token)
            return httpx.Response(
                200, json={"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}
            )
        if request.url.path == "/api/ping":
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(404, json={"detail": "Not Found"})
