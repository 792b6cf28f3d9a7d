"""Refresh and write-back against the real DiracX: one refresh per expiry for a whole user's processes.

The stress test runs 16 DIRAC processes sharing one proxy for 30 s, each calling DiracX through
the JobMonitoring adapter (an unchanged ``JobMonitoringClient``) and through
``session.get_session``, while the test keeps marking the access token as used up, and a
reader process checks the file continuously. The refreshes are counted in DiracX's access log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from diracx_bridge import tokens
from diracx_bridge.tokens import (
    read_token,
    update_token,
)

pytestmark = pytest.mark.integration

JOB_MONITORING = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
ADAPTER_ON = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": "yes"}
JDL = '[Executable = "/bin/true"; JobName = "refresh-stress";]'
REFRESH_LINE = re.compile(r'"POST /api/auth/token HTTP/1.1" (\d{3})')

PROCESSES = 16
DURATION = 30.0
EXPIRE_EVERY = 2.0

#: The user's processes of the stress test: DIRAC is initialised once, then 16 processes are
#: forked from it (starting 16 DIRAC interpreters would take ~20 s of the test's time on 2 cores).
#: Each child has its own bridge session and token state, like any separate process of the user;
#: they share nothing but the proxy file.
CALLERS = r"""
import json, os, sys, time, traceback
from pathlib import Path
proxy, job_id, count, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[5]), float(sys.argv[6])
ready_dir, go_file, results_dir = Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[7])
import DIRAC
DIRAC.initialize(require_auth=False)
from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData
gConfigurationData.setOptionInCFG("/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring", "yes")
from DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient import JobMonitoringClient
from diracx_bridge.session import get_session
from diracx_bridge.settings import bridge_settings


def run():
    settings = bridge_settings()
    session = get_session(settings.url, Path(proxy), settings)
    client = JobMonitoringClient(proxyLocation=proxy)
    (ready_dir / str(os.getpid())).touch()
    while not go_file.exists():
        time.sleep(0.01)
    start = float(go_file.read_text())
    calls, failures = 0, []
    while time.time() < start + duration:
        try:
            if calls % 2:
                result = client.getJobsStates([job_id])
                ok = result["OK"] and job_id in result["Value"]
                detail = result.get("Message", result.get("Value"))
            else:
                info = session.request("GET", "/api/auth/userinfo", action="asking who I am").json()
                ok = info["preferred_username"] == "ciuser"
                detail = info
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        calls += 1
        if not ok:
            failures.append(str(detail)[:300])
    return {"pid": os.getpid(), "calls": calls, "failures": failures[:5], "failed": len(failures)}


children = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        try:
            outcome = run()
        except BaseException:
            outcome = {"pid": os.getpid(), "crashed": traceback.format_exc()}
        (results_dir / f"{os.getpid()}.json").write_text(json.dumps(outcome))
        os._exit(0)
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
sys.exit(1 if any(codes) else 0)
"""

#: Reads the proxy without any lock, as agents and payloads do, for as long as the callers run.
READER = r"""
import json, os, stat, sys, time
from pathlib import Path
path, x509_file, go_file, duration = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
from diracx_bridge.tokens import (
    decode_block,
)
from DIRAC.Core.Security.DiracX import diracxTokenFromPEM
x509 = x509_file.read_bytes()
while not go_file.exists():
    time.sleep(0.01)
