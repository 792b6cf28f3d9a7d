"""Every failure of issue 10 on the grid-in-a-box: a legacy ``S_ERROR`` that says what to do, nothing lost.

The faults are real: the S3 front (:mod:`diracx_bridge.testing.s3_front`) answers "Request has
expired", cuts a connection mid-transfer, corrupts a body or stops listening; DiracX and DIRAC
are the grid's own. The client is DIRAC's unchanged ``SandboxStoreClient`` with its switch on.
Each case checks the ``S_ERROR`` shape (``Message``, a DErrno ``Errno``, ``SandboxFileName`` on
uploads), that the message says what to do, and that no presigned URL or token appears in it
or in what the DIRAC process logged. Over DiracX's size limit: ``test_sandbox_store_large``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sandboxes import (
    DIRACX_PFN,
    LEGACY_PFN,
    OFF,
    ON,
    SBC,
    WorkerLog,
    assert_actionable_error,
    assert_no_secrets,
    observe_sandboxes,
    random_files,
    tree_digest,
)

from diracx_bridge.testing.diracx_server import SANDBOX_BUCKET
from diracx_bridge.testing.s3_front import S3Front

pytestmark = pytest.mark.integration

#: The bridge's archive format option (the adapter's settings).
FORMAT = "/DiracX/Bridge/WorkloadManagement/SandboxStore/Format"
JDL = '[ Executable = "/bin/true"; JobName = "sandbox-errors"; StdOutput = "std.out"; OutputSandbox = {"std.out"}; ]'


@pytest.fixture
def user(gs):
    return gs.worker("ciuser", "civo_user")


@pytest.fixture
def front(grid) -> Iterator[S3Front]:
    """The S3 front, with no fault left over for the next test."""
    assert grid.diracx is not None and grid.diracx.s3_front is not None
    front = grid.diracx.s3_front
    front.clear()
    yield front
    if front.process is None or not front.process.alive:
        grid.diracx.start_s3_front()
    front.clear()


def upload(user, paths: list[Path], assign: dict[str, str] | None = None) -> dict:
    return user.call(SBC, "uploadFilesAsSandbox", [str(p) for p in paths], kwargs={"assignTo": assign or {}}, cs=ON)


def new_job(user) -> int:
    res = user.call("DIRAC.WorkloadManagementSystem.Client.WMSClient.WMSClient", "submitJob", JDL)
    assert res["OK"], res
    return int(res["Value"])


def sandboxes_of(grid, job: int) -> list[tuple[str, str]]:
    engine = sa.create_engine(grid.mysql.url("SandboxMetadataDB", "mysql+pymysql"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT m.Type, s.SEPFN FROM sb_EntityMapping m JOIN sb_SandBoxes s ON s.SBId = m.SBId "
                    "WHERE m.EntityId = :e"
                ),
                {"e": f"Job:{job}"},
            ).all()
        return [(r.Type, r.SEPFN) for r in rows]
    finally:
        engine.dispose()


def s3_object(grid, pfn: str) -> bytes | None:
    """The object behind a DiracX PFN, read from moto directly (not through the front), or None."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=grid.diracx.s3_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    try:
        body = s3.get_object(Bucket=SANDBOX_BUCKET, Key=pfn.split(f"/S3/{SANDBOX_BUCKET}/", 1)[1])["Body"]
    except ClientError:
        return None
    return bytes(body.read())


def test_format_diracx_refuses(gs, grid, user, tmp_path):
    """The bridge's archive format is an option; one DiracX does not take is refused with the way out."""
    log = WorkerLog(grid)
    files = random_files(tmp_path, {"a.bin": 10_000})
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "uploadFilesAsSandbox", [str(p) for p in files.values()], cs=ON | {FORMAT: "tar.gz"})
    message = assert_actionable_error(res, mentions=("tar.gz", FORMAT))
    assert "SandboxFileName" in res
    assert not seen.s3_requests("POST"), seen.s3
    assert ("POST", "/api/jobs/sandbox", 422) in seen.sandbox_routes() or "tar.zst" in message, seen.diracx
    assert_no_secrets(log.text())


