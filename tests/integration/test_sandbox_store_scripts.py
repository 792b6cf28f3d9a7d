"""The unchanged ``dirac-wms-job-*`` commands move the same sandbox bytes with SandboxStore adapted or not.

Each command runs as a subprocess of the grid's DIRAC installation, with the switch off and with
``-o /DiracX/FutureClientEnabled/WorkloadManagement/SandboxStore=yes``. The files each run writes
must be the same, byte for byte, and each run must have moved the bytes the way its path says
(:mod:`sandboxes`): the adapter straight to and from S3 (the S3 front's log, DiracX's sandbox
routes, nothing in DIRAC's SandboxStore), legacy through DIRAC's SandboxStore service (a DISET
``FileTransfer``; for a sandbox stored in S3, the service fetches it from DiracX itself).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sandboxes import (
    DIRACX_PFN,
    LEGACY_PFN,
    ON,
    SBC,
    SWITCH,
    assert_no_secrets,
    assigned,
    observe_sandboxes,
    random_files,
    tree_digest,
)

pytestmark = pytest.mark.integration

JDL = (
    '[ Executable = "/bin/cat"; Arguments = "sb-data.bin"; JobName = "sandbox-scripts"; '
    'InputSandbox = {"sb-data.bin", "sb-notes.txt"}; StdOutput = "std.out"; OutputSandbox = {"std.out"}; ]'
)


def switch(on: bool) -> list[str]:
    return [f"-o{SWITCH}=yes"] if on else []


def submit(grid: Any, directory: Path, *, on: bool) -> tuple[int, Any]:
    (directory / "job.jdl").write_text(JDL)
    with observe_sandboxes(grid) as seen:
        done = grid.run(["dirac-wms-job-submit", *switch(on), str(directory / "job.jdl")], cwd=directory, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert_no_secrets(done.stdout, done.stderr)
    return int(re.search(r"JobID = (\d+)", done.stdout).group(1)), seen


def run_in(grid: Any, directory: Path, argv: list[str]) -> tuple[Any, Any]:
    directory.mkdir(parents=True)
    with observe_sandboxes(grid) as seen:
        done = grid.run(argv, cwd=directory, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert_no_secrets(done.stdout, done.stderr)
    return done, seen


@pytest.mark.parametrize("submitted_through", ["legacy", "adapter"])
def test_dirac_wms_job_get_input_same_bytes_on_both_paths(gs, grid, tmp_path, submitted_through):
    """An input sandbox uploaded by the unchanged ``dirac-wms-job-submit`` (through the legacy store,
    or with the switch on through the adapter into S3) comes back identical with the switch off and on."""
    gs.proxy()
    sent = random_files(tmp_path / "in", {"sb-data.bin": 200_000, "sb-notes.txt": 3_000})
    expected = {f"InputSandbox{{job}}/{name}": digest for name, digest in tree_digest(tmp_path / "in").items()}
    job, submitted = submit(grid, tmp_path / "in", on=submitted_through == "adapter")
    expected = {k.format(job=job): v for k, v in expected.items()}
    assert set(sent) == {k.split("/", 1)[1] for k in expected}
    (pfn,) = assigned(grid, job, "Input")
    if submitted_through == "adapter":
        submitted.assert_straight_to_s3("POST")
        assert DIRACX_PFN.match(pfn), pfn
    else:
        submitted.assert_legacy_store("fromClient")
        assert LEGACY_PFN.match(pfn), pfn

    legacy, legacy_seen = run_in(grid, tmp_path / "off", ["dirac-wms-job-get-input", "-D", ".", str(job)])
    adapted, adapted_seen = run_in(
        grid, tmp_path / "on", ["dirac-wms-job-get-input", *switch(True), "-D", ".", str(job)]
    )

    assert tree_digest(tmp_path / "off") == expected
    assert tree_digest(tmp_path / "on") == expected
    assert adapted.stdout == legacy.stdout
    assert legacy_seen.legacy_calls("getSandboxesAssignedToEntity")
    assert not adapted_seen.legacy_calls("getSandboxesAssignedToEntity")
    if submitted_through == "adapter":
        adapted_seen.assert_straight_to_s3("GET")
        # legacy relays the S3 sandbox: DIRAC's SandboxStore fetched it from S3 (python-requests)
        assert legacy_seen.legacy_transfers("toClient"), legacy_seen.legacy
        assert legacy_seen.s3_bytes("GET", "python-requests") > 0, legacy_seen.s3
    else:
        # a sandbox still in the legacy store is served by legacy on both paths
        legacy_seen.assert_legacy_store("toClient")
        assert adapted_seen.legacy_transfers("toClient") and not adapted_seen.s3, adapted_seen


def test_dirac_wms_job_get_output_same_bytes_on_both_paths(gs, grid, tmp_path):
    """An output sandbox the job's owner uploads through the adapter (as a job wrapper with the
    owner's proxy would) is fetched identically by the unchanged ``dirac-wms-job-get-output``."""
    gs.proxy()
    random_files(tmp_path / "in", {"sb-data.bin": 1_000, "sb-notes.txt": 100})
    job, _ = submit(grid, tmp_path / "in", on=False)
    produced = random_files(tmp_path / "produced", {"std.out": 150_000, "result.dat": 64_000})
    with observe_sandboxes(grid) as uploaded:
        res = gs.worker().call(
            SBC,
            "uploadFilesAsSandbox",
            [str(p) for p in produced.values()],
            kwargs={"assignTo": {f"Job:{job}": "Output"}},
            cs=ON,
        )
    assert res["OK"], res
    assert DIRACX_PFN.match(res["Value"]), res
    uploaded.assert_straight_to_s3("POST")
    assert assigned(grid, job, "Output") == [res["Value"]]

    legacy, legacy_seen = run_in(grid, tmp_path / "off", ["dirac-wms-job-get-output", "-D", ".", str(job)])
    adapted, adapted_seen = run_in(
        grid, tmp_path / "on", ["dirac-wms-job-get-output", *switch(True), "-D", ".", str(job)]
    )

    expected = {f"{job}/{name}": digest for name, digest in tree_digest(tmp_path / "produced").items()}
    assert tree_digest(tmp_path / "off") == expected
    assert tree_digest(tmp_path / "on") == expected
    assert adapted.stdout == legacy.stdout
    adapted_seen.assert_straight_to_s3("GET")
    assert not adapted_seen.legacy_calls("getSandboxesAssignedToEntity")
    assert legacy_seen.legacy_transfers("toClient") and legacy_seen.s3_bytes("GET", "python-requests") > 0
