"""The real, unchanged DIRAC scripts print the same whether JobMonitoring is adapted or not.

Each script runs as a subprocess of the grid's DIRAC installation; the only difference between
the two runs is ``-o /DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring=yes``. DiracX's
access log proves which run went to DiracX: the adapted run makes search requests, the legacy
run makes none.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration

SWITCH_ON = "-o/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring=yes"
JDL = '[ Executable = "/bin/true"; JobName = "script-{n}"; JobGroup = "scripts"; ]'


def diracx_searches(grid) -> int:
    log = next(p for p in grid.diracx.processes if p.name == "diracx-uvicorn").log_path
    return len(re.findall(r'"POST /api/jobs/search', log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def job_ids(grid_session) -> list[int]:
    with grid_session.diracx("ciuser", "civo_user") as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL.format(n=i) for i in range(3)])
        assert r.status_code == 201, r.text
        return [j["JobID"] for j in r.json()]


def run_both(gs, grid, argv: list[str]) -> tuple[str, str]:
    gs.proxy()
    before = diracx_searches(grid)
    legacy = grid.run(argv, check=False)
    after_legacy = diracx_searches(grid)
    adapted = grid.run([argv[0], SWITCH_ON, *argv[1:]], check=False)
    after_adapted = diracx_searches(grid)
    assert legacy.returncode == adapted.returncode == 0, (legacy.stderr, adapted.stderr)
    assert after_legacy == before, "the legacy run must not touch DiracX"
    assert after_adapted > after_legacy, "the adapted run must go to DiracX"
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
