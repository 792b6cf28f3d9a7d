"""Plain helpers shared by the bundle tests (and by their worker processes, which must import little)."""

from __future__ import annotations

import datetime
import os
import random
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import jwt


def jwt_like(kind: str, lifetime: int = 3600) -> str:
    """A signed JWT with a unique id, shaped like DiracX's tokens (DIRAC hashes the payload segment)."""
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    claims = {
        "sub": "testvo:bundle-tester",
        "vo": "testvo",
        "kind": kind,
        "jti": uuid.uuid4().hex,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, "not-a-real-secret-but-long-enough-for-hs256", algorithm="HS256")


def write_private(path: Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (tests build their own odd proxy files)."""
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
    return path


# ---- worker processes of test_bundle_concurrency (spawned: they import this module, nothing else of the tests)


def concurrent_writer(path: str, barrier: Any, duration: float, results: Any, index: int) -> None:
    """Increment the counter kept in ``expires_on`` with ``update_token`` until ``duration`` is over.

    One call in five plays the loser of a refresh race: it returns the token it was given, which
    must not write. Reports how many increments it made, so the parent can check none was lost.
    """
    from diracx_bridge.tokens import (
        DiracxToken,
        update_token,
    )

    rng = random.Random(index)
    increments = unchanged = 0
    try:
        barrier.wait(timeout=120)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            decision: list[bool] = []

            def fn(current: DiracxToken | None, decision: list[bool] = decision) -> DiracxToken | None:
                assert current is not None
                decision.append(rng.random() >= 0.2)
                if not decision[-1]:
                    return current
                return DiracxToken(current.access_token, current.refresh_token, current.expires_on + 1)

            update_token(path, fn, timeout=60)
            assert len(decision) == 1, "fn ran more than once with no foreign writer around"
            if decision[0]:
                increments += 1
            else:
                unchanged += 1
        results.put({"role": "writer", "index": index, "increments": increments, "unchanged": unchanged})
    except BaseException:
        results.put({"role": "writer", "index": index, "error": traceback.format_exc()})


def concurrent_reader(path: str, barrier: Any, duration: float, results: Any, index: int, x509_part: bytes) -> None:
    """Read continuously, without any lock: every read must be a whole proxy, 0600, counter never decreasing.

    Reader 0 also reads with DIRAC's own ``diracxTokenFromPEM``, as agents and payloads do.
    """
    from diracx_bridge.tokens import (
        read_token,
    )

    dirac_reader = None
    if index == 0:
        from DIRAC.Core.Security.DiracX import diracxTokenFromPEM as dirac_reader
    reads = 0
    problems: list[str] = []
    last = -1
    try:
        barrier.wait(timeout=120)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                counter = read_token(path).expires_on
                if counter < last:
                    problems.append(f"counter went back from {last} to {counter}")
                last = counter
                if not Path(path).read_bytes().startswith(x509_part):
                    problems.append("certificate/key part changed")
                mode = os.stat(path).st_mode & 0o7777
                if mode != 0o600:
                    problems.append(f"mode {mode:04o}")
                if dirac_reader is not None:
                    dirac_counter = dirac_reader(path)["expires_on"]
                    if dirac_counter < counter:
                        problems.append("DIRAC read an older token than ours just before")
                reads += 1
            except Exception as exc:  # every read must parse: collect, report
                problems.append(f"{type(exc).__name__}: {exc}")
        results.put({"role": "reader", "index": index, "reads": reads, "problems": problems[:10], "n": len(problems)})
    except BaseException:
        results.put({"role": "reader", "index": index, "error": traceback.format_exc()})
