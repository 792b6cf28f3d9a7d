"""PilotManager and WMSAdministrator parity: the adapters answer what the legacy DIRAC services answer.

The pilots (made once per module) are registered through the legacy service and through the
adapter, by an administrator and by a pilot identity, in two VOs (``civo``, which DiracX knows,
and ``legacyvo``, which it does not: registering there falls back to legacy), on several sites
(one a CE the CS maps to ``DIRAC.CI.ch``), moved through several states by both sides; some ran
jobs (JobDB's jobs, mapped to their pilots as DIRAC's Matcher does: ``PilotAgentsDB.setJobForPilot``'s
row), one job ran on two pilots, one pilot has no stamp. DiracX's pages are 10 rows, so lists cross pages.

Each case compares the legacy answer (switch off) with the answer through the bridge (switch on),
to the type (:func:`diracx_bridge.shadow.compare.compare`, as shadow mode does), for three
callers: an administrator (``civo_admin``: Operator, ServiceAdministrator), a VO member
(``civo_user``) and a pilot (``civo_pilot``: GenericPilot); and proves which side answered
(:mod:`traffic`): DiracX through the bridge and not the legacy service; the legacy service
(``LegacyFallback``) for what DiracX cannot serve for that caller; or the bridge itself, for the
legacy refusals it reproduces (the service's ``Unauthorized query``, MySQL's errors).
Writes are compared on twin pilots: the rows both sides leave in ``PilotAgentsDB``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from traffic import Traffic, observe

from diracx_bridge.shadow.compare import compare
from diracx_bridge.testing.dirac_cfg import CE
from diracx_bridge.testing.dirac_worker import DiracWorker
from diracx_bridge.testing.grid import Grid

pytestmark = pytest.mark.integration

PM = "DIRAC.WorkloadManagementSystem.Client.PilotManagerClient.PilotManagerClient"
WMSA = "DIRAC.WorkloadManagementSystem.Client.WMSAdministratorClient.WMSAdministratorClient"
SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/PilotManager"
FALLBACK = "/DiracX/Bridge/WorkloadManagement/PilotManager/LegacyFallback"
WMSA_SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/WMSAdministrator"
WMSA_FALLBACK = "/DiracX/Bridge/WorkloadManagement/WMSAdministrator/LegacyFallback"
LEGACY = {SWITCH: None, WMSA_SWITCH: None}
ADAPTED = {SWITCH: "yes", WMSA_SWITCH: "yes", "/DiracX/Bridge/SearchPageSize": "10", FALLBACK: None}
SEARCH = ("POST", "/api/pilots/search")
SUMMARY = ("POST", "/api/pilots/summary")
REGISTER = ("POST", "/api/pilots/")
METADATA = ("PATCH", "/api/pilots/metadata")
UNAUTHORIZED = "Unauthorized query ( 1111 : Unauthorized query)"
JDL = '[ Executable = "/bin/true"; JobName = "pilot-parity-{n}"; ]'
TAG = f"pp{time.monotonic_ns() % 10**9}"


def ref(name: str) -> str:
    return f"https://ce.example/{TAG}/{name}"


def stamp(name: str) -> str:
    """A pilot stamp (at most 32 characters, as DiracX and PilotAgentsDB keep them), unique per name."""
    return f"{TAG}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


# =============================================================================================
# The grid's pilots
# =============================================================================================


class PilotDB:
    """PilotAgentsDB, read and written as DIRAC's own code does (SQLAlchemy Core over PyMySQL)."""

    def __init__(self, grid: Grid) -> None:
        self.engine = sa.create_engine(grid.mysql.url("PilotAgentsDB", "mysql+pymysql"), pool_pre_ping=True)

    def row(self, reference: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM PilotAgents WHERE PilotJobReference = :r"), {"r": reference})
            found = [dict(r._mapping) for r in rows]
        assert len(found) == 1, found
        return found[0]

    def ran(self, reference: str, *job_ids: int) -> None:
        """What the Matcher records when a pilot takes a job (``PilotAgentsDB.setJobForPilot``)."""
        pilot_id = self.row(reference)["PilotID"]
        with self.engine.begin() as conn:
            for job in job_ids:
                conn.execute(
                    sa.text(
                        "INSERT INTO JobToPilotMapping (PilotID, JobID, StartTime) VALUES (:p, :j, UTC_TIMESTAMP())"
                    ),
                    {"p": pilot_id, "j": job},
                )

    def twin_state(self, reference: str) -> dict[str, Any]:
        """A pilot's row with what differs between twins by construction abstracted."""
        row = self.row(reference)
        return {
            k: ("<set>" if v is not None else None) if isinstance(v, dt.datetime) or k.endswith("Time") else v
            for k, v in row.items()
            if k not in ("PilotID", "PilotJobReference", "PilotStamp")
        }

    def close(self) -> None:
        self.engine.dispose()


class Caller:
    """A DIRAC client worker of one identity, and the grid whose logs tell which side answered."""

    def __init__(self, worker: DiracWorker, grid: Grid, group: str) -> None:
        self.worker, self.grid, self.group = worker, grid, group

    def call(self, method: str, *args: Any, cs: dict[str, Any], target: str = PM) -> Any:
        return self.worker.call(target, method, *args, cs=cs)


@pytest.fixture(scope="module")
def db(grid_session) -> Iterator[PilotDB]:
    database = PilotDB(grid_session.grid)
    yield database
    database.close()


@pytest.fixture(scope="module")
def callers(grid_session) -> dict[str, Caller]:
    gs = grid_session
    return {
        group: Caller(gs.worker("ciuser", group), gs.grid, group) for group in ("civo_admin", "civo_user", "civo_pilot")
    }


@pytest.fixture(scope="module")
def pilots(grid_session, callers, db) -> dict[str, Any]:
    """The pilots of the suite: who registered them, how, their states, sites and jobs."""
    admin, pilot = callers["civo_admin"], callers["civo_pilot"]
    with grid_session.diracx("ciuser", "civo_user") as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL.format(n=f"{TAG}-{i}") for i in range(8)])
        assert r.status_code == 201, r.text
        jobs = [j["JobID"] for j in r.json()]

    def register(caller: Caller, names: list[str], vo: str, cs: dict[str, Any], stamps: bool = True) -> None:
        stamp_dict = {ref(n): stamp(n) for n in names} if stamps else {}
        with observe(caller.grid) as seen:
            res = caller.call("addPilotReferences", [ref(n) for n in names], vo, "HTCondorCE", stamp_dict, cs=cs)
        assert res["OK"], res
        if cs is ADAPTED:
            assert seen.from_bridge(*REGISTER), f"registered through DiracX: {seen.diracx}"

    # Through the adapter (DiracX) and through the legacy service, as an administrator...
    register(admin, ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "a12"], "civo", ADAPTED)
    register(admin, ["l1", "l2", "l3"], "civo", LEGACY)
    register(admin, ["v1", "v2", "v3"], "legacyvo", LEGACY)  # a VO DiracX does not know
    register(admin, ["nostamp"], "civo", LEGACY, stamps=False)
    # ...and by pilots, for themselves.
    register(pilot, ["p1"], "civo", ADAPTED)
    register(pilot, ["p2"], "civo", LEGACY)

    # States and sites, set by both sides (DIRAC's SiteDirector and PilotStatusAgent do this on legacy).
    moves = [
        ("a1", ("Running", CE, "started", None, "q1"), ADAPTED),
        ("a2", ("Done", "ce2.example.org", None, "LCG.Two.org", "q2"), ADAPTED),
        ("a3", ("Aborted", "ce2.example.org", "aborted by the CE", None, None), ADAPTED),
        ("a4", ("Failed", CE, None, None, None), ADAPTED),
        ("a5", ("Waiting", "ce3.example.org", None, None, None), ADAPTED),
        ("l1", ("Running", CE, "started", None, "q1"), LEGACY),
        ("l2", ("Aborted", "ce3.example.org", None, "LCG.Three.org", None), LEGACY),
        ("l3", ("Scheduled", CE, None, None, None), LEGACY),  # a DIRAC state DiracX does not have
        ("v1", ("Running", "ce2.example.org", None, None, None), LEGACY),
        ("v2", ("Done", CE, None, None, None), LEGACY),
        ("nostamp", ("Running", CE, None, None, None), LEGACY),
        ("p1", ("Running", CE, None, None, None), LEGACY),
    ]
    for name, args, cs in moves:
        res = admin.call("setPilotStatus", ref(name), *args, cs=cs)
        assert res["OK"] and res["Value"] == 1, (name, res)
    # Jobs: several on one pilot (recorded out of order), one on two pilots (rescheduled).
    db.ran(ref("a1"), jobs[1], jobs[0])
    db.ran(ref("a2"), jobs[2])
    db.ran(ref("l1"), jobs[3], jobs[4])
    db.ran(ref("v1"), jobs[5])
    db.ran(ref("a3"), jobs[6])
    db.ran(ref("l2"), jobs[6])
    db.ran(ref("nostamp"), jobs[7])
    return {"jobs": jobs}


