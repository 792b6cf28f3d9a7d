"""A grid that cannot start says which process failed and where its log is; nothing outlives it.

Each test starts its servers with their logs in its ``tmp_path``, registered with ``report_logs``,
so a failure shows what they wrote.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from diracx_bridge.testing import mariadb as mariadb_module
from diracx_bridge.testing.mariadb import MariaDB
from diracx_bridge.testing.processes import GridError, ManagedProcess

pytestmark = pytest.mark.integration


def test_a_server_that_exits_while_starting_is_named_with_its_log(tmp_path, report_logs):
    report_logs(tmp_path)
    proc = ManagedProcess(
        "broken-service", [sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"], log_dir=tmp_path
    ).start()
    with pytest.raises(GridError) as info:
        proc.wait_for_log("Listening at", timeout=30)
    message = str(info.value)
    assert "broken-service exited with code 3" in message
    assert str(tmp_path / "broken-service.log") in message
    assert "cannot bind" in message  # the tail of the log comes with it


def test_a_server_that_never_becomes_ready_times_out_with_its_log(tmp_path, report_logs):
    report_logs(tmp_path)
    proc = ManagedProcess("silent-service", [sys.executable, "-c", "import time; time.sleep(60)"], log_dir=tmp_path)
    proc.start()
    try:
        with pytest.raises(
            GridError, match=re.escape("silent-service did not log 'Listening at' within 1 s; see its log")
        ):
            proc.wait_for_log("Listening at", timeout=1)
    finally:
        proc.stop()
    assert not proc.alive


def test_mariadb_on_a_taken_port(tmp_path, report_logs):
    report_logs(tmp_path / "logs")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        db = MariaDB(tmp_path / "db", tmp_path / "logs", port=squatter.getsockname()[1])
        with pytest.raises(GridError) as info:
            db.start()
        db.stop()
    assert "mariadb" in str(info.value)
    assert str(tmp_path / "logs" / "mariadb.log") in str(info.value)


def test_mariadb_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(mariadb_module.shutil, "which", lambda *a, **k: None)
    with pytest.raises(GridError, match=r"MariaDB is not installed.*scripts/bootstrap\.sh"):
        MariaDB(tmp_path / "db", tmp_path / "logs").start()


def test_servers_die_with_the_process_that_started_them(tmp_path, report_logs):
    """Even a SIGKILLed test run leaves nothing behind (PR_SET_PDEATHSIG), children included."""
    report_logs(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from diracx_bridge.testing.processes import ManagedProcess
        p = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(300)"],
                           log_dir=Path({str(tmp_path)!r})).start()
        print(p.proc.pid, flush=True)
        time.sleep(300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_stop_kills_the_whole_process_group(tmp_path, report_logs):
    report_logs(tmp_path)
    spawner = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
    )
    proc = ManagedProcess("spawner", [sys.executable, "-c", spawner], log_dir=tmp_path).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not psutil.Process(proc.proc.pid).children():
        time.sleep(0.1)
    (grandchild,) = psutil.Process(proc.proc.pid).children()
    proc.stop()
    grandchild.wait(10)
    assert not grandchild.is_running() or grandchild.status() == "zombie"


def test_servers_are_started_from_the_main_thread_only(tmp_path, report_logs):
    report_logs(tmp_path)
    import concurrent.futures

    proc = ManagedProcess("threaded", [sys.executable, "-c", "pass"], log_dir=tmp_path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(GridError, match="main thread"):
        pool.submit(proc.start).result()
