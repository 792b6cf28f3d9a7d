"""A fake DiracX sandbox store (its routes on ``FakeDiracX``) and a fake S3 (an ``httpx.MockTransport``).

The presigned URLs carry a fake signature (:data:`SIGNATURE`): tests assert it never shows up in a
message or a log line.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from core_test_helpers import GROUP, USER, VO, FakeDiracX

S3 = "http://s3.test:9000"
BUCKET = "sandboxes"
SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZS1vZi1zMw"
SE = "SandboxSE"


def pfn_for(checksum: str, fmt: str = "tar.zst", *, user: str = USER, group: str = GROUP, vo: str = VO) -> str:
    return f"/S3/{BUCKET}/{vo}/{group}/{user}/sha256:{checksum}.{fmt}"


def parse_multipart(request: httpx.Request) -> tuple[dict[str, str], bytes]:
    """The form fields and the file of a multipart POST (enough of RFC 7578 for httpx's encoder)."""
    boundary = re.search(r"boundary=([^;]+)", request.headers["content-type"]).group(1).encode()  # type: ignore[union-attr]
    fields: dict[str, str] = {}
    content = b""
    for part in request.read().split(b"--" + boundary)[1:-1]:
        head, _, body = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head).group(1).decode()  # type: ignore[union-attr]
        if b"filename=" in head:
            content = body
        else:
            fields[name] = body.decode()
    return fields, content


@dataclass
class FakeStore:
    """DiracX's sandbox routes and the S3 bucket behind them."""

    diracx: FakeDiracX
    objects: dict[str, bytes] = field(default_factory=dict)
    #: (job id, type) -> bare PFNs, as DiracX's SandboxMetadataDB lists them.
    assigned: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    s3_requests: list[httpx.Request] = field(default_factory=list)
    #: Failures S3 answers before answering normally (each: a response, or an exception to raise).
    s3_failures: list[httpx.Response | Exception] = field(default_factory=list)
    limit: int = 100 * 1024 * 1024
    upload_urls_issued: int = 0
    download_urls_issued: int = 0
    owner_of_job: dict[int, str] = field(default_factory=dict)
    extra_s3: Callable[[httpx.Request], httpx.Response | None] | None = None

    def install(self) -> FakeStore:
        o = self.diracx.overrides
        o[("POST", "/api/jobs/sandbox")] = self._initiate
        o[("GET", "/api/jobs/sandbox")] = self._download_url
        for job_id in range(1, 20):
            o[("GET", f"/api/jobs/{job_id}/sandbox")] = self._job_sandboxes
            o[("PATCH", f"/api/jobs/{job_id}/sandbox/output")] = self._assign
        return self

    # -- DiracX --------------------------------------------------------------------------------------

    def _initiate(self, request: httpx.Request) -> httpx.Response:
        import json

        info = json.loads(request.content)
        if info["format"] not in ("tar.bz2", "tar.zst"):
            detail = [{"type": "enum", "loc": ["body", "format"], "msg": "Input should be 'tar.bz2' or 'tar.zst'"}]
            return httpx.Response(422, json={"detail": detail})
        if info["size"] > self.limit:
            return httpx.Response(400, json={"detail": f"Sandbox too large, maximum allowed is {self.limit} bytes"})
        pfn = pfn_for(info["checksum"], info["format"])
        if pfn in self.objects:
            return httpx.Response(200, json={"pfn": f"SB:{SE}|{pfn}"})
        self.upload_urls_issued += 1
        fields = {
            "key": pfn.split("/", 3)[3],
            "x-amz-checksum-sha256": info["checksum"],
            "X-Amz-Signature": SIGNATURE,
            "policy": "eyJleHBpcmF0aW9uIjogIjIwMzAifQ",
        }
        return httpx.Response(200, json={"pfn": f"SB:{SE}|{pfn}", "url": f"{S3}/{BUCKET}", "fields": fields})

    def _download_url(self, request: httpx.Request) -> httpx.Response:
        pfn = request.url.params["pfn"]
        if f"/{USER}/" not in pfn:
            return httpx.Response(
                403, json={"detail": f"Invalid PFN. PFN must start with /S3/{BUCKET}/{VO}/{GROUP}/{USER}/"}
            )
        self.download_urls_issued += 1
        key = pfn.split("/", 3)[3]
        url = f"{S3}/{BUCKET}/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&X-Amz-Signature={SIGNATURE}"
        return httpx.Response(200, json={"url": url, "expires_in": 300})

    def _job_sandboxes(self, request: httpx.Request) -> httpx.Response:
        job_id = int(request.url.path.split("/")[3])
        if self.owner_of_job.get(job_id, USER) != USER:
            return httpx.Response(403, json={"detail": "Forbidden"})
        found = self.assigned.get(job_id, {})
        return httpx.Response(200, json={"Input": found.get("Input", []), "Output": found.get("Output", [])})

    def _assign(self, request: httpx.Request) -> httpx.Response:
        import json

        job_id = int(request.url.path.split("/")[3])
        pfn = json.loads(request.content)
        if pfn.split("|")[-1] not in self.objects:
            return httpx.Response(400, json={"detail": "Sandbox not found"})
        self.assigned.setdefault(job_id, {}).setdefault("Output", []).append(pfn.split("|")[-1])
        return httpx.Response(200, json=None)

    # -- S3 ------------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._s3)

    def _s3(self, request: httpx.Request) -> httpx.Response:
        self.s3_requests.append(request)
        if self.extra_s3 is not None:
            answer = self.extra_s3(request)
            if answer is not None:
                return answer
        if self.s3_failures:
            failure = self.s3_failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        if request.method == "POST":
            fields, content = parse_multipart(request)
            if hashlib.sha256(content).hexdigest() != fields["x-amz-checksum-sha256"]:
                return httpx.Response(400, text="<Error><Code>BadDigest</Code></Error>")
            self.objects[f"/S3/{BUCKET}/{fields['key']}"] = content
            return httpx.Response(204)
        if request.method == "GET":
            key = request.url.path.split("/", 2)[2]
            data = self.objects.get(f"/S3/{BUCKET}/{key}")
            if data is None:
                return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")
            return httpx.Response(200, content=data)
        return httpx.Response(405)

    def put(self, data: bytes, fmt: str = "tar.zst", **owner: str) -> str:
        """Store ``data`` as a sandbox; answer its ``SB:`` location."""
        pfn = pfn_for(hashlib.sha256(data).hexdigest(), fmt, **owner)
        self.objects[pfn] = data
        return f"SB:{SE}|{pfn}"


def expired() -> httpx.Response:
    return httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")


def tar_bytes(members: dict[str, bytes], mode: str = "w:bz2") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def assert_no_url_secret(text: Any) -> None:
    rendered = str(text)
    assert SIGNATURE not in rendered
    assert f"{S3}/{BUCKET}/" not in rendered  # no presigned URL (its path and query are credentials)