# =============================================================================================
# Both answers, and which side gave each
# =============================================================================================

ADAPTED_SIDE, FELL_BACK, LOCAL, DIRACX_THEN_LEGACY = "diracx", "fallback", "local", "diracx-then-legacy"


def both(
    caller: Caller,
    method: str,
    *args: Any,
    side: str = ADAPTED_SIDE,
    route: tuple[str, str] = SEARCH,
    extra: dict[str, Any] | None = None,
    target: str = PM,
) -> tuple[Any, Any]:
    """The legacy and the bridged answers, each proven to come from the side it claims.

    ``side``: where the bridged call must be answered: ``diracx`` (the bridge sent ``route`` and the
    legacy service did not see the method), ``fallback`` (the legacy service, DiracX untouched),
    ``diracx-then-legacy`` (DiracX was asked, its answer would have been partial, legacy answered),
    ``local`` (the bridge itself: neither DiracX nor the legacy service saw it).
    """
    legacy_cs = LEGACY | (extra or {})
    bridged_cs = ADAPTED | (extra or {})
    if side in (FELL_BACK, DIRACX_THEN_LEGACY):
        bridged_cs |= {FALLBACK: "yes", WMSA_FALLBACK: "yes"}
    with observe(caller.grid) as legacy_seen:
        legacy = caller.call(method, *args, cs=legacy_cs, target=target)
    _legacy_side(legacy_seen, method, legacy)
    with observe(caller.grid) as bridged_seen:
        bridged = caller.call(method, *args, cs=bridged_cs, target=target)
    if side == ADAPTED_SIDE:
        bridged_seen.assert_adapted(method, route)
    elif side == FELL_BACK:
        bridged_seen.assert_legacy(method)
    elif side == DIRACX_THEN_LEGACY:
        assert bridged_seen.from_bridge(*SEARCH), f"{method}: DiracX was not asked first: {bridged_seen.diracx}"
        assert bridged_seen.legacy_calls(method), f"{method} did not reach the legacy service: {bridged_seen.legacy}"
    else:
        bridged_seen.assert_answered_locally(method)
        assert not bridged_seen.legacy_refused, bridged_seen.legacy_refused
    return legacy, bridged


