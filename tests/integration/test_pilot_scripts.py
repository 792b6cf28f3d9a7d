"""The real, unchanged DIRAC pilot commands print the same whether PilotManager is bridged or not.

Each command runs as a subprocess of the grid's DIRAC installation, as an administrator
(``civo_admin``); the only difference between the two runs is ``-o`` switching PilotManager and
WMSAdministrator on. The grid's logs prove which run went where (:mod:`traffic`): the bridged run
sends the bridge's pilot searches to DiracX and no PilotManager call to the legacy service; the
legacy run does the opposite and never contacts DiracX.

``dirac-admin-get-pilot-output`` reads pilot output through ``Monitoring/WebApp``
(``DiracAdmin.getPilotOutput`` -> ``WebAppClient``), neither PilotManager nor WMSAdministrator:
with those switched on it prints the same and reaches neither DiracX nor them. (The grid has no
WebApp service, so both runs print WebApp's connection failure.)
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from traffic import observe

pytestmark = pytest.mark.integration

SWITCHES = [
    "-o/DiracX/FutureClientEnabled/WorkloadManagement/PilotManager=yes",
    "-o/DiracX/FutureClientEnabled/WorkloadManagement/WMSAdministrator=yes",
]
PILOT_METHODS = frozenset(
    {"addPilotReferences", "getPilotInfo", "selectPilots", "getPilotSummary", "getPilots", "setPilotStatus"}
)
SEARCH = ("POST", "/api/pilots/search")
ADMIN = "civo_admin"
PM = "DIRAC.WorkloadManagementSystem.Client.PilotManagerClient.PilotManagerClient"
TAG = f"ps{time.monotonic_ns() % 10**9}"


@pytest.fixture(scope="module")
def pilot(grid_session) -> dict[str, object]:
    """One pilot (registered through DiracX by an admin, with a status) that ran two jobs."""
    gs = grid_session
    with gs.diracx("ciuser", "civo_user") as dx:
        r = dx.post("/api/jobs/jdl", json=[f'[ Executable = "/bin/true"; JobName = "{TAG}-{i}"; ]' for i in range(2)])
        assert r.status_code == 201, r.text
        jobs = sorted(j["JobID"] for j in r.json())
    reference = f"htcondorce://ce.ci.example.org/{TAG}.0"
    admin = gs.worker("ciuser", ADMIN)
    switched = {"/DiracX/FutureClientEnabled/WorkloadManagement/PilotManager": "yes"}
    res = admin.call(PM, "addPilotReferences", [reference], "civo", "HTCondorCE", {reference: TAG}, cs=switched)
    assert res["OK"], res
    res = admin.call(PM, "setPilotStatus", reference, "Running", "ce.ci.example.org", "started", None, "q", cs=switched)
    assert res["OK"], res
    engine = sa.create_engine(gs.grid.mysql.url("PilotAgentsDB", "mysql+pymysql"))
    with engine.begin() as conn:
        pilot_id = conn.execute(
            sa.text("SELECT PilotID FROM PilotAgents WHERE PilotJobReference = :r"), {"r": reference}
        ).scalar_one()
        for job in jobs:  # as DIRAC's Matcher records it, in the order the pilot ran them
            conn.execute(
                sa.text("INSERT INTO JobToPilotMapping (PilotID, JobID, StartTime) VALUES (:p, :j, UTC_TIMESTAMP())"),
                {"p": pilot_id, "j": job},
            )
    engine.dispose()
    return {"reference": reference, "jobs": jobs}


def run_both(gs, grid, argv: list[str], *, reaches_pilot_manager: bool = True) -> tuple[str, str]:
    gs.proxy("ciuser", ADMIN)
    with observe(grid) as legacy_seen:
        legacy = grid.run(argv, group=ADMIN, check=False)
    with observe(grid) as bridged_seen:
        bridged = grid.run([argv[0], *SWITCHES, *argv[1:]], group=ADMIN, check=False)
    assert legacy.returncode == bridged.returncode, (legacy.stderr, bridged.stderr)
    assert legacy_seen.diracx == [], "the legacy run must not touch DiracX"
    assert not {c.method for c in bridged_seen.legacy} & PILOT_METHODS, "the bridged run called the legacy PilotManager"
    if reaches_pilot_manager:
        assert {c.method for c in legacy_seen.legacy} & PILOT_METHODS, f"the legacy run made {legacy_seen.legacy}"
        assert bridged_seen.from_bridge(*SEARCH), f"the bridged run must go to DiracX; it saw {bridged_seen.diracx}"
    else:
        assert bridged_seen.diracx == [], f"{argv[0]} is not PilotManager's: DiracX saw {bridged_seen.diracx}"
    return legacy.stdout, bridged.stdout


def test_dirac_admin_get_pilot_info(gs, grid, pilot):
    legacy, bridged = run_both(gs, grid, ["dirac-admin-get-pilot-info", pilot["reference"]])
    assert pilot["reference"] in legacy and "'Status': 'Running'" in legacy and "'Jobs': [" in legacy
    assert bridged == legacy


def test_dirac_admin_get_pilot_info_extended(gs, grid, pilot):
    """``-e`` also reads each job's attributes (JobMonitoring, not switched: legacy both times)."""
    legacy, bridged = run_both(gs, grid, ["dirac-admin-get-pilot-info", "-e", pilot["reference"]])
    assert f"Job ID: {pilot['jobs'][0]}" in legacy
    assert bridged == legacy


def test_dirac_admin_get_pilot_info_of_an_unknown_pilot(gs, grid, pilot):
    legacy, bridged = run_both(gs, grid, ["dirac-admin-get-pilot-info", f"{pilot['reference']}-nope"])
    assert "ERROR for" in legacy and "No pilots found" in legacy
    assert bridged == legacy


def test_dirac_admin_get_job_pilots(gs, grid, pilot):
    argv = ["dirac-admin-get-job-pilots", *map(str, pilot["jobs"]), "999999991", "x"]
    legacy, bridged = run_both(gs, grid, argv)
    assert legacy.count(f"'Jobs': {pilot['jobs']}") == 2  # one dictionary per job, printed by DiracAdmin
    assert "Failed to get pilot for Job 999999991" in legacy and "Expected integer for jobID" in legacy
    assert bridged == legacy


def test_dirac_admin_get_pilot_output(gs, grid, pilot):
    legacy, bridged = run_both(
        gs, grid, ["dirac-admin-get-pilot-output", pilot["reference"]], reaches_pilot_manager=False
    )
    assert f"ERROR {pilot['reference']}: URL for service Monitoring/WebApp not found" in legacy
    assert bridged == legacy
