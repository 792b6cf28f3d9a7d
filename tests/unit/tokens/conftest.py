"""Fixtures of the tokens tests: a real DIRAC proxy file (``proxy_pem`` comes from tests/unit/conftest.py)."""

from __future__ import annotations

import time

import pytest
from tokens_test_helpers import access, refresh

from diracx_bridge.tokens import DiracxToken


@pytest.fixture
def fresh_token() -> DiracxToken:
    return DiracxToken(access(), refresh(), int(time.time()) + 1185)
