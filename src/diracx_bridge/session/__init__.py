"""Talking to DiracX as the caller: a pooled HTTP session per (DiracX URL, proxy) and its token.

Public surface: :func:`get_session` (the process's session for a URL and proxy),
:class:`DiracXSession` (``request``: one call, errors as :mod:`diracx_bridge.errors`),
:class:`TokenAuth` (the auth flow) and :func:`close_all`. The private modules hold one concern
each: ``_auth`` the token's life, ``_session`` the connection pool and error mapping.
"""

from __future__ import annotations

from diracx_bridge.session._auth import CLIENT_ID, REFRESH_MARGIN, Claims, TokenAuth
from diracx_bridge.session._session import DiracXSession, close_all, get_session

__all__ = ["CLIENT_ID", "REFRESH_MARGIN", "Claims", "DiracXSession", "TokenAuth", "close_all", "get_session"]