def test_expired_upload_url_is_retried_once_with_a_new_one(gs, grid, user, front, tmp_path):
    files = random_files(tmp_path, {"a.bin": 40_000})
    front.inject("expired", 1, "POST")
    with observe_sandboxes(grid) as seen:
        res = upload(user, list(files.values()))
    assert res["OK"], res
    assert [r.status for r in seen.s3_requests("POST")] == [403, 204], seen.s3
    assert [r.fault for r in seen.s3_requests("POST")] == ["expired", None]
    assert [e for e in seen.sandbox_routes() if e[0] == "POST"] == [("POST", "/api/jobs/sandbox", 200)] * 2
    assert s3_object(grid, res["Value"]) is not None
    assert front.pending() == []


def test_expired_download_url_is_retried_once_with_a_new_one(gs, grid, user, front, tmp_path):
    files = random_files(tmp_path / "src", {"a.bin": 40_000})
    pfn = upload(user, list(files.values()))["Value"]
    front.inject("expired", 1, "GET")
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "dst"), cs=ON)
    assert res["OK"], res
    assert [(r.status, r.fault) for r in seen.s3_requests("GET")] == [(403, "expired"), (200, None)], seen.s3
    assert [e for e in seen.sandbox_routes() if e[0] == "GET"] == [("GET", "/api/jobs/sandbox", 200)] * 2
    assert tree_digest(tmp_path / "dst") == tree_digest(tmp_path / "src")


def test_url_expired_twice_is_an_error_after_one_retry(gs, grid, user, front, tmp_path):
    log = WorkerLog(grid)
    files = random_files(tmp_path / "src", {"a.bin": 40_000})
    front.inject("expired", 2, "POST")
    with observe_sandboxes(grid) as seen:
        res = upload(user, list(files.values()))
    assert_actionable_error(res)
    assert "SandboxFileName" in res
    assert len(seen.s3_requests("POST")) == 2, seen.s3
    pfn = upload(user, list(files.values()))["Value"]
    front.inject("expired", 2, "GET")
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "downloadSandbox", pfn, kwargs={"inMemory": True}, cs=ON)
    assert_actionable_error(res)
    assert len(seen.s3_requests("GET")) == 2, seen.s3
    assert_no_secrets(log.text())


def test_checksum_mismatch_on_download_is_an_error_and_leaves_nothing(gs, grid, user, front, tmp_path):
    log = WorkerLog(grid)
    files = random_files(tmp_path / "src", {"a.bin": 300_000})
    pfn = upload(user, list(files.values()))["Value"]
    front.inject("corrupt", 1, "GET")
    (tmp_path / "dst").mkdir()
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "dst"), cs=ON)
    if res["OK"]:  # a retry after the mismatch is allowed; then the bytes must be the right ones
        assert len(seen.s3_requests("GET")) == 2 and tree_digest(tmp_path / "dst") == tree_digest(tmp_path / "src")
    else:
        assert_actionable_error(res, mentions=("checksum",))
        assert tree_digest(tmp_path / "dst") == {}, "a corrupt sandbox was unpacked"
    assert seen.s3_requests("GET")[0].fault == "corrupt"
    assert_no_secrets(log.text())


def test_interrupted_upload_is_retried_and_assigned_once(gs, grid, user, front, tmp_path):
    job = new_job(user)
    files = random_files(tmp_path, {"std.out": 400_000})
    front.inject("cut", 1, "POST")
    with observe_sandboxes(grid) as seen:
        res = upload(user, list(files.values()), {f"Job:{job}": "Output"})
    assert res["OK"], res
    assert [(r.status, r.fault) for r in seen.s3_requests("POST")] == [(0, "cut"), (204, None)], seen.s3
    assert sandboxes_of(grid, job) == [("Output", res["Value"].split("|", 1)[1])]
    stored = s3_object(grid, res["Value"])
    assert stored is not None and hashlib.sha256(stored).hexdigest() == DIRACX_PFN.match(res["Value"]).group("sha")


