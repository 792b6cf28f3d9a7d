"""PilotManager, answered by DiracX's pilot routes: what the legacy service answers, or the legacy service.

DIRAC's PilotManager reads and writes ``PilotAgentsDB`` directly. DiracX serves the same tables
through four routes (register, metadata, search, summary), under a policy of its own, so
each legacy method is composed from them (legacy-surface.md, section 3.6) and answered in the
legacy shape: dictionaries keyed by pilot reference with naive UTC datetimes, ``'True'``/``'False'``
flags and the ``Jobs`` lists; ``getPilotSummary``'s ``Total`` with every pilot state at zero and
its ``Aborted_Hour``/``Aborted_Day`` counts; the legacy errors word for word
(``S_ERROR(EWMSNOPILOT)``, "Failed to get pilot for Job N", MySQL's own refusals).

Who may do what is decided three times, in this order, and each is said when it refuses:

1. the legacy service's ``Authorization`` rules (:mod:`._legacy_auth`): a caller it would refuse
   gets its ``Unauthorized query``, before anything else, as from the legacy service;
2. DiracX's policy, read from the caller's token: a ``ServiceAdministrator`` sees and changes
   every VO's pilots; a ``GenericPilot`` may register pilots of its own VO and update one pilot
   per call by its stamp, and may not read pilots at all; anyone else only reads the pilots of
   their own VO;
3. what DiracX can express: a legacy answer DiracX cannot give completely for this caller and
   these arguments is never given partially. It goes to the legacy service when
   ``/DiracX/Bridge/WorkloadManagement/PilotManager/LegacyFallback`` allows it, or is refused
   with the reason (:class:`~diracx_bridge.errors.NotServed`): a VO-scoped view of a question
   about every VO, a pilot identity reading, a status value DiracX does not know, a stamp that
   does not identify one pilot, a condition DiracX cannot filter on.

Host-certificate agents (SiteDirector, PilotStatusAgent) never get here: routing keeps them on
legacy, DiracX having no host identities.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import capabilities, errors, tokens
from diracx_bridge.adapters._base import adapted
from diracx_bridge.adapters._convert import empty_in_list_error, mysql_error, naive_utc
from diracx_bridge.adapters._legacy_auth import LegacyAuthorization
from diracx_bridge.capabilities import (
    JOBS_SEARCH,
    PILOTS_METADATA,
    PILOTS_REGISTER,
    PILOTS_SEARCH,
    PILOTS_SUMMARY,
)
from diracx_bridge.identity import Caller, CallerKind

SERVICE = "WorkloadManagement/PilotManager"

#: The columns of DIRAC's ``PilotAgents`` table (PilotAgentsDB.sql), which DiracX's search returns.
PILOT_COLUMNS = (
    "PilotID",
    "InitialJobID",
    "CurrentJobID",
    "PilotJobReference",
    "PilotStamp",
    "DestinationSite",
    "Queue",
    "GridSite",
    "VO",
    "GridType",
    "BenchMark",
    "SubmissionTime",
    "LastUpdateTime",
    "Status",
    "StatusReason",
    "AccountingSent",
)
_CANONICAL = {name.lower(): name for name in PILOT_COLUMNS}
#: What ``PilotAgentsDB.getPilotInfo`` reads, in its order (the order of the legacy dictionaries).
INFO_COLUMNS = (
    "PilotJobReference",
    "VO",
    "GridType",
    "Status",
    "DestinationSite",
    "BenchMark",
    "AccountingSent",
    "SubmissionTime",
    "PilotID",
    "LastUpdateTime",
    "GridSite",
    "PilotStamp",
    "Queue",
)
_DATETIME_COLUMNS = frozenset({"SubmissionTime", "LastUpdateTime"})
#: Columns that may be NULL (``IS NULL`` matches nothing on the others).
_NULLABLE_COLUMNS = _DATETIME_COLUMNS
#: DIRAC's ``PilotStatus.PILOT_STATES``: the states ``getPilotSummary`` counts, in its order.
PILOT_STATES = ("Submitted", "Waiting", "Running", "Done", "Failed", "Deleted", "Aborted", "Unknown", "Scheduled")
#: DiracX's ``PilotStatus`` enum: the only values its metadata route accepts.
DIRACX_STATUSES = frozenset({"Submitted", "Waiting", "Running", "Done", "Failed", "Deleted", "Aborted", "Unknown"})
#: The column sizes of ``PilotAgents`` (DiracX refuses longer values, MySQL would too).
_MAX_LENGTH = {"PilotJobReference": 255, "PilotStamp": 32, "VO": 128, "GridType": 32, "StatusReason": 255}
_SITE_LENGTH = 128  # DestinationSite, Queue, GridSite
#: Values DIRAC's MySQL class writes into a statement unquoted (SQL functions), so compares as SQL.
_SQL_FUNCTION = re.compile(r"^\s*(UTC_TIMESTAMP\(\)\s*$|TIMESTAMPDIFF\(|TIMESTAMPADD\()")
_IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_READ = "ServiceAdministrator, or (for the pilots of your VO) a group that is not GenericPilot"
_MANAGE = "ServiceAdministrator, or GenericPilot (for pilots of its own VO)"
_JOBS = "NormalUser or JobAdministrator"


@dataclass(frozen=True)
class View:
    """What DiracX's pilot policy lets a token do (``routers/pilots/access_policies.py``)."""

    vo: str
    #: ``ServiceAdministrator``: reads and writes every VO's pilots.
    admin: bool
    #: ``GenericPilot``: no reads at all; registers pilots of its VO, updates one pilot per call.
    pilot: bool

    @classmethod
    def of(cls, properties: Collection[str], vo: str) -> View:
        return cls(vo=vo, admin="ServiceAdministrator" in properties, pilot="GenericPilot" in properties)

    @property
    def scoped(self) -> bool:
        """Reads see the pilots of ``vo`` only."""
        return not self.admin


