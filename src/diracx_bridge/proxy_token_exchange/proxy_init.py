"""``dirac-proxy-init``'s token step: the proxy is always written, the token when DiracX gives one.

DIRAC 9.1.22's ``addTokenToPEM`` makes ``dirac-proxy-init`` fail when the token cannot be had:
DiracX down, the user missing from DiracX's registry, a bad API key... even though the proxy
itself was generated and every legacy service would accept it. During a migration that turns
any DiracX problem into "nobody can work". :func:`add_token_to_pem` replaces that name in
``dirac_proxy_init``'s namespace (see :mod:`.hooks`) and:

* asks ProxyManager's ``exchangeProxyForToken``, as DIRAC does (the API key stays on the server),
  and writes the token into the proxy with :func:`diracx_bridge.tokens.write_token` (atomic, 0600, locked,
  the certificate and key kept byte for byte);
* on any failure, keeps the proxy, prints what is missing, why and who fixes it, and returns
  ``S_OK``: the command succeeds, legacy services keep working, and services moved to DiracX
  say "no DiracX token: run dirac-proxy-init" until the user does so;
* for a VO in ``/DiracX/DisabledVOs``: no token, silently, as DIRAC does; for a group without a
  VO, a note (DIRAC only logs an error);
* with ``dirac-proxy-init --strict`` ("fail on each error"), a missing token fails the command,
  as in DIRAC 9.1.22: whoever asks for strictness gets it.

The message is precise with a bridge ProxyManager (:mod:`.exchange`) and also with a stock
DIRAC 9.1.22 ProxyManager: its ``RuntimeError('Error getting token from DiracX: 400 ...')`` is
diagnosed here against the CS the client reads.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from DIRACCommon.Core.Utilities import DErrno

from diracx_bridge import errors, settings, tokens

#: ``S_ERROR(errno, text)`` renders as ``"<strerror> ( <errno> : <text>)"``; the text is what matters here.
_ERRNO_WRAPPED = re.compile(r"^[^()]*\( \d+ : (?P<inner>.*)\)\s*$", re.DOTALL)
_PROXY_INIT_MODULE = "DIRAC.FrameworkSystem.scripts.dirac_proxy_init"
#: What a stock DIRAC 9.1.22 ProxyManager answers when DiracX refuses (``get_token``'s RuntimeError).
_STOCK_REFUSAL = re.compile(r"Error getting token from DiracX: (?P<status>\d{3}) (?P<body>.*?)(?:'\)|$)", re.DOTALL)
_CONNECTION_TROUBLE = re.compile(
    r"Connection refused|Max retries exceeded|NewConnectionError|Failed to establish|timed out|ConnectTimeout|"
    r"ReadTimeout|Name or service not known|Temporary failure in name resolution|ConnectionError",
)


@dataclass(frozen=True)
class Outcome:
    """What happened to the token of a new proxy, and what to tell the user."""

    #: "added", "disabled" (VO in DisabledVOs), "novo" (group without VO), "failed"
    kind: str
    message: str = ""
    #: For failures: a transient cause (DiracX or ProxyManager unreachable) means "try again later".
    transient: bool = False
    #: For failures: the DErrno code of the cause (what ``--strict`` answers with).
    code: int = DErrno.EATOKENFIND


def make_add_token_to_pem(original: Any) -> Callable[[Any, str], dict[str, Any]]:
    """The hook factory (:mod:`.hooks`); DIRAC's function is kept only to be put back."""

    def addTokenToPEM(pemPath: Any, group: str) -> dict[str, Any]:
        return add_token_to_pem(pemPath, group, strict=_strict_requested())

    return addTokenToPEM


def _strict_requested() -> bool:
    """``dirac-proxy-init --strict``: its parameters are the module global ``piParams``."""
    params = getattr(sys.modules.get(_PROXY_INIT_MODULE), "piParams", None)
    return bool(getattr(params, "strict", False))


def add_token_to_pem(pem_path: Any, group: str, *, strict: bool = False) -> dict[str, Any]:
    """Add the DiracX token to the new proxy if possible; ``S_OK`` whatever happens (the proxy is good),
    unless ``strict``, where a missing token is the ``S_ERROR`` DIRAC 9.1.22 would give."""
    from DIRAC import S_ERROR, S_OK

    path = str(pem_path)
    try:
        outcome = obtain_token(path, group)
    except Exception as exc:  # noqa: BLE001 - a bridge bug must not cost the user the proxy
        outcome = Outcome("failed", f"unexpected error in diracx-bridge ({errors.redact(repr(exc))})")
    if strict and outcome.kind == "failed":
        return S_ERROR(outcome.code, f"no DiracX token for the proxy {path}: {outcome.message}")
    report(outcome, path, group)
    return S_OK()


