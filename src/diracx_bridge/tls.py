"""The TLS context for talking to DiracX: the system's CAs plus DIRAC's CA directory.

DIRAC installations trust their grid CAs through a hashed directory (``X509_CERT_DIR`` or
DIRAC's ``/DIRAC/Security/CALocation``), which Python's default context does not read. Building
a context costs about 20 ms, so there is one per process, shared by every HTTP client of the
bridge (sessions, the ProxyManager's exchange, ``status``).
"""

from __future__ import annotations

import os
import ssl
from functools import cache


def ca_directory() -> str | None:
    """DIRAC's CA directory (``X509_CERT_DIR``, else DIRAC's own lookup), if there is one."""
    ca_dir = os.environ.get("X509_CERT_DIR")
    if not ca_dir:
        try:
            from DIRAC.Core.Security.Locations import getCAsLocation

            ca_dir = getCAsLocation()
        except Exception:  # noqa: BLE001 - no DIRAC CS here: system CAs only
            ca_dir = None
    return ca_dir if ca_dir and os.path.isdir(ca_dir) else None


@cache
def ssl_context() -> ssl.SSLContext:
    """System CAs plus DIRAC's CA directory, built once per process."""
    ctx = ssl.create_default_context()
    ca_dir = ca_directory()
    if ca_dir:
        ctx.load_verify_locations(capath=ca_dir)
    return ctx


def verify_for(url: str) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` takes for ``url``: the context for https, nothing to verify for http."""
    return ssl_context() if url.startswith("https") else True