def _legacy_side(seen: Traffic, method: str, answer: dict[str, Any]) -> None:
    assert not seen.diracx, f"{method} was to stay on legacy, but DiracX saw {seen.diracx}"
    if answer.get("Message") == UNAUTHORIZED:
        assert [c.method for c in seen.legacy_refused] == [method], seen.legacy_refused
    else:
        assert seen.legacy_calls(method), f"{method} never reached the legacy service; it saw {seen.legacy}"


def assert_same(legacy: Any, bridged: Any, method: str) -> None:
    verdict = compare(legacy, bridged, method)
    assert verdict.equal, f"{verdict}\nlegacy  {legacy!r}\nbridged {bridged!r}"


# =============================================================================================
# An administrator (Operator, ServiceAdministrator): DiracX sees every VO
# =============================================================================================


@pytest.mark.parametrize(
    "names",
    [["a1"], ["l1"], ["v1"], ["a3", "l2"], ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "l1",
                                            "l2", "v1", "v2", "p1"]],
    ids=["adapter-registered", "legacy-registered", "other-vo", "job-on-two-pilots", "many-across-vos"],
)  # fmt: skip
def test_pilot_info(callers, pilots, names):
    references = [ref(n) for n in names]
    legacy, bridged = both(callers["civo_admin"], "getPilotInfo", references[0] if len(names) == 1 else references)
    assert legacy["OK"] and len(legacy["Value"]) == len(names), legacy
    assert_same(legacy, bridged, "getPilotInfo")


