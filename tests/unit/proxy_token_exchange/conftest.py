"""Fixtures for the proxy+token bundle tests: a real DIRAC proxy, JWT-shaped tokens, proxy files."""

from __future__ import annotations

import datetime
import os
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
def proxy_file(tmp_path: Path, proxy_pem: str) -> Path:
    """A DIRAC proxy without a token, 0600, where dirac-proxy-init would put it (name-wise)."""
    path = tmp_path / f"x509up_u{os.geteuid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(proxy_pem)
    return path
