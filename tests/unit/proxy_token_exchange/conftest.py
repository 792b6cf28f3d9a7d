"""Fixtures for the proxy+token bundle tests: a real DIRAC proxy, JWT-shaped tokens, proxy files."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from bundle_test_helpers import jwt_like

from diracx_bridge.tokens import (
    DiracxToken,
)


@pytest.fixture
def make_token() -> Callable[..., DiracxToken]:
    def factory(expires_on: int | None = None) -> DiracxToken:
        expires = int(datetime.datetime.now(datetime.UTC).timestamp()) + 1200 if expires_on is None else expires_on
        return DiracxToken(jwt_like("access", 1200), jwt_like("refresh", 86400), expires)

    return factory


@pytest.fixture
def proxy_file(bare_proxy: Path) -> Path:
    """A DIRAC proxy without a token (the shared ``bare_proxy``, under the name these tests use)."""
    return bare_proxy
