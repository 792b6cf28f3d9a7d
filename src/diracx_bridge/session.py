"""One pooled HTTP client per (DiracX URL, identity), and the token lifecycle behind it.

DIRAC 9.1's FutureClients build a new ``SyncDiracClient`` per call: a discovery request, a new
SSL context and a new connection pool each time, plus a token file per refresh token left in
``$TMPDIR``. Here a process keeps one :class:`DiracXSession` per (URL, proxy file) for its whole
life, so 10,000 calls reuse a handful of connections:

* the access token comes from the DIRACX block of the proxy file (the format DIRAC 9.1 writes,
  read through :mod:`diracx_bridge.proxy_token_exchange.bundle`), cached in memory and re-read
  only when the file changes;
* it is refreshed shortly before it expires, or once on a 401, with the refresh-token grant; the
  new token is written back into the proxy file atomically and under the file's lock, so every
  other process of the user reuses it, and a process that loses the race takes the winner's;
* idempotent reads are retried a bounded number of times on connection errors and 502/503/504;
* every failure leaves as a :mod:`diracx_bridge.errors` exception whose text says what to do.
"""

from __future__ import annotations

import atexit
import json
import os
import ssl
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import jwt

from diracx_bridge import errors
from diracx_bridge.proxy_token_exchange import bundle
from diracx_bridge.settings import BridgeSettings

#: Refresh this long before the access token expires (DiracX's own client uses 300 s of a
#: 20-minute token; a shorter margin halves the refreshes of short scripts).
REFRESH_MARGIN = 60.0
#: DiracX's public client ID; the refresh grant of legacy-exchange tokens does not check it.
CLIENT_ID = "myDIRACClientID"
_RETRY_STATUSES = frozenset({502, 503, 504})
_BACKOFF = (0.2, 0.6, 1.5)


