"""The bridge's hooks into DIRAC's proxy and token code (installed by :mod:`diracx_bridge.activation`)."""

from __future__ import annotations


def install() -> None:
    """Install every proxy/token hook; called once per DIRAC process."""
