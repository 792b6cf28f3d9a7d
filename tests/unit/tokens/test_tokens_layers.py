"""The tokens package sits low in the layers: foundations only, and no DIRAC at import time."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("diracx_bridge.session", "diracx_bridge.adapters", "diracx_bridge.routing",
             "diracx_bridge.proxy_token_exchange", "diracx_bridge.cs_sync", "jwt")  # fmt: skip


def test_tokens_imports_only_foundations() -> None:
    code = (
        "import json, sys; import diracx_bridge.tokens, diracx_bridge.tokens.claims, diracx_bridge.tokens.atomic\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('DIRAC', 'diracx_bridge.', 'jwt')))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    bad = [name for name in json.loads(loaded) if name.split(".")[0] == "DIRAC" or name.startswith(FORBIDDEN)]
    assert bad == []


def test_bundle_module_is_gone() -> None:
    import importlib.util

    assert importlib.util.find_spec("diracx_bridge.proxy_token_exchange.bundle") is None
