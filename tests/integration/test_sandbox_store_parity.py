"""DIRAC's own SandboxStoreClient answers the same with its switch on (the bridge, S3) and off (legacy DISET).

Every call is made by the unchanged ``SandboxStoreClient`` in a DIRAC worker process; only the
switch ``/DiracX/FutureClientEnabled/WorkloadManagement/SandboxStore`` differs. Each test proves
which side moved the bytes (:mod:`sandboxes`): with the switch on, the worker itself through the
S3 front, after a DiracX sandbox route, with DIRAC's SandboxStore untouched; with it off, DIRAC's
SandboxStore service (a DISET ``FileTransfer``; for a ``/S3/`` sandbox it fetches the bytes from
DiracX itself, which the front's log shows as ``python-requests``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from sandboxes import (
    DIRACX_PFN,
    LEGACY_PFN,
    OFF,
    ON,
    SBC,
    WorkerLog,
    assert_no_secrets,
    assigned,
    observe_sandboxes,
    random_files,
    tree_digest,
)

pytestmark = pytest.mark.integration

RPC = "DIRAC.Core.Base.Client.Client"
SANDBOX_SERVICE = {"url": "WorkloadManagement/SandboxStore"}
JDL = '[ Executable = "/bin/true"; JobName = "sandbox-parity"; StdOutput = "std.out"; OutputSandbox = {"std.out"}; ]'


@pytest.fixture
def user(gs):
    return gs.worker("ciuser", "civo_user")


@pytest.fixture
def uploaded(gs, grid, user, tmp_path) -> tuple[str, dict[str, str]]:
    """A sandbox uploaded through the adapter: its PFN and ``{name: sha256}`` of its files."""
    files = random_files(tmp_path / "src", {"a.bin": 120_000, "b.txt": 2_000})
    res = user.call(SBC, "uploadFilesAsSandbox", [str(p) for p in files.values()], cs=ON)
    assert res["OK"], res
    return res["Value"], tree_digest(tmp_path / "src")


def new_job(user) -> int:
    res = user.call("DIRAC.WorkloadManagementSystem.Client.WMSClient.WMSClient", "submitJob", JDL)
    assert res["OK"], res
    return int(res["Value"])


def test_upload_answers_the_legacy_shape_with_a_diracx_pfn(gs, grid, user, tmp_path):
    files = [str(p) for p in random_files(tmp_path, {"x.bin": 50_000}).values()]
    log = WorkerLog(grid)
    with observe_sandboxes(grid) as legacy_seen:
        legacy = user.call(SBC, "uploadFilesAsSandbox", files, cs=OFF)
    with observe_sandboxes(grid) as adapted_seen:
        adapted = user.call(SBC, "uploadFilesAsSandbox", files, cs=ON)
    assert legacy["OK"] and adapted["OK"], (legacy, adapted)
    assert set(adapted) == set(legacy) == {"OK", "Value", "SandboxFileName"}
    assert LEGACY_PFN.match(legacy["Value"]), legacy
    pfn = DIRACX_PFN.match(adapted["Value"])
    assert pfn and pfn.group("vo", "group", "user") == ("civo", "civo_user", "ciuser"), adapted
    legacy_seen.assert_legacy_store("fromClient")
    adapted_seen.assert_straight_to_s3("POST")
    assert ("POST", "/api/jobs/sandbox", 200) in adapted_seen.sandbox_routes()
    (post,) = adapted_seen.s3_requests("POST")
    assert post.path == "/sandboxes" and post.bytes_in > 50_000
    assert_no_secrets(adapted, log.text())


def test_download_sandbox_in_every_form_equal_on_both_paths(gs, grid, user, uploaded, tmp_path):
    pfn, digests = uploaded
    sha = DIRACX_PFN.match(pfn).group("sha")
    log = WorkerLog(grid)
    # in memory: the archive's bytes
    with observe_sandboxes(grid) as legacy_seen:
        legacy = user.call(SBC, "downloadSandbox", pfn, kwargs={"inMemory": True}, cs=OFF)
    with observe_sandboxes(grid) as adapted_seen:
        adapted = user.call(SBC, "downloadSandbox", pfn, kwargs={"inMemory": True}, cs=ON)
    assert legacy["OK"] and adapted["OK"], (legacy, adapted)
    assert adapted["Value"] == legacy["Value"]
    assert hashlib.sha256(adapted["Value"]).hexdigest() == sha
    adapted_seen.assert_straight_to_s3("GET")
    assert legacy_seen.legacy_transfers("toClient") and legacy_seen.s3_bytes("GET", "python-requests") > 0

    # unpack=False: the path of the archive, whose bytes are the same
    legacy = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "off-tar"), kwargs={"unpack": False}, cs=OFF)
    adapted = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "on-tar"), kwargs={"unpack": False}, cs=ON)
    assert legacy["OK"] and adapted["OK"], (legacy, adapted)
    assert Path(adapted["Value"]).name == Path(legacy["Value"]).name
    assert Path(adapted["Value"]).read_bytes() == Path(legacy["Value"]).read_bytes()

    # default: unpacked, Value is the total extracted size
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    legacy = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "off"), cs=OFF)
    with observe_sandboxes(grid) as adapted_seen:
        adapted = user.call(SBC, "downloadSandbox", pfn, str(tmp_path / "on"), cs=ON)
    assert legacy == adapted and isinstance(adapted["Value"], int), (legacy, adapted)
    assert tree_digest(tmp_path / "on") == tree_digest(tmp_path / "off") == digests
    adapted_seen.assert_straight_to_s3("GET")
    assert_no_secrets(log.text())


def test_download_sandbox_for_job_and_assignments_equal_on_both_paths(gs, grid, user, tmp_path):
    job = new_job(user)
    files = random_files(tmp_path / "out", {"std.out": 30_000})
    res = user.call(
        SBC, "uploadFilesAsSandbox", [str(files["std.out"])], kwargs={"assignTo": {f"Job:{job}": "Output"}}, cs=ON
    )
    assert res["OK"], res
    assert assigned(grid, job, "Output") == [res["Value"]]

    with observe_sandboxes(grid) as legacy_seen:
        legacy = user.call(RPC, "getSandboxesAssignedToEntity", f"Job:{job}", client_kwargs=SANDBOX_SERVICE, cs=OFF)
    with observe_sandboxes(grid) as adapted_seen:
        adapted = user.call(RPC, "getSandboxesAssignedToEntity", f"Job:{job}", client_kwargs=SANDBOX_SERVICE, cs=ON)
    # (legacy's answer also carries DIRAC's rpcStub, which no caller of this method replays)
    assert legacy["OK"] and adapted["OK"], (legacy, adapted)
    assert legacy["Value"] == adapted["Value"] == {"Output": [res["Value"]]}, (legacy, adapted)
    assert legacy_seen.legacy_calls("getSandboxesAssignedToEntity")
    assert not adapted_seen.legacy_calls("getSandboxesAssignedToEntity") and adapted_seen.sandbox_routes()

    legacy = user.call(SBC, "downloadSandboxForJob", job, "Output", kwargs={"inMemory": True}, cs=OFF)
    with observe_sandboxes(grid) as adapted_seen:
        adapted = user.call(SBC, "downloadSandboxForJob", job, "Output", kwargs={"inMemory": True}, cs=ON)
    assert legacy["OK"] and adapted == legacy, (legacy, adapted)
    adapted_seen.assert_straight_to_s3("GET")

    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    legacy = user.call(SBC, "downloadSandboxForJob", job, "Output", str(tmp_path / "off"), cs=OFF)
    adapted = user.call(SBC, "downloadSandboxForJob", job, "Output", str(tmp_path / "on"), cs=ON)
    assert legacy["OK"] and adapted == legacy, (legacy, adapted)
    assert tree_digest(tmp_path / "on") == tree_digest(tmp_path / "off") == tree_digest(tmp_path / "out")

    # no sandbox of that type: the legacy error, on both paths
    legacy = user.call(SBC, "downloadSandboxForJob", job, "Input", kwargs={"inMemory": True}, cs=OFF)
    adapted = user.call(SBC, "downloadSandboxForJob", job, "Input", kwargs={"inMemory": True}, cs=ON)
    assert not legacy["OK"] and re.sub(r"\d+", "N", adapted["Message"]) == re.sub(r"\d+", "N", legacy["Message"])
