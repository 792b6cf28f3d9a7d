"""What the sandbox tests share: the switch, the client, and which side moved a sandbox's bytes.

Three sides can move a sandbox's bytes on the grid-in-a-box, and each leaves a trace written
before its answer leaves, so a call that has returned has left all of them (no sleep needed):

* the S3 front (:mod:`diracx_bridge.testing.s3_front`): one line per S3 request, with the bytes
  moved and the ``User-Agent`` (the bridge's own HTTP client, or ``python-requests`` when DIRAC's
  SandboxStore service relays a ``/S3/`` sandbox from DiracX itself);
* DiracX's access log: the sandbox routes (``POST /api/jobs/sandbox``, ``GET /api/jobs/sandbox``,
  ``/api/jobs/<id>/sandbox...``);
* DIRAC's SandboxStore service: ``Executing action ... FileTransfer/fromClient|toClient`` (a DISET
  transfer) and ``RPC/<method>`` lines in its log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from traffic import LEGACY_CALL, LegacyCall, _ServiceLogs

from diracx_bridge.testing.access_log import AccessLogEntry
from diracx_bridge.testing.grid import Grid
from diracx_bridge.testing.s3_front import S3Request

SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/SandboxStore"
ON = {SWITCH: "yes"}
OFF = {SWITCH: None}
SBC = "DIRAC.WorkloadManagementSystem.Client.SandboxStoreClient.SandboxStoreClient"
#: DiracX 0.7.0's PFNs: ``SB:SandboxSE|/S3/<bucket>/<vo>/<group>/<user>/sha256:<hex>.<format>``.
DIRACX_PFN = re.compile(
    r"^SB:SandboxSE\|/S3/sandboxes/(?P<vo>[^/]+)/(?P<group>[^/]+)/(?P<user>[^/]+)/sha256:(?P<sha>[0-9a-f]{64})"
    r"\.(?P<fmt>tar\.bz2|tar\.zst)$"
)
LEGACY_PFN = re.compile(r"^SB:ProductionSandboxSE\|/SandBox/")
LEGACY_TRANSFER = re.compile(
    r"Executing action \([^)]*\)\[(?P<group>[^:\]]+):(?P<user>[^\]]+)\] FileTransfer/(?P<method>\w+)\("
)
#: What a presigned URL or a bearer token looks like in text: none may appear in a message or log.
SECRET_MARKERS = re.compile(
    r"X-Amz-(Signature|Credential|Security-Token)|AWSAccessKeyId|Signature=|x-amz-signature|"
    r"\beyJ[A-Za-z0-9_-]{10,}|Bearer [A-Za-z0-9]|\"policy\"|'policy'",
    re.IGNORECASE,
)
#: Words of an instruction: a message that says what to do contains one of them.
ACTIONABLE = re.compile(
    r"\b(retry|try again|run|ask|contact|use|reduce|split|upload|check|switch|resubmit|remove|set)\b", re.I
)


@dataclass
class SandboxTraffic:
    """The requests each side received while a block ran."""

    s3: list[S3Request] = field(default_factory=list)
    diracx: list[AccessLogEntry] = field(default_factory=list)
    legacy: list[LegacyCall] = field(default_factory=list)
    transfers: list[LegacyCall] = field(default_factory=list)

    def s3_bytes(self, method: str, agent: str | None = None) -> int:
        """Bytes moved by successful S3 requests of ``method`` (by a User-Agent starting with ``agent``)."""
        moved = 0
        for r in self.s3:
            if r.method == method and r.status < 300 and (agent is None or (r.user_agent or "").startswith(agent)):
                moved += r.bytes_in if method == "POST" else r.bytes_out
        return moved

    def legacy_calls(self, method: str) -> list[LegacyCall]:
        """RPCs the legacy services ran (``getSandboxesAssignedToEntity``...)."""
        return [c for c in self.legacy if c.method == method]

    def s3_requests(self, method: str) -> list[S3Request]:
        return [r for r in self.s3 if r.method == method]

    def sandbox_routes(self) -> list[tuple[str, str, int]]:
        return [(e.method, e.path, e.status) for e in self.diracx if "/sandbox" in e.path]

    def legacy_transfers(self, direction: str) -> list[LegacyCall]:
        return [t for t in self.transfers if t.method == direction]

    def assert_straight_to_s3(self, method: str) -> None:
        """The caller moved the bytes with S3 itself: DiracX gave a URL, the legacy store moved nothing."""
        assert self.s3_bytes(method) > 0, f"no {method} moved bytes through S3: {self.s3}"
        assert not any((r.user_agent or "").startswith("python-requests") for r in self.s3), (
            f"DIRAC's SandboxStore service relayed S3: {self.s3}"
        )
        assert not self.transfers, f"the legacy SandboxStore moved bytes: {self.transfers}"
        assert self.sandbox_routes(), f"DiracX gave no sandbox URL: {self.diracx}"

    def assert_legacy_store(self, direction: str) -> None:
        """DIRAC's SandboxStore moved the bytes from or to its own disk; S3 and DiracX were not involved."""
        assert self.legacy_transfers(direction), f"no legacy FileTransfer/{direction}: {self.legacy}"
        assert not self.s3, f"S3 was touched: {self.s3}"
        assert not self.sandbox_routes(), f"DiracX's sandbox routes were used: {self.diracx}"


