"""Watch mode: poll the legacy CS and export each new version (replaces the admins' cron loop).

A poll of an unchanged CS costs a ``stat`` (a file) or one RPC that sends no data (the
Configuration Server): nothing is parsed. The first poll compares with what master holds
(:func:`sync.sync`), so restarting the watch does not convert the CS again either.

A version that fails validation is reported once and not retried until the CS changes again
(retrying the same content cannot succeed and would flood the log); a source error (the
Configuration Server stopped or unreachable) or a repository error is retried at the next
poll, since it is usually transient (a restart, a lock, a concurrent run). Nothing is written
unless a whole CS was read and validated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diracx_bridge.cs_sync.errors import EXIT_OK, CSSyncError, InvalidCSError
from diracx_bridge.cs_sync.sync import SyncResult, Unchanged, sync

if TYPE_CHECKING:
    from pydantic import BaseModel

    from diracx_bridge.cs_sync.export import ConfigRepository
    from diracx_bridge.cs_sync.sources import Source


@dataclass
class WatchOutcome:
    iterations: int
    commits: list[str]
    last_exit_code: int


def watch(
    source: Source,
    repository: ConfigRepository,
    *,
    interval: float,
    stop: threading.Event | None = None,
    max_iterations: int | None = None,
    on_result: Callable[[SyncResult | Unchanged], None] | None = None,
    on_error: Callable[[CSSyncError], None] | None = None,
    config_class: type[BaseModel] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WatchOutcome:
    """Poll every ``interval`` seconds until ``stop`` is set or ``max_iterations`` polls were made.

    The exit code of the outcome is the one of the last sync attempt (0 if the CS never changed),
    so a bounded run in a test or a systemd ``ExecStartPre`` can tell success from failure.
    ``on_result`` gets each export, and, once, the :class:`Unchanged` of a CS master already holds.
    """
    stop = stop or threading.Event()
    done_version: str | None = None
    iterations = 0
    commits: list[str] = []
    last_code = EXIT_OK
    while not stop.is_set():
        started = clock()
        iterations += 1
        try:
            outcome = sync(source, repository, known_version=done_version, config_class=config_class)
            if isinstance(outcome, Unchanged):
                done_version = outcome.source_id.partition(":")[2]
                last_code = EXIT_OK
            elif outcome is not None:
                done_version = outcome.snapshot.version
                last_code = EXIT_OK
                if outcome.commit:
                    commits.append(outcome.commit)
            if outcome is not None and on_result is not None:
                on_result(outcome)
        except CSSyncError as exc:
            if isinstance(exc, InvalidCSError) and exc.version is not None:
                done_version = exc.version  # same content, same refusal: wait for the next change
            last_code = exc.exit_code
            if on_error is not None:
                on_error(exc)
        if max_iterations is not None and iterations >= max_iterations:
            break
        stop.wait(max(0.0, interval - (clock() - started)))
    return WatchOutcome(iterations=iterations, commits=commits, last_exit_code=last_code)