@dataclass(frozen=True)
class Claims:
    """The identity inside an access token (read, not verified: DiracX verifies it)."""

    username: str
    group: str
    vo: str
    properties: tuple[str, ...]

    @classmethod
    def of(cls, access_token: str) -> Claims:
        try:
            c = jwt.decode(access_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return cls("?", "?", "?", ())
        return cls(
            str(c.get("preferred_username", "?")),
            str(c.get("dirac_group", "?")),
            str(c.get("vo", "?")),
            tuple(c.get("dirac_properties", ())),
        )

    def describe(self) -> str:
        return f"{self.username} (group {self.group}, properties {', '.join(self.properties) or 'none'})"


def _client_version() -> str:
    try:
        return metadata.version("diracx-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - diracx-core is a dependency
        return "0.7.0"


@cache
def _ssl_context() -> ssl.SSLContext:
    """System CAs plus DIRAC's CA directory, built once per process (it costs ~20 ms)."""
    ctx = ssl.create_default_context()
    ca_dir = os.environ.get("X509_CERT_DIR")
    if not ca_dir:
        try:
            from DIRAC.Core.Security.Locations import getCAsLocation

            ca_dir = getCAsLocation()
        except Exception:  # noqa: BLE001 - no DIRAC CS here: system CAs only
            ca_dir = None
    if ca_dir and os.path.isdir(ca_dir):
        ctx.load_verify_locations(capath=ca_dir)
    return ctx


class TokenAuth(httpx.Auth):
    """Bearer auth from a proxy file's DIRACX block, refreshed and written back as needed."""

    def __init__(self, proxy_path: Path, url: str, settings: BridgeSettings) -> None:
        self.proxy_path = proxy_path
        self.url = url
        self.settings = settings
        self._lock = threading.Lock()
        self._token: bundle.DiracxToken | None = None
        self._signature: tuple[int, int, int] | None = None
        self._token_endpoint: str | None = None
        self._refresh_client: httpx.Client | None = None
        self._refresh_pid = os.getpid()

    # -- reading -------------------------------------------------------------------------------

    def _file_signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.proxy_path)
        except FileNotFoundError:
            raise errors.CredentialsNotFound(
                f"No proxy at {self.proxy_path}: run dirac-proxy-init -g <your group> to create one"
            ) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> bundle.DiracxToken:
        try:
            return bundle.read_token(self.proxy_path)
        except bundle.NoTokenBlock:
            raise errors.TokenNotFound(
                f"The proxy {self.proxy_path} carries no DiracX token: run dirac-proxy-init -g <your group> "
                "while DiracX is reachable to add one. (If your VO is not meant to use DiracX yet, the "
                "administrators list it in /DiracX/DisabledVOs and your calls stay on the legacy services.)"
            ) from None
        except bundle.ProxyFileNotFound:
            raise errors.CredentialsNotFound(
                f"No proxy at {self.proxy_path}: run dirac-proxy-init -g <your group> to create one"
            ) from None
        except bundle.BundleError as exc:
            raise errors.TokenUnreadable(str(exc)) from None

    def current(self) -> bundle.DiracxToken:
        """The token to send now: cached, re-read if the file changed, refreshed if expiring."""
        with self._lock:
            signature = self._file_signature()
            if self._token is None or signature != self._signature:
                self._token = self._read()
                self._signature = signature
            if self._token.expired(margin=REFRESH_MARGIN):
                self._refresh_locked(stale=self._token)
            return self._token

    def refresh(self, stale: bundle.DiracxToken) -> bundle.DiracxToken:
        """Refresh after DiracX refused ``stale`` (a 401), unless someone already did."""
        with self._lock:
            self._refresh_locked(stale=stale, force=True)
            assert self._token is not None
            return self._token

    # -- refreshing ----------------------------------------------------------------------------

    def _refresh_locked(self, *, stale: bundle.DiracxToken, force: bool = False) -> None:
        def renew(current: bundle.DiracxToken | None) -> bundle.DiracxToken | None:
            if current is None:
                return None  # the block vanished meanwhile: reported below
            if current.access_token != stale.access_token and not current.expired(margin=REFRESH_MARGIN):
                return current  # another process refreshed while we waited for the lock
            if not force and not current.expired(margin=REFRESH_MARGIN):
                return current
            return self._refresh_grant(current)

        try:
            token = bundle.update_token(self.proxy_path, renew)
        except errors.BridgeError:
            raise
        except bundle.ProxyFileNotFound:
            raise errors.CredentialsNotFound(
                f"No proxy at {self.proxy_path}: run dirac-proxy-init -g <your group> to create one"
            ) from None
        except bundle.BundleLockError as exc:
            # The proxy's directory does not let us lock or rewrite it: keep the refreshed token
            # in memory for this process rather than fail the call.
            token = self._refresh_grant(stale)
            self._warn_once(f"refreshed DiracX token kept in memory only: {exc}")
        except bundle.BundleError as exc:
            raise errors.TokenUnreadable(str(exc)) from None
        if token is None:
            raise errors.TokenNotFound(
                f"The DiracX token disappeared from {self.proxy_path} while refreshing it: "
                "run dirac-proxy-init -g <your group>"
            )
        self._token = token
        try:
            self._signature = self._file_signature()
        except errors.BridgeError:
            self._signature = None

    _warned: set[str] = set()  # noqa: RUF012 - process-wide on purpose

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            from diracx_bridge.log import logger

            logger().warn(message)

    def _refresh_grant(self, current: bundle.DiracxToken) -> bundle.DiracxToken:
        claims = Claims.of(current.access_token)
        if _refresh_expires_on(current) <= time.time():
            raise self._expired(claims, current)
        client = self._refresh_http()
        try:
            r = client.post(
                self._endpoint(client),
                data={"grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": CLIENT_ID},
            )
        except httpx.TransportError as exc:
            raise errors.DiracXUnreachable(
                f"DiracX at {self.url} is unreachable ({type(exc).__name__}: {exc}) while refreshing the token "
                f"of {claims.username}"
            ) from None
        if r.status_code in (400, 401, 403):
            raise self._expired(claims, current, detail=_detail(r))
        if r.status_code != 200:
            raise errors.DiracXServerError(
                f"DiracX at {self.url} failed to refresh the token of {claims.username}: HTTP {r.status_code} "
                f"{_detail(r)}"
            )
        try:
            body = r.json()
            body.setdefault("refresh_token", None)
            if not body["refresh_token"]:
                body["refresh_token"] = current.refresh_token  # legacy-exchange tokens are not rotated
            return bundle.DiracxToken.from_token_response(body)
        except (ValueError, TypeError, AttributeError):
            # A 200 that is not a token response (a proxy's error page...): the message names no token.
            raise errors.DiracXServerError(
                f"DiracX at {self.url} answered the token refresh of {claims.username} with something that is not "
                "a token response; see the DiracX server logs"
            ) from None

    def _expired(self, claims: Claims, token: bundle.DiracxToken, detail: str = "") -> errors.SessionExpired:
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(_refresh_expires_on(token)))
        except (OverflowError, OSError, ValueError):  # inf: a refresh token that is not a readable JWT
            when = "an unknown time"
        return errors.SessionExpired(
            f"The DiracX session of {claims.username} (group {claims.group}) has expired (refresh token valid "
            f"until {when}{'; DiracX says: ' + detail if detail else ''}): run dirac-proxy-init -g {claims.group}"
        )

    def _refresh_http(self) -> httpx.Client:
        if self._refresh_client is None or self._refresh_pid != os.getpid():  # forked: not the parent's sockets
            self._refresh_pid = os.getpid()
            self._refresh_client = httpx.Client(
                timeout=httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout),
                verify=_ssl_context() if self.url.startswith("https") else True,
            )
        return self._refresh_client

    def _endpoint(self, client: httpx.Client) -> str:
        """The token endpoint, discovered once per process (not per call, not per refresh)."""
        if self._token_endpoint is None:
            endpoint = f"{self.url}/api/auth/token"
            try:
                r = client.get(f"{self.url}/.well-known/openid-configuration")
                if r.status_code == 200:
                    endpoint = r.json().get("token_endpoint") or endpoint
            except (httpx.TransportError, ValueError):
                pass
            self._token_endpoint = endpoint
        return self._token_endpoint

    # -- httpx.Auth ----------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.current()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            token = self.refresh(token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request

    def close(self) -> None:
        if self._refresh_client is not None:
            self._refresh_client.close()


