"""The bridge's failures, and their ``S_ERROR`` form.

Every failure an adapter can meet is one of the exceptions below. They subclass DIRACCommon's
``SErrorException``, so a method wrapped with ``convertToReturnValue`` turns them into a plain
``S_ERROR(errno, message)``: the DErrno code lets scripts test the kind of failure
(``cmpError``), and the message tells the person reading it what to do next. Anything else
raised inside an adapter is a bug in the bridge; ``convertToReturnValue`` still turns it into an
``S_ERROR`` rather than letting it escape into DIRAC.

No message may carry a secret: texts that come from outside (DiracX ``detail`` fields, exception
strings) go through :func:`redact` first.
"""

from __future__ import annotations

import errno
import re
from typing import Any

from DIRACCommon.Core.Utilities import DErrno
from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR, SErrorException

_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT (access or refresh token)
    r"|diracx:legacy:[A-Za-z0-9_=+/-]+"  # a legacy-exchange API key
    # an Authorization header value, including DIRAC's "Bearer diracx:legacy:<key>" (the key's colons)
    r"|(?i:bearer)\s+(?:diracx:legacy:)?[A-Za-z0-9._~+/=-]+",
)


def redact(text: object) -> str:
    """``str(text)`` with every token-, key- or bearer-looking substring replaced."""
    return _SECRETS.sub("<redacted>", str(text))


class BridgeError(SErrorException):
    """A failure of the bridge, carrying its ``S_ERROR`` (and legacy extra keys, if any)."""

    code: int = DErrno.EWMSUKN

    def __init__(self, message: str, *, code: int | None = None, extra: dict[str, Any] | None = None) -> None:
        self.message = redact(message)
        result = S_ERROR(code if code is not None else self.code, self.message)
        # The stack of the bridge's internals tells a DIRAC user nothing; the message does.
        result["CallStack"] = []
        if extra:
            result.update(extra)  # type: ignore[typeddict-item]
        super().__init__(result)

    def __str__(self) -> str:
        return self.message


class ConfigurationError(BridgeError):
    """The CS lacks something the bridge needs (e.g. ``/DiracX/URL``)."""

    code = DErrno.ECONF


class CredentialsNotFound(BridgeError):
    """No proxy file where the caller's credentials should be."""

    code = DErrno.EPROXYFIND


class TokenNotFound(BridgeError):
    """The proxy carries no DiracX token block."""

    code = DErrno.EATOKENFIND


class TokenUnreadable(BridgeError):
    """The proxy's DiracX block is damaged, or the file is unsafe to use."""

    code = DErrno.EATOKENREAD


class SessionExpired(BridgeError):
    """The refresh token is expired or revoked: only a new proxy (a new exchange) helps."""

    code = errno.EKEYEXPIRED


class DiracXUnreachable(BridgeError):
    """No HTTP answer from DiracX (connection refused, DNS, TLS, timeout)."""

    code = DErrno.ERESUNA


class Unauthenticated(BridgeError):
    """DiracX answered 401 to a token the bridge believed valid."""

    code = DErrno.ENOAUTH


class Forbidden(BridgeError):
    """DiracX answered 403: the identity lacks a property, or does not own a job."""

    code = errno.EPERM


class DiracXRejected(BridgeError):
    """DiracX answered 4xx: the request itself was refused (bad value, unknown job...).

    ``status`` and ``detail`` let an adapter turn a refusal it understands into the legacy
    service's own answer (e.g. an unknown attribute).
    """

    code = DErrno.EVALUE

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class DiracXServerError(BridgeError):
    """DiracX answered 5xx."""

    code = DErrno.ERESUNA


class NotServed(BridgeError):
    """The legacy method has no DiracX 0.7.0 equivalent and the admin allows no fallback."""

    code = errno.ENOTSUP
