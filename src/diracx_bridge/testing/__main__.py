"""Run the grid-in-a-box by hand: ``python -m diracx_bridge.testing [--workdir DIR]``.

It starts the grid, makes a proxy for ``ciuser``/``civo_user``, prints the environment a shell
needs to use it (``source DIR/env.sh``), and keeps it running until interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from diracx_bridge.testing.grid import CA_BUNDLE_VARS, Grid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".state/grid"))
    args = parser.parse_args()
    grid = Grid(args.workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        grid.start()
        grid.proxy_init("ciuser", "civo_user")
        env = grid.client_environment("ciuser", "civo_user")
        keys = ("DIRAC_ROOT_PATH", "X509_CERT_DIR", "X509_USER_CERT", "X509_USER_KEY", "X509_USER_PROXY", "PATH")
        env_sh = grid.workdir / "env.sh"
        env_sh.write_text(
            "".join(f"export {k}={shlex.quote(env[k])}\n" for k in keys) + f"unset {' '.join(CA_BUNDLE_VARS)}\n"
        )
        print(f"grid up in {grid.startup_seconds:.0f} s; DiracX at {grid.diracx.url if grid.diracx else '?'}")
        print(f"use it from a shell: source {env_sh}")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        grid.stop()


if __name__ == "__main__":
    sys.exit(main())
