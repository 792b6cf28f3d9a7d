"""readiness.judge and shadow-report's aggregation: the verdicts and counts, from facts given directly."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from diracx_bridge.readiness import FAIL, PASS, WARN, Facts, judge, render, shadow_counts
from diracx_bridge.settings import BridgeSettings, ServiceSettings, SwitchEntry
from diracx_bridge.shadow.report import aggregate
from diracx_bridge.shadow.report import render as render_report

JM = "WorkloadManagement/JobMonitoring"


def service(name: str = JM, **changes: Any) -> ServiceSettings:
    system, _, svc = name.partition("/")
    return dataclasses.replace(ServiceSettings(system, svc, False, None, False, None, shadow_rate=0.01), **changes)


def compared(n: int, *, equal: int, method: str = "getJobsStatus", vo: str = "civo") -> list[dict[str, Any]]:
    return [
        {
            "kind": "compared",
            "service": JM,
            "method": method,
            "vo": vo,
            "equal": i < equal,
            "cause": "equal" if i < equal else "value",
        }
        for i in range(n)
    ]


def facts(**changes: Any) -> Facts:
    base = Facts(
        bridge=BridgeSettings("https://diracx.example.org", frozenset(), 5, 60, 2, 1000),
        services={JM: service()},
        switches=[],
        vos=["civo", "othervo"],
        users={"civo": {"ann", "bob"}},
        subjects={"civo": {"ann", "bob"}},
        synced_vos={"civo"},
        shadow=shadow_counts(compared(200, equal=200)),
        diracx_up=(True, "DiracX answered 200"),
        exchange_key=(True, "accepted"),
        config_revision=(True, "DiracX serves the latest cs-sync commit"),
    )
    return dataclasses.replace(base, **changes)


def verdicts(verdict: Any) -> dict[str, str]:
    return {c.name: c.verdict for c in verdict.checks}


def test_everything_in_place_is_ready() -> None:
    verdict = judge(facts(), JM, "civo")
    assert verdict.ready, render([verdict])
    assert set(verdicts(verdict).values()) == {PASS}


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"shadow": shadow_counts(compared(50, equal=50))}, "shadow evidence"),
        ({"shadow": shadow_counts(compared(200, equal=190))}, "shadow evidence"),
        ({"subjects": {"civo": {"ann"}}}, "users known to DiracX"),
        ({"synced_vos": set()}, "VO in DiracX"),
        ({"diracx_up": (False, "DiracX at x is unreachable")}, "DiracX answers"),
        ({"exchange_key": (False, "DiracX refuses the legacy-exchange API key (401)")}, "legacy-exchange key"),
        (
            {"config_revision": (False, "DiracX serves abc, older than the latest cs-sync commit def")},
            "DiracX configuration",
        ),
        ({"services": {"A/NoAdapter": service("A/NoAdapter")}}, "adapter"),
    ],
    ids=[
        "few-samples",
        "too-many-differences",
        "user-without-subject",
        "vo-not-synced",
        "diracx-down",
        "wrong-key",
        "stale-config",
        "no-adapter",
    ],
)
def test_each_cause_makes_the_verdict_not_ready_with_a_fix(changes: dict[str, Any], failing: str) -> None:
    f = facts(**changes)
    name = next(iter(f.services))
    verdict = judge(f, name, "civo")
    assert not verdict.ready
    bad = [c for c in verdict.checks if c.verdict == FAIL]
    assert failing in {c.name for c in bad}, render([verdict])
    assert all(c.fix for c in bad), render([verdict])


def test_a_disabled_vo_and_contradictory_settings() -> None:
    f = facts(
        bridge=BridgeSettings("https://x", frozenset({"civo"}), 5, 60, 2, 1000),
        switches=[SwitchEntry(f"/DiracX/FutureClientEnabled/{JM}", "yes", JM)],
    )
    verdict = judge(f, JM, "civo")
    names = {c.name for c in verdict.checks if c.verdict == FAIL}
    assert {"VO enabled", "consistent settings"} <= names
    assert "ClientsRouteDisabledVOs = yes" in render([verdict])
    allowed = dataclasses.replace(f, bridge=dataclasses.replace(f.bridge, clients_route_disabled_vos=True))
    assert "consistent settings" not in {c.name for c in judge(allowed, JM, "civo").checks if c.verdict == FAIL}


def test_methods_diracx_cannot_serve_need_the_fallback() -> None:
    unserved = [{"kind": "unserved", "service": JM, "method": "getJobJDL", "vo": "civo"}]
    f = facts(shadow=shadow_counts([*compared(200, equal=200), *unserved]))
    assert verdicts(judge(f, JM, "civo"))["methods DiracX cannot serve"] == FAIL
    with_fallback = dataclasses.replace(f, services={JM: service(legacy_fallback=True)})
    assert verdicts(judge(with_fallback, JM, "civo"))["methods DiracX cannot serve"] == PASS


def test_unchecked_facts_warn_without_blocking() -> None:
    f = facts(exchange_key=(None, "no key here"), config_revision=(None, "no --config-repo"))
    verdict = judge(f, JM, "civo")
    assert verdict.ready
    assert verdicts(verdict)["legacy-exchange key"] == WARN
    assert verdicts(verdict)["DiracX configuration"] == WARN


def test_shadow_evidence_is_per_vo() -> None:
    f = facts(shadow=shadow_counts(compared(200, equal=200, vo="othervo")))
    assert verdicts(judge(f, JM, "othervo"))["shadow evidence"] == PASS
    assert verdicts(judge(f, JM, "civo"))["shadow evidence"] == FAIL


# --- shadow-report's aggregation ----------------------------------------------------------------------


def test_the_report_counts_rates_causes_and_latencies_across_journals() -> None:
    records = [
        {
            "kind": "compared",
            "service": JM,
            "method": "getJobsStatus",
            "vo": "civo",
            "equal": True,
            "cause": "equal",
            "legacy": {"ok": True, "ms": 50.0},
            "diracx": {"ok": True, "ms": 15.0},
            "file": "host1-ann.jsonl",
        },
        {
            "kind": "compared",
            "service": JM,
            "method": "getJobsStatus",
            "vo": "civo",
            "equal": False,
            "cause": "value",
            "difference": {"path": "Value['5']['Status']", "legacy": "'Running'", "diracx": "'Waiting'"},
            "args": [{"items": 1, "first": [5]}],
            "legacy": {"ok": True, "ms": 70.0},
            "diracx": {"ok": True, "ms": 25.0},
            "file": "host2-bob.jsonl",
        },
        {
            "kind": "compared",
            "service": JM,
            "method": "getJobsStatus",
            "vo": "civo",
            "equal": False,
            "cause": "diracx-error",
            "legacy": {"ok": True, "ms": 60.0},
            "diracx": {"ok": False, "ms": 1.0, "error": "DiracX at x is unreachable"},
        },
        {"kind": "unserved", "service": JM, "method": "getJobJDL", "vo": "civo", "legacy": {"ok": True, "ms": 40.0}},
        {"kind": "dropped", "count": 4},
        {"kind": "unreadable", "file": "host2-bob.jsonl"},
    ]
    report = aggregate(records)
    stats = report.methods[(JM, "getJobsStatus")]
    assert (stats.compared, stats.equal, stats.diracx_errors) == (3, 1, 1)
    assert dict(stats.causes) == {"value": 1, "diracx-error": 1}
    assert report.methods[(JM, "getJobJDL")].unserved == 1
    assert (report.dropped, report.unreadable, len(report.files)) == (4, 1, 2)
    summary = stats.summary()
    assert summary["legacy_ms"] == {"p50": 60.0, "p95": 70.0}
    text = render_report(report)
    assert "33.3%" in text and "differs (value): 1" in text and "Value['5']['Status']" in text
    assert "DiracX said: DiracX at x is unreachable" in text
    assert "4 sampled call(s) dropped" in text


def test_an_empty_report_says_so() -> None:
    assert "no comparison recorded yet" in render_report(aggregate([]))