def test_pilot_info_has_the_jobs_it_ran(callers, pilots):
    legacy, bridged = both(callers["civo_admin"], "getPilotInfo", [ref("a1"), ref("a3"), ref("l2")])
    jobs = pilots["jobs"]
    assert sorted(legacy["Value"][ref("a1")]["Jobs"]) == [jobs[0], jobs[1]]
    assert legacy["Value"][ref("a3")]["Jobs"] == legacy["Value"][ref("l2")]["Jobs"] == [jobs[6]]
    assert isinstance(bridged["Value"][ref("a1")]["SubmissionTime"], dt.datetime)
    assert_same(legacy, bridged, "getPilotInfo")


@pytest.mark.parametrize("given", ["unknown", ["unknown", "other"], [None]], ids=["one", "several", "null"])
def test_pilot_info_of_nothing_is_ewmsnopilot(callers, pilots, given):
    given = [ref(g) if g else g for g in given] if isinstance(given, list) else ref(given)
    side = LOCAL if given == [None] else ADAPTED_SIDE
    legacy, bridged = both(callers["civo_admin"], "getPilotInfo", given, side=side)
    assert legacy["Errno"] == 1550, legacy
    assert_same(legacy, bridged, "getPilotInfo")


def test_pilot_info_of_a_pilot_without_stamp_falls_back(callers, pilots):
    """DiracX maps jobs to pilots by stamp: a stampless pilot's Jobs come from the legacy service."""
    legacy, bridged = both(callers["civo_admin"], "getPilotInfo", ref("nostamp"), side=DIRACX_THEN_LEGACY)
    assert legacy["Value"][ref("nostamp")]["Jobs"] == [pilots["jobs"][7]]
    assert_same(legacy, bridged, "getPilotInfo")


def test_pilot_info_of_a_pilot_without_stamp_is_refused_without_fallback(callers, pilots):
    with observe(callers["civo_admin"].grid) as seen:
        bridged = callers["civo_admin"].call("getPilotInfo", ref("nostamp"), cs=ADAPTED)
    assert not bridged["OK"] and "has no stamp" in bridged["Message"] and "LegacyFallback = yes" in bridged["Message"]
    assert not seen.legacy_calls("getPilotInfo")


def test_pilots_of_a_job(callers, pilots):
    jobs = pilots["jobs"]
    for job, count in ((jobs[6], 2), (jobs[0], 1), (str(jobs[5]), 1)):
        legacy, bridged = both(callers["civo_admin"], "getPilots", job)
        assert legacy["OK"] and len(legacy["Value"]) == count, legacy
        assert_same(legacy, bridged, "getPilots")


@pytest.mark.parametrize(
    ("job", "side"), [(99_999_990, ADAPTED_SIDE), ("12x", LOCAL)], ids=["no-pilot", "not-a-number"]
)
def test_pilots_of_a_job_errors(callers, pilots, job, side):
    legacy, bridged = both(callers["civo_admin"], "getPilots", job, side=side)
    assert not legacy["OK"]
    assert_same(legacy, bridged, "getPilots")


@pytest.mark.parametrize(
    ("cond", "side"),
    [
        ({"Status": "Running"}, ADAPTED_SIDE),
        ({"status": ["Done", "Aborted"], "DestinationSite": [CE, "ce2.example.org"]}, ADAPTED_SIDE),
        ({"VO": "legacyvo", "GridType": "htcondorce"}, ADAPTED_SIDE),  # MySQL compares without case
        ({}, ADAPTED_SIDE),
        ({"Status": None}, LOCAL),
        ({"Colour": "blue"}, LOCAL),
        ({"Status": [], "VO": "civo"}, LOCAL),
        ({"Status; --": "x"}, LOCAL),
        ({"AccountingSent": "False"}, FELL_BACK),
        ({"Status": "Scheduled"}, ADAPTED_SIDE),
    ],
    ids=["status", "lists", "case", "all", "null", "unknown-column", "empty-list", "bad-name", "flag", "scheduled"],
)
def test_select_pilots(callers, pilots, cond, side):
    legacy, bridged = both(callers["civo_admin"], "selectPilots", cond, side=side)
    assert_same(legacy, bridged, "selectPilots")


