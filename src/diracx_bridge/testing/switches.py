"""Test support run inside a DIRAC worker: DIRAC's own way of switching a service, and shadow mode's drain.

DIRAC's ``tests/Integration/FutureClient/utils.py`` patches
``DIRAC.Core.Tornado.Client.ClientSelector.useLegacyAdapter`` with ``lambda *_: True`` (or False)
around a client call, instead of setting ``/DiracX/FutureClientEnabled``. The worker runs
:func:`call_with_use_legacy_adapter` (``worker.call("eval", ...)``) so the integration tests can
check that such a test drives the bridge.
"""

from __future__ import annotations

import importlib
from typing import Any


def call_with_use_legacy_adapter(answer: bool, target: str, method: str, *args: Any) -> Any:
    """``target().method(*args)`` with DIRAC's ``useLegacyAdapter`` answering ``answer`` for every service."""
    import DIRAC.Core.Tornado.Client.ClientSelector as selector_module

    module, _, cls = target.rpartition(".")
    client = getattr(importlib.import_module(module), cls)()
    original = selector_module.useLegacyAdapter
    selector_module.useLegacyAdapter = lambda *_: answer
    try:
        return getattr(client, method)(*args)
    finally:
        selector_module.useLegacyAdapter = original


def drain_shadow(seconds: float) -> bool:
    """Wait (in this worker process) for its shadow comparisons to be written; True when none is left."""
    from diracx_bridge.shadow import _worker

    worker = _worker._shadow
    return True if worker is None else worker.drain(seconds)
