"""The real, unchanged DIRAC scripts print the same whether JobMonitoring is adapted or not.

Each script runs as a subprocess of the grid's DIRAC installation; the only difference between
the two runs is ``-o /DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring=yes``. The
grid's logs prove which run went where (:mod:`traffic`): the adapted run sends the bridge's
searches to DiracX and no JobMonitoring call to the legacy service; the legacy run does the
opposite and never contacts DiracX.
"""

from __future__ import annotations

import pytest
from traffic import JOB_MONITORING_METHODS, SEARCH, observe

pytestmark = pytest.mark.integration

SWITCH_ON = "-o/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring=yes"
JDL = '[ Executable = "/bin/true"; JobName = "script-{n}"; JobGroup = "scripts"; ]'


@pytest.fixture(scope="module")
def job_ids(grid_session) -> list[int]:
    with grid_session.diracx("ciuser", "civo_user") as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL.format(n=i) for i in range(3)])
        assert r.status_code == 201, r.text
        return [j["JobID"] for j in r.json()]


def run_both(gs, grid, argv: list[str]) -> tuple[str, str]:
    gs.proxy()
    with observe(grid) as legacy_traffic:
        legacy = grid.run(argv, check=False)
    with observe(grid) as adapted_traffic:
        adapted = grid.run([argv[0], SWITCH_ON, *argv[1:]], check=False)
    assert legacy.returncode == adapted.returncode == 0, (legacy.stderr, adapted.stderr)
    assert legacy_traffic.diracx == [], "the legacy run must not touch DiracX"
    legacy_jm = {c.method for c in legacy_traffic.legacy} & JOB_MONITORING_METHODS
    assert legacy_jm, f"the legacy run must call the legacy JobMonitoring; it made {legacy_traffic.legacy}"
    assert adapted_traffic.from_bridge(*SEARCH), f"the adapted run must go to DiracX; it saw {adapted_traffic.diracx}"
    adapted_jm = {c.method for c in adapted_traffic.legacy} & JOB_MONITORING_METHODS
    assert not adapted_jm, f"the adapted run must not call the legacy JobMonitoring: {adapted_jm}"
    return legacy.stdout, adapted.stdout


def test_dirac_wms_job_status(gs, grid, job_ids):
    legacy, adapted = run_both(gs, grid, ["dirac-wms-job-status", *map(str, job_ids)])
    for job_id in job_ids:
        assert f"JobID={job_id}" in legacy
    assert adapted == legacy


def test_dirac_wms_job_status_by_job_group(gs, grid, job_ids):
    """``--JobGroup`` goes through ``getJobs`` before ``getJobsStates``."""
    legacy, adapted = run_both(gs, grid, ["dirac-wms-job-status", "--JobGroup=scripts"])
    for job_id in job_ids:
        assert f"JobID={job_id}" in legacy
    assert adapted == legacy


def test_dirac_wms_job_logging_info(gs, grid, job_ids):
    legacy, adapted = run_both(gs, grid, ["dirac-wms-job-logging-info", *map(str, job_ids)])
    assert "Job accepted" in legacy
    assert adapted == legacy