@pytest.mark.parametrize(
    "dates",
    [(), ("2000-01-01",), ("", "2000-01-01"), ("2000-01-01", "2999-12-31 23:59:59")],
    ids=["all", "since", "until", "window"],
)
def test_pilot_summary(callers, pilots, dates):
    legacy, bridged = both(callers["civo_admin"], "getPilotSummary", *dates, route=SUMMARY)
    assert set(legacy["Value"]["Total"]) == {
        "Submitted", "Waiting", "Running", "Done", "Failed", "Deleted", "Aborted", "Unknown", "Scheduled"
    }  # fmt: skip
    assert_same(legacy, bridged, "getPilotSummary")
    if not dates:
        assert legacy["Value"][CE]["Running"] >= 2 and legacy["Value"]["ce2.example.org"]["Aborted_Hour"] >= 1


# =============================================================================================
# A VO member: DiracX shows it its VO's pilots only; the legacy rules allow it two reads
# =============================================================================================


def test_member_reads_its_vos_pilots_from_diracx(callers, pilots):
    legacy, bridged = both(callers["civo_user"], "getPilotInfo", [ref("a1"), ref("l1"), ref("p1")])
    assert_same(legacy, bridged, "getPilotInfo")


def test_member_reading_another_vos_pilot_gets_the_legacy_answer(callers, pilots):
    legacy, bridged = both(callers["civo_user"], "getPilotInfo", [ref("a2"), ref("v2")], side=DIRACX_THEN_LEGACY)
    assert len(legacy["Value"]) == 2
    assert_same(legacy, bridged, "getPilotInfo")


def test_member_is_never_answered_less_than_legacy(callers, pilots):
    """Without fallback: a clear refusal, never the civo half of the answer."""
    bridged = callers["civo_user"].call("getPilotInfo", [ref("a2"), ref("v2")], cs=ADAPTED)
    assert not bridged["OK"]
    assert "only the pilots of VO civo" in bridged["Message"] and "LegacyFallback = yes" in bridged["Message"]


def test_member_pilots_of_a_job_come_from_legacy(callers, pilots):
    legacy, bridged = both(callers["civo_user"], "getPilots", pilots["jobs"][6], side=FELL_BACK)
    assert_same(legacy, bridged, "getPilots")


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("selectPilots", ({"VO": "civo"},)),
        ("getPilotSummary", ()),
        ("setPilotStatus", (ref("a5"), "Done")),
        ("addPilotReferences", ([ref("never")], "civo", "DIRAC", {ref("never"): stamp("never")})),
        ("noSuchMethod", ()),
    ],
    ids=["select", "summary", "set-status", "add", "unknown-method"],
)
def test_member_is_refused_what_the_legacy_rules_refuse(callers, pilots, method, args):
    legacy, bridged = both(callers["civo_user"], method, *args, side=LOCAL)
    assert legacy["Message"] == UNAUTHORIZED
    assert_same(legacy, bridged, method)


# =============================================================================================
# A pilot (GenericPilot): DiracX lets it register and update itself, never read
# =============================================================================================


def test_pilot_reads_come_from_legacy(callers, pilots):
    legacy, bridged = both(callers["civo_pilot"], "getPilotInfo", ref("p1"), side=FELL_BACK)
    assert_same(legacy, bridged, "getPilotInfo")
    legacy, bridged = both(callers["civo_pilot"], "getPilotInfo", ref("p-unknown"), side=FELL_BACK)
    assert legacy["Errno"] == 1550
    assert_same(legacy, bridged, "getPilotInfo")


def test_pilot_read_without_fallback_is_refused_before_diracx(callers, pilots):
    with observe(callers["civo_pilot"].grid) as seen:
        bridged = callers["civo_pilot"].call("getPilotInfo", ref("p1"), cs=ADAPTED)
    assert not bridged["OK"] and "lets no GenericPilot read pilot metadata" in bridged["Message"]
    seen.assert_answered_locally("getPilotInfo")


