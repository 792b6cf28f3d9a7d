"""The claims of a DiracX JWT, read without verifying it (DiracX verifies; we only show and plan).

The one place that decodes a token's claims: the session (who is calling, when the refresh token
ends, how long an access token lives), the ProxyManager's exchange cache (the refresh token's
expiry) and ``whoami``/``dirac-proxy-info`` (what to show). Every claim is type-checked: a claim
of the wrong type (``dirac_properties`` a string, ``exp`` a string or ``1e400``) reads as absent,
never as a foreign exception or a nonsense value. Nothing here imports DIRAC or PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

#: The last second ``datetime`` can show (9999-12-31T23:59:59Z): later "times" are not times.
MAX_EPOCH = 253_402_300_799
#: A JWT is a few kB; a longer string is not one of DiracX's tokens and is not decoded.
_MAX_TOKEN_CHARS = 64 * 1024


def payload(token: object) -> dict[str, Any]:
    """The JWT's claims, unverified; ``{}`` when ``token`` is not a JWT whose claims can be read."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        return {}
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    segment = parts[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # ValueError: non-ASCII text, bad UTF-8, bad JSON
        return {}
    return data if isinstance(data, dict) else {}


def epoch(value: object) -> float | None:
    """``value`` as epoch seconds if it is a number ``datetime`` can show, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond float's range
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_EPOCH else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else "?"


def _issued(data: dict[str, Any]) -> float | None:
    """``iat``; else the time inside a UUIDv7 ``jti`` (DiracX derives ``exp`` from it and sets no ``iat``)."""
    iat = epoch(data.get("iat"))
    if iat is not None:
        return iat
    jti = data.get("jti")
    if not isinstance(jti, str):
        return None
    try:
        parsed = uuid.UUID(jti)
    except ValueError:
        return None
    return epoch((parsed.int >> 80) / 1000) if parsed.version == 7 else None


@dataclass(frozen=True)
class Claims:
    """What a token says about its holder and its life; ``"?"``/``None`` where it does not say."""

    username: str = "?"
    subject: str = "?"
    vo: str = "?"
    group: str = "?"
    properties: tuple[str, ...] = ()
    #: ``exp``: epoch seconds, or None when absent or not a usable number.
    expires: float | None = None
    #: ``iat`` (or the UUIDv7 ``jti``'s time): epoch seconds, or None.
    issued: float | None = None
    #: The refresh token was minted by the legacy exchange (ProxyManager), not by a login.
    legacy_exchange: bool = False

    @classmethod
    def of(cls, token: object) -> Claims:
        """The claims of ``token``; never raises (an unreadable token gives the defaults)."""
        data = payload(token)
        props = data.get("dirac_properties")
        return cls(
            username=_text(data.get("preferred_username")),
            subject=_text(data.get("sub")),
            vo=_text(data.get("vo")),
            group=_text(data.get("dirac_group")),
            properties=tuple(p for p in props if isinstance(p, str)) if isinstance(props, list) else (),
            expires=epoch(data.get("exp")),
            issued=_issued(data),
            legacy_exchange=data.get("legacy_exchange") is True,
        )

    @property
    def lifetime(self) -> float | None:
        """Seconds between issue and expiry, when both are known and in order."""
        if self.expires is None or self.issued is None or self.expires <= self.issued:
            return None
        return self.expires - self.issued

    def describe(self) -> str:
        return f"{self.username} (group {self.group}, properties {', '.join(self.properties) or 'none'})"
