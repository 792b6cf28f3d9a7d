"""What a proxy's DiracX token says: identity and expiries, for people (``whoami``, ``dirac-proxy-info``).

DIRAC 9.1.22's ``dirac-proxy-info`` prints ``DiracX : True`` and nothing else about the token;
who it names, and until when it and its refresh token are valid, one could only learn by asking
DiracX (``-v``, which reads the *default* proxy whatever ``--file`` says). The claims are in the
JWTs themselves: reading them needs no network and no key (DiracX verifies them, we only show
them). The hooks below add them to DIRAC's own proxy description, so ``dirac-proxy-info`` and
the summary ``dirac-proxy-init`` prints both show them, without any DIRAC file being edited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diracx_bridge import errors, tokens
from diracx_bridge.tokens import Claims, DiracxToken

#: DIRAC's ``formatProxyInfoAsString`` aligns labels on 13 columns.
_LABEL_WIDTH = 13


@dataclass(frozen=True)
class TokenInfo:
    """The claims of a DIRACX block's tokens (unverified) and when each expires (epoch seconds)."""

    username: str
    subject: str
    vo: str
    group: str
    properties: tuple[str, ...]
    #: The access token's ``exp`` (or the block's ``expires_on`` + 15 s when it cannot be read).
    access_expires: float
    #: The block's ``expires_on``: when the bridge (and diracx) consider the access token used up.
    refresh_due: float
    #: The refresh token's ``exp``: after it, only a new proxy (a new exchange) helps. None if unreadable.
    refresh_expires: float | None
    legacy_exchange: bool

    @classmethod
    def of(cls, token: DiracxToken) -> TokenInfo:
        access = Claims.of(token.access_token)
        refresh = Claims.of(token.refresh_token)
        return cls(
            username=access.username,
            subject=access.subject,
            vo=access.vo,
            group=access.group,
            properties=access.properties,
            access_expires=(
                access.expires if access.expires is not None else token.expires_on + tokens.EXPIRES_GRACE_SECONDS
            ),
            refresh_due=float(token.expires_on),
            refresh_expires=refresh.expires,
            legacy_exchange=refresh.legacy_exchange,
        )

    def rows(self, now: float | None = None) -> list[tuple[str, str]]:
        """(label, value) pairs, in the order people read them."""
        now = time.time() if now is None else now
        access = when(self.access_expires, now)
        if now >= self.refresh_due and self.refresh_valid(now):
            access += "; renewed on next use"
        if self.refresh_expires is None:
            refresh = "unknown (not a JWT the bridge can read; DiracX decides)"
        else:
            refresh = when(self.refresh_expires, now)
            if not self.refresh_valid(now):
                refresh += f": run dirac-proxy-init -g {self.group} for a new one"
        return [
            ("DiracX user", self.username),
            ("DiracX VO", self.vo),
            ("DiracX group", self.group),
            ("DiracX props", ", ".join(self.properties) or "none"),
            ("access token", access),
            ("refresh token", refresh),
        ]

    def refresh_valid(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.refresh_expires is None or now < self.refresh_expires


def when(epoch: float, now: float | None = None) -> str:
    """``2026-01-02 03:04:05 UTC (1h 02m left)`` or ``... (expired 5m 10s ago)``."""
    now = time.time() if now is None else now
    try:
        stamp = datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # not a time: say so rather than fail the display
        return "out of range (not a time the token can mean)"
    delta = epoch - now
    if delta >= 0:
        return f"{stamp} ({duration(delta)} left)"
    return f"{stamp} (expired {duration(-delta)} ago)"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_rows(rows: list[tuple[str, str]], width: int = _LABEL_WIDTH) -> list[str]:
    return [f"{label.ljust(width)}: {value}" for label, value in rows]


# --------------------------------------------------------------------------------------------
# Hooks into DIRAC.Core.Security.ProxyInfo (see .hooks)
# --------------------------------------------------------------------------------------------


def make_tolerant_token_from_pem(original: Any) -> Callable[[Any], dict[str, Any] | None]:
    """``ProxyInfo.diracxTokenFromPEM``, which never raises.

    DIRAC's raises on a damaged block (two blocks: ``ValueError``; bad base64: ``binascii.Error``),
    and ``getProxyInfo`` lets it escape, so ``dirac-proxy-info`` and ``dirac-proxy-init``'s
    summary die with a traceback. Here a damaged or unusable block is "no token" (``DiracX :
    False``), and :func:`make_format_with_token` prints why.
    """

    def diracxTokenFromPEM(pemPath: Any) -> dict[str, Any] | None:
        try:
            return tokens.read_token(pemPath).as_dict()
        except errors.TokenFileError:
            return None

    return diracxTokenFromPEM


def make_format_with_token(original: Callable[[Mapping[str, Any]], str]) -> Callable[[Mapping[str, Any]], str]:
    """``ProxyInfo.formatProxyInfoAsString`` plus the token's identity and expiries after ``DiracX``."""

    def formatProxyInfoAsString(infoDict: Mapping[str, Any]) -> str:
        text = original(infoDict)
        try:
            extra = format_rows(token_rows(infoDict))
        except Exception:  # noqa: BLE001 - the description must print whatever the token holds
            extra = []
        if not extra:
            return text
        lines = text.split("\n")
        anchor = "DiracX".ljust(_LABEL_WIDTH) + ":"
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith(anchor)), len(lines))
        return "\n".join(lines[:at] + extra + lines[at:])

    return formatProxyInfoAsString


def token_rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rows to add to DIRAC's description of the proxy at ``info["path"]``."""
    path = info.get("path")
    if not path:
        return []
    try:
        token = tokens.read_token(path)
    except errors.NoTokenBlock:
        vo = info.get("VO")
        if vo and vo in _disabled_vos():
            return []  # no token is the expected state: the VO stays on the legacy services
        group = info.get("group") or "<your group>"
        return [
            (
                "DiracX note",
                f"no DiracX token: services moved to DiracX refuse this proxy until dirac-proxy-init -g {group} "
                "adds one (it says why when it cannot); legacy services do not need it",
            )
        ]
    except errors.TokenFileError as exc:
        return [("DiracX error", str(exc))]
    return TokenInfo.of(token).rows()


def _disabled_vos() -> frozenset[str]:
    from diracx_bridge import settings

    return settings.bridge_settings().disabled_vos


def certificate_expiry(path: Path) -> float | None:
    """``notAfter`` of the first certificate of the proxy (the proxy certificate itself)."""
    from cryptography import x509

    try:
        text = path.read_bytes()
        start = text.index(b"-----BEGIN CERTIFICATE-----")
        end = text.index(b"-----END CERTIFICATE-----", start) + len(b"-----END CERTIFICATE-----")
        cert = x509.load_pem_x509_certificate(text[start:end])
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()