def obtain_token(path: str, group: str) -> Outcome:
    from DIRAC.ConfigurationSystem.Client.Helpers import Registry

    vo = Registry.getVOForGroup(group)
    if not vo:
        return Outcome(
            "novo",
            f"group {group} belongs to no VO (no /Registry/Groups/{group}/VO nor /DIRAC/VirtualOrganization), so the "
            "proxy carries no DiracX token. Legacy DIRAC services work with it; if this group should use DiracX, "
            "ask the DIRAC administrators to set its VO",
        )
    if vo in settings.bridge_settings().disabled_vos:
        return Outcome("disabled", f"VO {vo} is in /DiracX/DisabledVOs: no DiracX token")

    from DIRAC.Core.Base.Client import Client

    result = Client(url="Framework/ProxyManager", proxyLocation=path).exchangeProxyForToken()
    if not result["OK"]:
        _drop_stale_token(path)
        return explain_failure(result, path=path, group=group, vo=vo)
    try:
        token = tokens.DiracxToken.from_token_response(result["Value"])
    except (TypeError, ValueError) as exc:
        return Outcome("failed", f"the ProxyManager answered without a usable DiracX token ({exc})")
    try:
        tokens.write_token(path, token)
    except errors.TokenFileError as exc:
        return Outcome("failed", f"the DiracX token could not be written into the proxy: {exc}")
    return Outcome("added", f"DiracX token added to {path} ({token!r})")


def _drop_stale_token(path: str) -> None:
    """A token left from an earlier proxy in this file would not match the new proxy: remove it."""
    try:
        if tokens.PEM_BEGIN in Path(path).read_text(errors="replace"):
            tokens.remove_token(path)
    except (OSError, errors.TokenFileError):
        pass


def explain_failure(result: Mapping[str, Any], *, path: str, group: str, vo: str) -> Outcome:
    """Turn the ``S_ERROR`` of ``exchangeProxyForToken`` into an :class:`Outcome` that says what to do."""
    message = str(result.get("Message", ""))
    inner = _unwrap(message)
    url = _diracx_url()
    stock = _STOCK_REFUSAL.search(inner)
    if stock:
        from diracx_bridge.proxy_token_exchange.exchange import refusal, registry_view

        status = int(stock.group("status"))
        user = _proxy_username(path) or "?"
        error = refusal(
            status, _body_detail(stock.group("body")), user=user, group=group, url=url, view=registry_view(user, group)
        )
        return Outcome("failed", error.message, transient=status >= 500 and status != 503, code=error.code)
    if "legacy-exchange" in inner and _CONNECTION_TROUBLE.search(inner):
        reason = "connection refused" if "Connection refused" in inner else "no answer"
        error = errors.DiracXUnreachable(url, reason, by="the ProxyManager")
        return Outcome("failed", error.message, transient=True, code=error.code)
    if "Missing mandatory /DiracX/" in inner:
        option = re.search(r"/DiracX/\w+", inner)
        error = errors.ExchangeOptionMissing(option.group(0) if option else "/DiracX option")
        return Outcome("failed", error.message, code=error.code)
    errno_ = result.get("Errno")
    code = errno_ if isinstance(errno_, int) and errno_ else DErrno.EATOKENFIND
    if errno_ == DErrno.ERESUNA or "unreachable" in inner:
        return Outcome("failed", inner, transient=True, code=DErrno.ERESUNA)
    if _is_rpc_failure(message):
        return Outcome(
            "failed",
            f"the ProxyManager service (Framework/ProxyManager), which obtains DiracX tokens, could not be "
            f"reached: {inner}",
            transient=True,
            code=DErrno.ERESUNA,
        )
    return Outcome("failed", inner, code=code)


def _unwrap(message: str) -> str:
    match = _ERRNO_WRAPPED.match(message)
    return errors.redact(match.group("inner") if match else message).strip()


def _body_detail(body: str) -> str:
    """DiracX's ``detail`` out of the body DIRAC quoted (JSON, possibly with escaped quotes)."""
    text = body.strip().replace('\\"', '"')
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return str(data.get("detail", text)) if isinstance(data, dict) else text


def _is_rpc_failure(message: str) -> bool:
    return bool(re.search(r"dips://|https://\S+/Framework/ProxyManager|Can't connect|Cannot connect", message))


def _diracx_url() -> str:
    return settings.bridge_settings().url or "<no /DiracX/URL>"


def _proxy_username(path: str) -> str | None:
    try:
        from DIRAC.Core.Security.X509Chain import X509Chain

        chain = X509Chain()
        if not chain.loadProxyFromFile(path)["OK"]:
            return None
        creds = chain.getCredentials()
        return creds["Value"].get("username") if creds["OK"] else None
    except Exception:  # noqa: BLE001 - only used to word a message
        return None


def report(outcome: Outcome, path: str, group: str) -> None:
    """Tell the user (through DIRAC's logger, like every dirac-proxy-init message)."""
    from DIRAC import gLogger

    log = gLogger.getSubLogger("DiracXBridge")
    if outcome.kind in ("added", "disabled"):
        log.verbose(outcome.message)
        return
    if outcome.kind == "novo":
        gLogger.notice(f"Note: {outcome.message}.")
        return
    again = "later" if outcome.transient else "once this is fixed"
    gLogger.warn(
        f"WARNING: the proxy {path} was created without a DiracX token: {outcome.message}.\n"
        f"Legacy DIRAC services keep working with this proxy; services that moved to DiracX need the token: "
        f"run dirac-proxy-init -g {group} again {again}."
    )
