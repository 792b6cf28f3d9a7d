"""The bridge's failures: one exception tree, each class building its own message and ``S_ERROR``.

Every failure the bridge can meet is one of these classes. Each one is a DIRACCommon
``SErrorException`` carrying its ``S_ERROR`` (``.result``): a DErrno code, so scripts can test the
kind of failure (``cmpError``), and a message that names the cause and what to do, built by the
class itself from what it is given (a path, a URL, a user...). So a method wrapped with
``convertToReturnValue`` turns any of them into a plain ``S_ERROR``, and no caller translates one
error into another::

    BridgeError ............................ EWMSUKN      base; .result is the S_ERROR
    ├── ConfigurationError ................. ECONF        the CS lacks or contradicts an option
    ├── LegacyRefusal ...................... 0            the legacy service's own refusal, word for word
    ├── NotServed .......................... ENOTSUP      DiracX cannot serve the method, no fallback allowed
    ├── TokenFileError ..................... EATOKENREAD  the proxy file or its DIRACX block
    │   ├── ProxyFileNotFound .............. EPROXYFIND   (also a FileNotFoundError)
    │   ├── NoTokenBlock ................... EATOKENFIND  the proxy carries no DiracX token
    │   ├── NotAProxyFile
    │   ├── MalformedTokenBlock
    │   ├── UnsafeTokenFile                               someone else could read or change it
    │   └── TokenFileWriteError                           the proxy cannot be rewritten (disk, rights)
    │       └── TokenFileLockError
    │           └── TokenFileLockTimeout ................ (also a TimeoutError)
    ├── SessionExpired ..................... EKEYEXPIRED  refresh token expired or revoked
    ├── DiracXError                                       talking to DiracX failed
    │   ├── DiracXUnreachable .............. ERESUNA      no HTTP answer
    │   ├── DiracXServerError .............. ERESUNA      5xx, or not the answer DiracX gives
    │   ├── Unauthenticated ................ ENOAUTH      401 to a token believed valid
    │   ├── Forbidden ...................... EPERM        403: a property or ownership is missing
    │   └── DiracXRejected ................. EVALUE       other 4xx (status and detail kept)
    ├── SandboxError                                      moving a sandbox to or from DiracX's S3 store
    │   ├── SandboxTooLarge ................ EFILESIZE    over DiracX's limit (named with the legacy one)
    │   ├── SandboxFormatRefused ........... EVALUE       DiracX accepts tar.bz2 and tar.zst only
    │   ├── SandboxChecksumMismatch ........ EBADCKS      the bytes read are not the sha256 in the PFN
    │   ├── SandboxStorageError ............ ERESUNA      S3 unreachable, expired URL, refused or cut off
    │   ├── SandboxOfAnotherUser ........... EPERM        DiracX lets only the owner (or JobAdministrator) read it
    │   ├── SandboxTempFileError ........... ECTMPF       the local temporary file cannot be written (disk, rights)
    │   └── UnsafeSandboxArchive ........... EVALUE       a member would land outside the destination
    └── ExchangeError                                     the ProxyManager's legacy exchange
        ├── ExchangeRefused ................ ENOAUTH      DiracX will not mint a token for this identity
        │   ├── GroupWithoutVO                            the DIRAC group has no VO
        │   ├── VONotInDiracX                             the VO is not synced to DiracX
        │   ├── UserWithoutSubject                        the user has no IdP subject for DiracX
        │   └── RegistryBehind                            DiracX's registry lags behind the DIRAC CS
        └── ExchangeMisconfigured .......... ECONF        URL, API key or route not set up
            ├── ExchangeOptionMissing                     the ProxyManager's CS lacks an option
            ├── ExchangeKeyRefused                        DiracX refuses the ProxyManager's API key
            └── ExchangeDisabled                          DiracX has the legacy exchange switched off

Anything else raised inside an adapter is a bug in the bridge; ``convertToReturnValue`` still
turns it into an ``S_ERROR`` rather than letting it escape into DIRAC.

No message may carry a secret: every message goes through :func:`redact`, which removes
anything that looks like a token, an API key or a bearer header.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from DIRACCommon.Core.Utilities import DErrno
from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR, SErrorException

_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT (access or refresh token)
    r"|diracx:legacy:[A-Za-z0-9_=+/-]+"  # a legacy-exchange API key
    # an Authorization header value, including DIRAC's "Bearer diracx:legacy:<key>" (the key's colons)
    r"|(?i:bearer)\s+(?:diracx:legacy:)?[A-Za-z0-9._~+/=-]+"
    # a presigned URL's signature (S3 query string)
    r"|(?i:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=[^&\s]+",
)

#: What to do about a proxy that cannot be used as it is.
NEW_PROXY = "run dirac-proxy-init to write a new proxy"


def redact(text: object) -> str:
    """``str(text)`` with every token-, key- or bearer-looking substring replaced."""
    return _SECRETS.sub("<redacted>", str(text))


def _restore(cls: type[BridgeError], message: str, state: dict[str, Any]) -> BridgeError:
    """Unpickle without calling ``cls.__init__``, whose arguments are not the message."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


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

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses build their message from other arguments: pickle the result, not the call
        # (multiprocessing hands exceptions back to the parent).
        return (_restore, (type(self), self.message, dict(self.__dict__)))