start = float(go_file.read_text())
reads, problems, tokens = 0, [], set()
while time.time() < start + duration + 1:
    try:
        data = open(path, "rb").read()
        if not data.startswith(x509):
            problems.append("the certificate/key part changed")
        token = decode_block(data.decode(), path)
        tokens.add(token.access_token[-12:])
        if diracxTokenFromPEM(path) is None:
            problems.append("DIRAC's reader found no token")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode != 0o600:
            problems.append(f"mode {mode:04o}")
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    reads += 1
print(json.dumps({"reads": reads, "problems": problems[:5], "n": len(problems), "tokens": len(tokens)}))
"""


def refreshes(grid) -> list[str]:
    return REFRESH_LINE.findall((grid.log_dir / "diracx-uvicorn.log").read_text(errors="replace"))


def used_up(token: tokens.DiracxToken | None) -> tokens.DiracxToken | None:
    """The same tokens, marked as needing a refresh (what 20 minutes of wall-clock time would do)."""
    return None if token is None else replace(token, expires_on=int(time.time()) - 1)


def x509_part(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.index(tokens.PEM_BEGIN.encode())]


@pytest.fixture
def own_proxy(grid, tmp_path) -> Path:
    """A fresh ciuser/civo_user proxy for this test alone (the session's shared one stays untouched)."""
    path = tmp_path / "proxy.pem"
    grid.run(["dirac-proxy-init", "-g", "civo_user", "--out", str(path)])
    return path


@pytest.fixture
def job_id(gs) -> int:
    with gs.diracx() as dx:
        r = dx.post("/api/jobs/jdl", json=[JDL])
    assert r.status_code == 201, r.text
    return int(r.json()[0]["JobID"])


def test_an_adapted_call_refreshes_a_used_up_token_and_writes_it_back(gs, grid, own_proxy, job_id):
    update_token(own_proxy, used_up)
    before, cert_and_key = read_token(own_proxy), x509_part(own_proxy)
    result = gs.worker().call(
        JOB_MONITORING, "getJobsStates", [job_id], client_kwargs={"proxyLocation": str(own_proxy)}, cs=ADAPTER_ON
    )
    assert result["OK"], result
    after = read_token(own_proxy)
    assert after.access_token != before.access_token and not after.expired(margin=600)
    assert after.refresh_token == before.refresh_token
    assert x509_part(own_proxy) == cert_and_key
    assert stat.S_IMODE(os.stat(own_proxy).st_mode) == 0o600
    # DIRAC's own reader sees the refreshed token, and DiracX accepts it.
    assert gs.worker().call("eval", "DIRAC.Core.Security.DiracX:diracxTokenFromPEM", str(own_proxy)) == after.as_dict()
    r = httpx.get(
        f"{grid.diracx.url}/api/auth/userinfo", headers={"Authorization": f"Bearer {after.access_token}"}, timeout=30
    )
    assert r.status_code == 200


def test_a_refresh_token_diracx_refuses_gives_session_expired(gs, grid, own_proxy, job_id):
    """A refresh token DiracX does not accept (here: its signature altered) means: run dirac-proxy-init."""

    def tampered(token: tokens.DiracxToken | None) -> tokens.DiracxToken | None:
        assert token is not None
        head, payload, signature = token.refresh_token.split(".")
        forged = f"{head}.{payload}.{signature[::-1]}"
        return replace(token, refresh_token=forged, expires_on=int(time.time()) - 1)

    update_token(own_proxy, tampered)
    before = own_proxy.read_bytes()
    result = gs.worker().call(
        JOB_MONITORING, "getJobsStates", [job_id], client_kwargs={"proxyLocation": str(own_proxy)}, cs=ADAPTER_ON
    )
    assert not result["OK"]
    assert result["Errno"] == 127  # EKEYEXPIRED: errors.SessionExpired
    assert "The DiracX session of ciuser (group civo_user) has expired" in result["Message"]
    assert result["Message"].rstrip(")").endswith("run dirac-proxy-init -g civo_user")
    assert own_proxy.read_bytes() == before
    token = read_token(own_proxy)
    assert token.refresh_token not in result["Message"] and token.access_token not in result["Message"]


def test_sixteen_processes_sharing_one_proxy_through_repeated_refreshes(gs, grid, own_proxy, job_id, tmp_path):
    ready, go, results_dir = tmp_path / "ready", tmp_path / "go", tmp_path / "results"
    ready.mkdir()
    results_dir.mkdir()
    x509_file = tmp_path / "x509-part"
    x509_file.write_bytes(x509_part(own_proxy))
    update_token(own_proxy, used_up)  # the first refresh is needed at once
    env = grid.client_environment("ciuser", "civo_user")
    args = [str(own_proxy), str(job_id), str(ready), str(go), str(PROCESSES), str(DURATION), str(results_dir)]
    callers = subprocess.Popen(
        [sys.executable, "-c", CALLERS, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a failed test kills the forked children too
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(own_proxy), str(x509_file), str(go), str(DURATION)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(ready.iterdir())) < PROCESSES:
            assert callers.poll() is None, f"the callers died while starting:\n{callers.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "the callers did not start within 120 s"
            time.sleep(0.1)
        refreshes_before = len(refreshes(grid))
        start = time.time() + 0.5
        go.write_text(repr(start))
        # Mark the access token used up every EXPIRE_EVERY seconds: each time, exactly one of the
        # 16 processes must refresh it, and the others must take the one it wrote back.
        rounds = 1
        while time.time() < start + DURATION - EXPIRE_EVERY:
            time.sleep(EXPIRE_EVERY)
            update_token(own_proxy, used_up)
            rounds += 1
        _, callers_err = callers.communicate(timeout=120)
        reader_out, reader_err = reader.communicate(timeout=60)
    finally:
        if callers.poll() is None:
            os.killpg(callers.pid, signal.SIGKILL)
            callers.wait()
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert callers.returncode == 0, callers_err[-3000:]
    results = [json.loads(f.read_text()) for f in results_dir.iterdir()]
    assert len(results) == PROCESSES and len({r["pid"] for r in results}) == PROCESSES
    assert not [r["crashed"] for r in results if "crashed" in r]
    calls = sum(r["calls"] for r in results)
    failed = [f for r in results for f in r["failures"]]
    assert sum(r["failed"] for r in results) == 0, failed
    assert all(r["calls"] > 10 for r in results), results
    assert reader.returncode == 0, reader_err[-3000:]
    seen = json.loads(reader_out.strip().splitlines()[-1])
    assert seen["n"] == 0, seen["problems"]
    assert seen["reads"] > 100 and seen["tokens"] >= rounds - 1, seen
    # One refresh per expiry, not one per process: the losers of each race took the winner's token.
    made = len(refreshes(grid)) - refreshes_before
    assert rounds - 1 <= made <= rounds + 1, (made, rounds)
    assert set(refreshes(grid)[refreshes_before:]) == {"200"}
    assert stat.S_IMODE(os.stat(own_proxy).st_mode) == 0o600
    assert own_proxy.read_bytes().startswith(x509_file.read_bytes())
    assert read_token(own_proxy).refresh_token
    print(f"\n{PROCESSES} processes, {calls} calls in {DURATION:.0f} s, {made} refreshes for {rounds} expiries, "
          f"{seen['reads']} unlocked reads")  # fmt: skip