def _refresh_expires_on(token: bundle.DiracxToken) -> float:
    """When the refresh token expires (its ``exp`` claim; DiracX verifies it, we only read it)."""
    try:
        return float(jwt.decode(token.refresh_token, options={"verify_signature": False})["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return float("inf")  # not a JWT we can read: let DiracX decide


def _detail(response: httpx.Response) -> str:
    """DiracX's ``detail`` (or the body), redacted and shortened, for a message."""
    try:
        detail: Any = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return errors.redact(detail)[:500]


class DiracXSession:
    """The connection pool and token of one identity towards one DiracX server."""

    def __init__(self, url: str, proxy_path: Path, settings: BridgeSettings) -> None:
        self.url = url
        self.proxy_path = proxy_path
        self.settings = settings
        self.auth = TokenAuth(proxy_path, url, settings)
        self._pid = os.getpid()
        self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            auth=self.auth,
            timeout=httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            headers={"DiracX-Client-Version": _client_version(), "User-Agent": "diracx-bridge"},
            verify=_ssl_context() if self.url.startswith("https") else True,
        )

    @property
    def client(self) -> httpx.Client:
        if os.getpid() != self._pid:  # forked: never share sockets with the parent
            self._pid = os.getpid()
            self._client = self._new_client()
        return self._client

    def claims(self) -> Claims:
        return Claims.of(self.auth.current().access_token)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        action: str = "",
        requires: str = "",
    ) -> httpx.Response:
        """Send one request; answer the 2xx response or raise the matching BridgeError.

        ``action`` and ``requires`` only feed the messages: what was being done, and which
        property (or ownership) DiracX demands for it, so a 403 says who lacks what.
        """
        attempts = 1 + (self.settings.read_retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                response = self.client.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    time.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                    continue
                raise errors.DiracXUnreachable(
                    f"DiracX at {self.url} is unreachable ({type(exc).__name__}: {str(exc) or 'no answer'}); "
                    f"{action or method + ' ' + path} was not done. Check /DiracX/URL and that the server is up."
                ) from None
            if response.status_code in _RETRY_STATUSES and attempt + 1 < attempts:
                time.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                continue
            break
        if response.is_success:
            return response
        raise self._error(response, action or f"{method} {path}", requires)

    def _error(self, response: httpx.Response, action: str, requires: str) -> errors.BridgeError:
        status, detail = response.status_code, _detail(response)
        if status == 401:
            who = self.claims().describe()
            return errors.Unauthenticated(
                f"DiracX at {self.url} did not accept the token of {who} for {action} ({detail}): "
                f"run dirac-proxy-init -g {self.claims().group} to get a new one"
            )
        if status == 403:
            need = f": this needs {requires}" if requires else ""
            return errors.Forbidden(f"DiracX refused {action} to {self.claims().describe()}{need}")
        if status >= 500:
            return errors.DiracXServerError(
                f"DiracX at {self.url} failed on {action} (HTTP {status}: {detail}); see the DiracX server logs"
            )
        return errors.DiracXRejected(f"DiracX refused {action} (HTTP {status}): {detail}", status=status, detail=detail)

    def close(self) -> None:
        self._client.close()
        self.auth.close()


_sessions: dict[tuple[str, Path], DiracXSession] = {}
#: Sessions replaced while another thread may still be using them: closed at exit, not before.
_retired: list[DiracXSession] = []
_sessions_lock = threading.Lock()
_MAX_SESSIONS = 32


def _transport(settings: BridgeSettings) -> tuple[object, ...]:
    """The settings a connection pool is built with; the others can change under a live session."""
    return (settings.url, settings.connect_timeout, settings.read_timeout)


def get_session(url: str, proxy_path: Path, settings: BridgeSettings) -> DiracXSession:
    """The process's session for (url, proxy): created once, then reused by every call.

    A CS change that does not concern the connection (retries, page size, DisabledVOs...) is
    applied to the live session; one that does (timeouts) gets a new pool, and the old one is
    retired rather than closed, because another thread may be in the middle of a call on it.
    """
    key = (url, proxy_path)
    session = _sessions.get(key)
    if session is not None and session.settings == settings:
        return session
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None and _transport(session.settings) == _transport(settings):
            session.settings = session.auth.settings = settings
            return session
        if session is not None:
            _retired.append(session)
        elif len(_sessions) >= _MAX_SESSIONS:
            _retired.append(_sessions.pop(next(iter(_sessions))))
        while len(_retired) > _MAX_SESSIONS:
            _retired.pop(0).close()  # long replaced: no call can still be running on it
        session = _sessions[key] = DiracXSession(url, proxy_path, settings)
        return session


def _after_fork_in_child() -> None:
    """A child forked while another thread held a lock would inherit it held: start afresh."""
    global _sessions_lock  # noqa: PLW0603 - the module-level lock is the thing being replaced
    _sessions_lock = threading.Lock()
    for session in [*_sessions.values(), *_retired]:
        session.auth._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def close_all() -> None:
    with _sessions_lock:
        for session in [*_sessions.values(), *_retired]:
            session.close()
        _sessions.clear()
        _retired.clear()
