"""A DIRAC client process that tests drive call by call.

DIRAC keeps process-wide state (its root path, fixed at import, ``gConfig``, the proxy caches),
so the tests do not use DIRAC in the pytest process. A worker is a long-lived Python process
with a DIRAC client environment (``Grid.client_environment``) that runs one call at a time: it
imports the client class, sets the CS options the call asks for in its in-memory configuration
(``/DiracX/FutureClientEnabled/...``), calls the method and sends back the result with
``pickle``. Both the legacy and the adapted answers therefore come from the same kind of
process a DIRAC script would be: DIRAC imported normally, the bridge activated by DIRAC's own
extension discovery.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import IO, Any


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("worker pipe closed")
    (size,) = struct.unpack(">I", header)
    return pickle.loads(stream.read(size))  # noqa: S301 - our own child process


def _clean(result: Any) -> Any:
    """S_OK/S_ERROR without the parts that are process-local (stacks, live exceptions)."""
    if isinstance(result, dict) and "OK" in result:
        return {k: v for k, v in result.items() if k not in ("CallStack", "ExecInfo")}
    return result


@contextlib.contextmanager
def _cs_options(options: Mapping[str, str | None]) -> Iterator[None]:
    """Set CS options (None: remove) in this process's in-memory configuration for one call."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData as cs

    saved = {path: cs.extractOptionFromCFG(path) for path in options}
    _apply(options)
    try:
        yield
    finally:
        _apply(saved)


def _apply(options: Mapping[str, str | None]) -> None:
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData as cs

    for path, value in options.items():
        if value is None:
            cs.deleteOptionInCFG(path)
        else:
            cs.setOptionInCFG(path, value)


def _serve() -> None:
    """The worker's main loop (runs in the child)."""
    # The protocol gets its own copy of fd 1; fd 1 itself (and sys.stdout) then point at stderr,
    # so nothing DIRAC prints can corrupt the pipe.
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import DIRAC

    DIRAC.initialize(require_auth=False)
    _send(stdout, {"ready": True})
    while True:
        try:
            request = _recv(stdin)
        except EOFError:
            return
        try:
            reply = {"value": _clean(_execute(**request))}
        except Exception as exc:  # noqa: BLE001 - report to the test, whatever it is
            reply = {"raised": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        _send(stdout, reply)


def _execute(
    *,
    target: str,
    method: str,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    client_kwargs: Mapping[str, Any] | None = None,
    cs: Mapping[str, str | None] | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Any:
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    with _cs_options(cs or {}):
        if target == "eval":  # a module-level function: "module:function"
            module, _, func = method.partition(":")
            return getattr(importlib.import_module(module), func)(*args, **(kwargs or {}))
        module, _, cls = target.rpartition(".")
        client = getattr(importlib.import_module(module), cls)(**(client_kwargs or {}))
        return getattr(client, method)(*args, **(kwargs or {}))


class DiracWorker:
    """The test side of a worker: ``call(...)`` returns what DIRAC returned in the worker."""

    def __init__(self, env: Mapping[str, str], *, name: str = "dirac-worker", log_path: str | None = None) -> None:
        self.name = name
        self.log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diracx_bridge.testing.dirac_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(env),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        try:
            _recv(self._out)
        except EOFError:
            raise RuntimeError(f"{name} died while starting; see {log_path}") from None

    def call(self, target: str, method: str, *args: Any, **options: Any) -> Any:
        """Call ``target().method(*args)``; options: kwargs, client_kwargs, cs, env."""
        _send(self._in, {"target": target, "method": method, "args": args, **options})
        reply = _recv(self._out)
        if "raised" in reply:
            raise WorkerRaised(reply["raised"], reply["traceback"])
        return reply["value"]

    def timed(self, target: str, method: str, *args: Any, **options: Any) -> tuple[Any, float]:
        t0 = time.perf_counter()
        value = self.call(target, method, *args, **options)
        return value, time.perf_counter() - t0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self.log.close()


class WorkerRaised(Exception):
    """The call raised inside DIRAC: what an adapter must never let happen."""

    def __init__(self, message: str, tb: str) -> None:
        super().__init__(f"{message}\n{tb}")
        self.message = message


if __name__ == "__main__":
    _serve()