class ConfigurationError(BridgeError):
    """The CS lacks something the bridge needs, or two options contradict each other."""

    code = DErrno.ECONF

    def __init__(self, problem: str, *, fix: str) -> None:
        super().__init__(f"{problem}: {fix}")


class LegacyRefusal(BridgeError):
    """The answer the legacy service gives to this call, reproduced word for word.

    Most legacy refusals are a plain ``S_ERROR(text)`` (``Errno`` 0); ``code`` and ``extra`` (the
    keys legacy adds to some errors, e.g. ``InvalidJobIDs``) reproduce the others.
    """

    code = 0

    def __init__(self, message: str, *, code: int = 0, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code, extra=extra)

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> LegacyRefusal:
        """The ``S_ERROR`` a DIRAC function returned, kept as it is (message, ``Errno``, extra keys).

        ``S_ERROR(code, text)`` has already written the DErrno name into its message; building the
        refusal from ``text`` and ``code`` again would write it twice.
        """
        refusal = cls(str(result.get("Message", "")))
        refusal.result["Errno"] = int(result.get("Errno") or 0)
        refusal.result.update(  # type: ignore[typeddict-item]
            {k: v for k, v in result.items() if k not in ("OK", "Errno", "Message", "CallStack", "ExecInfo", "rpcStub")}
        )
        return refusal


class NotServed(BridgeError):
    """DiracX cannot serve a legacy method, and the admin allows no fallback to legacy for it."""

    code = errno.ENOTSUP

    def __init__(self, service: str, method: str, *, why: str) -> None:
        self.service, self.method = service, method
        super().__init__(
            f"{service}.{method} is not served by {why}. To send it to the legacy service, set "
            f"/DiracX/Bridge/{service}/LegacyFallback = yes; or turn /DiracX/FutureClientEnabled/{service} off"
        )


# --------------------------------------------------------------------------------------------
# The proxy file and its DIRACX block
# --------------------------------------------------------------------------------------------


def _where(path: str | os.PathLike[str] | None) -> str:
    return "the proxy" if path is None else f"the proxy {os.fspath(path)}"


