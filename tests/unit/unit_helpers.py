"""Helpers every unit test package may use (tests/unit is on the test path)."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any


def run_as(uid: int, func: Callable[[], Any]) -> Any:
    """Run ``func`` in a forked child that dropped to ``uid`` (gid too); its JSON result, or its traceback raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result = {"value": func()}
        except BaseException:  # reported to the parent
            result = {"crash": traceback.format_exc()}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "crash" not in result, result["crash"]
    return result["value"]