def test_pilot_summary_is_refused_by_the_legacy_rules(callers, pilots):
    legacy, bridged = both(callers["civo_pilot"], "getPilotSummary", side=LOCAL)
    assert_same(legacy, bridged, "getPilotSummary")


# =============================================================================================
# Writes: twin pilots, one written through each side, end in the same rows
# =============================================================================================


def _without_stub(answer: dict[str, Any]) -> dict[str, Any]:
    """Twins are written with different arguments: their answers differ in DISET's stub only."""
    return {k: v for k, v in answer.items() if k != "rpcStub"}


def twin_write(caller: Caller, method: str, legacy_args: tuple[Any, ...], bridged_args: tuple[Any, ...], *,
               side: str = ADAPTED_SIDE, route: tuple[str, str] = REGISTER) -> tuple[Any, Any]:  # fmt: skip
    """The same write, on twin pilots: the legacy service for one, the bridge for the other."""
    with observe(caller.grid) as seen:
        legacy = caller.call(method, *legacy_args, cs=LEGACY)
    _legacy_side(seen, method, legacy)
    cs = ADAPTED | ({FALLBACK: "yes"} if side in (FELL_BACK, DIRACX_THEN_LEGACY) else {})
    with observe(caller.grid) as seen:
        bridged = caller.call(method, *bridged_args, cs=cs)
    if side == ADAPTED_SIDE:
        seen.assert_adapted(method, route)
    elif side == FELL_BACK:
        seen.assert_legacy(method)
    else:
        assert seen.from_bridge(), f"{method}: DiracX was not asked first"
        assert seen.legacy_calls(method), f"{method} did not reach the legacy service: {seen.legacy}"
    assert_same(_without_stub(legacy), _without_stub(bridged), method)
    return legacy, bridged


def register_twins(caller: Caller, name: str, vo: str = "civo", side: str = ADAPTED_SIDE) -> tuple[str, str]:
    twins = ref(f"{name}-L"), ref(f"{name}-B")
    stamps = {twins[0]: stamp(f"{name}-L"), twins[1]: stamp(f"{name}-B")}
    legacy, _ = twin_write(
        caller, "addPilotReferences", ([twins[0]], vo, "ARC", stamps), ([twins[1]], vo, "ARC", stamps), side=side
    )
    assert legacy["OK"] and legacy["Value"] is None, legacy
    return twins


@pytest.mark.parametrize(
    ("group", "vo", "side"),
    [
        ("civo_admin", "civo", ADAPTED_SIDE),
        ("civo_admin", "legacyvo", DIRACX_THEN_LEGACY),  # DiracX does not know the VO (HTTP 400): legacy registers
        ("civo_pilot", "civo", ADAPTED_SIDE),
        ("civo_pilot", "legacyvo", FELL_BACK),  # DiracX lets a pilot register its own VO only
    ],
    ids=["admin", "admin-unknown-vo", "pilot", "pilot-other-vo"],
)
def test_registration_twins(callers, pilots, db, group, vo, side):
    legacy_ref, bridged_ref = register_twins(callers[group], f"reg-{group}-{vo}", vo, side)
    assert db.twin_state(legacy_ref) == db.twin_state(bridged_ref)
    assert db.row(bridged_ref)["PilotStamp"] == stamp(f"reg-{group}-{vo}-B")


@pytest.mark.parametrize(
    ("args", "side"),
    [
        (("Running", CE, "started by the CE", None, "long"), ADAPTED_SIDE),  # GridSite derived from the CE
        (("Done", "ce9.example.org", None, "LCG.Nine.org", None), ADAPTED_SIDE),
        (("Scheduled", CE, None, None, None), FELL_BACK),  # not a DiracX status
    ],
    ids=["derived-site", "given-site", "scheduled"],
)
def test_status_twins(callers, pilots, db, args, side):
    admin = callers["civo_admin"]
    legacy_ref, bridged_ref = register_twins(admin, f"st-{args[0]}-{args[1][:3]}")
    legacy, _ = twin_write(
        admin, "setPilotStatus", (legacy_ref, *args), (bridged_ref, *args), side=side, route=METADATA
    )
    assert legacy["Value"] == 1
    assert db.twin_state(legacy_ref) == db.twin_state(bridged_ref)
    if args[1] == CE:
        assert db.row(bridged_ref)["GridSite"] == "DIRAC.CI.ch"


