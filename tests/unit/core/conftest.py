"""Fixtures of the core tests: a real DIRAC proxy file (with or without a DIRACX block), a fake DiracX."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from core_test_helpers import FakeDiracX, HttpxWithTransport, make_token

from diracx_bridge import routing, session
from diracx_bridge.session import _auth as session_auth
from diracx_bridge.session import _session as session_pool
from diracx_bridge.tokens import (
    DiracxToken,
    write_token,
)


@pytest.fixture
def token() -> DiracxToken:
    """A valid token: access for 20 min, refresh for a day."""
    return make_token()


@pytest.fixture
def proxy(bare_proxy: Path, token: DiracxToken) -> Path:
    """A proxy file carrying ``token`` in its DIRACX block."""
    write_token(bare_proxy, token)
    return bare_proxy


@pytest.fixture
def write_proxy_token(bare_proxy: Path) -> Callable[[DiracxToken], Path]:
    def write(new: DiracxToken) -> Path:
        write_token(bare_proxy, new)
        return bare_proxy

    return write


@pytest.fixture
def diracx(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDiracX]:
    """A fake DiracX behind every httpx.Client the session module builds; sessions start and end empty."""
    fake = FakeDiracX()
    http = HttpxWithTransport(fake.transport())
    for module in (session_auth, session_pool):  # every module of the session package that builds clients
        monkeypatch.setattr(module, "httpx", http)
    monkeypatch.setattr(session_pool, "_BACKOFF", (0.0,))  # retries without sleeping
    monkeypatch.setattr(session_auth, "_token_endpoints", {})  # discovered once per process: here, per test
    session.close_all()
    yield fake
    session.close_all()


@pytest.fixture(autouse=True)
def _fresh_routing_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deprecation warnings are a process-wide cache too: each test starts clean."""
    monkeypatch.setattr(routing, "_deprecations_warned", set())
