"""The background side of shadow mode: a bounded queue, a rate limit, one thread per process.

The caller's thread only samples, copies the sampled call and puts it on a bounded queue without
waiting (:meth:`Shadow.offer`); everything else (asking DiracX, comparing, writing the journal)
happens in one daemon thread, at most ``ShadowMaxPerSecond`` DiracX calls per second. A full
queue drops the sample (counted, recorded), so a slow or dead DiracX costs the caller nothing.

At exit, the process waits at most ``ShadowDrainSeconds`` (1 s by default) for the comparisons
still queued, so short commands (``dirac-wms-job-status``) are compared too; 0 drops them. A
child forked with a queue inherits neither the thread nor the queue (a new one starts on use).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from diracx_bridge import errors
from diracx_bridge.adapters import Adapter, Route
from diracx_bridge.log import logger
from diracx_bridge.settings import ShadowSettings
from diracx_bridge.shadow.compare import compare
from diracx_bridge.shadow.journal import Journal, directory, summarise_arguments


@dataclass(frozen=True)
class Sample:
    """One legacy-answered call chosen for comparison, frozen when it was made.

    The arguments and the legacy answer are kept pickled (``frozen``): the caller may change its
    answer while the comparison waits, and ``pickle.dumps`` in the caller's thread costs a tenth
    of a deep copy (measured: 57 µs against 690 µs for a 200-job answer); the worker unpickles.
    """

    adapter: type[Adapter]
    route: Route
    url: str
    client_kwargs: dict[str, Any]
    method: str
    frozen: bytes
    legacy_seconds: float

    def thaw(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(arguments, legacy answer), as they were at the call."""
        return pickle.loads(self.frozen)  # noqa: S301 - pickled by this very process


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``max(1, rate)`` saved up."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def wait_time(self) -> float:
        """0 when a token was taken; otherwise how long until the next one (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else float("inf")


class Shadow:
    """The process's shadow worker."""

    def __init__(self, settings: ShadowSettings) -> None:
        self.settings = settings
        self.journal = Journal(directory(settings.journal))
        self._queue: queue.Queue[Sample] = queue.Queue(maxsize=max(1, settings.queue_size))
        self._bucket = _Bucket(settings.max_per_second)
        self._pending = 0
        self._idle = threading.Condition()
        self._dropped = 0
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="diracx-bridge-shadow", daemon=True)
        self._thread.start()

    # --- the caller's side (must be cheap and never raise) ------------------------------------------

    def offer(self, sample_maker: Callable[[], Sample]) -> None:
        """Copy and queue a sampled call without waiting (dropped, and counted, when the queue is full)."""
        if self.settings.queue_size <= 0 or self.settings.max_per_second <= 0:
            return
        try:
            sample = sample_maker()
        except Exception as exc:  # noqa: BLE001 - an uncopyable answer is not compared, never raised
            self._warn_once(f"a {type(exc).__name__} while copying a call for shadow mode: not compared")
            return
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._dropped += 1

    # --- the background side ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            sample = self._queue.get()
            try:
                self._throttle()
                self._record(self._compare(sample))
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._warn_once(f"shadow mode failed on {sample.method}: {errors.redact(exc)!r}")
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _throttle(self) -> None:
        while (delay := self._bucket.wait_time()) > 0:
            time.sleep(min(delay, 1.0))

    def _compare(self, sample: Sample) -> dict[str, Any]:
        args, legacy = sample.thaw()
        caller = sample.route.caller
        record: dict[str, Any] = {
            "kind": "compared",
            "t": time.time(),
            "pid": os.getpid(),
            "service": sample.adapter.SERVICE or sample.url,
            "method": sample.method,
            "group": caller.group if caller else None,
            "vo": caller.vo if caller else None,
            "args": summarise_arguments(args),
            "legacy": {
                "ok": bool(legacy.get("OK")),
                "ms": round(sample.legacy_seconds * 1000, 3),
                "errno": legacy.get("Errno"),
            },
        }
        if sample.method not in sample.adapter.served():
            record["kind"] = "unserved"  # seen in shadow, DiracX cannot serve it: nothing asked
            return record
        adapter = sample.adapter(sample.route, _no_legacy, sample.url, sample.client_kwargs)
        started = time.perf_counter()
        answer = getattr(adapter, sample.method)(*args)
        record["diracx"] = {
            "ok": bool(answer.get("OK")),
            "ms": round((time.perf_counter() - started) * 1000, 3),
            "errno": answer.get("Errno"),
        }
        if not answer.get("OK"):
            record["diracx"]["error"] = errors.redact(answer.get("Message", ""))[:300]
        verdict = compare(legacy, answer, sample.method)
        record.update(equal=verdict.equal, cause=verdict.cause)
        if not verdict.equal:
            record["difference"] = {"path": verdict.path, "legacy": verdict.legacy, "diracx": verdict.adapted}
        return record

    def _record(self, record: dict[str, Any]) -> None:
        with self._idle:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self.journal.write({"kind": "dropped", "t": time.time(), "pid": os.getpid(), "count": dropped})
        if not self.journal.write(record) and self.journal.problem:
            self._warn_once(self.journal.problem)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger().warn(f"shadow mode: {message}")

    def drain(self, seconds: float | None = None) -> bool:
        """Wait up to ``seconds`` (default: the settings') for the queued comparisons; True when none is left."""
        deadline = time.monotonic() + (self.settings.drain_seconds if seconds is None else seconds)
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(left)
            done, dropped, self._dropped = not self._pending, self._dropped, 0
        if dropped:
            self.journal.write({"kind": "dropped", "t": time.time(), "pid": os.getpid(), "count": dropped})
        return done


def sampled(rate: float) -> bool:
    """True for a fraction ``rate`` of the calls."""
    return rate >= 1 or (rate > 0 and random.random() < rate)  # noqa: S311 - sampling, not security


def _no_legacy() -> Any:
    raise RuntimeError("shadow mode never calls the legacy service")


def shadow_route(route: Route) -> Route:
    """The route a shadow call takes: to DiracX, as the caller, never falling back to legacy."""
    service = replace(route.service, legacy_fallback=False) if route.service else None
    return replace(route, use_diracx=True, service=service, switched_on=True)


def freeze(args: tuple[Any, ...], answer: dict[str, Any]) -> bytes:
    """The call's arguments and answer as they are now (see :class:`Sample`)."""
    return pickle.dumps((args, answer), protocol=pickle.HIGHEST_PROTOCOL)


_lock = threading.Lock()
_shadow: Shadow | None = None


def shadow(settings: ShadowSettings) -> Shadow:
    """The process's worker (a new one if the settings changed, or after a fork)."""
    global _shadow
    current = _shadow
    if current is not None and current.settings == settings and current._thread.is_alive():
        return current
    with _lock:
        if _shadow is None or _shadow.settings != settings or not _shadow._thread.is_alive():
            previous, _shadow = _shadow, Shadow(settings)
            if previous is not None:
                previous.drain(0)
        return _shadow


def _forget_in_child() -> None:
    global _shadow, _lock  # noqa: PLW0603 - a forked child gets a fresh worker on first use
    _shadow = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def _drain_at_exit() -> None:
    if _shadow is not None:
        _shadow.drain()
