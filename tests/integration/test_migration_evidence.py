"""Migrating with evidence, on the grid-in-a-box: shadow mode, shadow-report, readiness and doctor.

Shadow mode is switched on for JobMonitoring while the service stays on legacy: the callers get the
legacy answers, and a sample of their reads is also asked of DiracX (by the bridge, as the caller)
and compared, in the background; the journal then feeds ``shadow-report`` and ``readiness``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from traffic import observe

from diracx_bridge.testing.access_log import BRIDGE_UA
from diracx_bridge.tokens import DiracxToken, read_token, write_token

pytestmark = pytest.mark.integration

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
SVC = "WorkloadManagement/JobMonitoring"
JDL = '[ Executable = "/bin/true"; JobName = "evidence-{n}"; JobGroup = "evidence"; ]'


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shadow-journal")


def shadow_cs(journal: Path, rate: str = "1") -> dict[str, str]:
    return {
        f"/DiracX/Bridge/{SVC}/Shadow": rate,
        "/DiracX/Bridge/ShadowJournal": str(journal),
        "/DiracX/Bridge/ShadowMaxPerSecond": "1000",
    }


def drain(worker) -> bool:
    """Wait, in the worker, for its shadow comparisons (a bounded wait on the worker's own event)."""
    return worker.call("eval", "diracx_bridge.testing.switches:drain_shadow", 60)


def records(journal: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(journal.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def jobs(grid_session) -> list[int]:
    with grid_session.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL.format(n=i) for i in range(12)])
        assert r.status_code == 201, r.text
        return [j["JobID"] for j in r.json()]


def test_shadow_mode_compares_a_mix_of_reads_from_several_processes(gs, grid, journal, jobs):
    callers = [gs.worker("ciuser", "civo_user"), gs.worker("otheruser", "civo_user"), gs.worker("ciuser", "civo_admin")]
    calls = [
        ("getJobsStates", (jobs,)),
        ("getJobsStatus", (jobs[:3],)),
        ("getJobSummary", (jobs[0],)),
        ("getJobAttributes", (jobs[1], ["Status", "Site"])),
        ("getJobs", ({"JobGroup": "evidence"},)),
        ("getJobLoggingInfo", (jobs[2],)),
        ("getJobJDL", (jobs[0], False)),  # DiracX cannot serve it: recorded, not compared
    ]
    with observe(grid) as traffic:
        for worker in callers:
            for method, args in calls:
                answer = worker.call(JM, method, *args, cs=shadow_cs(journal))
                assert answer["OK"], answer
                assert "rpcStub" in answer  # the legacy answer itself
        assert all(drain(worker) for worker in callers)
    # The callers were answered by legacy; the bridge asked DiracX the sampled reads in the background.
    assert {c.method for c in traffic.legacy} >= {m for m, _ in calls}
    assert traffic.from_bridge("POST", "/api/jobs/search")
    assert all(e.user_agent == BRIDGE_UA for e in traffic.diracx if e.path == "/api/jobs/search")
    found = records(journal)
    compared = [r for r in found if r["kind"] == "compared"]
    assert len(compared) == 3 * 6 and all(r["equal"] for r in compared), [r for r in compared if not r["equal"]]
    assert {r["group"] for r in compared} == {"civo_user", "civo_admin"}
    assert [r["method"] for r in found if r["kind"] == "unserved"] == ["getJobJDL"] * 3
    assert all(r["legacy"]["ms"] > 0 and r["diracx"]["ms"] > 0 for r in compared)


def test_a_difference_is_recorded_with_its_cause_and_reported(gs, grid, journal, jobs, tmp_path):
    """A repeated job ID: legacy fails (MySQL 1062), DiracX answers: a real, documented difference."""
    worker = gs.worker("ciuser", "civo_user")
    answer = worker.call(JM, "getJobsStates", [jobs[0], jobs[0]], cs=shadow_cs(journal))
    assert answer["OK"] is False and "Duplicate entry" in answer["Message"]  # the caller gets legacy's answer
    assert drain(worker)
    different = [r for r in records(journal) if r["kind"] == "compared" and not r["equal"]]
    assert [(r["method"], r["cause"]) for r in different] == [("getJobsStates", "legacy-error")]
    out = grid.run(["diracx-bridge", "shadow-report", str(journal)]).stdout
    assert f"{SVC}.getJobsStates" in out and "differs (legacy-error): 1" in out
    assert "call(s) of a method DiracX cannot serve" in out
    as_json = json.loads(grid.run(["diracx-bridge", "shadow-report", "--json", str(journal)]).stdout)
    assert as_json["methods"][f"{SVC}.getJobsStatus"]["equal_rate"] == 1.0


def test_a_stopped_diracx_costs_the_caller_its_answer_never(gs, grid, journal, jobs):
    worker = gs.worker("ciuser", "civo_user")
    expected = worker.call(JM, "getJobsStatus", jobs[:2])
    grid.diracx.stop_api()
    try:
        answer = worker.call(JM, "getJobsStatus", jobs[:2], cs=shadow_cs(journal))
        assert drain(worker)
    finally:
        grid.diracx.start_api()
    assert answer["Value"] == expected["Value"]
    last = [r for r in records(journal) if r["kind"] == "compared"][-1]
    assert last["cause"] == "diracx-error" and "unreachable" in last["diracx"]["error"]


# --- readiness -------------------------------------------------------------------------------------------


def overlay(tmp_path: Path, body: str) -> dict[str, str]:
    cfg = tmp_path / "overlay.cfg"
    cfg.write_text(body)
    return {"DIRACSYSCONFIG": str(cfg)}


def readiness(grid, env: dict[str, str], *args: str, user: str = "ciuser", group: str = "civo_admin"):
    res = grid.run(
        ["diracx-bridge", "readiness", "--service", SVC, "--json", *args], env=env, user=user, group=group, check=False
    )
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, {c["name"]: c for c in json.loads(res.stdout)[0]["checks"]}


def test_readiness_turns_ready_as_the_causes_are_fixed(gs, grid, journal, tmp_path):
    gs.proxy("ciuser", "civo_admin")
    repo = grid.workdir / "diracx-config"
    common = ["--vo", "civo", "--journal", str(journal), "--min-samples", "10", "--config-repo", str(repo)]
    code, checks = readiness(grid, {}, *common)
    # civo has a user without a subject (nosubuser), and JobMonitoring sees getJobJDL calls it cannot serve.
    assert code == 1
    assert (
        checks["users known to DiracX"]["verdict"] == "FAIL"
        and "nosubuser" in checks["users known to DiracX"]["reason"]
    )
    assert checks["methods DiracX cannot serve"]["verdict"] == "FAIL"
    assert checks["shadow evidence"]["verdict"] == "FAIL"  # the deliberate difference: below 99%
    assert checks["legacy-exchange key"]["verdict"] == "ok"
    assert checks["DiracX configuration"]["verdict"] == "ok"
    assert checks["adapter"]["verdict"] == "ok"
    fixed = overlay(
        tmp_path,
        "DiracX\n{\n  CsSync\n  {\n    VOs\n    {\n      civo\n      {\n        UserSubjects\n        {\n"
        "          nosubuser = nosubuser-subject-0009\n        }\n      }\n    }\n  }\n"
        "  Bridge\n  {\n    WorkloadManagement\n    {\n      JobMonitoring\n      {\n        LegacyFallback = yes\n"
        "      }\n    }\n  }\n}\n",
    )
    code, checks = readiness(grid, fixed, *common, "--min-equal", "0.9")
    assert code == 0, checks
    assert {c["verdict"] for c in checks.values()} == {"ok"}


def test_readiness_sees_a_wrong_key_a_stale_repository_and_contradictory_settings(gs, grid, journal, tmp_path):
    gs.proxy("ciuser", "civo_admin")
    stale = tmp_path / "newer-config"
    shutil.copytree(grid.workdir / "diracx-config", stale)
    subprocess.run(["git", "-C", str(stale), "commit", "-q", "--allow-empty", "-m", "a newer cs-sync"], check=True)
    env = overlay(
        tmp_path,
        "DiracX\n{\n  LegacyExchangeApiKey = diracx:legacy:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        "  DisabledVOs = legacyvo\n  FutureClientEnabled\n  {\n    WorkloadManagement\n    {\n      JobManager = yes\n"
        "    }\n  }\n}\n",
    )
    code, checks = readiness(grid, env, "--vo", "civo", "--journal", str(journal), "--config-repo", str(stale))
    assert code == 1
    assert "refuses the legacy-exchange API key" in checks["legacy-exchange key"]["reason"]
    assert "older than the latest cs-sync commit" in checks["DiracX configuration"]["reason"]
    assert "ClientsRouteDisabledVOs" in checks["consistent settings"]["fix"]


def test_readiness_with_diracx_down(gs, grid, journal):
    gs.proxy("ciuser", "civo_admin")
    grid.diracx.stop_api()
    try:
        code, checks = readiness(grid, {}, "--vo", "civo", "--journal", str(journal))
    finally:
        grid.diracx.start_api()
    assert code == 1 and checks["DiracX answers"]["verdict"] == "FAIL"


# --- doctor ----------------------------------------------------------------------------------------------


def doctor(grid, *, user: str = "ciuser", group: str = "civo_user", proxy: Path | None = None):
    args = ["diracx-bridge", "doctor", "--json", *(["--proxy", str(proxy)] if proxy else [])]
    res = grid.run(args, user=user, group=group, check=False)
    return res.returncode, {f["check"]: f for f in json.loads(res.stdout)}


def test_doctor_on_a_healthy_user_and_host(gs, grid):
    gs.proxy("ciuser", "civo_user")
    code, found = doctor(grid)
    assert code == 0, found
    assert found["identity"]["detail"].startswith("DiracX knows you as ciuser (VO civo, group civo_user")
    assert found["DiracX reachable"]["verdict"] == "ok" and "DiracX 0.7.0" in found["DiracX reachable"]["detail"]
    assert found["clock"]["verdict"] == "ok" and found["bridge active"]["verdict"] == "ok"
    assert found["TLS trust"]["verdict"] == "warn"  # the grid's DiracX is plain HTTP on loopback


def test_doctor_for_a_user_without_subject_and_an_expired_session(gs, grid, tmp_path):
    gs.proxy("nosubuser", "civo_user")
    code, found = doctor(grid, user="nosubuser")
    assert code == 1 and "carries no DiracX token" in found["DiracX token"]["detail"]
    proxy = gs.proxy("ciuser", "civo_user")
    expired_copy = tmp_path / "expired-proxy.pem"
    shutil.copy(proxy, expired_copy)
    expired_copy.chmod(0o600)
    token = read_token(expired_copy)
    past = int(time.time()) - 3600
    write_token(expired_copy, DiracxToken(token.access_token, _expired_jwt(past), past))
    code, found = doctor(grid, proxy=expired_copy)
    assert code == 1 and "session has expired" in found["DiracX token"]["detail"]
    assert "dirac-proxy-init -g civo_user" in found["DiracX token"]["fix"]
    with observe(grid) as traffic:
        doctor(grid, proxy=expired_copy)
    assert not traffic.from_bridge("GET", "/api/auth/userinfo")  # an expired session is not even tried


def _expired_jwt(exp: int) -> str:
    import base64

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'EdDSA', 'typ': 'JWT'})}.{part({'exp': exp, 'sub': 'x'})}.c2ln"