def test_status_of_an_unknown_pilot_changes_nothing(callers, pilots):
    legacy, bridged = both(callers["civo_admin"], "setPilotStatus", ref("nobody"), "Done")
    assert legacy["Value"] == 0
    assert_same(legacy, bridged, "setPilotStatus")


def test_a_pilot_sets_its_own_status(callers, pilots, db):
    """As dirac-admin-add-pilot --status does in a pilot started in the vacuum: register, then set the status."""
    pilot = callers["civo_pilot"]
    legacy_ref, bridged_ref = register_twins(pilot, "self")
    legacy, _ = twin_write(pilot, "setPilotStatus", (legacy_ref, "Running"), (bridged_ref, "Running"), route=METADATA)
    assert legacy["Value"] == 1
    assert db.twin_state(legacy_ref) == db.twin_state(bridged_ref)
    assert db.row(bridged_ref)["Status"] == "Running"


def test_a_pilot_setting_another_pilots_status_goes_to_legacy(callers, pilots, db):
    pilot = callers["civo_pilot"]
    twins = register_twins(callers["civo_admin"], "other-pilot")
    twin_write(pilot, "setPilotStatus", (twins[0], "Done"), (twins[1], "Done"), side=FELL_BACK, route=METADATA)
    assert db.twin_state(twins[0]) == db.twin_state(twins[1])


# =============================================================================================
# WMSAdministrator: nothing DiracX can serve
# =============================================================================================


def test_job_pilot_output_comes_from_legacy(callers, pilots):
    legacy, bridged = both(callers["civo_user"], "getJobPilotOutput", pilots["jobs"][0], side=FELL_BACK, target=WMSA)
    assert legacy["OK"] and "# PilotJobReference: " in legacy["Value"]["StdOut"], legacy
    assert_same(legacy, bridged, "getJobPilotOutput")


def test_job_pilot_output_without_fallback_is_a_clear_refusal(callers, pilots):
    with observe(callers["civo_user"].grid) as seen:
        bridged = callers["civo_user"].call("getJobPilotOutput", pilots["jobs"][0], cs=ADAPTED, target=WMSA)
    assert not bridged["OK"] and bridged["Errno"] == 95
    assert "getJobPilotOutput is not served by DiracX 0.7.0 (it has no route to pilot output" in bridged["Message"]
    seen.assert_answered_locally("getJobPilotOutput")


@pytest.mark.parametrize(("group", "method"), [("civo_admin", "noSuchMethod"), ("civo_user", "noSuchMethod")])
def test_wms_administrator_surface(callers, pilots, group, method):
    legacy, bridged = both(callers[group], method, 1, side=LOCAL, target=WMSA)
    assert_same(legacy, bridged, method)


# =============================================================================================
# status explains each identity
# =============================================================================================


def test_status_explains_the_pilot_identities(grid_session, tmp_path):
    gs = grid_session
    overlay = tmp_path / "switches.cfg"
    overlay.write_text(
        "DiracX\n{\n  FutureClientEnabled\n  {\n    WorkloadManagement\n    {\n      PilotManager = yes\n"
        "      WMSAdministrator = yes\n    }\n  }\n}\n"
    )
    env = {"DIRACSYSCONFIG": str(overlay)}
    outputs = {}
    for group in ("civo_pilot", "civo_user", "civo_admin"):
        gs.proxy("ciuser", group)
        outputs[group] = gs.grid.run(["diracx-bridge", "status"], group=group, env=env).stdout
    assert "WorkloadManagement/PilotManager          -> DiracX" in outputs["civo_pilot"]
    assert "GenericPilot: DiracX lets a pilot register pilots of its own VO" in outputs["civo_pilot"]
    assert "pilots of VO civo only" in outputs["civo_user"]
    assert "ServiceAdministrator: every VO's pilots" in outputs["civo_admin"]
    assert "getJobPilotOutput: DiracX 0.7.0 has no pilot output" in outputs["civo_user"]
    assert "Authorization rules (CS) are applied first" in outputs["civo_admin"]
