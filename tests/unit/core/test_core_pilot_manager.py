"""adapters/pilot_manager.py and wms_administrator.py against a MockTransport DiracX.

The fake pilot routes below behave as DiracX 0.7.0's (``routers/pilots``, ``logic/pilots``): the
caller's token decides (ServiceAdministrator sees every VO, others their own VO, GenericPilot may
not read), ``JobID`` on the pilot search and ``PilotStamp`` on the job search are resolved through
the job-to-pilot mapping, strings compare without case as in MySQL, whole-second datetime strings
are whole seconds. Tests assert what was sent as well as what was answered.
"""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from core_test_helpers import URL, FakeDiracX, diracx_route, make_jwt, refresh_jwt
from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge.adapters import _legacy_auth, pilot_manager
from diracx_bridge.adapters.pilot_manager import PILOT_STATES, PilotManagerAdapter, View
from diracx_bridge.adapters.wms_administrator import WMSAdministratorAdapter
from diracx_bridge.identity import Caller, CallerKind
from diracx_bridge.shadow.compare import compare
from diracx_bridge.tokens import DiracxToken, write_token

SERVICE = "WorkloadManagement/PilotManager"
SEARCH, SUMMARY, REGISTER, METADATA, JOBS = (
    "/api/pilots/search",
    "/api/pilots/summary",
    "/api/pilots/",
    "/api/pilots/metadata",
    "/api/jobs/search",
)
ADMIN = ("ServiceAdministrator", "Operator", "NormalUser")
MEMBER = ("NormalUser",)
PILOT = ("GenericPilot", "LimitedDelegation")
T0 = dt.datetime(2025, 3, 4, 5, 6, 7)
#: DISET's refusal, as DIRAC's S_ERROR words an error with a DErrno code.
UNAUTHORIZED = "Unauthorized query ( 1111 : Unauthorized query)"


# =============================================================================================
# A fake of DiracX 0.7.0's pilot routes (and of the job search's PilotStamp pseudo-parameter)
# =============================================================================================


def _fold(value: Any) -> Any:
    return value.casefold().rstrip(" ") if isinstance(value, str) else value


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC).isoformat()


