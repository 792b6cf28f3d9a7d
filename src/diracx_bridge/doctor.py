"""``diracx-bridge doctor``: is this user, on this host, ready to talk to DiracX? Each check with a fix.

In the order a problem would show up: the bridge active in this DIRAC installation; ``/DiracX/URL``
set; DiracX reachable and which API it offers (DiracX does not state its release; its routes are
compared with the ones of the release the bridge targets); TLS trust through DIRAC's CA
directory; the proxy and its DiracX token, and when each expires; the identity DiracX sees in
the token; the clock against DiracX's (tokens carry absolute expiry times).

Exit status 0 when no check fails (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diracx_bridge import capabilities, tls
from diracx_bridge import settings as cs

PASS, WARN, FAIL = "ok", "warn", "FAIL"
#: Clock skew against DiracX that deserves a warning, and that breaks tokens (their exp/iat).
SKEW_WARN, SKEW_FAIL = 5.0, 60.0


@dataclass
class Finding:
    check: str
    verdict: str
    detail: str
    fix: str = ""


def _bridge_active() -> Finding:
    from diracx_bridge import activation

    activation.activate()
    state = activation.status()
    if state["disabled"]:
        return Finding("bridge active", FAIL, "DIRACX_BRIDGE_DISABLE is set", "unset DIRACX_BRIDGE_DISABLE")
    if not state["active"]:
        return Finding(
            "bridge active",
            FAIL,
            f"not active: {state['error']}",
            "reinstall diracx-bridge into DIRAC's environment (pip install diracx-bridge)",
        )
    failed = [label for label, hook in state["hooks"].items() if hook.startswith("failed")]
    if failed:
        return Finding("bridge active", WARN, f"active, but these hooks failed: {', '.join(failed)}")
    return Finding("bridge active", PASS, "the bridge routes DIRAC's clients in this installation")


def _reachable(bridge: cs.BridgeSettings) -> tuple[list[Finding], Any]:
    import httpx

    assert bridge.url is not None
    findings = []
    try:
        response = httpx.get(
            f"{bridge.url}{capabilities.OPENAPI_PATH}", timeout=bridge.read_timeout, verify=tls.verify_for(bridge.url)
        )
    except httpx.ConnectError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            ca = tls.ca_directory() or "(none found)"
            findings.append(
                Finding(
                    "TLS trust",
                    FAIL,
                    f"DiracX's certificate at {bridge.url} is not trusted through DIRAC's CA directory {ca}",
                    "install the CA that signed DiracX's certificate into that directory (X509_CERT_DIR or "
                    "/DIRAC/Security/CALocation) and rehash it",
                )
            )
        else:
            findings.append(
                Finding(
                    "DiracX reachable", FAIL, f"{bridge.url}: {type(exc).__name__}", "check /DiracX/URL and the server"
                )
            )
        return findings, None
    except httpx.HTTPError as exc:
        return [Finding("DiracX reachable", FAIL, f"{bridge.url}: {type(exc).__name__}", "check the server")], None
    if bridge.url.startswith("https"):
        findings.append(
            Finding("TLS trust", PASS, f"DiracX's certificate is trusted ({tls.ca_directory() or 'system CAs'})")
        )
    else:
        findings.append(
            Finding("TLS trust", WARN, f"{bridge.url} is plain HTTP: tokens travel unencrypted", "use https")
        )
    caps = None
    try:
        caps = capabilities.from_openapi(bridge.url, response.json()) if response.status_code == 200 else None
    except ValueError:
        caps = None
    if caps is None:
        findings.append(
            Finding(
                "DiracX reachable",
                WARN,
                f"{bridge.url} answers, but hides its API description (HTTP {response.status_code})",
            )
        )
    else:
        missing = sorted(map(str, capabilities.ROUTES - caps.routes))
        detail = f"{bridge.url} answers; DiracX does not state its release: it offers {len(caps.routes)} routes"
        if missing:
            findings.append(
                Finding(
                    "DiracX reachable",
                    WARN,
                    f"{detail}, without {', '.join(missing)} of {capabilities.NAME}",
                    "the methods needing them are not served (see diracx-bridge status --check)",
                )
            )
        else:
            findings.append(Finding("DiracX reachable", PASS, f"{detail}, every one of {capabilities.NAME}'s"))
    return findings, response


def _clock(response: Any) -> Finding:
    date = response.headers.get("Date") if response is not None else None
    if not date:
        return Finding("clock", WARN, "DiracX sent no Date header: skew unknown")
    skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    verdict = FAIL if abs(skew) > SKEW_FAIL else WARN if abs(skew) > SKEW_WARN else PASS
    fix = "synchronise this host's clock (NTP): token expiry times are absolute" if verdict != PASS else ""
    return Finding("clock", verdict, f"{skew:+.1f} s against DiracX (its Date header has a 1 s resolution)", fix)


def _proxy_and_token(proxy: Path) -> list[Finding]:
    from diracx_bridge import errors, tokens
    from diracx_bridge.proxy_token_exchange.info import TokenInfo, certificate_expiry, when

    findings = []
    expiry = certificate_expiry(proxy)
    if expiry is None:
        return [Finding("proxy", FAIL, f"no readable proxy at {proxy}", "run dirac-proxy-init -g <your group>")]
    verdict = FAIL if expiry <= time.time() else PASS
    findings.append(
        Finding(
            "proxy", verdict, f"{proxy}, valid until {when(expiry)}", "run dirac-proxy-init" if verdict == FAIL else ""
        )
    )
    try:
        token = tokens.read_token(proxy)
    except errors.TokenFileError as exc:
        findings.append(Finding("DiracX token", FAIL, exc.message))
        return findings
    info = TokenInfo.of(token)
    if not info.refresh_valid():
        findings.append(
            Finding("DiracX token", FAIL, "the DiracX session has expired", f"run dirac-proxy-init -g {info.group}")
        )
        return findings
    refresh = "unknown" if info.refresh_expires is None else when(info.refresh_expires)
    findings.append(
        Finding("DiracX token", PASS, f"access token until {when(info.access_expires)}; session until {refresh}")
    )
    return findings


def _identity(bridge: cs.BridgeSettings, proxy: Path) -> Finding:
    from diracx_bridge.errors import BridgeError
    from diracx_bridge.session import get_session

    assert bridge.url is not None
    try:
        response = get_session(bridge.url, proxy, bridge).request(
            "GET", "/api/auth/userinfo", idempotent=True, action="asking who you are"
        )
        who = response.json()
    except BridgeError as exc:
        return Finding("identity", FAIL, exc.message)
    except ValueError:
        return Finding("identity", FAIL, f"DiracX at {bridge.url} answered something that is not JSON")
    return Finding(
        "identity",
        PASS,
        f"DiracX knows you as {who.get('preferred_username')} (VO {who.get('vo')}, group {who.get('dirac_group')}, "
        f"properties {', '.join(who.get('properties') or []) or 'none'})",
    )


def diagnose(proxy: Path | None) -> list[Finding]:
    from diracx_bridge.identity import default_proxy_location

    findings = [_bridge_active()]
    bridge = cs.bridge_settings()
    if not bridge.url:
        findings.append(Finding("DiracX URL", FAIL, "/DiracX/URL is not set", "ask the administrators to set it"))
        return findings
    findings.append(Finding("DiracX URL", PASS, bridge.url))
    reachable, response = _reachable(bridge)
    findings += reachable
    findings.append(_clock(response))
    path = proxy or default_proxy_location()
    token_findings = _proxy_and_token(path)
    findings += token_findings
    if response is not None and all(f.verdict != FAIL for f in token_findings):
        findings.append(_identity(bridge, path))
    return findings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="is this user, on this host, ready to talk to DiracX? each check with a fix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--proxy", type=Path, help="the proxy file (default: DIRAC's default proxy location)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import DIRAC

    DIRAC.initialize(require_auth=False)
    findings = diagnose(args.proxy)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"[{f.verdict:>4}] {f.check}: {f.detail}")
            if f.fix and f.verdict != PASS:
                print(f"       fix: {f.fix}")
    return 1 if any(f.verdict == FAIL for f in findings) else 0
