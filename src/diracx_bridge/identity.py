"""Who is calling: the credentials a legacy ``Client`` would have used, and their VO.

DIRAC 9.1's FutureClients are built with no arguments and always use the default proxy, so
``proxyLocation``, ``useCertificates`` or a delegated identity are silently ignored. The bridge
reads the same keyword arguments DISET's ``BaseClient`` honours, so an adapted call acts as the
identity the legacy call would have acted as, or is routed to legacy when DiracX cannot (DiracX has
no host identities and no delegation: :data:`diracx_bridge.capabilities.IDENTITIES`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from diracx_bridge import errors, tokens


class CallerKind(Enum):
    PROXY = "proxy"  # a proxy file: the user's (or a payload's) own identity
    HOST = "host"  # the host certificate (agents, services)
    DELEGATED = "delegated"  # a service acting on behalf of a user (delegatedDN/Group)
    IN_MEMORY = "in-memory"  # proxyChain / proxyString: no file to read a token from


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    proxy_path: Path | None = None
    group: str | None = None
    vo: str | None = None
    #: Why the group/VO could not be found (the proxy is missing or unreadable), if so.
    problem: str | None = None

    def describe(self) -> str:
        if self.kind is CallerKind.PROXY:
            return f"proxy {self.proxy_path}" + (f" (group {self.group})" if self.group else "")
        return self.kind.value


_cache_lock = threading.Lock()
_group_cache: dict[tuple[str, int, int, int], tuple[str | None, str | None]] = {}


def default_proxy_location() -> Path:
    """Where DIRAC looks for the proxy when no ``proxyLocation`` is given.

    Same order as ``DIRAC.Core.Security.Locations.getDefaultProxyLocation``; computed here so
    the missing-file case still yields the path the user must create.
    """
    for var in ("GRID_PROXY_FILE", "X509_USER_PROXY"):
        if os.environ.get(var):
            return proxy_path(os.environ[var])
    return Path(f"/tmp/x509up_u{os.getuid()}")  # noqa: S108 - the grid's conventional location


def proxy_path(location: str | os.PathLike[str]) -> Path:
    """``location`` resolved by the tokens store's link policy (links of the user or root only).

    A link the policy refuses is kept as it is: the store then refuses it with a message that
    says why, rather than this module silently following it (docs/tokens.md, "Symbolic links").
    """
    try:
        return Path(tokens.resolve_proxy_path(location))
    except errors.UnsafeTokenFile:
        return Path(os.path.abspath(location))


def _group_and_vo(path: Path) -> tuple[str | None, str | None, str | None]:
    """(group, VO, problem) of a proxy file, cached on the file's identity and mtime."""
    try:
        st = path.stat()
    except OSError as exc:
        return None, None, f"no proxy at {path} ({exc.strerror})"
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _group_cache.get(key)
    if hit is None:
        from DIRAC.ConfigurationSystem.Client.Helpers import Registry
        from DIRAC.Core.Security.X509Chain import X509Chain

        chain = X509Chain()
        res = chain.loadProxyFromFile(str(path))
        if not res["OK"]:
            return None, None, f"cannot read the proxy {path}: {res['Message']}"
        res = chain.getDIRACGroup(ignoreDefault=False)
        group = res["Value"] if res["OK"] else None
        vo = Registry.getVOForGroup(group) if group else None
        hit = (group, vo or None)
        with _cache_lock:
            if len(_group_cache) > 256:
                _group_cache.clear()
            _group_cache[key] = hit
    return hit[0], hit[1], None


def _use_server_certificate() -> bool:
    from DIRAC import gConfig

    return bool(gConfig.useServerCertificate())


def _thread_delegation() -> bool:
    from DIRAC.Core.DISET.ThreadConfig import ThreadConfig

    tc = ThreadConfig()
    return bool(tc.getDN())


def resolve_caller(client_kwargs: Mapping[str, Any]) -> Caller:
    """The identity a legacy DISET client built with ``client_kwargs`` would use."""
    if client_kwargs.get("delegatedDN") or _thread_delegation():
        return Caller(CallerKind.DELEGATED, group=client_kwargs.get("delegatedGroup"))
    if client_kwargs.get("proxyChain") is not None or client_kwargs.get("proxyString"):
        return Caller(CallerKind.IN_MEMORY)
    location = client_kwargs.get("proxyLocation")
    use_certs = client_kwargs.get("useCertificates")
    if use_certs is None:
        use_certs = _use_server_certificate()
    if use_certs and not location:
        return Caller(CallerKind.HOST)
    path = proxy_path(location) if location else default_proxy_location()
    group, vo, problem = _group_and_vo(path)
    return Caller(CallerKind.PROXY, proxy_path=path, group=group, vo=vo, problem=problem)
