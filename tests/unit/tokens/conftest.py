"""Fixtures of the tokens tests: a real DIRAC proxy file (``proxy_pem`` comes from tests/unit/conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tokens_test_helpers import access, refresh

from diracx_bridge.tokens import DiracxToken


@pytest.fixture
def bare_proxy(tmp_path: Path, proxy_pem: str) -> Path:
    """A proxy file without a DIRACX block, 0600."""
    path = tmp_path / f"x509up_u{os.geteuid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(proxy_pem)
    return path


@pytest.fixture
def fresh_token() -> DiracxToken:
    return DiracxToken(access(), refresh(), int(time.time()) + 1185)
