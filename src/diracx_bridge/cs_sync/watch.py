"""Watch mode: poll the legacy CS and export each new version (replaces the admins' cron loop).

A version that fails validation is reported once and not retried until the CS changes again
(retrying the same content cannot succeed and would flood the log); a repository error is
retried at the next poll, since it is usually transient (a lock, a concurrent run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diracx_bridge.cs_sync.errors import EXIT_OK, CSSyncError, InvalidCSError
from diracx_bridge.cs_sync.sync import SyncResult, sync_once

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
    on_result: Callable[[SyncResult], None] | None = None,
    on_error: Callable[[CSSyncError], None] | None = None,
    config_class: type[BaseModel] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WatchOutcome:
    """Poll every ``interval`` seconds until ``stop`` is set or ``max_iterations`` polls were made.

    The exit code of the outcome is the one of the last sync attempt (0 if the CS never changed),
    so a bounded run in a test or a systemd ``ExecStartPre`` can tell success from failure.
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
            snapshot = source.fetch(done_version)
            if snapshot is not None:
                try:
                    result = sync_once(snapshot, repository, config_class=config_class)
                except InvalidCSError:
                    done_version = snapshot.version  # same content, same refusal: wait for the next change
                    raise
                done_version = snapshot.version
                last_code = EXIT_OK
                if result.commit:
                    commits.append(result.commit)
                if on_result is not None:
                    on_result(result)
        except CSSyncError as exc:
            last_code = exc.exit_code
            if on_error is not None:
                on_error(exc)
        if max_iterations is not None and iterations >= max_iterations:
            break
        stop.wait(max(0.0, interval - (clock() - started)))
    return WatchOutcome(iterations=iterations, commits=commits, last_exit_code=last_code)
