"""One pooled HTTP client per (DiracX URL, identity), shared by every call of a process.

DIRAC 9.1's FutureClients build a new ``SyncDiracClient`` per call: a discovery request, a new
SSL context and a new connection pool each time, plus a token file per refresh token left in
``$TMPDIR``. Here a process keeps one :class:`DiracXSession` per (URL, proxy file) for its whole
life, so 10,000 calls reuse a handful of connections. Idempotent reads are retried a bounded
number of times on connection errors and 502/503/504; every failure leaves as a
:mod:`diracx_bridge.errors` exception whose text says what to do.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from diracx_bridge import errors, tls
from diracx_bridge.session._auth import Claims, TokenAuth, _detail, client_headers
from diracx_bridge.settings import BridgeSettings

_RETRY_STATUSES = frozenset({502, 503, 504})
_BACKOFF = (0.2, 0.6, 1.5)


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
            headers=client_headers(),
            verify=tls.verify_for(self.url),
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
                    self.url, f"{type(exc).__name__}: {str(exc) or 'no answer'}", doing=action or f"{method} {path}"
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
            claims = self.claims()
            return errors.Unauthenticated(self.url, action, who=claims.describe(), group=claims.group, detail=detail)
        if status == 403:
            return errors.Forbidden(action, who=self.claims().describe(), requires=requires)
        if status >= 500:
            return errors.DiracXServerError(self.url, action, status=status, detail=detail)
        return errors.DiracXRejected(action, status=status, detail=detail)

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
