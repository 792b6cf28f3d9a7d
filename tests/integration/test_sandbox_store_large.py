"""Sandboxes at DiracX's size limit and far beyond: a clear refusal, and 1 GiB streamed both ways.

DiracX 0.7.0 hard-codes its limit (100 MiB, ``MAX_SANDBOX_SIZE_BYTES``); the grid's DiracX can be
restarted with another one (test grid only, :mod:`diracx_bridge.testing.diracx_app`). This module
restarts it twice: with 1 MiB, so that "over the limit" costs a 2 MiB sandbox instead of building
a 100 MiB incompressible archive, and with 2 GiB for the 1 GiB sandbox; the default comes back
at the end of the module.

The 1 GiB test measures the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
of a fresh DIRAC worker process (a child of pytest) before and after uploading and downloading
(unpacked) a 1 GiB file through the adapter: the growth must stay under 100 MiB, so neither the
archive nor the file ever sits whole in memory. The file is pseudorandom (incompressible), so the
archive that crosses the network is 1 GiB too. That is affordable because the bridge writes
tar.zst by default (DiracX's own client's format, which DIRAC 9.1's SandboxStoreClient reads):
tar.bz2, DIRAC's own format, compresses incompressible data at ~3 MB/s on these 2 cores, about
6 minutes per GiB each way (see docs/performance.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sandboxes import (
    DIRACX_PFN,
    ON,
    SBC,
    WorkerLog,
    assert_actionable_error,
    assert_no_secrets,
    observe_sandboxes,
    random_files,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = MiB


@pytest.fixture(scope="module")
def sandbox_limit(grid_session) -> Iterator[Callable[[int | None], None]]:
    """``sandbox_limit(n)`` restarts the grid's DiracX with an n-byte sandbox limit; the default comes back after."""
    diracx = grid_session.grid.diracx
    changed = False

    def set_limit(limit: int | None) -> None:
        nonlocal changed
        if diracx.max_sandbox_size != limit:
            diracx.restart_api(max_sandbox_size=limit)
            changed = True

    yield set_limit
    if changed:
        diracx.restart_api(max_sandbox_size=None)


def write_big_file(path: Path, size: int) -> str:
    """``size`` pseudorandom bytes, written and hashed a block at a time (never held whole); its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // BLOCK):
            block = os.urandom(BLOCK)
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_over_diracx_limit_names_the_limit_and_uploads_nothing(gs, grid, sandbox_limit, tmp_path):
    sandbox_limit(1 * MiB)
    user = gs.worker()
    log = WorkerLog(grid)
    files = random_files(tmp_path, {"big.bin": 2 * MiB})
    with observe_sandboxes(grid) as seen:
        res = user.call(SBC, "uploadFilesAsSandbox", [str(files["big.bin"])], cs=ON)
    message = assert_actionable_error(res)
    assert re.search(r"1048576|1(\.0+)? MiB", message), f"the limit is not named: {message!r}"
    assert "SandboxFileName" in res
    assert not seen.s3_requests("POST"), "bytes went to S3 although DiracX refused the sandbox"
    assert_no_secrets(log.text())


def test_one_gib_sandbox_streams_both_ways_in_bounded_memory(gs, grid, sandbox_limit, tmp_path):
    sandbox_limit(2 * GiB)
    gs.proxy()
    src = tmp_path / "src"
    src.mkdir()
    t0 = time.monotonic()
    sha = write_big_file(src / "one-gib.bin", GiB)
    worker = grid.worker()  # a fresh process: its peak is this test's
    try:
        log = WorkerLog(grid)
        # warm up: imports, the DiracX session, the first token read, with a small sandbox
        small = random_files(tmp_path / "small", {"s.bin": 10_000})
        warm = worker.call(SBC, "uploadFilesAsSandbox", [str(small["s.bin"])], cs=ON)
        # fail fast (not after minutes of legacy bzip2) if the switch did not reach the adapter
        assert warm["OK"] and DIRACX_PFN.match(warm["Value"]), f"the adapter did not take the upload: {warm}"
        assert worker.call(SBC, "downloadSandbox", warm["Value"], str(tmp_path / "small-out"), cs=ON)["OK"]
        before = worker.call("eval", "resource:getrusage", resource.RUSAGE_SELF).ru_maxrss
        t1 = time.monotonic()
        with observe_sandboxes(grid) as up_seen:
            up = worker.call(SBC, "uploadFilesAsSandbox", [str(src / "one-gib.bin")], cs=ON)
        t2 = time.monotonic()
        assert up["OK"], up
        assert DIRACX_PFN.match(up["Value"]), up
        (tmp_path / "dst").mkdir()
        with observe_sandboxes(grid) as down_seen:
            down = worker.call(SBC, "downloadSandbox", up["Value"], str(tmp_path / "dst"), cs=ON)
        t3 = time.monotonic()
        after = worker.call("eval", "resource:getrusage", resource.RUSAGE_SELF).ru_maxrss
        assert_no_secrets(up, down, log.text())
    finally:
        worker.close()
    assert down["OK"] and down["Value"] == GiB, down
    assert sha256_of(tmp_path / "dst" / "one-gib.bin") == sha
    up_seen.assert_straight_to_s3("POST")
    down_seen.assert_straight_to_s3("GET")
    growth_mib = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    archive = up_seen.s3_bytes("POST")
    print(
        f"1 GiB sandbox: file {t1 - t0:.0f} s, upload {t2 - t1:.0f} s, download {t3 - t2:.0f} s, "
        f"archive {archive / MiB:.1f} MiB, peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
    )
    assert growth_mib < 100, f"peak memory grew by {growth_mib:.0f} MiB moving a 1 GiB sandbox"
