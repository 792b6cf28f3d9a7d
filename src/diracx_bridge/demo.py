"""The diracx-bridge demo: a real DIRAC and a real DiracX, one grid, and the bridge between them.

``make demo`` runs this. It starts the grid-in-a-box in ``.state/demo`` and walks through what
the bridge is for, printing each command and what came back. Everything it talks to is real
except the in-memory OpenSearch stand-in (no OpenSearch can be installed on these machines).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from diracx_bridge import capabilities
from diracx_bridge.testing.grid import Grid

JM = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
SWITCH = "/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring"
JDL = '[\n  Executable = "/bin/echo";\n  Arguments = "hello from the demo";\n  JobName = "demo-{n}";\n]\n'


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(text: str, indent: str = "   ") -> None:
    print(textwrap.indent(text.rstrip(), indent), flush=True)


def run(grid: Grid, argv: list[str], **kwargs: Any) -> str:
    print(f"   $ {' '.join(argv)}", flush=True)
    res = grid.run(argv, **kwargs)
    show(res.stdout or res.stderr, "     ")
    return res.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".state/demo"))
    args = parser.parse_args()

    say(f"Starting the grid-in-a-box (MariaDB, DIRAC 9.1.22 DISET services, {capabilities.NAME}, moto S3)")
    grid = Grid(args.workdir)
    try:
        grid.start()
        assert grid.diracx is not None
        show(f"up in {grid.startup_seconds:.0f} s; DiracX at {grid.diracx.url}; logs in {grid.log_dir}")
        demo(grid, grid.workdir)
    finally:
        say("Stopping the grid")
        grid.stop()
    return 0


def demo(grid: Grid, workdir: Path) -> None:
    proxy = step_proxy(grid)
    legacy_job, diracx_job = step_jobs_cross(grid, workdir, proxy)
    step_adapted_script(grid, legacy_job, diracx_job)
    step_disabled_vo(grid, legacy_job)
    step_not_served(grid, legacy_job)
    step_user_without_subject(grid, legacy_job)
    step_cs_sync(grid, workdir)
    journal = step_shadow(grid, workdir, legacy_job, diracx_job)
    step_readiness(grid, journal)


def step_proxy(grid: Grid) -> Path:
    say("1. dirac-proxy-init: a proxy that also carries a DiracX token")
    proxy = grid.proxy_path("ciuser", "civo_user")
    run(grid, ["dirac-proxy-init", "-g", "civo_user", "--out", str(proxy)])
    blocks = re.findall(r"-----BEGIN ([A-Z ]+)-----", proxy.read_text())
    show(f"{proxy.name} holds: {', '.join(blocks)}")
    run(grid, ["diracx-bridge", "whoami", "--check"])
    return proxy


def step_jobs_cross(grid: Grid, workdir: Path, proxy: Path) -> tuple[int, int]:
    import httpx

    from diracx_bridge.tokens import read_token

    assert grid.diracx is not None
    say("2. A job submitted with the legacy dirac-wms-job-submit is seen by DiracX")
    jdl = workdir / "demo.jdl"
    jdl.write_text(JDL.format(n="legacy"))
    out = run(grid, ["dirac-wms-job-submit", str(jdl)])
    legacy_job = int(re.search(r"JobID = (\d+)", out).group(1))  # type: ignore[union-attr]
    token = read_token(proxy).access_token
    with httpx.Client(base_url=grid.diracx.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as dx:
        print(f"   POST {grid.diracx.url}/api/jobs/search  (JobID = {legacy_job})")
        found = dx.post(
            "/api/jobs/search",
            json={
                "parameters": ["JobID", "Owner", "JobName", "Status"],
                "search": [{"parameter": "JobID", "operator": "eq", "value": legacy_job}],
            },
        ).json()
        show(str(found), "     ")

        say("3. A job submitted to DiracX is seen by the legacy dirac-wms-job-status")
        print(f"   POST {grid.diracx.url}/api/jobs/jdl")
        diracx_job = dx.post("/api/jobs/jdl", json=[JDL.format(n="diracx")]).json()[0]["JobID"]
        show(f"JobID = {diracx_job}", "     ")
    run(grid, ["dirac-wms-job-status", str(diracx_job)])
    return legacy_job, diracx_job


def step_adapted_script(grid: Grid, legacy_job: int, diracx_job: int) -> None:
    say("4. The same unchanged script, with JobMonitoring switched to DiracX through the bridge")
    show(f"(the admin sets {SWITCH} = yes in the CS; here: -o on the command line)")
    assert grid.diracx is not None
    mark = grid.diracx.access_log.mark()
    run(grid, ["dirac-wms-job-status", f"-o{SWITCH}=yes", str(legacy_job), str(diracx_job)])
    for entry in grid.diracx.access_log.since(mark):
        show(f"DiracX access log: {entry.method} {entry.path} -> {entry.status} (User-Agent: {entry.user_agent})")


def step_disabled_vo(grid: Grid, legacy_job: int) -> None:
    say("5. A VO listed in /DiracX/DisabledVOs stays on the legacy services (DIRAC 9.1 would fail)")
    grid.proxy_init("legacyuser", "legacyvo_user")
    run(
        grid,
        ["dirac-wms-job-status", f"-o{SWITCH}=yes", str(legacy_job)],
        user="legacyuser",
        group="legacyvo_user",
    )


def step_not_served(grid: Grid, legacy_job: int) -> None:
    say(f"6. What {capabilities.NAME} cannot serve yet is refused clearly (or sent to legacy if allowed)")
    worker = grid.worker("ciuser", "civo_user")
    try:
        refused = worker.call(JM, "getJobJDL", legacy_job, False, cs={SWITCH: "yes"})
        show(refused["Message"])
        fallback = "/DiracX/Bridge/WorkloadManagement/JobMonitoring/LegacyFallback"
        allowed = worker.call(JM, "getJobJDL", legacy_job, False, cs={SWITCH: "yes", fallback: "yes"})
        show(f"with LegacyFallback = yes: OK={allowed['OK']}, {len(allowed.get('Value', ''))} characters of JDL")
    finally:
        worker.close()


def step_user_without_subject(grid: Grid, legacy_job: int) -> None:
    say("7. A user missing from DiracX's registry still gets a working proxy, and is told why")
    proxy = grid.proxy_path("nosubuser", "civo_user")
    run(grid, ["dirac-proxy-init", "-g", "civo_user", "--out", str(proxy)], user="nosubuser", group="civo_user")
    run(grid, ["dirac-wms-job-status", str(legacy_job)], user="nosubuser", group="civo_user")


def step_cs_sync(grid: Grid, workdir: Path) -> None:
    say("8. cs-sync: the legacy CS exported into a DiracX config repository, with history")
    repo = workdir / "demo-config-repo"
    run(grid, ["diracx-bridge", "cs-sync", str(grid.cfg_path), str(repo)])
    show("(run again, unchanged: no commit)")
    run(grid, ["diracx-bridge", "cs-sync", str(grid.cfg_path), str(repo)])
    show("(a new user with a DiracX subject is registered in the legacy CS)")
    grid.set_option("/Registry/Users/newuser/DN", "/O=DIRAC CI/OU=DIRAC CI/CN=newuser")
    grid.set_option("/Registry/Users/newuser/Email", "newuser@example.org")
    grid.set_option("/Registry/Groups/civo_user/Users", "ciuser, otheruser, nosubuser, newuser")
    grid.set_option("/DiracX/CsSync/VOs/civo/UserSubjects/newuser", "newuser-subject-0003")
    run(grid, ["diracx-bridge", "cs-sync", str(grid.cfg_path), str(repo)])
    run(grid, ["git", "-C", str(repo), "log", "--format=%h %s"])


def step_shadow(grid: Grid, workdir: Path, legacy_job: int, diracx_job: int) -> Path:
    say("9. Shadow mode: JobMonitoring stays on legacy, and its reads are also asked of DiracX and compared")
    journal = workdir / "shadow-journal"
    shadow = [
        "-o/DiracX/Bridge/WorkloadManagement/JobMonitoring/Shadow=1",
        f"-o/DiracX/Bridge/ShadowJournal={journal}",
    ]
    show("(the admin sets Shadow = 0.01 for the service in the CS; here: every read, on the command line)")
    for job in (legacy_job, diracx_job, legacy_job):
        run(grid, ["dirac-wms-job-status", *shadow, str(job)])
    run(grid, ["diracx-bridge", "shadow-report", str(journal)])
    return journal


def step_readiness(grid: Grid, journal: Path) -> None:
    say("10. readiness: may JobMonitoring be switched to DiracX for the VO civo?")
    verdict = ["diracx-bridge", "readiness", "--service", "WorkloadManagement/JobMonitoring", "--vo", "civo"]
    verdict += ["--journal", str(journal), "--min-samples", "3"]
    out = run(grid, verdict, check=False)
    show(f"-> {'NOT READY' if 'NOT READY' in out else 'READY'}: one user of civo has no IdP subject for DiracX")
    show("(the VO admin adds nosubuser's subject to /DiracX/CsSync/VOs/civo/UserSubjects; cs-sync carries it over)")
    grid.set_option("/DiracX/CsSync/VOs/civo/UserSubjects/nosubuser", "nosubuser-subject-0009")
    out = run(grid, verdict, check=False)
    show(f"-> {'NOT READY' if 'NOT READY' in out else 'READY'}: the switch can go in for civo")


if __name__ == "__main__":
    sys.exit(main())
