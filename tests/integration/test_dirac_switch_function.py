"""DIRAC's own comparison tests switch a service by patching ``useLegacyAdapter``: that drives the bridge.

Without this, such a test (DIRAC's tests/Integration/FutureClient/) would quietly compare legacy with
legacy, since the bridge decides the route itself. The proof of which side answered is the grid's
traffic: DiracX's access log and the legacy services' own logs.
"""

from __future__ import annotations

import errno

import pytest
from traffic import observe

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
PATCHED = "diracx_bridge.testing.switches:call_with_use_legacy_adapter"


@pytest.fixture
def job(gs) -> int:
    with gs.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=['[ Executable = "/bin/true"; JobName = "switch-fn"; ]'])
        assert r.status_code == 201, r.text
        return r.json()[0]["JobID"]


def test_patched_true_sends_the_call_to_the_adapter_and_false_to_legacy(gs, grid, job):
    worker = gs.worker()
    with observe(grid) as adapted_traffic:
        adapted = worker.call("eval", PATCHED, True, JM, "getJobsStatus", [job])
    adapted_traffic.assert_adapted("getJobsStatus")
    with observe(grid) as legacy_traffic:
        legacy = worker.call("eval", PATCHED, False, JM, "getJobsStatus", [job])
    legacy_traffic.assert_legacy("getJobsStatus")
    assert adapted["OK"] and adapted["Value"] == legacy["Value"]
    # Only the adapter refuses a method DiracX cannot serve; legacy answers it.
    with observe(grid) as refused_traffic:
        refused = worker.call("eval", PATCHED, True, JM, "getJobJDL", job, False)
    refused_traffic.assert_answered_locally("getJobJDL")
    assert refused["OK"] is False and refused["Errno"] == errno.ENOTSUP
    assert worker.call("eval", PATCHED, False, JM, "getJobJDL", job, False)["OK"] is True
