"""The S3 front of the grid-in-a-box: the address DiracX's presigned URLs name, in front of moto.

DiracX hands out presigned S3 URLs and the client moves the bytes itself. A sandbox test must
prove *which side* moved them (the bridge straight to S3, or DIRAC's SandboxStore service relaying
them) and must be able to break the transfer on purpose. moto can do neither, so DiracX's
``DIRACX_SANDBOX_STORE_S3_CLIENT_KWARGS`` endpoint is this front (a small aiohttp reverse proxy,
in its own process), and every presigned URL names it. It:

* streams both ways (a 1 GiB sandbox never sits in its memory);
* appends one JSON line per request to its access log: method, **path without the query string**
  (a presigned query string is a credential), status, bytes in and out, the ``User-Agent``, and
  the fault it injected. The line is written before the last chunk of the answer leaves, so once
  a client call has returned, its lines are on disk: tests read them without sleeping;
* injects faults on the next N requests (optionally of one method) that tests ask for through
  its control path ``/_front/faults`` (never logged; ``_`` cannot start a bucket name):

  ``expired``  answer 403 ``AccessDenied`` "Request has expired" (S3's answer to an expired
               presigned URL) without forwarding;
  ``cut``      cut the connection mid-transfer: an upload is read halfway (nothing is forwarded,
               so S3 never sees a partial object), a download is cut after half of its body;
  ``corrupt``  flip 16 bytes of the body that flows, keeping its length: an upload's just before
               its closing multipart boundary (inside the file, not the form fields), a
               download's in its middle;
  ``reset``    close the connection at once, before reading anything (a refused connection,
               without stopping the process; :meth:`S3Front.stop` refuses for real).

Run: ``python -m diracx_bridge.testing.s3_front --port P --upstream URL --log FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from diracx_bridge.testing.access_log import JsonLinesLog
from diracx_bridge.testing.processes import ManagedProcess, free_port

CONTROL = "/_front/faults"
FAULT_KINDS = frozenset({"expired", "cut", "corrupt", "reset"})
#: Headers that belong to one connection, not to the request (RFC 9110 7.6.1), plus Host.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
CHUNK = 256 * 1024
EXPIRED_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message></Error>"
)


# --- the server (runs in its own process) ---------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    count: int
    method: str | None = None

    def matches(self, method: str) -> bool:
        return self.count > 0 and self.method in (None, method)


@dataclass
class _State:
    upstream: str
    log_fd: int
    faults: list[Fault] = field(default_factory=list)
    seq: int = 0

    def take_fault(self, method: str) -> str | None:
        for fault in self.faults:
            if fault.matches(method):
                fault.count -= 1
                return fault.kind
        return None

    def log(self, request: Any, status: int, bytes_in: int, bytes_out: int, fault: str | None) -> None:
        self.seq += 1
        entry = {
            "seq": self.seq,
            "method": request.method,
            "path": request.path,  # never the query string: presigned URLs carry credentials there
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "user_agent": request.headers.get("User-Agent"),
            "fault": fault,
        }
        os.write(self.log_fd, (json.dumps(entry) + "\n").encode())


def _flip(chunk: bytes, start: int, at: int, width: int = 16) -> bytes:
    """``chunk`` (which begins at byte ``start`` of the body) with bytes ``at..at+width`` inverted."""
    lo, hi = max(at - start, 0), min(at + width - start, len(chunk))
    if lo >= hi:
        return chunk
    return chunk[:lo] + bytes(b ^ 0xFF for b in chunk[lo:hi]) + chunk[hi:]


class _Front:
    """The aiohttp handlers: the control path, the injected faults, and the streaming proxy."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.session: Any = None

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: Any) -> None:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector

        self.session = ClientSession(
            connector=TCPConnector(limit=64), timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )

    async def _close(self, _app: Any) -> None:
        await self.session.close()

    async def handle(self, request: Any) -> Any:
        if request.path == CONTROL:
            return await self.control(request)
        fault = self.state.take_fault(request.method)
        if fault == "reset":
            self.state.log(request, 0, 0, 0, fault)
            request.transport.abort()
            raise ConnectionResetError("s3-front: injected reset")
        if fault == "expired":
            return await self.expired(request)
        if fault == "cut" and request.method in ("POST", "PUT"):
            return await self.cut_upload(request)
        return await self.forward(request, fault)

    async def control(self, request: Any) -> Any:
        from aiohttp import web

        if request.method == "POST":
            spec = await request.json()
            if spec["kind"] not in FAULT_KINDS:
                return web.json_response({"error": f"unknown fault {spec['kind']}"}, status=400)
            self.state.faults.append(Fault(spec["kind"], int(spec.get("count", 1)), spec.get("method")))
        elif request.method == "DELETE":
            self.state.faults.clear()
        return web.json_response({"pending": [f.__dict__ for f in self.state.faults if f.count > 0]})

    async def expired(self, request: Any) -> Any:
        """S3's answer to a presigned URL past its expiry (the body is read, as S3 would)."""
        from aiohttp import web

        bytes_in = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            bytes_in += len(chunk)
        self.state.log(request, 403, bytes_in, len(EXPIRED_XML), "expired")
        return web.Response(status=403, text=EXPIRED_XML, content_type="application/xml")

    async def cut_upload(self, request: Any) -> Any:
        """Read half of the upload, forward none of it, and cut the connection."""
        declared = int(request.headers.get("Content-Length", "0"))
        bytes_in = 0
        async for chunk in request.content.iter_any():
            bytes_in += len(chunk)
            if bytes_in >= declared // 2:
                break
        self.state.log(request, 0, bytes_in, 0, "cut")
        request.transport.abort()
        raise ConnectionResetError("s3-front: injected cut")

    async def forward(self, request: Any, fault: str | None) -> Any:
        """Stream the request to moto and its answer back, breaking it as ``fault`` says."""
        from aiohttp import web

        counted = [0]
        corrupt_upload = fault == "corrupt" and request.method in ("POST", "PUT")
        # inside the file part: the closing boundary (``\r\n--<boundary>--\r\n``) is < 96 bytes
        corrupt_in = max(int(request.headers.get("Content-Length", "0")) - 112, 0)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(CHUNK):
                start = counted[0]
                counted[0] += len(chunk)
                yield _flip(chunk, start, corrupt_in) if corrupt_upload else chunk

        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.session.request(
            request.method,
            self.state.upstream + request.path_qs,
            headers=headers,
            data=body() if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    response.headers[name] = value
            length = upstream.headers.get("Content-Length")
            if length is not None:
                response.content_length = int(length)
            await response.prepare(request)
            half = int(length) // 2 if length else None
            cut_at = half if fault == "cut" else None
            corrupt_out = half if fault == "corrupt" and not corrupt_upload else None
            sent, held, received = 0, b"", 0
            async for data in upstream.content.iter_chunked(CHUNK):
                chunk = _flip(data, received, corrupt_out) if corrupt_out is not None else data
                received += len(chunk)
                if cut_at is not None and sent + len(held) + len(chunk) > cut_at:
                    part = (held + chunk)[: max(0, cut_at - sent)]
                    await response.write(part)
                    self.state.log(request, upstream.status, counted[0], sent + len(part), fault)
                    request.transport.abort()
                    raise ConnectionResetError("s3-front: injected cut")
                if held:  # one chunk held back, so the log line is written before the last one leaves
                    await response.write(held)
                    sent += len(held)
                held = chunk
            self.state.log(request, upstream.status, counted[0], sent + len(held), fault)
            if held:
                await response.write(held)
            await response.write_eof()
            return response


def serve(port: int, upstream: str, log: Path) -> None:
    from aiohttp import web

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    state = _State(upstream=upstream.rstrip("/"), log_fd=fd, seq=_last_seq(log))
    sys.stdout.write(f"s3-front on 127.0.0.1:{port} -> {upstream}\n")
    sys.stdout.flush()
    web.run_app(_Front(state).app(), host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


def _last_seq(path: Path) -> int:
    last = 0
    with contextlib.suppress(OSError), path.open("rb") as log:
        for line in log:
            with contextlib.suppress(ValueError, KeyError):
                last = int(json.loads(line)["seq"])
    return last


# --- the test side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Request:
    """One request the front received (its query string is never recorded)."""

    seq: int
    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    user_agent: str | None
    fault: str | None


class S3Log(JsonLinesLog[S3Request]):
    """What reached S3 through the front (read as :class:`.access_log.AccessLog` reads DiracX's)."""

    ENTRY = S3Request


@dataclass
class S3Front:
    """The front's process, seen from the grid: start, stop, inject faults, read the log."""

    upstream: str
    log_dir: Path
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> S3Log:
        return S3Log(self.log_dir / "s3-front-access.log")

    def launch(self, env: dict[str, str]) -> ManagedProcess:
        """Start the process (from the main thread: see processes.py); :meth:`wait_ready` waits."""
        self.port = self.port or free_port()
        argv = [sys.executable, "-m", __name__, "--port", str(self.port), "--upstream", self.upstream]
        argv += ["--log", str(self.log.path)]
        self.process = ManagedProcess("s3-front", argv, log_dir=self.log_dir, env=env).start()
        return self.process

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        self.process.wait_for_port(self.port, timeout=timeout)

    def stop(self) -> None:
        """Stop the front: S3 refuses connections until :meth:`restart` (moto keeps its objects)."""
        if self.process is not None:
            self.process.stop()

    def restart(self, env: dict[str, str]) -> None:
        self.launch(env)
        self.wait_ready()

    def inject(self, kind: str, count: int = 1, method: str | None = None) -> None:
        """The next ``count`` requests (of ``method``, or any) get fault ``kind`` (see the module)."""
        r = httpx.post(f"{self.url}{CONTROL}", json={"kind": kind, "count": count, "method": method}, timeout=10)
        r.raise_for_status()

    def pending(self) -> list[dict[str, Any]]:
        """The faults not used up yet (a test checks its fault was actually hit)."""
        return list(httpx.get(f"{self.url}{CONTROL}", timeout=10).json()["pending"])

    def clear(self) -> None:
        httpx.delete(f"{self.url}{CONTROL}", timeout=10).raise_for_status()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.upstream, args.log)


if __name__ == "__main__":
    main()
