"""The grid's S3 front, against a small in-process upstream: streaming, its log, and every fault.

The sandbox tests rely on the front's log to prove which side moved the bytes and on its faults
to break transfers; this checks both without a grid (a few seconds: one process start).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from diracx_bridge.testing.s3_front import S3Front

STORE: dict[str, bytes] = {}
QUERY = "X-Amz-Credential=testing%2F20261202&X-Amz-Signature=0123456789abcdef&X-Amz-Expires=300"


class Upstream(BaseHTTPRequestHandler):
    """An S3 stand-in: POST /bucket stores the body under ``key`` (a header here), GET returns it."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        STORE[self.headers.get("x-key", "k")] = body
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        data = STORE.get(self.path.split("?")[0].rsplit("/", 1)[-1])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Front]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logs: Path = tmp_path_factory.mktemp("front")
    front = S3Front(upstream=f"http://127.0.0.1:{server.server_address[1]}", log_dir=logs)
    front.launch(dict(os.environ))
    front.wait_ready()
    yield front
    front.stop()
    server.shutdown()


@pytest.fixture
def client(front: S3Front) -> Iterator[httpx.Client]:
    front.clear()
    with httpx.Client(base_url=front.url, timeout=30) as c:
        yield c


def test_streams_both_ways_and_logs_without_the_query_string(front, client):
    data = os.urandom(3 * 1024 * 1024 + 5)
    with front.log.capture() as seen:
        assert client.post(f"/bucket?{QUERY}", content=data, headers={"x-key": "a"}).status_code == 204
        got = client.get(f"/bucket/a?{QUERY}")
    assert got.content == data
    assert [(r.method, r.path, r.status, r.bytes_in, r.bytes_out, r.fault) for r in seen] == [
        ("POST", "/bucket", 204, len(data), 0, None),
        ("GET", "/bucket/a", 200, 0, len(data), None),
    ]
    text = front.log.path.read_text()
    assert "Signature" not in text and "Credential" not in text and "?" not in text


def test_expired_answers_403_once_for_the_method_asked(front, client):
    STORE["e"] = b"x" * 1000
    front.inject("expired", 1, "GET")
    first, second = client.get("/bucket/e"), client.get("/bucket/e")
    assert first.status_code == 403 and b"Request has expired" in first.content
    assert second.status_code == 200 and front.pending() == []


def test_cut_download_and_upload(front, client):
    STORE["c"] = os.urandom(1024 * 1024)
    front.inject("cut", 1, "GET")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/bucket/c")
    front.inject("cut", 1, "POST")
    with pytest.raises(httpx.TransportError), front.log.capture() as seen:
        client.post("/bucket", content=os.urandom(2 * 1024 * 1024), headers={"x-key": "never"})
    assert "never" not in STORE, "a cut upload reached the store"
    assert seen[0].fault == "cut" and 0 < seen[0].bytes_in < 2 * 1024 * 1024


def test_corrupt_keeps_the_length_and_changes_the_bytes(front, client):
    STORE["x"] = data = os.urandom(100_000)
    front.inject("corrupt", 1, "GET")
    got = client.get("/bucket/x").content
    assert len(got) == len(data) and got != data
    front.inject("corrupt", 1, "POST")
    client.post("/bucket", content=data, headers={"x-key": "y"})
    assert len(STORE["y"]) == len(data) and STORE["y"] != data
    assert STORE["y"][-96:] == data[-96:], "the end (a multipart closing boundary) is left intact"


def test_reset_and_stop(front, client):
    front.inject("reset", 1)
    with pytest.raises(httpx.TransportError):
        client.get("/bucket/x")
    front.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{front.url}/bucket/x", timeout=5)
    front.restart(dict(os.environ))
    assert httpx.get(f"{front.url}/bucket/x", timeout=5).status_code == 200
