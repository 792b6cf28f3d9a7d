"""Refresh and write-back against the real DiracX: one refresh per expiry for a whole user's processes.

The stress test runs 16 DIRAC processes sharing one proxy for 30 s, each calling DiracX through
the JobMonitoring adapter (an unchanged ``JobMonitoringClient``) and through
``session.get_session``, while the test keeps marking the access token as used up, and a
reader process checks the file continuously. The refreshes are counted in the grid's DiracX
access log; every step waits for an event (a byte on a pipe, an entry in that log), never for
a fixed time.
"""

from __future__ import annotations

import json
import os
import select
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

PROCESSES = 16
DURATION = 30.0
#: The test marks the token used up again once the processes have made this many calls with it.
CALLS_PER_TOKEN = 4 * PROCESSES
#: No new round is started this close to the end of the processes' run.
LAST_ROUND_MARGIN = 2.0

#: The user's processes of the stress test: DIRAC is initialised once, then 16 processes are
#: forked from it (starting 16 DIRAC interpreters would take ~20 s of the test's time on 2 cores).
#: Each child has its own bridge session and token state, like any separate process of the user;
#: they share nothing but the proxy file. Each writes one byte on the ready pipe once it is set up,
#: then blocks reading the go pipe, which the test closes to start everyone at once.
CALLERS = r"""
import json, os, sys, time, traceback
from pathlib import Path
proxy, job_id, count, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[5]), float(sys.argv[6])
ready_fd, go_fd, start_file, results_dir = int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[8]), Path(sys.argv[7])
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
    os.write(ready_fd, b"r")
    assert os.read(go_fd, 1) == b""  # EOF: the test let everyone go
    start = float(start_file.read_text())
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
path, x509_file, duration = sys.argv[1], Path(sys.argv[2]), float(sys.argv[4])
go_fd, start_file = int(sys.argv[3]), Path(sys.argv[5])
from diracx_bridge.tokens import decode_block
from DIRAC.Core.Security.DiracX import diracxTokenFromPEM
x509 = x509_file.read_bytes()
assert os.read(go_fd, 1) == b""  # EOF: the test let everyone go
start = float(start_file.read_text())
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


def refreshes(grid, mark: int = 0) -> list[int]:
    """The statuses of the token refreshes DiracX received since ``mark``."""
    return [e.status for e in grid.diracx.access_log.since(mark) if (e.method, e.path) == ("POST", "/api/auth/token")]


def bridge_calls(grid, mark: int) -> int:
    """The calls the processes made through the bridge since ``mark`` (refreshes apart)."""
    return len([e for e in grid.diracx.access_log.since(mark) if e.from_bridge and e.path != "/api/auth/token"])


def wait_for(condition, *, until: float, callers: subprocess.Popen) -> bool:
    """Poll ``condition`` (on the access log, which has no event to wait on) until it holds.

    False once ``until`` (a ``time.time()``, at most the end of the callers' run) has passed.
    """
    while not condition():
        if time.time() > until:
            return False
        if callers.poll() is not None:  # they only stop at the end of their run, after ``until``
            assert time.time() >= until, f"the callers exited early:\n{callers.communicate()[1][-3000:]}"
            return False
        time.sleep(0.05)
    return True


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
    start_file, results_dir = tmp_path / "start", tmp_path / "results"
    results_dir.mkdir()
    x509_file = tmp_path / "x509-part"
    x509_file.write_bytes(x509_part(own_proxy))
    update_token(own_proxy, used_up)  # the first refresh is needed at once
    env = grid.client_environment("ciuser", "civo_user")
    ready_r, ready_w = os.pipe()  # each caller writes one byte once ready
    go_r, go_w = os.pipe()  # closed by the test: every reader of go_r sees EOF at once
    args = [str(own_proxy), str(job_id), str(ready_w), str(go_r), str(PROCESSES), str(DURATION), str(results_dir)]
    callers = subprocess.Popen(
        [sys.executable, "-c", CALLERS, *args, str(start_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(ready_w, go_r),
        start_new_session=True,  # its own process group: a failed test kills the forked children too
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(own_proxy), str(x509_file), str(go_r), str(DURATION), str(start_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(go_r,),
    )
    os.close(ready_w)  # the callers hold the only write ends: EOF if they all die
    os.close(go_r)
    try:
        ready = b""
        while len(ready) < PROCESSES:
            readable, _, _ = select.select([ready_r], [], [], 120)
            assert readable, f"the callers were not ready within 120 s ({len(ready)} of {PROCESSES})"
            byte = os.read(ready_r, PROCESSES)
            assert byte, f"the callers died while starting:\n{callers.communicate()[1][-3000:]}"
            ready += byte
        mark = grid.diracx.access_log.mark()
        start = time.time()
        start_file.write_text(repr(start))
        os.close(go_w)
        go_w = -1
        # Each round: once the processes have made CALLS_PER_TOKEN calls with the current token,
        # mark it used up, then wait for its refresh. Each time, exactly one of the 16 processes
        # must refresh it, and the others must take the one it wrote back.
        end, rounds = start + DURATION, 0
        while wait_for(lambda n=rounds: len(refreshes(grid, mark)) > n, until=end, callers=callers):
            rounds += 1
            since = grid.diracx.access_log.mark()
            busy = lambda since=since: bridge_calls(grid, since) >= CALLS_PER_TOKEN  # noqa: E731
            if not wait_for(busy, until=end - LAST_ROUND_MARGIN, callers=callers):
                break
            update_token(own_proxy, used_up)
        _, callers_err = callers.communicate(timeout=120)
        reader_out, reader_err = reader.communicate(timeout=60)
    finally:
        os.close(ready_r)
        if go_w >= 0:
            os.close(go_w)
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
    # (The test waited for each round's refresh; one more may follow a mark made as the run ended.)
    made = len(refreshes(grid, mark))
    assert rounds >= 5, f"only {rounds} refreshes in {DURATION:.0f} s"
    assert rounds <= made <= rounds + 1, (made, rounds)
    assert set(refreshes(grid, mark)) == {200}
    assert stat.S_IMODE(os.stat(own_proxy).st_mode) == 0o600
    assert own_proxy.read_bytes().startswith(x509_file.read_bytes())
    assert read_token(own_proxy).refresh_token
    print(f"\n{PROCESSES} processes, {calls} calls in {DURATION:.0f} s, {made} refreshes for {rounds} expiries, "
          f"{seen['reads']} unlocked reads")  # fmt: skip