class TokenFileError(BridgeError):
    """The proxy file's DiracX token cannot be read or written.

    ``problem`` says what is wrong (naming the file); the class adds what to do (``fix``, by
    default a new proxy). ``path`` is the file concerned. The message never contains token text.
    """

    code = DErrno.EATOKENREAD
    default_fix: str | None = NEW_PROXY

    def __init__(self, problem: str, path: str | os.PathLike[str] | None = None, *, fix: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        fix = self.default_fix if fix is None else fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class ProxyFileNotFound(TokenFileError, FileNotFoundError):
    """There is no proxy file where the caller's credentials should be."""

    code = DErrno.EPROXYFIND

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(
            f"No proxy at {os.fspath(path)}: run dirac-proxy-init -g <your group> to create one "
            "(or point X509_USER_PROXY at yours)",
            path,
            fix="",
        )
        self.errno, self.strerror, self.filename = errno.ENOENT, self.message, self.path


class NoTokenBlock(TokenFileError):
    """The proxy carries no DIRACX block."""

    code = DErrno.EATOKENFIND

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        super().__init__(
            f"{_where(path)} carries no DiracX token",
            path,
            fix="run dirac-proxy-init -g <your group> while DiracX is reachable to add one (it says why when it "
            "cannot). If your VO is not meant to use DiracX yet, the administrators list it in /DiracX/DisabledVOs "
            "and your calls stay on the legacy services",
        )


class NotAProxyFile(TokenFileError):
    """The file is empty, not a regular file, or its non-DIRACX part is not a certificate + key PEM."""


class MalformedTokenBlock(TokenFileError):
    """The DIRACX block is there but unusable: two blocks, cut off, bad base64, bad JSON, bad keys."""

    def __init__(self, defect: str, path: str | os.PathLike[str] | None) -> None:
        super().__init__(f"the DiracX token block of {_where(path)} {defect}", path)


class UnsafeTokenFile(TokenFileError):
    """The proxy may be read or changed by someone else, or is a link the bridge will not follow."""

    default_fix = None  # the problem names its own fix (chmod, rm, another path)


class TokenFileWriteError(TokenFileError):
    """The proxy cannot be rewritten (disk full, read-only directory...): a token can be kept in memory."""

    default_fix = None


class TokenFileLockError(TokenFileWriteError):
    """The proxy's lock cannot be taken."""


class TokenFileLockTimeout(TokenFileLockError, TimeoutError):
    """Another process held the proxy's lock for longer than the caller was prepared to wait."""

    def __init__(self, path: str | os.PathLike[str], seconds: float) -> None:
        super().__init__(
            f"another process has held the lock of {os.fspath(path)} for more than {seconds:g} s; it is probably "
            "refreshing the DiracX token",
            path,
            fix="retry. Locks die with their process, so if this persists look for a hung process of yours "
            f"holding it (fuser {os.fspath(path)})",
        )
        self.errno, self.strerror, self.filename = errno.ETIMEDOUT, self.message, self.path


class SessionExpired(BridgeError):
    """The refresh token is expired or revoked: only a new proxy (a new exchange) helps."""

    code = errno.EKEYEXPIRED

    def __init__(self, username: str, group: str, *, until: str, detail: str = "") -> None:
        said = f"; DiracX says: {detail}" if detail else ""
        super().__init__(
            f"The DiracX session of {username} (group {group}) has expired (refresh token valid until {until}{said}): "
            f"run dirac-proxy-init -g {group}"
        )


# --------------------------------------------------------------------------------------------
# Talking to DiracX
# --------------------------------------------------------------------------------------------


class DiracXError(BridgeError):
    """An HTTP conversation with DiracX did not give the answer needed."""


class DiracXUnreachable(DiracXError):
    """No HTTP answer from DiracX (connection refused, DNS, TLS, timeout)."""

    code = DErrno.ERESUNA

    def __init__(self, url: str, cause: str, *, doing: str = "", by: str = "") -> None:
        self.url = url
        from_where = f" from {by}" if by else ""
        while_doing = f"; {doing} was not done" if doing else ""
        super().__init__(
            f"DiracX at {url} is unreachable{from_where} ({cause}){while_doing}. "
            "Check /DiracX/URL and that the server is up"
        )


class DiracXServerError(DiracXError):
    """DiracX answered 5xx, or something that is not what DiracX answers."""

    code = DErrno.ERESUNA

    def __init__(self, url: str, doing: str, *, status: int | None = None, detail: str = "") -> None:
        self.status = status
        what = f"HTTP {status}: {detail}" if status is not None else detail or "an answer that is not DiracX's"
        super().__init__(f"DiracX at {url} failed on {doing} ({what}); see the DiracX server logs")


class Unauthenticated(DiracXError):
    """DiracX answered 401 to a token the bridge believed valid."""

    code = DErrno.ENOAUTH

    def __init__(self, url: str, doing: str, *, who: str, group: str, detail: str) -> None:
        super().__init__(
            f"DiracX at {url} did not accept the token of {who} for {doing} ({detail}): "
            f"run dirac-proxy-init -g {group} to get a new one"
        )


class Forbidden(DiracXError):
    """DiracX answered 403: the identity lacks a property, or does not own a job."""

    code = errno.EPERM

    def __init__(self, doing: str, *, who: str, requires: str = "") -> None:
        super().__init__(f"DiracX refused {doing} to {who}" + (f": this needs {requires}" if requires else ""))


class DiracXRejected(DiracXError):
    """DiracX answered 4xx: the request itself was refused (bad value, unknown job...).

    ``status`` and ``detail`` let an adapter turn a refusal it understands into the legacy
    service's own answer (e.g. an unknown attribute).
    """

    code = DErrno.EVALUE

    def __init__(self, doing: str, *, status: int, detail: str) -> None:
        self.status = status
        self.detail = redact(detail)
        super().__init__(f"DiracX refused {doing} (HTTP {status}): {detail}")


# --------------------------------------------------------------------------------------------
# Sandboxes (DiracX's S3 store)
# --------------------------------------------------------------------------------------------

#: What the legacy SandboxStore service accepts by default (``MaxSandboxSizeMiB``), for messages.
LEGACY_SANDBOX_LIMIT_MIB = 10


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


class SandboxError(BridgeError):
    """A sandbox could not be moved to or from DiracX's store; messages never carry a presigned URL."""


class SandboxTooLarge(SandboxError):
    """DiracX refused the sandbox for its size (its answer names the limit; by default 100 MiB)."""

    code = DErrno.EFILESIZE

    def __init__(self, size: int, limit: int | None) -> None:
        self.size, self.limit = size, limit
        said = f"{limit} bytes ({_mib(limit)})" if limit is not None else "its configured maximum"
        super().__init__(
            f"The sandbox is {size} bytes ({_mib(size)}): DiracX accepts at most {said} (the legacy SandboxStore "
            f"accepted {LEGACY_SANDBOX_LIMIT_MIB} MiB by default, MaxSandboxSizeMiB). Put the large files on a grid "
            "storage element and list them as LFNs (lfn:...) instead, or ask the DiracX administrators to raise "
            "the limit"
        )


class SandboxFormatRefused(SandboxError):
    """DiracX does not accept the archive format the bridge was configured to write."""

    code = DErrno.EVALUE

    def __init__(self, fmt: str, detail: str = "") -> None:
        said = f" ({detail})" if detail else ""
        super().__init__(
            f"DiracX refuses sandboxes of format {fmt}{said}: it accepts tar.bz2 and tar.zst; set "
            "/DiracX/Bridge/WorkloadManagement/SandboxStore/Format to one of them"
        )


class SandboxChecksumMismatch(SandboxError):
    """The downloaded bytes do not hash to the checksum the PFN names: nothing was kept."""

    code = DErrno.EBADCKS

    def __init__(self, location: str, expected: str, got: str) -> None:
        super().__init__(
            f"The sandbox {location} read from the store has sha256 {got}, not {expected} as its name says: "
            "it was discarded. Retry; if it persists the stored copy is damaged, ask the DiracX administrators"
        )


class SandboxStorageError(SandboxError):
    """The S3 store did not take or give the bytes (unreachable, refused, expired URL, cut off).

    ``where`` names the store by scheme and host only: the presigned URL itself is a credential.
    """

    code = DErrno.ERESUNA

    def __init__(self, doing: str, where: str, cause: str, *, attempts: int = 1) -> None:
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        kept = " Nothing was assigned to any job;" if doing.startswith("Uploading") else ""
        super().__init__(
            f"{doing} failed at the sandbox store {where}{tried} ({cause}).{kept} Retry later, and if it "
            "persists ask the DiracX administrators to check the S3 store"
        )


class SandboxOfAnotherUser(SandboxError):
    """DiracX answered 403 for a sandbox: only its owner, or a JobAdministrator, may read it."""

    code = errno.EPERM

    def __init__(self, location: str, *, who: str, owner: str | None) -> None:
        whose = f"belongs to {owner}" if owner else "is not yours"
        super().__init__(
            f"Not authorized to access sandbox {location}: it {whose}, and DiracX lets only its owner or a "
            f"JobAdministrator read it (legacy JobSharing is not honoured); {who} may not. Ask its owner for it"
        )


class SandboxTempFileError(SandboxError):
    """The local temporary archive could not be written or read (disk full, rights, a planted link)."""

    code = DErrno.ECTMPF

    def __init__(self, doing: str, directory: str, cause: str) -> None:
        super().__init__(
            f"Cannot {doing} in {directory} ({cause}): free some space there, or point TMPDIR at a directory "
            "with room for the sandbox"
        )


class UnsafeSandboxArchive(SandboxError):
    """A member of the archive would be written outside the destination (absolute path, ``..``, link)."""

    code = DErrno.EVALUE

    def __init__(self, location: str, detail: str) -> None:
        super().__init__(
            f"Could not open bundle: the sandbox {location} holds a member that would be written outside the "
            f"destination ({detail}); nothing beyond the destination directory was written"
        )


# --------------------------------------------------------------------------------------------
# The ProxyManager's legacy exchange
# --------------------------------------------------------------------------------------------


class ExchangeError(BridgeError):
    """The ProxyManager could not exchange a proxy for a DiracX token."""


class ExchangeRefused(ExchangeError):
    """DiracX will not mint a token for this identity (unknown user, group, VO or property)."""

    code = DErrno.ENOAUTH


class GroupWithoutVO(ExchangeRefused):
    def __init__(self, group: str) -> None:
        super().__init__(
            f"group {group} belongs to no VO in the DIRAC Registry, so DiracX cannot mint a token for it: "
            f"ask the DIRAC administrators to set /Registry/Groups/{group}/VO"
        )


class VONotInDiracX(ExchangeRefused):
    def __init__(self, vo: str) -> None:
        super().__init__(
            f"VO {vo} is not in /DiracX/CsSync/VOs, so DiracX does not know it: ask the DIRAC administrators "
            f"to add it there and run cs-sync (or to list {vo} in /DiracX/DisabledVOs until it moves to DiracX)"
        )


class UserWithoutSubject(ExchangeRefused):
    def __init__(self, user: str, vo: str) -> None:
        super().__init__(
            f"user {user} has no subject in /DiracX/CsSync/VOs/{vo}/UserSubjects: ask your VO admin to add "
            f"{user}'s identity-provider subject there (DiracX learns its users from it through cs-sync)"
        )


class RegistryBehind(ExchangeRefused):
    """DiracX's registry disagrees with the DIRAC CS: a user, group or property it does not know yet."""

    def __init__(self, user: str, group: str, *, vo: str | None = None, detail: str) -> None:
        if vo is None:  # 403: the group is known, a property is not
            message = (
                f"DiracX refused a token to {user} for group {group} ({detail}): DiracX's registry disagrees with "
                "the DIRAC CS about this user's groups or properties; ask the DIRAC administrators to run cs-sync"
            )
        else:
            message = (
                f"DiracX does not know user {user} in group {group} of VO {vo} (it answered: {detail}), although "
                "the DIRAC CS has them: DiracX's registry lags behind; ask the DIRAC administrators to run cs-sync"
            )
        super().__init__(message)


class ExchangeMisconfigured(ExchangeError):
    """The ProxyManager or DiracX is not set up for the legacy exchange (URL, key, route disabled)."""

    code = DErrno.ECONF


class ExchangeOptionMissing(ExchangeMisconfigured):
    _FIX: ClassVar[dict[str, str]] = {
        "URL": "the DIRAC administrators must set it (or list the VO in /DiracX/DisabledVOs)",
        "LegacyExchangeApiKey": "the DIRAC administrators must set it on the ProxyManager's host "
        "(dirac-configure --LegacyExchangeApiKey=...)",
    }

    def __init__(self, option: str) -> None:
        name = option.rpartition("/")[2]
        fix = self._FIX.get(name, "ask the DIRAC administrators to set it (or to list your VO in /DiracX/DisabledVOs)")
        super().__init__(
            f"the ProxyManager's configuration has no {option}, so it cannot exchange proxies for DiracX tokens: {fix}"
        )


class ExchangeKeyRefused(ExchangeMisconfigured):
    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"DiracX at {url} refused the ProxyManager's legacy-exchange API key ({detail}): the DIRAC administrators "
            "must make /DiracX/LegacyExchangeApiKey of the ProxyManager match DiracX's "
            "DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY"
        )


class ExchangeDisabled(ExchangeMisconfigured):
    def __init__(self, url: str, detail: str, vo: str) -> None:
        super().__init__(
            f"DiracX at {url} has the legacy exchange switched off ({detail}): the DiracX administrators must set "
            f"DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY (or the DIRAC administrators list {vo} in /DiracX/DisabledVOs)"
        )
