"""The ``diracx-bridge`` admin command.

Each sub-command lives with the code it drives (``cs_sync``, ``proxy_token_exchange``, ...)
and is registered here lazily, so ``diracx-bridge --help`` does not import DIRAC.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: sub-command -> module providing ``register(subparsers)``; the parser it adds sets ``func``.
SUBCOMMANDS = {
    "cs-sync": "diracx_bridge.cs_sync.cli",
    "whoami": "diracx_bridge.proxy_token_exchange.cli",
    "status": "diracx_bridge.status",
    "shadow-report": "diracx_bridge.shadow.report",
    "readiness": "diracx_bridge.readiness",
    "doctor": "diracx_bridge.doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diracx-bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registered: set[str] = set()
    for module in SUBCOMMANDS.values():
        if module in registered:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # sub-command not shipped in this build
        mod.register(sub)
        registered.add(module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
