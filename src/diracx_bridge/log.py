"""The bridge's logger: a DIRAC sub-logger, so admins filter and route it like any DIRAC log."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def logger() -> Any:
    from DIRAC import gLogger

    return gLogger.getSubLogger("DiracXBridge")
