"""The bearer-token auth flow of a session: the proxy's DIRACX block, refreshed and written back.

The access token comes from the DIRACX block of the proxy file (the format DIRAC 9.1 writes),
cached in memory and re-read only when the file changes. It is refreshed shortly before it
expires, or once on a 401, with the refresh-token grant; the new token is written back into the
proxy file atomically and under the file's lock, so every other process of the user reuses it,
and a process that loses the race takes the winner's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Generator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from diracx_bridge import capabilities, errors, tls, tokens
from diracx_bridge.settings import BridgeSettings
from diracx_bridge.tokens import Claims, DiracxToken

#: Refresh this long before the access token expires (DiracX's own client uses 300 s of a
#: 20-minute token; a shorter margin halves the refreshes of short scripts).
REFRESH_MARGIN = 60.0
#: DiracX's public client ID; the refresh grant of legacy-exchange tokens does not check it.
CLIENT_ID = "myDIRACClientID"


#: DiracX URL -> its token endpoint (``/.well-known/openid-configuration``), for the process.
_token_endpoints: dict[str, str] = {}


def _client_version() -> str:
    try:
        return metadata.version("diracx-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - diracx-core is a dependency
        return capabilities.RELEASE


def client_headers() -> dict[str, str]:
    """Every request of the bridge to DiracX: its client version, and who is asking (the access logs)."""
    return {"DiracX-Client-Version": _client_version(), "User-Agent": "diracx-bridge"}


class TokenAuth(httpx.Auth):
    """Bearer auth from a proxy file's DIRACX block, refreshed and written back as needed."""

    def __init__(self, proxy_path: Path, url: str, settings: BridgeSettings) -> None:
        self.proxy_path = proxy_path
        self.url = url
        self.settings = settings
        self._lock = threading.Lock()
        self._token: DiracxToken | None = None
        self._signature: tuple[int, int, int] | None = None
        self._refresh_client: httpx.Client | None = None
        self._refresh_pid = os.getpid()
        self._margin_of: tuple[DiracxToken | None, float] = (None, REFRESH_MARGIN)

    # -- reading -------------------------------------------------------------------------------

    def _file_signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.proxy_path)
        except FileNotFoundError:
            raise errors.ProxyFileNotFound(self.proxy_path) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> DiracxToken:
        """The token to send now: cached, re-read if the file changed, refreshed if expiring."""
        with self._lock:
            signature = self._file_signature()
            if self._token is None or signature != self._signature:
                self._token = tokens.read_token(self.proxy_path)
                self._signature = signature
            if self._expiring(self._token):
                self._refresh_locked(stale=self._token)
            return self._token

    def _expiring(self, token: DiracxToken) -> bool:
        """Refresh now? ``REFRESH_MARGIN`` before expiry, but never more than half the token's life.

        With a fixed 60 s margin, a 75 s token (stored ``expires_on`` now+60) would be refreshed
        on every call; its life is read from the access token (``exp`` minus ``iat``, or minus the
        time in DiracX's UUIDv7 ``jti``).
        """
        if token is not self._margin_of[0]:
            lifetime = Claims.of(token.access_token).lifetime
            self._margin_of = (token, REFRESH_MARGIN if lifetime is None else min(REFRESH_MARGIN, lifetime / 2))
        return token.expired(margin=self._margin_of[1])

    def refresh(self, stale: DiracxToken) -> DiracxToken:
        """Refresh after DiracX refused ``stale`` (a 401), unless someone already did."""
        with self._lock:
            self._refresh_locked(stale=stale, force=True)
            assert self._token is not None
            return self._token

    # -- refreshing ----------------------------------------------------------------------------

    def _refresh_locked(self, *, stale: DiracxToken, force: bool = False) -> None:
        """Refresh under the proxy's lock and write back; if it cannot be written, keep it in memory.

        A token that cannot be saved (disk full, read-only directory, lock held too long, hard
        links: ``TokenFileWriteError``) is still this process's token: it is used until it
        expires, the file is not re-read while it is unchanged (so no refresh per call), and the
        reason is said once.
        """
        minted: list[DiracxToken] = []

        def renew(current: DiracxToken | None) -> DiracxToken | None:
            if current is None:
                return None  # the block vanished meanwhile: reported below
            if current.access_token != stale.access_token and not self._expiring(current):
                return current  # another process refreshed while we waited for the lock
            if not force and not self._expiring(current):
                return current
            minted.append(self._refresh_grant(current))
            return minted[-1]

        try:
            token = tokens.update_token(self.proxy_path, renew, timeout=self.lock_timeout)
        except errors.TokenFileWriteError as exc:
            token = minted[-1] if minted else self._refresh_grant(stale)
            self._warn_once(
                f"the refreshed DiracX token of {self.proxy_path} is kept in memory for this process only, "
                f"not written back: {exc}"
            )
        if token is None:
            raise errors.NoTokenBlock(self.proxy_path)
        self._token = token
        try:
            self._signature = self._file_signature()
        except errors.BridgeError:
            self._signature = None

    _warned: set[str] = set()  # noqa: RUF012 - process-wide on purpose
    #: Seconds to wait for another process's refresh (it holds the proxy's lock) before refreshing alone.
    lock_timeout: float = 30.0

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            from diracx_bridge.log import logger

            logger().warn(message)

    def _refresh_grant(self, current: DiracxToken) -> DiracxToken:
        claims = Claims.of(current.access_token)
        if _refresh_expires_on(current) <= time.time():
            raise self._expired(claims, current)
        client = self._refresh_http()
        unreachable = None
        try:
            r = client.post(
                self._endpoint(client),
                data={"grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": CLIENT_ID},
            )
        except httpx.TransportError as exc:
            unreachable = f"{type(exc).__name__}: {exc}"
        if unreachable is not None:  # raised here, not in the except: no context holding httpx's frames
            raise errors.DiracXUnreachable(self.url, unreachable, doing=f"refreshing the token of {claims.username}")
        if r.status_code in (400, 401, 403):
            raise self._expired(claims, current, detail=_detail(r))
        if r.status_code != 200:
            raise errors.DiracXServerError(
                self.url, f"refreshing the token of {claims.username}", status=r.status_code, detail=_detail(r)
            )
        token = _token_from(r, current.refresh_token)
        if token is None:
            # A 200 that is not a token response (a proxy's error page...): the message names no token.
            raise errors.DiracXServerError(
                self.url, f"refreshing the token of {claims.username}", detail="an answer that is not a token response"
            )
        return token

    def _expired(self, claims: Claims, token: DiracxToken, detail: str = "") -> errors.SessionExpired:
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(_refresh_expires_on(token)))
        except (OverflowError, OSError, ValueError):  # inf: a refresh token that is not a readable JWT
            when = "an unknown time"
        return errors.SessionExpired(claims.username, claims.group, until=when, detail=detail)

    def _refresh_http(self) -> httpx.Client:
        if self._refresh_client is None or self._refresh_pid != os.getpid():  # forked: not the parent's sockets
            self._refresh_pid = os.getpid()
            self._refresh_client = httpx.Client(
                timeout=httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout),
                verify=tls.verify_for(self.url),
                headers=client_headers(),
            )
        return self._refresh_client

    def _endpoint(self, client: httpx.Client) -> str:
        """The token endpoint, discovered once per process and DiracX URL (not per call, proxy or refresh)."""
        endpoint = _token_endpoints.get(self.url)
        if endpoint is None:
            endpoint = f"{self.url}/api/auth/token"
            try:
                r = client.get(f"{self.url}/.well-known/openid-configuration")
                if r.status_code == 200:
                    endpoint = r.json().get("token_endpoint") or endpoint
            except (httpx.TransportError, ValueError, AttributeError):
                pass
            _token_endpoints[self.url] = endpoint
        return endpoint

    # -- httpx.Auth ----------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Bearer token; one refresh and retry on a 401.

        ``sync_auth_flow`` rather than ``auth_flow``: this flow takes a lock and does file and
        network I/O (read, refresh, write back), which httpx asks to keep out of ``auth_flow``.
        """
        token = self.current()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            token = self.refresh(token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> Any:  # pragma: no cover - sync clients only
        raise RuntimeError("TokenAuth locks and reads files: use it with httpx.Client, not AsyncClient")
        yield request  # an async generator, as httpx expects

    def close(self) -> None:
        if self._refresh_client is not None:
            self._refresh_client.close()


def _refresh_expires_on(token: DiracxToken) -> float:
    """When the refresh token expires (its ``exp`` claim; DiracX verifies it, we only read it)."""
    expires = Claims.of(token.refresh_token).expires
    return float("inf") if expires is None else expires  # not a JWT we can read: let DiracX decide


def _token_from(response: httpx.Response, refresh_token: str) -> DiracxToken | None:
    """The token of a refresh answer, or None. Never raises, so no frame holding the answer is in a traceback."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    if not body.get("refresh_token"):
        body["refresh_token"] = refresh_token  # legacy-exchange refresh tokens are not rotated
    try:
        return DiracxToken.from_token_response(body)
    except (ValueError, TypeError):
        return None


def _detail(response: httpx.Response) -> str:
    """DiracX's ``detail`` (or the body), redacted and shortened, for a message."""
    try:
        detail: Any = response.json().get("detail", response.text)
    except (ValueError, AttributeError, RecursionError):
        detail = response.text
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return errors.redact(detail)[:500]
