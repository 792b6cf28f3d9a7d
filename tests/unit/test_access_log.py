"""The grid's DiracX access log: written before the client can read the answer, never a token in it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from diracx_bridge.testing.access_log import (
    ACCESS_LOG_ENV,
    AccessLog,
    AccessLogEntry,
    AccessLogMiddleware,
    wrap_from_environment,
)

SECRET = "eyJhbGciOiJSUzI1NiJ9.secret-payload.signature"


def http_scope(path: str = "/api/jobs/search", query: bytes = b"page=1&per_page=100", **headers: str) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def answering_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 206, "headers": []})
    await send({"type": "http.response.body", "body": b"[]"})


def serve(middleware: AccessLogMiddleware, scope: dict) -> list[tuple[str, list[str]]]:
    """Run one request; for each message the server gets, what the log held at that moment."""
    seen: list[tuple[str, list[str]]] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        seen.append((message["type"], middleware.path.read_text().splitlines()))

    asyncio.run(middleware(scope, receive, send))
    return seen


def test_the_entry_is_on_disk_when_the_response_starts(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    middleware = AccessLogMiddleware(answering_app, log)
    seen = serve(middleware, http_scope(user_agent="diracx-bridge", authorization=f"Bearer {SECRET}"))
    (start_type, at_start), (body_type, _) = seen
    assert (start_type, body_type) == ("http.response.start", "http.response.body")
    assert [json.loads(line) for line in at_start] == [
        {
            "seq": 1,
            "method": "POST",
            "path": "/api/jobs/search",
            "query": "page=1&per_page=100",
            "status": 206,
            "user_agent": "diracx-bridge",
        }
    ]


def test_no_header_but_the_user_agent_is_written(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    middleware = AccessLogMiddleware(answering_app, log)
    serve(middleware, http_scope(user_agent="ua", authorization=f"Bearer {SECRET}", cookie=f"session={SECRET}"))
    text = log.read_text()
    assert SECRET not in text and "Bearer" not in text and "authorization" not in text.lower()
    assert set(json.loads(text)) == {"seq", "method", "path", "query", "status", "user_agent"}


def test_secret_query_parameters_are_masked(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    middleware = AccessLogMiddleware(answering_app, log)
    serve(middleware, http_scope("/api/auth/authorize/complete", f"code={SECRET}&state={SECRET}&x=1".encode()))
    (entry,) = AccessLog(log).entries()
    assert SECRET not in log.read_text()
    assert entry.query == "code=%2A%2A%2A&state=%2A%2A%2A&x=1"


def test_an_app_that_raises_before_answering_is_logged_as_500(tmp_path: Path) -> None:
    async def broken(scope, receive, send) -> None:
        raise RuntimeError("boom")

    log = tmp_path / "access.log"
    with pytest.raises(RuntimeError):
        serve(AccessLogMiddleware(broken, log), http_scope())
    assert [e.status for e in AccessLog(log).entries()] == [500]


def test_lifespan_passes_through_unlogged(tmp_path: Path) -> None:
    calls = []

    async def app(scope, receive, send) -> None:
        calls.append(scope["type"])

    log = tmp_path / "access.log"
    asyncio.run(AccessLogMiddleware(app, log)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert calls == ["lifespan"]
    assert log.read_text() == ""


def test_a_restarted_server_goes_on_counting_and_marks_still_hold(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    reader = AccessLog(log)
    assert reader.mark() == 0 and reader.since(0) == []  # before the server ever started
    serve(AccessLogMiddleware(answering_app, log), http_scope())
    mark = reader.mark()
    serve(AccessLogMiddleware(answering_app, log), http_scope("/api/health/ready", b""))  # a new server process
    assert [e.seq for e in reader.entries()] == [1, 2]
    assert reader.since(mark) == [AccessLogEntry(2, "POST", "/api/health/ready", "", 206, None)]


def test_a_half_written_line_is_left_for_later(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    serve(AccessLogMiddleware(answering_app, log), http_scope(user_agent="diracx-bridge"))
    with log.open("a") as f:
        f.write('{"seq": 2, "meth')
    (entry,) = AccessLog(log).entries()
    assert entry.from_bridge


def test_capture_collects_what_the_block_caused(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    middleware = AccessLogMiddleware(answering_app, log)
    serve(middleware, http_scope("/before"))
    with AccessLog(log).capture() as seen:
        serve(middleware, http_scope("/during"))
    assert [e.path for e in seen] == ["/during"]


def test_the_app_is_wrapped_only_when_the_grid_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ACCESS_LOG_ENV, raising=False)
    assert wrap_from_environment(answering_app) is answering_app
    monkeypatch.setenv(ACCESS_LOG_ENV, str(tmp_path / "access.log"))
    wrapped = wrap_from_environment(answering_app)
    assert isinstance(wrapped, AccessLogMiddleware) and wrapped.path == tmp_path / "access.log"
