"""DiracX's access log in the grid-in-a-box: which requests reached DiracX, and from whom.

A parity test compares a legacy answer with an adapted one; if the routing quietly stayed on
legacy, it would compare legacy with legacy and pass. The access log lets a test prove which side
answered: :class:`AccessLogMiddleware` wraps DiracX's ASGI app in the server process and appends
one JSON line per request; :class:`AccessLog` reads those lines back in the test process.

A line is written (one ``write`` on an ``O_APPEND`` descriptor, so nothing is buffered) when the
response *starts*, before the client can read the answer: once a call has returned, every
request it made is on disk, and a test needs no sleep. uvicorn's own access log is no substitute:
it is written through a buffered stream, in a format meant for humans.

Only the ``User-Agent`` header is recorded: ``Authorization`` carries tokens, and no other
header tells the tests anything. Query parameters that may carry a secret are masked.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode

#: The environment variable that names the log file in the DiracX server process.
ACCESS_LOG_ENV = "DIRACX_BRIDGE_ACCESS_LOG"
#: The ``User-Agent`` of the bridge's pooled HTTP session (``diracx_bridge.session``).
BRIDGE_UA = "diracx-bridge"
#: The ``User-Agent`` of the ProxyManager's legacy token exchange (``proxy_token_exchange.exchange``).
PROXY_MANAGER_UA = "diracx-bridge (ProxyManager)"
#: Query parameters whose values are never written (OAuth codes and states, tokens).
SECRET_PARAMS = frozenset({"code", "state", "user_code", "device_code", "access_token", "refresh_token"})

E = TypeVar("E")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class AccessLogEntry:
    """One request DiracX received: ``seq`` grows by one per request, across server restarts."""

    seq: int
    method: str
    path: str
    query: str
    status: int
    user_agent: str | None

    @property
    def from_bridge(self) -> bool:
        """Sent by the bridge's session (an adapted call), not by DIRAC's FutureClient or a test."""
        return self.user_agent == BRIDGE_UA


def _masked_query(raw: bytes) -> str:
    text = raw.decode("latin-1")
    if not text:
        return ""
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(name in SECRET_PARAMS for name, _ in pairs):
        return text
    return urlencode([(name, "***" if name in SECRET_PARAMS else value) for name, value in pairs])


def _user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"user-agent":
            return bytes(value).decode("latin-1")
    return None


def _last_seq(path: Path) -> int:
    """The sequence number of the file's last line, so that a restarted server goes on counting."""
    last = 0
    with contextlib.suppress(OSError), path.open("rb") as log:
        for line in log:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                last = int(json.loads(line)["seq"])
    return last


class AccessLogMiddleware:
    """Pure ASGI middleware: one JSON line per HTTP request, appended when the response starts."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self.app = app
        self.path = path
        self._seq = _last_seq(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websockets: not requests to log
            await self.app(scope, receive, send)
            return
        started = False

        async def logging_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self._write(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        except Exception:
            if not started:  # uvicorn answers 500 for an app that raised before answering
                self._write(scope, 500)
            raise

    def _write(self, scope: Scope, status: int) -> None:
        self._seq += 1
        entry = {
            "seq": self._seq,
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "query": _masked_query(scope.get("query_string", b"")),
            "status": status,
            "user_agent": _user_agent(scope),
        }
        os.write(self._fd, (json.dumps(entry) + "\n").encode())


def wrap_from_environment(app: ASGIApp) -> ASGIApp:
    """``app`` wrapped in the access log named by ``$DIRACX_BRIDGE_ACCESS_LOG``, or as is when unset."""
    path = os.environ.get(ACCESS_LOG_ENV)
    return AccessLogMiddleware(app, Path(path)) if path else app


class JsonLinesLog(Generic[E]):
    """The test side of a JSON-lines log written one whole line per request: ``mark()`` a point,
    make a call, read what was logged ``since(mark)`` (each line as an ``ENTRY``)."""

    ENTRY: Callable[..., E]

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """The current end of the log (a byte offset; valid across server restarts)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, mark: int = 0) -> list[E]:
        """Every request logged after ``mark``, oldest first."""
        try:
            with self.path.open("rb") as log:
                log.seek(mark)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line is written whole, but never read half of one
        return [self.ENTRY(**json.loads(line)) for line in complete.splitlines() if line.strip()]

    def entries(self) -> list[E]:
        return self.since(0)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[E]]:
        """``with log.capture() as seen: call()``: afterwards ``seen`` holds the requests the call made."""
        mark = self.mark()
        seen: list[E] = []
        try:
            yield seen
        finally:
            seen.extend(self.since(mark))


class AccessLog(JsonLinesLog[AccessLogEntry]):
    """What reached DiracX."""

    ENTRY = AccessLogEntry