@dataclass
class FakePilots:
    rows: list[dict[str, Any]] = field(default_factory=list)
    mapping: list[tuple[int, int]] = field(default_factory=list)  # (PilotID, JobID)
    jobs: set[int] = field(default_factory=set)  # the jobs JobDB still has
    vos: set[str] = field(default_factory=lambda: {"testvo", "othervo"})
    next_id: int = 1

    def add(self, ref: str, stamp: str = "", vo: str = "testvo", **values: Any) -> dict[str, Any]:
        row = {
            "PilotID": self.next_id,
            "InitialJobID": 0,
            "CurrentJobID": 0,
            "PilotJobReference": ref,
            "PilotStamp": stamp,
            "DestinationSite": "NotAssigned",
            "Queue": "Unknown",
            "GridSite": "Unknown",
            "VO": vo,
            "GridType": "DIRAC",
            "BenchMark": 0.0,
            "SubmissionTime": _iso(T0),
            "LastUpdateTime": _iso(T0),
            "Status": "Submitted",
            "StatusReason": "Unknown",
            "AccountingSent": False,
        }
        row.update(values)
        self.rows.append(row)
        self.next_id += 1
        return row

    def run(self, pilot_id: int, *job_ids: int) -> None:
        for job in job_ids:
            self.mapping.append((pilot_id, job))
            self.jobs.add(job)

    def install(self, diracx: FakeDiracX) -> None:
        diracx.overrides[("POST", SEARCH)] = self._search
        diracx.overrides[("POST", SUMMARY)] = self._summary
        diracx.overrides[("POST", REGISTER)] = self._register
        diracx.overrides[("PATCH", METADATA)] = self._metadata
        diracx.overrides[("POST", JOBS)] = self._jobs

    # -- policy ----------------------------------------------------------------------------------

    @staticmethod
    def _claims(request: httpx.Request) -> dict[str, Any]:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        return jwt.decode(token, options={"verify_signature": False})

    def _readable(self, request: httpx.Request) -> tuple[str | None, httpx.Response | None]:
        claims = self._claims(request)
        props = claims.get("dirac_properties", [])
        if "GenericPilot" in props:
            return None, httpx.Response(403, json={"detail": "Pilots cannot read other pilots' metadata."})
        return (None if "ServiceAdministrator" in props else claims["vo"]), None

    # -- matching (MySQL's semantics on the same tables) -----------------------------------------

    @staticmethod
    def _matches(row: dict[str, Any], spec: dict[str, Any]) -> bool:
        value = row.get(spec["parameter"])
        op = spec["operator"]
        if spec["parameter"] in ("SubmissionTime", "LastUpdateTime"):
            moment = dt.datetime.fromisoformat(value).replace(tzinfo=None) if value else None
            bound = dt.datetime.strptime(spec["value"], "%Y-%m-%d %H:%M:%S") if "value" in spec else None
            if moment is None:
                return False
            if op == "gt":
                return moment >= bound + dt.timedelta(seconds=1)
            if op == "lt":
                return moment < bound
            if op == "eq":
                return bound <= moment < bound + dt.timedelta(seconds=1)
            raise AssertionError(op)
        if op == "eq":
            return _fold(str(value)) == _fold(str(spec["value"]))
        if op == "in":
            return _fold(str(value)) in {_fold(str(v)) for v in spec["values"]}
        if op == "gt":
            return int(value) > int(spec["value"])
        raise AssertionError(op)

    @staticmethod
    def _page(request: httpx.Request, found: list[dict[str, Any]], what: str) -> httpx.Response:
        page = int(request.url.params.get("page", 1))
        per_page = int(request.url.params.get("per_page", 100))
        assert 1 <= per_page <= 10_000
        first = per_page * (page - 1)
        rows = found[first : first + per_page]
        headers: dict[str, str] = {}
        status = 200
        if not rows and found:
            return httpx.Response(416, json=[], headers={"Content-Range": f"{what} */{len(found)}"})
        if len(rows) < len(found):
            status = 206
            headers["Content-Range"] = f"{what} {first}-{first + len(rows) - 1}/{len(found)}"
        return httpx.Response(status, json=rows, headers=headers)

    def _search(self, request: httpx.Request) -> httpx.Response:
        vo, refused = self._readable(request)
        if refused:
            return refused
        body = json.loads(request.content)
        search = list(body.get("search", []))
        job_specs = [s for s in search if s["parameter"] == "JobID"]
        if job_specs:
            assert not any(s["parameter"] == "PilotID" for s in search), "DiracX: cannot combine JobID and PilotID"
            jobs = {int(s["value"]) for s in job_specs if s["operator"] == "eq"} | {
                int(v) for s in job_specs if s["operator"] == "in" for v in s["values"]
            }
            ids = {p for p, j in self.mapping if j in jobs}
            search = [s for s in search if s["parameter"] != "JobID"]
            if not ids:
                return httpx.Response(200, json=[])
            search.append({"parameter": "PilotID", "operator": "in", "values": sorted(ids)})
        if vo is not None:
            search.append({"parameter": "VO", "operator": "eq", "value": vo})
        found = [r for r in self.rows if all(self._matches(r, s) for s in search)]
        assert body["sort"] == [{"parameter": "PilotID", "direction": "asc"}]
        found.sort(key=lambda r: r["PilotID"])
        if body.get("parameters"):
            found = [{p: r[p] for p in body["parameters"]} for r in found]
        return self._page(request, found, "pilots")

    def _summary(self, request: httpx.Request) -> httpx.Response:
        vo, refused = self._readable(request)
        if refused:
            return refused
        body = json.loads(request.content)
        search = list(body["search"]) + ([{"parameter": "VO", "operator": "eq", "value": vo}] if vo else [])
        groups: dict[tuple[Any, ...], int] = {}
        spelling: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in self.rows:
            if all(self._matches(row, s) for s in search):
                key = tuple(_fold(row[g]) for g in body["grouping"])
                groups[key] = groups.get(key, 0) + 1
                spelling.setdefault(key, tuple(row[g] for g in body["grouping"]))
        return httpx.Response(
            200, json=[{**dict(zip(body["grouping"], spelling[k], strict=True)), "count": n} for k, n in groups.items()]
        )

    def _manager(self, request: httpx.Request, stamps: list[str], vo: str | None = None) -> httpx.Response | None:
        claims = self._claims(request)
        props = claims.get("dirac_properties", [])
        admin = "ServiceAdministrator" in props
        if not admin and "GenericPilot" not in props:
            return httpx.Response(403, json={"detail": "Insufficient permissions to manage pilots."})
        if not admin and len(set(stamps)) > 1:
            return httpx.Response(403, json={"detail": "Insufficient permissions to modify more than one pilot."})
        if vo is not None and not admin and vo != claims["vo"]:
            return httpx.Response(403, json={"detail": "Pilots can only be registered for your own VO."})
        return None

    def _register(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        refused = self._manager(request, [], body["vo"])
        if refused:
            return refused
        if body["vo"] not in self.vos:
            return httpx.Response(400, json={"detail": f"VO {body['vo']!r} is not registered in this installation."})
        if any(_fold(r["PilotStamp"]) == _fold(body["pilot_stamp"]) for r in self.rows):
            return httpx.Response(409, json={"detail": f"Pilot with stamp {body['pilot_stamp']!r} already exists"})
        self.add(
            body.get("pilot_reference") or body["pilot_stamp"],
            body["pilot_stamp"],
            body["vo"],
            GridType=body.get("grid_type", "DIRAC"),
        )
        return httpx.Response(201)

    def _metadata(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        refused = self._manager(request, list(body))
        if refused:
            return refused
        targets = {stamp: [r for r in self.rows if r["PilotStamp"] == stamp] for stamp in body}
        if any(not rows for rows in targets.values()):
            return httpx.Response(404, json={"detail": "At least one pilot does not exist."})
        for stamp, rows in targets.items():
            for row in rows:
                row.update(body[stamp])
                row["LastUpdateTime"] = _iso(dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0))
        return httpx.Response(204)

    def _jobs(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        specs = body["search"]
        assert len(specs) == 1 and specs[0]["parameter"] == "PilotStamp", specs
        assert body["parameters"] == ["JobID"]
        assert body["sort"] == [{"parameter": "JobID", "direction": "asc"}]
        wanted = {_fold(specs[0]["value"])} if specs[0]["operator"] == "eq" else {_fold(v) for v in specs[0]["values"]}
        pilots = {r["PilotID"] for r in self.rows if _fold(r["PilotStamp"]) in wanted}
        found = sorted({j for p, j in self.mapping if p in pilots and j in self.jobs})
        return self._page(request, [{"JobID": j} for j in found], "jobs")


# =============================================================================================
# Fixtures and helpers
# =============================================================================================


def token_for(properties: tuple[str, ...], vo: str = "testvo") -> DiracxToken:
    access = make_jwt(
        1200,
        sub=f"{vo}:alice",
        vo=vo,
        iss=URL,
        preferred_username="alice",
        dirac_group="some_group",
        dirac_properties=list(properties),
    )
    return DiracxToken(access, refresh_jwt(), int(time.time() + 1185))


class Legacy:
    """The legacy PilotManager client a fallback would get: records calls, answers ``answer``."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answer = answer if answer is not None else {"OK": True, "Value": "from legacy"}

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        def call(*args: Any) -> dict[str, Any]:
            self.calls.append((name, args))
            return dict(self.answer)

        return call


@pytest.fixture
def pilots(diracx: FakeDiracX) -> FakePilots:
    fake = FakePilots()
    fake.install(diracx)
    return fake


@pytest.fixture(autouse=True)
def _no_dirac_cs(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the adapter reads of DIRAC's CS, stood in for (each test that needs it sets its own)."""
    monkeypatch.setattr(pilot_manager, "grid_site_of", lambda destination: None)
    monkeypatch.setattr(pilot_manager, "global_jobs_info", lambda vo: True)
    monkeypatch.setattr(pilot_manager, "_registered", pilot_manager.OrderedDict())
    _legacy_auth.forget()


@dataclass
class Make:
    proxy: Path
    diracx: FakeDiracX
    legacy: Legacy = field(default_factory=Legacy)

    def __call__(
        self, properties: tuple[str, ...] = ADMIN, *, vo: str = "testvo", fallback: bool = False, cls: Any = None
    ) -> Any:
        write_token(self.proxy, token_for(properties, vo))
        route = diracx_route(self.proxy, (cls or PilotManagerAdapter).SERVICE, legacy_fallback=fallback)
        return (cls or PilotManagerAdapter)(route, lambda: self.legacy, (cls or PilotManagerAdapter).SERVICE, {})


@pytest.fixture
def make(bare_proxy: Path, diracx: FakeDiracX) -> Make:
    return Make(bare_proxy, diracx)


def ok(result: dict[str, Any]) -> Any:
    assert result["OK"] is True, result
    return result["Value"]


def refused(result: dict[str, Any], *, code: int | None = None) -> str:
    assert result["OK"] is False, result
    if code is not None:
        assert result["Errno"] == code, result
    return str(result["Message"])


def sent(diracx: FakeDiracX, path: str) -> list[Any]:
    return [s.body for s in diracx.requests_to(path)]


def data_requests(diracx: FakeDiracX) -> list[str]:
    """The requests other than the API description and the token endpoint."""
    return [s.path for s in diracx.sent if s.path.startswith("/api/") and s.path != "/api/openapi.json"]


# =============================================================================================
# getPilotInfo
# =============================================================================================


def test_pilot_info_has_the_legacy_shape_and_types(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    row = pilots.add("https://ce.example/1", "stamp1", BenchMark=8, AccountingSent=True, Status="Running")
    pilots.run(row["PilotID"], 12, 11)
    answer = ok(make().getPilotInfo("https://ce.example/1"))
    info = answer["https://ce.example/1"]
    assert list(info) == [*pilot_manager.INFO_COLUMNS, "Jobs"]
    assert info["SubmissionTime"] == T0 and info["SubmissionTime"].tzinfo is None
    assert info["BenchMark"] == 8.0 and isinstance(info["BenchMark"], float)
    assert info["AccountingSent"] == "True"
    assert info["PilotID"] == row["PilotID"]
    assert info["Jobs"] == [11, 12]
    body = sent(diracx, SEARCH)[0]
    assert body["search"] == [{"parameter": "PilotJobReference", "operator": "eq", "value": "https://ce.example/1"}]
    assert body["parameters"] == ["PilotID", *(c for c in pilot_manager.INFO_COLUMNS if c != "PilotID")]


def test_pilot_info_of_several_references_leaves_unknown_ones_out(make: Make, pilots: FakePilots) -> None:
    pilots.add("ref-a", "sa")
    pilots.add("ref-b", "sb")
    answer = ok(make().getPilotInfo(["ref-a", "ref-b", "ref-nope"]))
    assert set(answer) == {"ref-a", "ref-b"}
    assert "Jobs" not in answer["ref-a"]  # no job ran on it: no Jobs key, as in legacy


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("nope", "No pilots found ( 1550 : No pilots found for PilotJobReference(s): nope)"),
        (["nope", "nada"], "No pilots found ( 1550 : No pilots found for PilotJobReference(s): ['nope', 'nada'])"),
    ],
)
def test_no_pilot_is_ewmsnopilot(make: Make, pilots: FakePilots, given: Any, message: str) -> None:
    assert refused(make().getPilotInfo(given), code=DErrno.EWMSNOPILOT) == message


def test_an_empty_reference_asks_for_every_pilot(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    for i in range(3):
        pilots.add(f"r{i}", f"s{i}", vo=["testvo", "othervo"][i % 2])
    assert set(ok(make().getPilotInfo(""))) == {"r0", "r1", "r2"}
    assert sent(diracx, SEARCH)[0]["search"] == []
    pilots.rows.clear()
    assert refused(make().getPilotInfo([]), code=DErrno.EWMSNOPILOT) == "No pilots found ( 1550 : No pilots found)"


def test_only_nulls_match_nothing_without_asking(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    assert refused(make(PILOT).getPilotInfo([None]), code=DErrno.EWMSNOPILOT).endswith("[None])")
    assert data_requests(diracx) == []


def test_the_last_pilot_of_a_reference_wins_as_in_legacy(make: Make, pilots: FakePilots) -> None:
    pilots.add("dup", "s1", Status="Done")
    pilots.add("dup", "s2", Status="Running")
    assert ok(make().getPilotInfo("dup"))["dup"]["Status"] == "Running"


def test_a_vo_member_is_served_when_every_reference_is_in_its_vo(make: Make, pilots: FakePilots) -> None:
    pilots.add("mine", "s1", vo="testvo")
    pilots.add("theirs", "s2", vo="othervo")
    assert set(ok(make(MEMBER).getPilotInfo(["mine"]))) == {"mine"}


@pytest.mark.parametrize("given", [["mine", "theirs"], "theirs", "", "nothing-like-it"])
def test_a_vo_member_is_not_answered_less_than_legacy(make: Make, pilots: FakePilots, given: Any) -> None:
    """DiracX hides other VOs' pilots from a VO member: a partial answer, or "none", is never given."""
    pilots.add("mine", "s1", vo="testvo")
    pilots.add("theirs", "s2", vo="othervo")
    message = refused(make(MEMBER).getPilotInfo(given), code=errno.ENOTSUP)
    assert "only the pilots of VO testvo" in message
    assert "LegacyFallback = yes" in message


def test_with_fallback_a_vo_member_gets_the_legacy_answer(make: Make, pilots: FakePilots) -> None:
    pilots.add("theirs", "s2", vo="othervo")
    assert ok(make(MEMBER, fallback=True).getPilotInfo("theirs")) == "from legacy"
    assert make.legacy.calls == [("getPilotInfo", ("theirs",))]


@pytest.mark.parametrize("method", ["getPilotInfo", "getPilots", "getPilotSummary", "selectPilots"])
def test_a_pilot_identity_reads_nothing_from_diracx(
    make: Make, pilots: FakePilots, diracx: FakeDiracX, method: str
) -> None:
    args = {"getPilotInfo": ("r",), "getPilots": (1,), "getPilotSummary": (), "selectPilots": ({"Status": "Done"},)}
    message = refused(getattr(make(PILOT), method)(*args[method]), code=errno.ENOTSUP)
    assert "lets no GenericPilot read pilot metadata" in message
    assert diracx.sent == []  # decided from the proxy's token: not even the API description is read
    assert ok(getattr(make(PILOT, fallback=True), method)(*args[method])) == "from legacy"


# --- the Jobs lists ---------------------------------------------------------------------------------


def test_jobs_are_paired_with_their_pilots_in_logarithmic_requests(
    make: Make, pilots: FakePilots, diracx: FakeDiracX
) -> None:
    rng = random.Random(7)
    rows = [pilots.add(f"ref{i}", f"stamp{i:03d}") for i in range(40)]
    expected: dict[str, list[int]] = {}
    job = 1000
    for row in rows:
        if rng.random() < 0.25:
            continue  # a pilot that ran nothing
        mine = list(range(job, job + rng.randint(1, 4)))
        job += len(mine)
        pilots.run(row["PilotID"], *mine)
        expected[row["PilotJobReference"]] = mine
    # A rescheduled job that ran on two of these pilots, and a job JobDB no longer has.
    pilots.run(rows[3]["PilotID"], 5000)
    pilots.run(rows[30]["PilotID"], 5000)
    expected.setdefault("ref3", []).append(5000)
    expected.setdefault("ref30", []).append(5000)
    pilots.run(rows[5]["PilotID"], 6000)
    pilots.jobs.discard(6000)
    answer = ok(make().getPilotInfo([r["PilotJobReference"] for r in rows]))
    assert {ref: info["Jobs"] for ref, info in answer.items() if "Jobs" in info} == {
        ref: sorted(jobs) for ref, jobs in expected.items()
    }
    # 1 pilot search + 1 job search + 1 stamp check + 1 job search per code bit (8 for 40 pilots: C(8, 4) = 70)
    # + the job that ran on two pilots, asked alone.
    assert len(diracx.requests_to(JOBS)) == 1 + 8
    assert len(diracx.requests_to(SEARCH)) == 1 + 1 + 1


def test_one_pilot_needs_one_job_search(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    row = pilots.add("only", "s-only")
    pilots.run(row["PilotID"], 3, 1, 2)
    assert ok(make().getPilotInfo("only"))["only"]["Jobs"] == [1, 2, 3]
    assert sent(diracx, JOBS)[0]["search"] == [{"parameter": "PilotStamp", "operator": "eq", "value": "s-only"}]


def test_pilots_without_jobs_cost_one_job_search(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    for i in range(10):
        pilots.add(f"r{i}", f"s{i}")
    answer = ok(make().getPilotInfo([f"r{i}" for i in range(10)]))
    assert all("Jobs" not in info for info in answer.values())
    assert len(diracx.requests_to(JOBS)) == 1


@pytest.mark.parametrize("stamps", [["", "s2"], ["same", "same"], ["s1", "SAME"]])
def test_pilots_a_stamp_does_not_identify_are_not_guessed(make: Make, pilots: FakePilots, stamps: list[str]) -> None:
    a = pilots.add("a", stamps[0])
    pilots.add("b", stamps[1])
    if stamps[1] == "SAME":
        pilots.add("c", "same")  # another pilot, not asked for, shares b's stamp
    pilots.run(a["PilotID"], 9)
    message = refused(make().getPilotInfo(["a", "b"]), code=errno.ENOTSUP)
    assert "maps jobs to pilots by stamp only" in message


def test_jobs_of_owners_diracx_hides_are_not_left_out_silently(
    make: Make, pilots: FakePilots, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pilot_manager, "global_jobs_info", lambda vo: False)
    pilots.add("a", "s1")
    assert "GlobalJobsInfo = False" in refused(make().getPilotInfo("a"), code=errno.ENOTSUP)


@pytest.mark.parametrize("count", [2, 3, 7, 40, 1000, 5000])
def test_codes_are_distinct_of_one_weight_and_short(count: int) -> None:
    codes, length = pilot_manager._codes(count)
    assert len(set(codes)) == count and {len(c) for c in codes} == {length // 2}
    assert math.comb(length - 1, (length - 1) // 2) < count <= math.comb(length, length // 2)


# =============================================================================================
# getPilots
# =============================================================================================


def test_pilots_of_a_job(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    a = pilots.add("a", "s1", vo="othervo")
    b = pilots.add("b", "s2")
    pilots.run(a["PilotID"], 77, 78)
    pilots.run(b["PilotID"], 77)
    answer = ok(make().getPilots("77"))
    assert {ref: info["Jobs"] for ref, info in answer.items()} == {"a": [77, 78], "b": [77]}
    first = sent(diracx, SEARCH)[0]
    assert first["search"] == [{"parameter": "JobID", "operator": "eq", "value": 77}]


def test_no_pilot_for_the_job_is_the_legacy_error(make: Make, pilots: FakePilots) -> None:
    assert refused(make().getPilots(5), code=0) == "Failed to get pilot for Job 5: "


def test_a_job_id_that_is_no_number_is_the_legacy_server_error(make: Make, diracx: FakeDiracX) -> None:
    message = refused(make().getPilots("5x"))
    assert message == "Server error while serving getPilots: invalid literal for int() with base 10: '5x'"
    assert data_requests(diracx) == []


def test_a_vo_member_cannot_know_every_pilot_of_a_job(make: Make, pilots: FakePilots) -> None:
    assert "a job may have run on others" in refused(make(MEMBER).getPilots(5), code=errno.ENOTSUP)


# =============================================================================================
# selectPilots
# =============================================================================================


def test_conditions_become_searches(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    pilots.add("a", "s1", Status="Running", DestinationSite="ce1")
    pilots.add("b", "s2", Status="Done", DestinationSite="ce1")
    pilots.add("c", "s3", Status="running", DestinationSite="ce2")
    refs = ok(make().selectPilots({"status": ["Running"], "DestinationSite": "CE1", "GridType": ["DIRAC", "x"]}))
    assert refs == ["a"]
    assert sent(diracx, SEARCH)[0]["search"] == [
        {"parameter": "Status", "operator": "eq", "value": "Running"},
        {"parameter": "DestinationSite", "operator": "eq", "value": "CE1"},
        {"parameter": "GridType", "operator": "in", "values": ["DIRAC", "x"]},
    ]
    assert ok(make().selectPilots({"Status": "RUNNING"})) == ["a", "c"]  # MySQL's collation: no case
    assert ok(make().selectPilots({})) == ["a", "b", "c"]


def test_selecting_on_times_is_to_the_second(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    pilots.add("a", "s1")
    assert ok(make().selectPilots({"SubmissionTime": "2025-03-04T05:06:07+00:00"})) == ["a"]
    assert sent(diracx, SEARCH)[0]["search"][0]["value"] == "2025-03-04 05:06:07"
    assert ok(make().selectPilots({"SubmissionTime": T0})) == ["a"]
    n = len(diracx.sent)
    assert ok(make().selectPilots({"SubmissionTime": "2025-03-04 05:06:07.5"})) == []  # DATETIME(0) never equals it
    assert [s.path for s in diracx.sent[n:] if s.path == SEARCH] == []


def test_conditions_no_row_meets_answer_an_empty_list_locally(make: Make, diracx: FakeDiracX) -> None:
    assert ok(make(PILOT).selectPilots({"Status": None})) == []
    assert ok(make().selectPilots({"Status": [None], "VO": "testvo"})) == []
    assert data_requests(diracx) == []


def test_unknown_column_is_mysqls_error(make: Make, diracx: FakeDiracX) -> None:
    message = refused(make().selectPilots({"Status": "Done", "Colour": "blue"}), code=DErrno.EMYSQL)
    assert "Unknown column 'Colour' in 'WHERE'" in message
    assert data_requests(diracx) == []


def test_an_empty_list_is_mysqls_syntax_error(make: Make, diracx: FakeDiracX) -> None:
    message = refused(make().selectPilots({"Status": [], "Colour": "x"}), code=DErrno.EMYSQL)
    assert "near ') AND `Colour` = 'x'' at line 1" in message  # as MariaDB quotes it (without the trailing space)
    assert data_requests(diracx) == []


def test_a_name_that_is_no_identifier_is_the_legacy_server_error(make: Make) -> None:
    message = refused(make().selectPilots({"Status; DROP": "x", "Foo": []}))
    assert message == "Server error while serving selectPilots: Invalid condDict argument"


@pytest.mark.parametrize(
    ("cond", "why"),
    [
        ({"AccountingSent": "True"}, "AccountingSent"),
        ({"Status": True}, "bool"),
        ({"LastUpdateTime": None}, "IS NULL"),
        ({"SubmissionTime": "yesterday"}, "not a date"),
        ({"PilotAgents.Status": "Done"}, "names a table"),
        ({"Status": "UTC_TIMESTAMP()"}, "SQL function"),
    ],
)
def test_conditions_diracx_cannot_express_are_not_served(make: Make, pilots: FakePilots, cond: Any, why: str) -> None:
    assert why in refused(make().selectPilots(cond), code=errno.ENOTSUP)


def test_a_vo_member_is_served_only_within_its_vo(make: Make, pilots: FakePilots) -> None:
    pilots.add("a", "s1", vo="testvo", Status="Done")
    pilots.add("b", "s2", vo="othervo", Status="Done")
    assert ok(make(MEMBER).selectPilots({"Status": "Done", "VO": ["TESTVO"]})) == ["a"]
    assert "do not restrict VO" in refused(make(MEMBER).selectPilots({"Status": "Done"}), code=errno.ENOTSUP)
    assert "do not restrict VO" in refused(make(MEMBER).selectPilots({"VO": ["testvo", "othervo"]}))


def test_selection_follows_every_page(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    for i in range(25):
        pilots.add(f"r{i:02d}", f"s{i}")
    adapter = PilotManagerAdapter(
        diracx_route(make.proxy, SERVICE, search_page_size=10), lambda: make.legacy, SERVICE, {}
    )
    write_token(make.proxy, token_for(ADMIN))
    assert ok(adapter.selectPilots({})) == [f"r{i:02d}" for i in range(25)]
    assert [b["search"] for b in sent(diracx, SEARCH)] == [
        [],
        [{"parameter": "PilotID", "operator": "gt", "value": 10}],
        [{"parameter": "PilotID", "operator": "gt", "value": 20}],
    ]


# =============================================================================================
# getPilotSummary
# =============================================================================================


def test_summary_has_the_legacy_shape(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    pilots.add("a", "s1", DestinationSite="ce2", Status="Running")
    pilots.add("b", "s2", DestinationSite="ce1", Status="running")
    pilots.add("c", "s3", DestinationSite="ce1", Status="Aborted", LastUpdateTime=_iso(now - dt.timedelta(minutes=5)))
    pilots.add("d", "s4", DestinationSite="ce1", Status="Aborted", LastUpdateTime=_iso(now - dt.timedelta(hours=5)))
    pilots.add("e", "s5", DestinationSite="", Status="Done")  # no site: not counted, as in legacy
    pilots.add("f", "s6", DestinationSite="ce3", Status="Stalled")  # not a pilot state: not counted
    pilots.add("g", "s7", DestinationSite="ce2", Status="Aborted", LastUpdateTime=_iso(now - dt.timedelta(days=3)))
    summary = ok(make().getPilotSummary())
    assert summary["Total"] == {**dict.fromkeys(PILOT_STATES, 0), "Running": 2, "Aborted": 3}
    assert list(summary["Total"]) == list(PILOT_STATES)
    # The legacy aborted query has no GROUP BY: every aborted pilot of the window, counted for the
    # site of the first one (lowest PilotID).
    assert summary["ce1"] == {"Running": 1, "Aborted": 2, "Aborted_Hour": 1, "Aborted_Day": 2}
    assert summary["ce2"] == {"Running": 1, "Aborted": 1}
    assert list(summary) == ["Total", "ce1", "ce2"]  # states in PILOT_STATES order, sites in GROUP BY order
    assert [b["grouping"] for b in sent(diracx, SUMMARY)] == [["DestinationSite", "Status"]]
    firsts = diracx.requests_to(SEARCH)
    assert [s.params["per_page"] for s in firsts] == ["1", "1"]
    assert [s.body["search"][0] for s in firsts] == [{"parameter": "Status", "operator": "eq", "value": "Aborted"}] * 2


def test_aborted_counts_go_to_the_first_aborted_pilots_site(make: Make, pilots: FakePilots) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    for site in ("ce9", "ce1", "ce9"):
        pilots.add(f"r-{site}", f"s{pilots.next_id}", DestinationSite=site, Status="Aborted", LastUpdateTime=_iso(now))
    summary = ok(make().getPilotSummary())
    assert summary["ce9"] == {"Aborted": 2, "Aborted_Hour": 3, "Aborted_Day": 3}
    assert summary["ce1"] == {"Aborted": 1}


def test_summary_with_nothing_is_total_zeros(make: Make, pilots: FakePilots) -> None:
    assert ok(make().getPilotSummary()) == {"Total": dict.fromkeys(PILOT_STATES, 0)}


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2025-03-04", "", [{"parameter": "SubmissionTime", "operator": "gt", "value": "2025-03-03 23:59:59"}]),
        (
            "",
            "2025-03-04 05:06:07",
            [{"parameter": "SubmissionTime", "operator": "lt", "value": "2025-03-04 05:06:08"}],
        ),
        (
            dt.datetime(2025, 3, 4, 5, 6, 7),
            "2025-03-04 05:06:07.9",
            [
                {"parameter": "SubmissionTime", "operator": "gt", "value": "2025-03-04 05:06:06"},
                {"parameter": "SubmissionTime", "operator": "lt", "value": "2025-03-04 05:06:08"},
            ],
        ),
        (
            "2025-03-04 05:06:07.2",
            None,
            [{"parameter": "SubmissionTime", "operator": "gt", "value": "2025-03-04 05:06:07"}],
        ),
    ],
)
def test_summary_dates_are_mysqls_inclusive_bounds(
    make: Make, pilots: FakePilots, diracx: FakeDiracX, start: Any, end: Any, expected: list[Any]
) -> None:
    pilots.add("a", "s1", DestinationSite="ce1", Status="Done")
    summary = ok(make().getPilotSummary(start, end))
    assert sent(diracx, SUMMARY)[0]["search"] == expected
    begins = start if isinstance(start, dt.datetime) else dt.datetime.fromisoformat(start) if start else None
    in_window = (begins is None or begins <= T0) and (not end or dt.datetime.fromisoformat(end) >= T0)
    assert summary["Total"]["Done"] == (1 if in_window else 0)


def test_summary_of_a_date_diracx_cannot_read_is_not_served(make: Make, diracx: FakeDiracX) -> None:
    assert "not a date" in refused(make().getPilotSummary("last week"), code=errno.ENOTSUP)
    assert data_requests(diracx) == []


def test_a_vo_member_gets_no_summary_of_its_vo_only(make: Make, pilots: FakePilots) -> None:
    assert "the summary is of every VO" in refused(make(MEMBER).getPilotSummary(), code=errno.ENOTSUP)


# =============================================================================================
# setPilotStatus
# =============================================================================================


def test_status_is_set_by_stamp(
    make: Make, pilots: FakePilots, diracx: FakeDiracX, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pilot_manager, "grid_site_of", {"ce1.example": "LCG.Site.org"}.get)
    pilots.add("ref", "stamp-1")
    assert ok(make().setPilotStatus("ref", "Running", "ce1.example", None, None, "q1")) == 1
    assert sent(diracx, METADATA) == [
        {
            "stamp-1": {
                "Status": "Running",
                "StatusReason": "Not given",
                "Queue": "q1",
                "DestinationSite": "ce1.example",
                "GridSite": "LCG.Site.org",
            }
        }
    ]
    assert ok(make().setPilotStatus("ref", "Done", "ce1.example", "finished", "Own.Site")) == 1
    assert sent(diracx, METADATA)[-1]["stamp-1"]["GridSite"] == "Own.Site"  # given: not derived
    assert sent(diracx, METADATA)[-1]["stamp-1"]["StatusReason"] == "finished"


def test_status_of_an_unknown_reference_changes_no_row(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    assert ok(make().setPilotStatus("nope", "Done")) == 0
    assert diracx.requests_to(METADATA) == []


@pytest.mark.parametrize("status", ["Scheduled", "running", "Whatever"])
def test_a_status_diracx_does_not_know_is_not_served(make: Make, diracx: FakeDiracX, status: str) -> None:
    assert "not " + repr(status) in refused(make().setPilotStatus("ref", status), code=errno.ENOTSUP)
    assert data_requests(diracx) == []


def test_status_by_a_stamp_shared_with_another_pilot_is_not_served(make: Make, pilots: FakePilots) -> None:
    pilots.add("ref", "shared")
    pilots.add("other", "shared")
    assert "updates by stamp" in refused(make().setPilotStatus("ref", "Done"), code=errno.ENOTSUP)


def test_a_vo_member_cannot_change_pilots(make: Make, diracx: FakeDiracX) -> None:
    assert "HTTP 403" in refused(make(MEMBER).setPilotStatus("ref", "Done"), code=errno.ENOTSUP)
    assert data_requests(diracx) == []


def test_a_pilot_sets_the_status_of_the_pilot_it_registered(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    pilot = make(PILOT)
    ok(pilot.addPilotReferences(["vm://ref"], "testvo", "DIRAC", {"vm://ref": "stamp-v"}))
    assert ok(make(PILOT).setPilotStatus("vm://ref", "Running")) == 1
    assert sent(diracx, METADATA) == [{"stamp-v": {"Status": "Running", "StatusReason": "Not given"}}]
    assert diracx.requests_to(SEARCH) == []  # it may not search, and did not need to
    message = refused(make(PILOT).setPilotStatus("vm://other", "Running"), code=errno.ENOTSUP)
    assert "no way to read the stamp" in message


# =============================================================================================
# addPilotReferences
# =============================================================================================


def test_references_are_registered_one_by_one(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    assert ok(make().addPilotReferences(["r1", "r2"], "othervo", "HTCondorCE", {"r1": "s1", "r2": "s2"})) is None
    assert sent(diracx, REGISTER) == [
        {"pilot_stamp": "s1", "vo": "othervo", "grid_type": "HTCondorCE", "pilot_reference": "r1"},
        {"pilot_stamp": "s2", "vo": "othervo", "grid_type": "HTCondorCE", "pilot_reference": "r2"},
    ]
    assert [r["PilotJobReference"] for r in pilots.rows] == ["r1", "r2"]


def test_no_reference_is_nothing_to_do(make: Make, diracx: FakeDiracX) -> None:
    assert ok(make(MEMBER).addPilotReferences([], "testvo")) is None
    assert data_requests(diracx) == []


@pytest.mark.parametrize(
    ("refs", "stamps", "why"),
    [
        (["r1"], {}, "a stamp of 1 to 32 characters"),
        (["r1"], {"r1": "x" * 33}, "a stamp of 1 to 32 characters"),
        (["r1", "r2"], {"r1": "s", "r2": "s"}, "repeat"),
        (["r1", "r1"], {"r1": "s"}, "repeat"),
    ],
)
def test_registrations_diracx_refuses_are_sent_nowhere_near_it(
    make: Make, diracx: FakeDiracX, refs: list[str], stamps: dict[str, str], why: str
) -> None:
    assert why in refused(make().addPilotReferences(refs, "testvo", "DIRAC", stamps), code=errno.ENOTSUP)
    assert diracx.requests_to(REGISTER) == []


def test_a_stamp_already_taken_is_left_to_legacy(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    pilots.add("old", "s1")
    assert "already a pilot's" in refused(make().addPilotReferences(["new"], "testvo", "DIRAC", {"new": "S1"}))
    assert diracx.requests_to(REGISTER) == []
    assert ok(make(fallback=True).addPilotReferences(["new"], "testvo", "DIRAC", {"new": "S1"})) == "from legacy"


def test_a_vo_diracx_does_not_know_is_left_to_legacy(make: Make, pilots: FakePilots) -> None:
    message = refused(make().addPilotReferences(["r"], "legacyvo", "DIRAC", {"r": "s"}), code=errno.ENOTSUP)
    assert "is not registered in this installation" in message
    assert pilots.rows == []


def test_a_pilot_registers_for_its_own_vo_only(make: Make, pilots: FakePilots, diracx: FakeDiracX) -> None:
    assert "own VO (testvo)" in refused(make(PILOT).addPilotReferences(["r"], "othervo", "DIRAC", {"r": "s"}))
    assert diracx.requests_to(REGISTER) == []
    assert ok(make(PILOT).addPilotReferences(["r"], "testvo", "DIRAC", {"r": "s"})) is None
    assert diracx.requests_to(SEARCH) == []  # a pilot may not search: it registers without checking first


def test_a_refusal_after_the_first_leaves_the_rest_to_legacy_once(make: Make, pilots: FakePilots) -> None:
    pilots.add("elsewhere", "s2")  # a pilot cannot know: DiracX refuses the second stamp (409)
    stamps = {"r1": "s1", "r2": "s2", "r3": "s3"}
    assert ok(make(PILOT, fallback=True).addPilotReferences(["r1", "r2", "r3"], "testvo", "DIRAC", stamps)) is None
    assert make.legacy.calls == [("addPilotReferences", (["r2", "r3"], "testvo", "DIRAC", stamps))]
    assert [r["PilotJobReference"] for r in pilots.rows] == ["elsewhere", "r1"]


def test_without_fallback_a_partial_registration_says_what_was_done(make: Make, pilots: FakePilots) -> None:
    pilots.add("elsewhere", "s2")
    result = make(PILOT).addPilotReferences(["r1", "r2", "r3"], "testvo", "DIRAC", {"r1": "s1", "r2": "s2", "r3": "s3"})
    message = refused(result, code=errno.ENOTSUP)
    assert "it registered ['r1'] and refused 'r2'" in message and "['r2', 'r3'] are not registered" in message


def test_a_vo_member_registers_nothing(make: Make, diracx: FakeDiracX) -> None:
    assert "HTTP 403" in refused(make(MEMBER).addPilotReferences(["r"], "testvo", "DIRAC", {"r": "s"}))
    assert data_requests(diracx) == []


# =============================================================================================
# The legacy service's authorization rules, DISET's checks, WMSAdministrator
# =============================================================================================


def test_what_the_legacy_rules_refuse_is_refused_first(
    make: Make, pilots: FakePilots, diracx: FakeDiracX, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str]] = []

    def rules(service: str, method: str, proxy: Any) -> bool:
        asked.append((service, method))
        return method == "ping"

    monkeypatch.setattr(_legacy_auth, "legacy_authorizes", rules)
    adapter = make(ADMIN)
    for result in (adapter.getPilotInfo("r"), adapter.getPilotInfo(3.5), adapter.noSuchMethod(), adapter.echo("x")):
        assert refused(result, code=DErrno.ENOAUTH) == UNAUTHORIZED  # before the type check, as DISET
        assert "rpcStub" in result
    assert data_requests(diracx) == []
    assert ok(adapter.ping())["backend"] == "DiracX"
    assert asked[0] == (SERVICE, "getPilotInfo")


@pytest.fixture
def dirac_cs() -> Iterator[Callable[[str, str], None]]:
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    added: list[str] = []

    def set_option(path: str, value: str) -> None:
        gConfigurationData.setOptionInCFG(path, value)
        added.append(path)

    yield set_option
    for path in added:
        gConfigurationData.deleteOptionInCFG(path)


def test_the_rules_are_dirac_own_on_the_cs(
    make: Make, pilots: FakePilots, dirac_cs: Callable[[str, str], None]
) -> None:
    """The unit proxy is group dirac_user of /O=diracx-bridge tests/CN=unit tester."""
    auth = "/Systems/WorkloadManagement/Services/PilotManager/Authorization"
    dirac_cs(f"{auth}/Default", "Operator")
    dirac_cs(f"{auth}/getPilotInfo", "authenticated")
    dirac_cs("/Registry/Users/tester/DN", "/O=diracx-bridge tests/CN=unit tester")
    dirac_cs("/Registry/Groups/dirac_user/Users", "tester")
    dirac_cs("/Registry/Groups/dirac_user/Properties", "NormalUser")
    pilots.add("r", "s")
    assert refused(make().selectPilots({}), code=DErrno.ENOAUTH) == UNAUTHORIZED
    assert "r" in ok(make().getPilotInfo("r"))
    _legacy_auth.forget()
    dirac_cs("/Registry/Groups/dirac_user/Properties", "NormalUser, Operator")
    assert ok(make().selectPilots({})) == ["r"]


def test_diset_type_check_and_arity(make: Make, diracx: FakeDiracX) -> None:
    adapter = make()
    assert refused(adapter.getPilotInfo({"a": 1})).startswith("Type mismatch in parameter 0")
    assert refused(adapter.setPilotStatus("r")) == "Function setPilotStatus expects at least 2 arguments"
    assert refused(adapter.getPilots(1, 2)).startswith("Server error while serving getPilots: ")
    assert refused(adapter.killPilot("r")) == "Unknown method killPilot"
    assert data_requests(diracx) == []


def test_getjobpilotoutput_is_not_served_or_legacy(make: Make, diracx: FakeDiracX) -> None:
    message = refused(make(cls=WMSAdministratorAdapter).getJobPilotOutput(5), code=errno.ENOTSUP)
    assert "WorkloadManagement/WMSAdministrator.getJobPilotOutput is not served by DiracX 0.7.0" in message
    assert "no route to pilot output" in message
    assert ok(make(cls=WMSAdministratorAdapter, fallback=True).getJobPilotOutput(5)) == "from legacy"
    assert make.legacy.calls == [("getJobPilotOutput", (5,))]
    assert refused(make(cls=WMSAdministratorAdapter).getJobPilotOutput(1.5)).startswith("Type mismatch")
    assert refused(make(cls=WMSAdministratorAdapter).getPilots(5)) == "Unknown method getPilots"
    assert data_requests(diracx) == []


def test_diracx_refusing_is_an_s_error_naming_who_lacks_what(
    make: Make, pilots: FakePilots, diracx: FakeDiracX
) -> None:
    diracx.overrides[("POST", SEARCH)] = lambda _r: httpx.Response(403, json={"detail": "no"})
    result = make().getPilotInfo("r")
    assert "DiracX refused getPilotInfo to alice" in refused(result, code=errno.EPERM)
    assert "ServiceAdministrator" in result["Message"]
    assert result["rpcStub"][1:] == ["getPilotInfo", ["r"]]


# =============================================================================================
# status, the comparison rules, the shared helpers
# =============================================================================================


def test_status_explains_each_identity() -> None:
    proxy = Caller(CallerKind.PROXY, proxy_path=Path("/p"), group="g", vo="civo")
    notes = {kind: "\n".join(PilotManagerAdapter.caller_notes(proxy, props)) for kind, props in
             (("admin", ADMIN), ("member", MEMBER), ("pilot", PILOT))}  # fmt: skip
    assert "every VO's pilots" in notes["admin"]
    assert "pilots of VO civo only" in notes["member"]
    assert "may not read pilots" in notes["pilot"] and "register pilots of its own VO" in notes["pilot"]
    host = PilotManagerAdapter.caller_notes(Caller(CallerKind.HOST), ())
    assert "SiteDirector, PilotStatusAgent" in host[0]
    assert "no pilot output" in WMSAdministratorAdapter.caller_notes(proxy, MEMBER)[0]
    assert View.of(PILOT, "civo").scoped and not View.of(ADMIN, "civo").scoped


def test_jobs_lists_and_selections_compare_without_order() -> None:
    legacy = {"OK": True, "Value": {"r": {"Status": "Done", "Jobs": [3, 1]}}}
    adapted = {"OK": True, "Value": {"r": {"Status": "Done", "Jobs": [1, 3]}}}
    assert compare(legacy, adapted, "getPilotInfo").equal
    assert compare(legacy, adapted, "getPilots").equal
    assert not compare(legacy, {"OK": True, "Value": {"r": {"Status": "Done", "Jobs": [1]}}}, "getPilotInfo").equal
    assert not compare(legacy, adapted, "getJobSummary").equal
    assert compare({"OK": True, "Value": ["b", "a"]}, {"OK": True, "Value": ["a", "b"]}, "selectPilots").equal


def test_pilot_states_are_diracs() -> None:
    from DIRAC.WorkloadManagementSystem.Client.PilotStatus import PILOT_STATES as DIRAC_STATES

    assert list(PILOT_STATES) == DIRAC_STATES


def test_every_pairing_of_three_jobs_and_three_pilots(make: Make, pilots: FakePilots) -> None:
    """Each of 3 jobs run by any subset of 3 pilots (none, one, several): always the mapping itself."""
    adapter = make()
    subsets = [frozenset(s) for n in range(4) for s in itertools.combinations(range(3), n)]
    for assignment in itertools.product(subsets, repeat=3):
        pilots.rows.clear()
        pilots.mapping.clear()
        pilots.jobs.clear()
        pilots.next_id = 1
        rows = [pilots.add(f"r{i}", f"s{i}") for i in range(3)]
        for job, ran_it in enumerate(assignment, start=100):
            for owner in sorted(ran_it):
                pilots.run(rows[owner]["PilotID"], job)
        answer = ok(adapter.getPilotInfo(["r0", "r1", "r2"]))
        expected = {f"r{i}": [100 + j for j, ran_it in enumerate(assignment) if i in ran_it] for i in range(3)}
        assert {r: info.get("Jobs", []) for r, info in answer.items()} == expected, assignment
