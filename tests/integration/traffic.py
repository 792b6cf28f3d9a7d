"""Which side answered a call: what reached DiracX and the legacy DISET services meanwhile.

A parity test that compares a "legacy" and an "adapted" answer proves nothing if the routing
quietly stayed on legacy (legacy == legacy passes). Both sides leave a trace written before
their answer leaves the server, so a call that has returned has left all of its traces:

* DiracX: the grid's access log (:mod:`diracx_bridge.testing.access_log`), one entry per request
  with its ``User-Agent`` (the bridge's session sends ``diracx-bridge``);
* legacy DIRAC: each DISET service logs ``Executing action ... [group:user] RPC/method(...)``
  before it runs the method (DIRAC's ``RequestHandler``), in the grid's ``dirac-service-*.log``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from diracx_bridge.testing.access_log import BRIDGE_UA, AccessLogEntry
from diracx_bridge.testing.grid import Grid

LEGACY_CALL = re.compile(r"Executing action \([^)]*\)\[(?P<group>[^:\]]+):(?P<user>[^\]]+)\] RPC/(?P<method>\w+)\(")
#: DIRAC's ``Service`` refusing a caller its Authorization rules do not allow (the method never runs).
LEGACY_REFUSED = re.compile(
    r"Unauthorized query to [\w/]+:RPC/(?P<method>\w+) by \[(?P<user>[^:\]]+):(?P<group>[^\]]+)\]"
)
SEARCH = ("POST", "/api/jobs/search")
#: Every method of DIRAC 9.1's JobMonitoring service (served by DiracX or not).
JOB_MONITORING_METHODS = frozenset(
    {
        *("getJobs", "getJobsStates", "getJobsStatus", "getJobsMinorStatus", "getJobsApplicationStatus"),
        *("getJobsSites", "getJobAttributes", "getJobAttribute", "getJobSummary", "getJobsSummary"),
        *("getJobLoggingInfo", "getJobJDL", "getJobParameter", "getJobParameters", "getJobHeartBeatData"),
        "getInputData",
    }
)


@dataclass(frozen=True)
class LegacyCall:
    """One RPC a legacy DISET service received (as logged before it ran the method)."""

    service_log: str
    group: str
    user: str
    method: str


@dataclass
class Traffic:
    """The requests DiracX and the legacy services received while a block ran."""

    diracx: list[AccessLogEntry] = field(default_factory=list)
    legacy: list[LegacyCall] = field(default_factory=list)
    #: Calls a legacy service refused by its Authorization rules (logged instead of "Executing action").
    legacy_refused: list[LegacyCall] = field(default_factory=list)

    def from_bridge(self, method: str | None = None, path: str | None = None) -> list[AccessLogEntry]:
        """DiracX requests sent by the bridge's session (optionally on one route)."""
        return [
            e
            for e in self.diracx
            if e.user_agent == BRIDGE_UA and method in (None, e.method) and path in (None, e.path)
        ]

    def legacy_calls(self, method: str) -> list[LegacyCall]:
        return [c for c in self.legacy if c.method == method]

    def assert_adapted(self, method: str, route: tuple[str, str] = SEARCH) -> None:
        """DiracX answered ``method``: the bridge sent it ``route``, and no legacy service got it."""
        sent = self.from_bridge(*route)
        assert sent, f"{method}: the bridge sent no {' '.join(route)} to DiracX; it saw {self.diracx}"
        assert not self.legacy_calls(method), f"{method} reached the legacy service: {self.legacy_calls(method)}"

    def assert_answered_locally(self, method: str) -> None:
        """The bridge answered ``method`` itself (a refusal): neither DiracX nor a legacy service saw it."""
        assert not self.diracx, f"{method} was to be answered without DiracX, which saw {self.diracx}"
        assert not self.legacy_calls(method), f"{method} reached the legacy service: {self.legacy_calls(method)}"

    def assert_legacy(self, method: str) -> None:
        """The legacy service answered ``method``, and DiracX was not contacted at all."""
        assert not self.diracx, f"{method} was to stay on legacy, but DiracX saw {self.diracx}"
        assert self.legacy_calls(method), f"{method} never reached the legacy service; it saw {self.legacy}"


class _ServiceLogs:
    """The legacy services' logs, read from a mark on (byte offsets per file)."""

    def __init__(self, log_dir: Path) -> None:
        self.paths = sorted(log_dir.glob("dirac-service-*.log"))

    def mark(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in self.paths}

    def since(self, mark: dict[Path, int], pattern: re.Pattern[str] = LEGACY_CALL) -> list[LegacyCall]:
        calls = []
        for path, offset in mark.items():
            with path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            calls += [LegacyCall(path.name, *m.group("group", "user", "method")) for m in pattern.finditer(text)]
        return calls


@contextlib.contextmanager
def observe(grid: Grid) -> Iterator[Traffic]:
    """``with observe(grid) as seen: call()``: then ``seen`` tells which side(s) the call reached."""
    assert grid.diracx is not None
    access, services = grid.diracx.access_log, _ServiceLogs(grid.log_dir)
    access_mark, service_mark = access.mark(), services.mark()
    traffic = Traffic()
    try:
        yield traffic
    finally:
        traffic.diracx = access.since(access_mark)
        traffic.legacy = services.since(service_mark)
        traffic.legacy_refused = services.since(service_mark, LEGACY_REFUSED)
