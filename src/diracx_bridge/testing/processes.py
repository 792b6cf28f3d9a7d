"""Supervision of the grid-in-a-box's server processes.

Every server of the grid (MariaDB, DIRAC services, uvicorn, moto, the OpenSearch stand-in) is
started through :class:`ManagedProcess` so that all of them share the same guarantees:

* each one logs to its own file, and every failure names the process and points at that log;
* readiness is waited for with a deadline (never a hang), and a process that dies while starting
  is reported at once with the tail of its log;
* each one runs in its own session and is killed with its whole process group, and the kernel
  kills it too if the Python process that started it dies (``PR_SET_PDEATHSIG``), so nothing
  outlives a test run, even one killed with ``SIGKILL``.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process: a
server started from a worker thread would die with the thread. :meth:`ManagedProcess.start`
therefore refuses to run outside the main thread; start servers from it, and wait for their
readiness in parallel if needed (:func:`wait_all`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class GridError(RuntimeError):
    """A component of the grid-in-a-box could not be started or used."""


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGTERM it when we die."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port that is free on loopback right now.

    The kernel picks it; the small window before the server binds it is acceptable for a test
    harness and avoids the collisions of fixed port numbers between concurrent runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def log_tails(directory: Path, lines: int = 30) -> str:
    """The tail of every ``*.log`` in ``directory``, each under its path: for a failed test's report."""
    logs = sorted(directory.glob("*.log"))
    if not logs:
        return f"(no log in {directory})"
    return "\n".join(f"----- {log} -----\n{tail(log, lines)}" for log in logs)


def run_logged(
    name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 180
) -> None:
    """Run a short-lived step of the grid (key generation, schema creation...) to completion.

    Its output goes to ``<log_dir>/<name>.log``; a failure, a hang past ``timeout`` or a missing
    program is a :class:`GridError` naming the step and its log, with the log's last lines.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        try:
            res = subprocess.run(
                list(argv),
                env=dict(env) if env is not None else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise GridError(f"{name} did not finish within {timeout:.0f} s; see {log}") from exc
        except OSError as exc:
            raise GridError(f"{name}: cannot start {argv[0]!r}: {exc}") from exc
    if res.returncode:
        raise GridError(f"{name} failed (exit {res.returncode}); see {log}\n{tail(log)}")


class ManagedProcess:
    """One server process of the grid, with its log file and its readiness check."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name.replace('/', '_')}.log"
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        if threading.current_thread() is not threading.main_thread():
            raise GridError(f"{self.name}: servers must be started from the main thread (see module docstring)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
                )
            except OSError as exc:
                raise GridError(f"{self.name}: cannot start {self.argv[0]!r}: {exc}") from exc
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, what: str) -> GridError:
        """An error naming this process and showing where (and what) it logged."""
        return GridError(
            f"{self.name} {what}; see its log {self.log_path}\n--- last lines of {self.log_path.name} ---\n"
            f"{tail(self.log_path)}"
        )

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str = "did not become ready") -> None:
        """Poll ``ready`` until it is true, failing fast if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.proc.returncode if self.proc else None
                raise self.failure(f"exited with code {code} while starting")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001, S110 - readiness probes fail until the server is up
                pass
            time.sleep(0.1)
        raise self.failure(f"{what} within {timeout:.0f} s")

    def wait_for_log(self, needle: str, *, timeout: float) -> None:
        def seen() -> bool:
            return needle in self.log_path.read_text(errors="replace")

        self.wait_until(seen, timeout=timeout, what=f"did not log {needle!r}")

    def wait_for_port(self, port: int, *, timeout: float) -> None:
        self.wait_until(lambda: port_is_open(port), timeout=timeout, what=f"did not listen on 127.0.0.1:{port}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Children that left the group leader behind (e.g. a worker) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<ManagedProcess {self.name} {state} log={self.log_path}>"


def wait_all(waits: Sequence[Callable[[], None]]) -> None:
    """Run readiness waits concurrently (servers start in parallel); re-raise the first failure."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(waits))) as pool:
        for future in [pool.submit(w) for w in waits]:
            future.result()
