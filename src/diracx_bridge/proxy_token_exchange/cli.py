"""``diracx-bridge whoami``: who the proxy's DiracX token says you are, and until when.

Without ``--check`` it reads only the proxy file (no DIRAC, no network): the token's user, VO,
group and properties, when the access token and the refresh token expire, and when the proxy
certificate does. With ``--check`` it also asks DiracX (``/api/auth/userinfo``, at the
``/DiracX/URL`` of the DIRAC configuration, so DIRAC is initialised then) through the bridge's
own session: an expired access token is refreshed and written back into the proxy, exactly as
any adapted call would.

Exit status: 0 the token is usable (and, with ``--check``, DiracX accepted it); 1 no usable
token (no proxy, no block, a damaged block, an unsafe file, an expired session); 2 ``--check``
could not get DiracX's answer (unreachable, refused, not configured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NO_TOKEN = 1
EXIT_CHECK_FAILED = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "whoami",
        help="show the identity and expiries of the DiracX token in your proxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--proxy",
        type=Path,
        metavar="PATH",
        help="the proxy file (default: $GRID_PROXY_FILE, $X509_USER_PROXY, then /tmp/x509up_u<uid>)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also ask DiracX (/api/auth/userinfo) whether it accepts the token (refreshing it if needed)",
    )
    parser.set_defaults(func=whoami)


def whoami(args: argparse.Namespace) -> int:
    from diracx_bridge import errors, tokens
    from diracx_bridge.identity import default_proxy_location
    from diracx_bridge.proxy_token_exchange.info import TokenInfo, certificate_expiry, format_rows, when

    path = Path(args.proxy) if args.proxy else default_proxy_location()
    try:
        token = tokens.read_token(path)
    except errors.TokenFileError as exc:
        print(f"diracx-bridge whoami: {exc}", file=sys.stderr)
        return EXIT_NO_TOKEN
    info = TokenInfo.of(token)
    rows = [("proxy", str(path)), *info.rows()]
    cert_expiry = certificate_expiry(path)
    if cert_expiry is not None:
        rows.append(("proxy cert", when(cert_expiry)))
    print("\n".join(format_rows(rows, width=14)))
    if not info.refresh_valid():
        print(
            f"diracx-bridge whoami: the DiracX session has expired: run dirac-proxy-init -g {info.group}",
            file=sys.stderr,
        )
        return EXIT_NO_TOKEN
    if args.check:
        return _check(path)
    return EXIT_OK


def _check(path: Path) -> int:
    """Ask DiracX who the token is; refresh and write back if the access token is used up."""
    from diracx_bridge import errors, tokens

    try:
        import DIRAC

        DIRAC.initialize(require_auth=False)
        from diracx_bridge.session import get_session
        from diracx_bridge.settings import bridge_settings

        settings = bridge_settings()
    except Exception as exc:  # noqa: BLE001 - DIRAC's own initialisation errors
        print(f"diracx-bridge whoami: cannot read the DIRAC configuration ({errors.redact(exc)})", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if not settings.url:
        print(
            "diracx-bridge whoami: /DiracX/URL is not set in the DIRAC configuration, so there is no DiracX to ask",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    before = tokens.read_token(path)
    try:
        session = get_session(settings.url, Path(path).absolute(), settings)
        started = time.monotonic()
        response = session.request("GET", "/api/auth/userinfo", idempotent=True, action="asking who you are")
        elapsed = time.monotonic() - started
        info = response.json()
    except errors.BridgeError as exc:
        print(f"diracx-bridge whoami: {exc}", file=sys.stderr)
        expired = isinstance(exc, errors.SessionExpired | errors.TokenFileError)
        return EXIT_NO_TOKEN if expired else EXIT_CHECK_FAILED
    except ValueError:
        print(f"diracx-bridge whoami: DiracX at {settings.url} answered something that is not JSON", file=sys.stderr)
        return EXIT_CHECK_FAILED
    refreshed = tokens.read_token(path).access_token != before.access_token
    print(
        f"DiracX at {settings.url} accepts the token ({elapsed * 1000:.0f} ms): user {info.get('preferred_username')}, "
        f"VO {info.get('vo')}, group {info.get('dirac_group')}, properties "
        f"{', '.join(info.get('properties') or info.get('dirac_properties') or []) or 'none'}"
        + ("; the access token was renewed and written back into the proxy" if refreshed else "")
    )
    return EXIT_OK
