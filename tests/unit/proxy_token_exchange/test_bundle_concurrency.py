"""Many processes refreshing one proxy while others read it: no torn reads, no lost updates, 0600 throughout."""

from __future__ import annotations

import multiprocessing
import queue
import stat
from pathlib import Path

import bundle_test_helpers
import pytest

from diracx_bridge.tokens import (
    read_token,
    write_token,
)

WRITERS = 16
READERS = 4
DURATION = 3.0
BASE = 1_000_000


@pytest.mark.timeout(300)
def test_concurrent_update_and_read(proxy_file: Path, make_token) -> None:
    x509_part = proxy_file.read_bytes()
    write_token(proxy_file, make_token(expires_on=BASE))
    # forkserver: no fork of this process (it has imported DIRAC, threads and all), yet one interpreter
    # start for all workers instead of twenty.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["bundle_test_helpers", "diracx_bridge.tokens"])
    barrier = ctx.Barrier(WRITERS + READERS)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=bundle_test_helpers.concurrent_writer, args=(str(proxy_file), barrier, DURATION, results, i))
        for i in range(WRITERS)
    ] + [
        ctx.Process(
            target=bundle_test_helpers.concurrent_reader,
            args=(str(proxy_file), barrier, DURATION, results, i, x509_part),
        )
        for i in range(READERS)
    ]
    for process in processes:
        process.start()
    reports = []
    try:
        for _ in processes:
            reports.append(results.get(timeout=240))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {len(processes)} workers reported: {reports}")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [report["error"] for report in reports if "error" in report]
    assert not errors, errors[0]

    writers = [report for report in reports if report["role"] == "writer"]
    readers = [report for report in reports if report["role"] == "reader"]
    # Every writer got the lock (no starvation up to its 60 s timeout); how often depends on the machine.
    assert all(report["increments"] + report["unchanged"] > 0 for report in writers), writers
    assert sum(report["increments"] for report in writers) > 0, writers
    assert all(report["reads"] > 0 and report["n"] == 0 for report in readers), readers

    total = sum(report["increments"] for report in writers)
    assert read_token(proxy_file).expires_on == BASE + total  # no lost update
    assert proxy_file.read_bytes().startswith(x509_part)
    assert stat.S_IMODE(proxy_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in proxy_file.parent.iterdir()) == [proxy_file.name]  # no lock or temp file
    print(  # visible with -s: how hard the test pushed, and how evenly the lock was shared
        f"{total} increments, {sum(r['unchanged'] for r in writers)} no-op updates, "
        f"{sum(r['reads'] for r in readers)} reads; per writer: "
        f"{sorted((r['increments'], r['unchanged']) for r in writers)}"
    )