class _NoMatch(Exception):
    """A condition that matches no row in MySQL (the whole ``AND`` is then empty)."""


# --- pilots this process registered through DiracX ------------------------------------------------

_registered_lock = threading.Lock()
#: (DiracX URL, pilot reference) -> the stamp DiracX registered it under, by this process.
_registered: OrderedDict[tuple[str, str], str] = OrderedDict()
_REGISTERED_MAX = 4096


def _remember(url: str, reference: str, stamp: str) -> None:
    with _registered_lock:
        _registered[(url, reference)] = stamp
        _registered.move_to_end((url, reference))
        while len(_registered) > _REGISTERED_MAX:
            _registered.popitem(last=False)


def _registered_stamp(url: str, reference: str) -> str | None:
    with _registered_lock:
        return _registered.get((url, reference))


# --- what the adapter needs of DIRAC itself (functions, so tests can stand in for them) -----------


def grid_site_of(destination: str) -> str | None:
    """The site DIRAC's CS maps a CE to (what ``PilotAgentsDB.setPilotStatus`` derives GridSite from)."""
    from DIRAC.ConfigurationSystem.Client.Helpers.Resources import getCESiteMapping

    result = getCESiteMapping(destination)
    if result["OK"] and result["Value"]:
        return str(result["Value"][destination])
    return None


def global_jobs_info(vo: str) -> bool:
    """``/Operations/<vo>/Services/JobMonitoring/GlobalJobsInfo``: DiracX's job search shows every owner's jobs."""
    from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations

    return bool(Operations(vo=vo).getValue("Services/JobMonitoring/GlobalJobsInfo", True))


