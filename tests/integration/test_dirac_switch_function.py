"""DIRAC's own comparison tests switch a service by patching ``useLegacyAdapter``: that drives the bridge.

Without this, such a test (DIRAC's tests/Integration/FutureClient/) would quietly compare legacy with
legacy, since the bridge decides the route itself. The proof that DiracX answered is DiracX's own
access log, and an answer only the adapter gives (a method DiracX cannot serve is refused by it).
"""

from __future__ import annotations

import errno

import pytest

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
PATCHED = "diracx_bridge.testing.switches:call_with_use_legacy_adapter"
SEARCH_LINE = '"POST /api/jobs/search'


def access_lines(grid) -> list[str]:
    log = grid.log_dir / "diracx-uvicorn.log"
    return [line for line in log.read_text().splitlines() if SEARCH_LINE in line]


@pytest.fixture
def job(gs) -> int:
    with gs.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=['[ Executable = "/bin/true"; JobName = "switch-fn"; ]'])
        assert r.status_code == 201, r.text
        return r.json()[0]["JobID"]


def test_patched_true_sends_the_call_to_the_adapter(gs, grid, job):
    worker = gs.worker()
    before = len(access_lines(grid))
    adapted = worker.call("eval", PATCHED, True, JM, "getJobsStatus", [job])
    after = len(access_lines(grid))
    legacy = worker.call("eval", PATCHED, False, JM, "getJobsStatus", [job])
    assert after > before, "the adapted call never reached DiracX"
    assert len(access_lines(grid)) == after, "the legacy call reached DiracX"
    assert adapted["OK"] and adapted["Value"] == legacy["Value"]
    # Only the adapter refuses a method DiracX cannot serve; legacy answers it.
    refused = worker.call("eval", PATCHED, True, JM, "getJobJDL", job, False)
    assert refused["OK"] is False and refused["Errno"] == errno.ENOTSUP
    assert worker.call("eval", PATCHED, False, JM, "getJobJDL", job, False)["OK"] is True