@contextlib.contextmanager
def observe_sandboxes(grid: Grid) -> Iterator[SandboxTraffic]:
    """``with observe_sandboxes(grid) as seen: call()``: then ``seen`` says who moved which bytes."""
    assert grid.diracx is not None and grid.diracx.s3_front is not None
    s3, access, services = grid.diracx.s3_front.log, grid.diracx.access_log, _ServiceLogs(grid.log_dir)
    s3_mark, access_mark, service_mark = s3.mark(), access.mark(), services.mark()
    seen = SandboxTraffic()
    try:
        yield seen
    finally:
        seen.s3 = s3.since(s3_mark)
        seen.diracx = access.since(access_mark)
        seen.legacy = services.since(service_mark, LEGACY_CALL)
        seen.transfers = services.since(service_mark, LEGACY_TRANSFER)


def random_files(directory: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """Files of pseudorandom (incompressible) content, so each sandbox's archive is distinct."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, size in sizes.items():
        path = directory / name
        path.write_bytes(os.urandom(size))
        files[name] = path
    return files


def tree_digest(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_no_secrets(*texts: Any) -> None:
    """No presigned URL, S3 signature or bearer token in what a user or a log can read."""
    for text in texts:
        found = SECRET_MARKERS.search(str(text))
        assert found is None, f"a credential leaked ({found.group(0)!r}) in: {str(text)[:2000]}"


def assert_actionable_error(result: Any, *, mentions: tuple[str, ...] = ()) -> str:
    """A legacy-shaped ``S_ERROR`` whose message says what to do; returns the message."""
    assert isinstance(result, dict), result
    assert result.get("OK") is False, result
    message = result.get("Message")
    assert isinstance(message, str) and message, result
    assert isinstance(result.get("Errno"), int), f"no DErrno code: {result}"
    assert ACTIONABLE.search(message), f"the message does not say what to do: {message!r}"
    for word in mentions:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert_no_secrets(result)
    return message


class WorkerLog:
    """What a DIRAC worker process printed (its stderr, with DIRAC's log) from a mark on."""

    def __init__(self, grid: Grid, user: str = "ciuser", group: str = "civo_user") -> None:
        self.path = grid.log_dir / f"worker-{user}@{group}.log"
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")


def assigned(grid: Grid, job: int, kind: str, timeout: float = 120) -> list[str]:
    """The PFNs of ``job``'s sandboxes of ``kind`` in SandboxMetadataDB, once there is one.

    DIRAC's JobSanity optimizer assigns an input sandbox asynchronously after submission; there is
    no event to wait on, so the database is polled with a deadline.
    """
    engine = sa.create_engine(grid.mysql.url("SandboxMetadataDB", "mysql+pymysql"))
    query = sa.text(
        "SELECT s.SEName, s.SEPFN FROM sb_EntityMapping m JOIN sb_SandBoxes s ON s.SBId = m.SBId "
        "WHERE m.EntityId = :e AND m.Type = :t"
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query, {"e": f"Job:{job}", "t": kind}).all()
            if rows:
                return [f"SB:{row.SEName}|{row.SEPFN}" for row in rows]
            assert time.monotonic() < deadline, f"no {kind} sandbox assigned to job {job} after {timeout} s"
            time.sleep(0.5)
    finally:
        engine.dispose()