def test_upload_interrupted_every_time_assigns_nothing(gs, grid, user, front, tmp_path):
    log = WorkerLog(grid)
    job = new_job(user)
    files = random_files(tmp_path, {"std.out": 400_000})
    front.inject("cut", 10, "POST")
    with observe_sandboxes(grid) as seen:
        res = upload(user, list(files.values()), {f"Job:{job}": "Output"})
    assert_actionable_error(res)
    assert Path(res["SandboxFileName"]).exists(), "the local archive is kept for the caller (JobWrapper)"
    assert all(r.fault == "cut" for r in seen.s3_requests("POST")) and seen.s3_requests("POST")
    assert sandboxes_of(grid, job) == [], "a sandbox whose upload never completed was assigned"
    assert not [e for e in seen.sandbox_routes() if e[0] == "PATCH"], seen.diracx
    assert_no_secrets(log.text())


def test_interrupted_download_is_an_error_and_leaves_nothing(gs, grid, user, front, tmp_path):
    files = random_files(tmp_path / "src", {"a.bin": 600_000})
    pfn = upload(user, list(files.values()))["Value"]
    front.inject("cut", 10, "GET")
    (tmp_path / "dst").mkdir()
    res = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "dst"), cs=ON)
    assert_actionable_error(res)
    assert tree_digest(tmp_path / "dst") == {}


def test_s3_unreachable(gs, grid, user, front, tmp_path):
    log = WorkerLog(grid)
    files = random_files(tmp_path / "src", {"a.bin": 30_000})
    pfn = upload(user, list(files.values()))["Value"]
    grid.diracx.stop_s3_front()
    other = random_files(tmp_path / "other", {"b.bin": 30_000})
    up = upload(user, list(other.values()))
    down = user.call(SBC, "downloadSandbox", pfn, kwargs={"inMemory": True}, cs=ON)
    grid.diracx.start_s3_front()
    assert_actionable_error(up)
    assert "SandboxFileName" in up
    assert_actionable_error(down)
    assert_no_secrets(log.text())


def test_sandbox_still_in_the_legacy_store_is_served_by_legacy(gs, grid, user, tmp_path):
    files = random_files(tmp_path / "src", {"a.bin": 70_000})
    legacy = user.call(SBC, "uploadFilesAsSandbox", [str(p) for p in files.values()], cs=OFF)
    assert legacy["OK"] and LEGACY_PFN.match(legacy["Value"]), legacy
    (tmp_path / "dst").mkdir()
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "downloadSandbox", legacy["Value"], str(tmp_path / "dst"), cs=ON)
    assert res["OK"], res
    seen.assert_legacy_store("toClient")
    assert tree_digest(tmp_path / "dst") == tree_digest(tmp_path / "src")


def test_sandbox_of_another_user_is_refused(gs, grid, user, tmp_path):
    files = random_files(tmp_path, {"secret.bin": 20_000})
    pfn = upload(user, list(files.values()))["Value"]
    assert DIRACX_PFN.match(pfn), pfn
    other = gs.worker("otheruser", "civo_user")
    log = WorkerLog(grid, "otheruser", "civo_user")
    with observe_sandboxes(grid) as seen:
        res = other.call(SBC, "downloadSandbox", pfn, kwargs={"inMemory": True}, cs=ON)
    assert_actionable_error(res)
    assert not seen.s3_requests("GET"), "the other user's bytes left S3"
    assert ("GET", "/api/jobs/sandbox", 403) in seen.sandbox_routes(), seen.diracx
    assert_no_secrets(log.text())