class PilotManagerAdapter(LegacyAuthorization):
    SERVICE = SERVICE
    #: The handler's ``types_<method>`` lists (PilotManagerHandler): the service's whole surface.
    TYPES: ClassVar[dict[str, list[Any]]] = {
        "addPilotReferences": [list, str],
        "getPilotInfo": [[list, str]],
        "selectPilots": [dict],
        "getPilotSummary": [],
        "getPilots": [[str, int]],
        "setPilotStatus": [str, str],
    }
    READS = frozenset({"getPilotInfo", "selectPilots", "getPilotSummary", "getPilots"})
    #: Every method is served; what each cannot serve for some callers or arguments is in ``caller_notes``.
    NOT_SERVED: ClassVar[dict[str, str]] = {}

    # --- who is asking --------------------------------------------------------------------------

    def _view(self) -> View:
        """The caller's token's view, read from the proxy without a request: a call DiracX would refuse or
        scope is decided before DiracX is contacted (its fallback then reaches only the legacy service)."""
        caller = self._route.caller
        assert caller is not None and caller.proxy_path is not None
        if caller.problem and caller.problem.startswith("no proxy"):
            raise errors.ProxyFileNotFound(caller.proxy_path)
        claims = tokens.Claims.of(tokens.read_token(caller.proxy_path).access_token)
        return View.of(claims.properties, claims.vo)

    @property
    def _diracx_url(self) -> str:
        return self._route.bridge.url if self._route.bridge is not None and self._route.bridge.url else "?"

    def _unserved(self, why: str) -> NoReturn:
        """This call, as given, is not for DiracX: the legacy service answers it (LegacyFallback) or it is refused."""
        self._unserved_why = f"{capabilities.NAME} for this call: {why}"
        raise errors.NotServed(self._service_name(), "this method", why=self._unserved_why)

    def _no_pilot_reads(self, view: View) -> None:
        if view.pilot:
            self._unserved("it lets no GenericPilot read pilot metadata (HTTP 403)")

    # --- DiracX access --------------------------------------------------------------------------

    def _pages(
        self, path: str, body: dict[str, Any], key: str, action: str, requires: str, *, keyset: bool
    ) -> list[dict[str, Any]]:
        """Every row of a search. Keyed on ``key`` ("key > the last one seen", always page 1) when
        ``keyset``; by page numbers when a pseudo-parameter forbids a filter on ``key``."""
        session = self.session
        per_page = session.settings.search_page_size
        rows: list[dict[str, Any]] = []
        after: list[dict[str, Any]] = []
        page = 1
        while True:
            try:
                response = session.request(
                    "POST",
                    path,
                    params={"page": page, "per_page": per_page},
                    json={**body, "search": body["search"] + after, "sort": [{"parameter": key, "direction": "asc"}]},
                    idempotent=True,
                    action=action,
                    requires=requires,
                )
            except errors.DiracXRejected as exc:
                if exc.status == 416 and page > 1:  # rows went away between two pages
                    return rows
                raise
            batch = response.json()
            rows.extend(batch)
            if response.status_code != 206 or len(batch) < per_page:
                return rows
            if keyset:
                after = [{"parameter": key, "operator": "gt", "value": int(batch[-1][key])}]
            else:
                page += 1

    def _pilots(self, search: list[dict[str, Any]], parameters: Sequence[str], action: str) -> list[dict[str, Any]]:
        """``PilotAgents`` rows matching ``search`` (ascending PilotID), with ``parameters``."""
        wanted = ["PilotID", *(p for p in parameters if p != "PilotID")]
        keyset = not any(spec["parameter"] == "JobID" for spec in search)  # JobID refuses a PilotID filter
        body = {"parameters": wanted, "search": search}
        return self._pages("/api/pilots/search", body, "PilotID", action, _READ, keyset=keyset)

    def _job_ids(self, stamps: Sequence[str], action: str) -> set[int]:
        """The IDs of the jobs (in JobDB) that ran on pilots with these stamps (``JobToPilotMapping``)."""
        spec = _one_or_in("PilotStamp", list(stamps))
        body = {"parameters": ["JobID"], "search": [spec]}
        rows = self._pages("/api/jobs/search", body, "JobID", action, _JOBS, keyset=False)
        return {int(row["JobID"]) for row in rows}

    # --- the Jobs lists ---------------------------------------------------------------------------

    def _jobs_by_pilot(self, rows: list[dict[str, Any]], view: View, action: str) -> dict[int, list[int]]:
        """PilotID -> the IDs of the jobs it ran, for the given pilot rows, through DiracX.

        DiracX maps jobs to pilots only by stamp (the job search's ``PilotStamp`` pseudo-parameter)
        and pilots to jobs by job (the pilot search's ``JobID``). One search gives every job of
        these pilots (none: done), one checks that their stamps are theirs alone, then about
        log2(n) + 2 searches pair each job with the one pilot that ran it (:meth:`_pair`), instead
        of one search per pilot. A job that ran on several of these pilots (rescheduled) is asked alone.
        """
        if not rows:
            return {}
        if not global_jobs_info(view.vo):
            self._unserved(
                f"DiracX shows the jobs of their owner only in VO {view.vo} (GlobalJobsInfo = False), so the "
                "Jobs lists would be incomplete"
            )
        by_stamp, spelled = self._identifying_stamps(rows)
        stamps = sorted(by_stamp)
        candidates = self._job_ids([spelled[s] for s in stamps], action)
        if not candidates:
            return {}
        # A stamp identifies its pilot only if no other pilot has it (legacy pilots may share one).
        holders = self._pilots([_one_or_in("PilotStamp", [spelled[s] for s in stamps])], ["PilotStamp"], action)
        held = Counter(_folded(h.get("PilotStamp") or "") for h in holders)
        shared = [spelled[s] for s in stamps if held[s] != 1]
        if shared:
            self._unserved(
                f"the stamp {shared[0]!r} of a pilot asked for is also another pilot's, and DiracX maps jobs to "
                "pilots by stamp only"
            )
        found = self._pair([spelled[s] for s in stamps], candidates, action)
        return {by_stamp[_folded(stamp)]: sorted(jobs) for stamp, jobs in found.items() if jobs}

    def _identifying_stamps(self, rows: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, str]]:
        """(folded stamp -> PilotID, folded stamp -> its spelling), or not served if a stamp is missing or
        repeated. MySQL compares stamps without case (its collation): so do DiracX's searches by stamp."""
        by_stamp: dict[str, int] = {}
        spelled: dict[str, str] = {}
        for row in rows:
            stamp = row.get("PilotStamp") or ""
            if not stamp or _folded(stamp) in by_stamp:
                what = "has no stamp" if not stamp else f"shares its stamp {stamp!r} with another pilot"
                self._unserved(
                    f"pilot {row.get('PilotJobReference')!r} {what}, and DiracX maps jobs to pilots by stamp only"
                )
            by_stamp[_folded(stamp)] = int(row["PilotID"])
            spelled[_folded(stamp)] = stamp
        return by_stamp, spelled

    def _pair(self, stamps: list[str], candidates: set[int], action: str) -> dict[str, set[int]]:
        """stamp -> the candidate jobs its pilot ran (each stamp that of exactly one pilot).

        Each pilot gets a code: ``weight`` of ``length`` bits (a constant-weight code, the shortest
        with enough codes). One job search per bit (the jobs of the pilots whose code has it) gives
        each job the set of bits it was found under: a job one pilot ran shows exactly that pilot's
        code; a job several of them ran shows more than ``weight`` bits (distinct codes of equal
        weight never cover one another) and is asked alone.
        """
        if len(stamps) == 1:
            return {stamps[0]: candidates}
        codes, length = _codes(len(stamps))
        pilot_of = {code: stamp for code, stamp in zip(codes, stamps, strict=True)}
        seen: dict[int, set[int]] = {job: set() for job in candidates}
        for bit in range(length):
            with_bit = [stamp for code, stamp in zip(codes, stamps, strict=True) if bit in code]
            for job in self._job_ids(with_bit, action) if with_bit else ():
                seen.setdefault(job, set()).add(bit)
        found: dict[str, set[int]] = {stamp: set() for stamp in stamps}
        folded = {_folded(stamp): stamp for stamp in stamps}
        for job in sorted(candidates):
            stamp = pilot_of.get(frozenset(seen[job]))
            if stamp is not None:
                found[stamp].add(job)
                continue
            # Several of these pilots ran it (or the mapping changed meanwhile): ask for it alone.
            ran_it = self._pilots([{"parameter": "JobID", "operator": "eq", "value": job}], ["PilotStamp"], action)
            for holder in ran_it:
                holder_stamp = folded.get(_folded(holder.get("PilotStamp") or ""))
                if holder_stamp is not None:
                    found[holder_stamp].add(job)
        return found

    def _info(self, rows: list[dict[str, Any]], view: View, action: str) -> dict[str, dict[str, Any]]:
        """``PilotAgentsDB.getPilotInfo``'s answer for these rows (ascending PilotID: the last of a
        reference wins, as in legacy)."""
        answer: dict[str, dict[str, Any]] = {}
        for row in rows:
            answer[row["PilotJobReference"]] = {
                column: _legacy_value(column, row.get(column)) for column in INFO_COLUMNS
            }
        jobs = self._jobs_by_pilot(rows, view, action)
        for info in answer.values():
            if info["PilotID"] in jobs:
                info["Jobs"] = jobs[info["PilotID"]]
        return answer

    # --- the legacy methods ---------------------------------------------------------------------

    @adapted(uses=[PILOTS_SEARCH, JOBS_SEARCH])
    def getPilotInfo(self, pilotReference: Any) -> dict[str, dict[str, Any]]:
        values = pilotReference if isinstance(pilotReference, list) else [pilotReference] if pilotReference else []
        references = [_text(v) for v in values if v is not None]
        if any(_SQL_FUNCTION.match(r) for r in references):
            self._unserved("a reference is an SQL function, which the legacy service runs as SQL")
        if values and not references:  # only NULLs: "IN (NULL)" matches nothing, whoever asks
            raise errors.LegacyRefusal(
                f"No pilots found for PilotJobReference(s): {pilotReference}", code=DErrno.EWMSNOPILOT
            )
        view = self._view()
        self._no_pilot_reads(view)
        search = [_one_or_in("PilotJobReference", references)] if references else []
        rows = self._pilots(search, INFO_COLUMNS, "getPilotInfo")
        if view.scoped:
            found = {_folded(row["PilotJobReference"]) for row in rows}
            if not references:
                self._unserved(f"it shows this caller only the pilots of VO {view.vo}, and the question is about all")
            if not {_folded(r) for r in references} <= found:
                self._unserved(
                    f"it shows this caller only the pilots of VO {view.vo}, and some references are not among them"
                )
        if not rows:
            message = "No pilots found" + (f" for PilotJobReference(s): {pilotReference}" if pilotReference else "")
            raise errors.LegacyRefusal(message, code=DErrno.EWMSNOPILOT)
        return self._info(rows, view, "getPilotInfo")

    @adapted(uses=[PILOTS_SEARCH, JOBS_SEARCH])
    def getPilots(self, jobID: Any) -> dict[str, dict[str, Any]]:
        try:
            job = int(jobID)
        except (TypeError, ValueError) as exc:
            raise errors.LegacyRefusal(f"Server error while serving getPilots: {exc}") from None
        view = self._view()
        self._no_pilot_reads(view)
        if view.scoped:
            self._unserved(f"it shows this caller only the pilots of VO {view.vo}, and a job may have run on others")
        rows = self._pilots([{"parameter": "JobID", "operator": "eq", "value": job}], INFO_COLUMNS, "getPilots")
        if not rows:
            raise errors.LegacyRefusal(f"Failed to get pilot for Job {job}: ")
        return self._info(rows, view, "getPilots")

    @adapted(uses=[PILOTS_SEARCH])
    def selectPilots(self, condDict: Any) -> list[str]:
        search = self._conditions(condDict)
        if search is None:
            return []  # a condition no row can meet: the legacy answer, without asking anyone
        view = self._view()
        self._no_pilot_reads(view)
        if view.scoped and not _only_vo(search, view.vo):
            self._unserved(
                f"it shows this caller only the pilots of VO {view.vo}, and the conditions do not restrict VO to it"
            )
        return [row["PilotJobReference"] for row in self._pilots(search, ["PilotJobReference"], "selectPilots")]

    def _conditions(self, cond: dict[Any, Any]) -> list[dict[str, Any]] | None:
        """``buildCondition(condDict)`` as DiracX search specs; None when no row can match.

        In the legacy order of refusals: DIRAC's ``buildCondition`` refuses a name that is no SQL
        identifier while writing the statement; MySQL then refuses the ``IN (  )`` of an empty list
        while parsing it, and only then names an unknown column.
        """
        for name in cond:
            if not isinstance(name, str):
                self._unserved(f"the condition on {name!r} names no column")
            if not all(_IDENTIFIER.match(part) for part in name.replace("`", "").split(".")):
                raise errors.LegacyRefusal("Server error while serving selectPilots: Invalid condDict argument")
        syntax_error = empty_in_list_error(cond)  # (MariaDB quotes the statement without its trailing space)
        if syntax_error is not None:
            raise syntax_error
        search: list[dict[str, Any]] = []
        impossible = False
        for name, value in cond.items():
            bare = name.replace("`", "")
            if "." in bare:
                self._unserved(f"the condition on {name!r} names a table")
            column = _CANONICAL.get(bare.lower())
            if column is None:
                raise mysql_error(1054, f"Unknown column '{bare}' in 'WHERE'")
            try:
                search.append(self._condition(column, value))
            except _NoMatch:
                impossible = True
        return None if impossible else search

    def _condition(self, column: str, value: Any) -> dict[str, Any]:
        if isinstance(value, list):
            values = []
            for item in value:
                if item is None:
                    continue  # NULL in an IN list matches nothing
                try:
                    values.append(self._condition_value(column, item))
                except _NoMatch:
                    continue
            if not values:
                raise _NoMatch
            return _one_or_in(column, values)
        if value is None:
            if column not in _NULLABLE_COLUMNS:
                raise _NoMatch
            self._unserved(f"it cannot select {column} IS NULL")
        return {"parameter": column, "operator": "eq", "value": self._condition_value(column, value)}

    def _condition_value(self, column: str, value: Any) -> Any:
        if isinstance(value, (bool, dict, list)):
            self._unserved(f"the legacy service writes {type(value).__name__} values into its SQL its own way")
        if column == "AccountingSent":
            self._unserved("it cannot filter on AccountingSent (its search answers HTTP 500)")
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and _SQL_FUNCTION.match(value):
            self._unserved("a condition is an SQL function, which the legacy service runs as SQL")
        if column in _DATETIME_COLUMNS:
            moment = _moment(value)
            if moment is None:
                self._unserved(f"{value!r} is not a date DiracX reads as MySQL does")
            if moment.microsecond:
                raise _NoMatch  # a DATETIME(0) column never equals a fraction of a second
            return _second_string(moment)
        return str(value)

    @adapted(uses=[PILOTS_SUMMARY, PILOTS_SEARCH])
    def getPilotSummary(self, startdate: Any = "", enddate: Any = "") -> dict[str, dict[str, int]]:
        search: list[dict[str, Any]] = []
        if startdate:
            start = _moment(startdate)
            if start is None:
                self._unserved(f"{startdate!r} is not a date DiracX reads as MySQL does")
            search.append({"parameter": "SubmissionTime", "operator": "gt", "value": _at_least(start)})
        if enddate:
            end = _moment(enddate)
            if end is None:
                self._unserved(f"{enddate!r} is not a date DiracX reads as MySQL does")
            search.append({"parameter": "SubmissionTime", "operator": "lt", "value": _at_most(end)})
        view = self._view()
        self._no_pilot_reads(view)
        if view.scoped:
            self._unserved(f"it counts only the pilots of VO {view.vo} for this caller, and the summary is of every VO")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)  # UTC_TIMESTAMP()
        by_state = self._summary(["DestinationSite", "Status"], search)
        aborted = {
            key: self._first_aborted_since(now - since)
            for key, since in (("Aborted_Hour", dt.timedelta(hours=1)), ("Aborted_Day", dt.timedelta(days=1)))
        }
        # As PilotAgentsDB.getPilotSummary: one query per state, sites in GROUP BY order, empty sites left out.
        summary: dict[str, dict[str, int]] = {"Total": dict.fromkeys(PILOT_STATES, 0)}
        states = {_folded(state): state for state in PILOT_STATES}
        counts: dict[str, list[tuple[str, int]]] = {state: [] for state in PILOT_STATES}
        for row in by_state:
            state = states.get(_folded(str(row.get("Status") or "")))
            if state is not None and row.get("DestinationSite"):
                counts[state].append((row["DestinationSite"], int(row["count"])))
        for state in PILOT_STATES:
            for site, count in sorted(counts[state], key=lambda sc: _folded(sc[0])):
                summary.setdefault(site, {})[state] = summary.get(site, {}).get(state, 0) + count
                summary["Total"][state] += count
        for key, (site, count) in aborted.items():
            if site and site in summary and site != "Total":
                summary[site][key] = count
        return summary

    def _first_aborted_since(self, moment: dt.datetime) -> tuple[str | None, int]:
        """What ``getPilotSummary``'s aborted query answers: (a site, the number of pilots aborted since ``moment``).

        That query (``SELECT DestinationSite, count(DestinationSite) ... WHERE Status='Aborted' AND
        LastUpdateTime >= ...``) has no ``GROUP BY``: MySQL answers one row, the count of every aborted
        pilot with the site of the first row it reads (the lowest PilotID, through the Status index),
        and the legacy service gives that count to that site. One search of one row says both: the
        first pilot, and the total in its ``Content-Range``.
        """
        response = self.session.request(
            "POST",
            "/api/pilots/search",
            params={"page": 1, "per_page": 1},
            json={
                "parameters": ["PilotID", "DestinationSite"],
                "search": [
                    {"parameter": "Status", "operator": "eq", "value": "Aborted"},
                    {"parameter": "LastUpdateTime", "operator": "gt", "value": _at_least(moment)},
                ],
                "sort": [{"parameter": "PilotID", "direction": "asc"}],
            },
            idempotent=True,
            action="getPilotSummary",
            requires=_READ,
        )
        rows = response.json()
        if not rows:
            return None, 0
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return rows[0].get("DestinationSite"), int(total) if response.status_code == 206 and total.isdigit() else len(
            rows
        )

    def _summary(self, grouping: list[str], search: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self.session.request(
            "POST",
            "/api/pilots/summary",
            json={"grouping": grouping, "search": search},
            idempotent=True,
            action="getPilotSummary",
            requires=_READ,
        )
        return list(response.json())

    @adapted(uses=[PILOTS_SEARCH, PILOTS_METADATA])
    def setPilotStatus(  # noqa: PLR0917 - the legacy method's own positional arguments
        self,
        pilotRef: Any,
        status: Any,
        destination: Any = None,
        reason: Any = None,
        gridSite: Any = None,
        queue: Any = None,
    ) -> int:
        fields, problem = _status_fields(status, destination, reason, gridSite, queue)
        if problem:
            self._unserved(problem)
        view = self._view()
        stamps = self._stamps_to_update(view, pilotRef)
        if not stamps:
            return 0  # "UPDATE ... WHERE PilotJobReference=..." on no row
        try:
            self.session.request(
                "PATCH",
                "/api/pilots/metadata",
                json=dict.fromkeys(stamps, fields),
                action="setPilotStatus",
                requires=_MANAGE,
            )
        except errors.DiracXRejected as exc:
            if exc.status == 404 and view.pilot and not view.admin:
                return 0  # the pilot it registered is gone: legacy updates no row
            raise
        return len(stamps)

    def _stamps_to_update(self, view: View, reference: Any) -> list[str]:
        """The stamps of the pilots ``UPDATE ... WHERE PilotJobReference = reference`` would change."""
        if view.admin and not view.pilot:
            rows = self._pilots(
                [{"parameter": "PilotJobReference", "operator": "eq", "value": reference}],
                ["PilotStamp"],
                "setPilotStatus",
            )
            stamps = [row.get("PilotStamp") or "" for row in rows]
            if "" in stamps or len({_folded(s) for s in stamps}) != len(stamps):
                self._unserved(
                    f"a pilot with reference {reference!r} has no stamp of its own, and DiracX updates by stamp"
                )
            if stamps and len(
                self._pilots([_one_or_in("PilotStamp", stamps)], ["PilotStamp"], "setPilotStatus")
            ) != len(stamps):
                self._unserved(f"the stamp of {reference!r} is also another pilot's, and DiracX updates by stamp")
            return stamps
        if view.pilot:
            stamp = _registered_stamp(self._diracx_url, reference)
            if stamp is None:
                self._unserved(
                    "it lets a GenericPilot update a pilot only by its stamp, and gives it no way to read the stamp of "
                    "a reference it did not register in this process"
                )
            return [stamp]
        self._unserved("it lets only a ServiceAdministrator or a GenericPilot change pilots (HTTP 403)")

    @adapted(uses=[PILOTS_REGISTER, PILOTS_SEARCH])
    def addPilotReferences(self, pilotRef: Any, VO: Any, gridType: Any = "DIRAC", pilotStampDict: Any = None) -> None:
        stamps_of = pilotStampDict if isinstance(pilotStampDict, dict) else {}
        if pilotStampDict is not None and not isinstance(pilotStampDict, dict):
            self._unserved("pilotStampDict is not a dictionary")
        if not pilotRef:
            return None
        stamps = [stamps_of.get(ref, "") for ref in pilotRef]
        problem = _registration_problem(pilotRef, VO, gridType, stamps)
        if problem:
            self._unserved(problem)
        view = self._view()
        if not view.admin and not view.pilot:
            self._unserved("it lets only a ServiceAdministrator or a GenericPilot register pilots (HTTP 403)")
        if not view.admin and view.vo != VO:
            self._unserved(f"it lets a GenericPilot register pilots of its own VO ({view.vo}) only")
        if view.admin and not view.pilot:  # (a pilot may not search: DiracX's 409 will tell)
            taken = self._pilots([_one_or_in("PilotStamp", stamps)], ["PilotStamp"], "addPilotReferences")
            if taken:
                self._unserved(
                    f"the stamp {taken[0]['PilotStamp']!r} is already a pilot's: DiracX refuses a second pilot with it"
                )
        url = self._diracx_url
        for index, (ref, stamp) in enumerate(zip(pilotRef, stamps, strict=True)):
            try:
                self.session.request(
                    "POST",
                    "/api/pilots/",
                    json={"pilot_stamp": stamp, "vo": VO, "grid_type": gridType, "pilot_reference": ref},
                    action="addPilotReferences",
                    requires=_MANAGE,
                )
            except (errors.DiracXRejected, errors.Forbidden) as exc:
                detail = getattr(exc, "detail", None) or str(exc)
                if index == 0:
                    self._unserved(f"it refused pilot {ref!r}: {detail}")
                self._rest_on_legacy(pilotRef[:index], pilotRef[index:], (VO, gridType, stamps_of), detail)
                return None
            _remember(url, ref, stamp)
        return None

    def _rest_on_legacy(self, done: list[Any], rest: list[Any], common: tuple[Any, ...], detail: str) -> None:
        """DiracX registered ``done`` and refused the next: the rest to legacy, never twice the same pilot.

        ``common``: the call's other arguments (VO, gridType, pilotStampDict)."""
        service = self._route.service
        if service is not None and service.legacy_fallback:
            result = self._legacy_factory().addPilotReferences(rest, *common)
            if not result["OK"]:
                raise errors.LegacyRefusal(result["Message"], code=result.get("Errno", 0))
            return
        raise errors.NotServed(
            self._service_name(),
            "addPilotReferences",
            why=f"{capabilities.NAME} for this call: it registered {done} and refused {rest[0]!r} ({detail}); "
            f"{rest} are not registered",
        )

    # --- what status says for a caller ----------------------------------------------------------

    @classmethod
    def caller_notes(cls, caller: Caller, properties: Collection[str]) -> list[str]:
        if caller.kind is not CallerKind.PROXY:
            return [
                "agents on host certificates (SiteDirector, PilotStatusAgent) stay on the legacy service: "
                f"{capabilities.NAME} has no host identities"
            ]
        view = View.of(properties, caller.vo or "?")
        notes = ["the legacy service's Authorization rules (CS) are applied first, with its 'Unauthorized query'"]
        if view.admin:
            notes.append("ServiceAdministrator: every VO's pilots are read and changed through DiracX")
        elif view.pilot:
            notes.append(
                "GenericPilot: DiracX lets a pilot register pilots of its own VO and set the status of a pilot this "
                "process registered; it may not read pilots (getPilotInfo, getPilots, selectPilots, getPilotSummary) "
                "nor update other pilots: those go to the legacy service with LegacyFallback, else are refused"
            )
        else:
            notes.append(
                f"DiracX shows this caller the pilots of VO {view.vo} only: getPilotInfo of references all in it, and "
                "selectPilots restricted to it, are served; getPilots, getPilotSummary, other reads and every write "
                "go to the legacy service with LegacyFallback, else are refused"
            )
        notes.append(
            "getPilotInfo/getPilots of a pilot without a stamp of its own, and selectPilots on AccountingSent, go "
            "to the legacy service (LegacyFallback) or are refused: DiracX maps jobs to pilots by stamp, and cannot "
            "filter on that flag"
        )
        return notes


# --- values --------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _folded(text: str) -> str:
    """A string as MySQL's case-insensitive, trailing-space-insensitive collation compares it."""
    return text.casefold().rstrip(" ")


def _one_or_in(column: str, values: Sequence[Any]) -> dict[str, Any]:
    if len(values) == 1:
        return {"parameter": column, "operator": "eq", "value": values[0]}
    return {"parameter": column, "operator": "in", "values": list(values)}


def _only_vo(search: Iterable[dict[str, Any]], vo: str) -> bool:
    """Whether the conditions keep only pilots of ``vo`` (so a VO-scoped answer is complete)."""
    for spec in search:
        if spec["parameter"] != "VO":
            continue
        values = [spec["value"]] if spec["operator"] == "eq" else spec["values"]
        if all(_folded(str(v)) == _folded(vo) for v in values):
            return True
    return False


def _codes(count: int) -> tuple[list[frozenset[int]], int]:
    """``count`` distinct codes of ``length // 2`` bits out of ``length``, the shortest length that has enough."""
    length = 1
    while math.comb(length, length // 2) < count:
        length += 1
    codes = [frozenset(c) for c in itertools.islice(itertools.combinations(range(length), length // 2), count)]
    return codes, length


def _legacy_value(column: str, value: Any) -> Any:
    """A ``PilotAgents`` value from DiracX's JSON, with the type MySQL gives the legacy service."""
    if value is None:
        return None
    if column in _DATETIME_COLUMNS:
        return naive_utc(value)
    if column == "AccountingSent":
        return str(value) if isinstance(value, bool) else value
    if column == "BenchMark":
        return float(value)
    if column == "PilotID":
        return int(value)
    return value


def _status_fields(
    status: Any, destination: Any, reason: Any, grid_site: Any, queue: Any
) -> tuple[dict[str, Any], str | None]:
    """The columns ``PilotAgentsDB.setPilotStatus`` sets (LastUpdateTime apart), and why DiracX cannot, if so."""
    if status not in DIRACX_STATUSES:
        return {}, f"its pilot status is one of {', '.join(sorted(DIRACX_STATUSES))}, not {status!r}"
    fields: dict[str, Any] = {"Status": status, "StatusReason": reason or "Not given"}
    for name, value in (("GridSite", grid_site), ("Queue", queue), ("DestinationSite", destination)):
        if value:
            fields[name] = value
    if destination and not grid_site and isinstance(destination, str):
        site = grid_site_of(destination)  # as the legacy service: from the CS's CE -> site mapping
        if site:
            fields["GridSite"] = site
    for name, value in fields.items():
        limit = _MAX_LENGTH.get(name, _SITE_LENGTH)
        if not isinstance(value, str) or len(value) > limit:
            return {}, f"{name} must be a string of at most {limit} characters there"
    return fields, None


def _registration_problem(refs: list[Any], vo: Any, grid_type: Any, stamps: list[Any]) -> str | None:
    """Why DiracX cannot register these pilots as the legacy service would, or None."""
    if not isinstance(vo, str) or not 1 <= len(vo) <= _MAX_LENGTH["VO"]:
        return f"it needs a VO of 1 to {_MAX_LENGTH['VO']} characters"
    if not isinstance(grid_type, str) or len(grid_type) > _MAX_LENGTH["GridType"]:
        return f"it needs a grid type of at most {_MAX_LENGTH['GridType']} characters"
    for ref, stamp in zip(refs, stamps, strict=True):
        if not isinstance(ref, str) or len(ref) > _MAX_LENGTH["PilotJobReference"]:
            return f"it needs references of at most {_MAX_LENGTH['PilotJobReference']} characters"
        if not isinstance(stamp, str) or not 1 <= len(stamp) <= _MAX_LENGTH["PilotStamp"]:
            return f"it needs a stamp of 1 to {_MAX_LENGTH['PilotStamp']} characters for every pilot ({ref!r} has none)"
    if len(set(refs)) != len(refs) or len(set(stamps)) != len(stamps):
        return "it registers each stamp once, and these references or stamps repeat"
    return None


def _moment(value: Any) -> dt.datetime | None:
    """A date or time as MySQL reads it from a string (ISO 8601), naive UTC; None if it cannot be read."""
    if isinstance(value, dt.datetime):
        return naive_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if not isinstance(value, str):
        return None
    try:
        return naive_utc(dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        return None


def _second_string(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _at_least(moment: dt.datetime) -> str:
    """``column >= moment`` with DiracX's ``gt``: DiracX reads a whole-second string as that whole second,
    so ``gt "T-1s"`` is ``>= T`` on MySQL's DATETIME(0); a fraction starts at the next whole second."""
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
    return _second_string(moment - dt.timedelta(seconds=1))


def _at_most(moment: dt.datetime) -> str:
    """``column <= moment`` with DiracX's ``lt``: ``lt "T+1s"`` is ``<= T`` (a fraction is cut, as MySQL does)."""
    return _second_string(moment.replace(microsecond=0) + dt.timedelta(seconds=1))
