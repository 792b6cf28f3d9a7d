"""errors.py: secrets never reach a message; each failure has its DErrno/errno code and S_ERROR form."""

from __future__ import annotations

import errno
import pickle

import pytest
from core_test_helpers import access_jwt, refresh_jwt
from DIRACCommon.Core.Utilities import DErrno
from DIRACCommon.Core.Utilities.ReturnValues import SErrorException, convertToReturnValue

from diracx_bridge import errors
from diracx_bridge.errors import redact

LEGACY_KEY = "diracx:legacy:AbCdEfGh_-12345678AbCdEfGh_-12345678AbCdEfGh=="


@pytest.mark.parametrize(
    "secret",
    [access_jwt(), refresh_jwt(), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJhbGci.eyJzdWIi."],
)
def test_redact_removes_jwts(secret: str) -> None:
    text = redact(f"the token {secret} was refused")
    assert secret not in text
    assert "eyJ" not in text
    assert text == "the token <redacted> was refused"


def test_redact_removes_legacy_exchange_keys() -> None:
    text = redact(f"exchange with {LEGACY_KEY} failed")
    assert "diracx:legacy:" not in text
    assert "AbCdEfGh" not in text
    assert text == "exchange with <redacted> failed"


@pytest.mark.parametrize("header", ["Bearer abc.def-ghi", "bearer   opaque_token~value", "BEARER x/y+z="])
def test_redact_removes_bearer_values(header: str) -> None:
    text = redact(f"headers: {{'Authorization': '{header}'}}")
    assert header.rsplit(maxsplit=1)[-1] not in text
    assert "<redacted>" in text


def test_redact_bearer_legacy_key_header() -> None:
    text = redact(f"Authorization: Bearer {LEGACY_KEY}")
    assert "AbCdEfGh" not in text
    assert "legacy" not in text


def test_redact_keeps_ordinary_text() -> None:
    text = "Job 1234 is not owned by alice (group dirac_user); see https://diracx.example.org/api/jobs"
    assert redact(text) == text
    assert redact(RuntimeError("x")) == "x"  # any object: its str()


#: One instance of every class of the tree, built as the bridge builds it, with its DErrno code
#: and a part of the message the class itself adds (the cause, the fix).
EXAMPLES = [
    (errors.BridgeError("what happened"), DErrno.EWMSUKN, "what happened"),
    (errors.ConfigurationError("/DiracX/URL is not set", fix="ask the admins"), DErrno.ECONF, ": ask the admins"),
    (errors.LegacyRefusal("Unknown method x"), 0, "Unknown method x"),
    (errors.NotServed("A/B", "m", why="DiracX 9"), errno.ENOTSUP, "/DiracX/Bridge/A/B/LegacyFallback = yes"),
    (errors.TokenFileError("the proxy p is odd", "p"), DErrno.EATOKENREAD, "; run dirac-proxy-init"),
    (errors.ProxyFileNotFound("/tmp/p"), DErrno.EPROXYFIND, "No proxy at /tmp/p: run dirac-proxy-init -g"),
    (errors.NoTokenBlock("/tmp/p"), DErrno.EATOKENFIND, "the proxy /tmp/p carries no DiracX token"),
    (errors.MalformedTokenBlock("is not valid base64", "/tmp/p"), DErrno.EATOKENREAD, "token block of the proxy"),
    (errors.UnsafeTokenFile("p is group-readable: chmod 600 p", "p"), DErrno.EATOKENREAD, "chmod 600 p"),
    (errors.TokenFileLockTimeout("/tmp/p", 30), DErrno.EATOKENREAD, "for more than 30 s"),
    (errors.SessionExpired("ann", "g", until="soon"), errno.EKEYEXPIRED, "run dirac-proxy-init -g g"),
    (errors.DiracXUnreachable("http://x", "refused", doing="ping"), DErrno.ERESUNA, "ping was not done"),
    (errors.DiracXServerError("http://x", "ping", status=500, detail="boom"), DErrno.ERESUNA, "HTTP 500: boom"),
    (errors.Unauthenticated("http://x", "ping", who="ann", group="g", detail="no"), DErrno.ENOAUTH, "-g g"),
    (errors.Forbidden("reading jobs", who="ann", requires="JobAdministrator"), errno.EPERM, "needs JobAdministrator"),
    (errors.DiracXRejected("reading jobs", status=422, detail="bad"), DErrno.EVALUE, "(HTTP 422): bad"),
    (errors.ExchangeRefused("DiracX does not know ann"), DErrno.ENOAUTH, "does not know ann"),
    (errors.GroupWithoutVO("g"), DErrno.ENOAUTH, "set /Registry/Groups/g/VO"),
    (errors.VONotInDiracX("v"), DErrno.ENOAUTH, "VO v is not in /DiracX/CsSync/VOs"),
    (errors.UserWithoutSubject("ann", "v"), DErrno.ENOAUTH, "/DiracX/CsSync/VOs/v/UserSubjects"),
    (errors.RegistryBehind("ann", "g", vo="v", detail="no"), DErrno.ENOAUTH, "run cs-sync"),
    (errors.ExchangeMisconfigured("no key"), DErrno.ECONF, "no key"),
    (errors.ExchangeOptionMissing("/DiracX/URL"), DErrno.ECONF, "has no /DiracX/URL"),
    (errors.ExchangeKeyRefused("http://x", "bad"), DErrno.ECONF, "DIRACX_LEGACY_EXCHANGE_HASHED_API_KEY"),
    (errors.ExchangeDisabled("http://x", "off", "v"), DErrno.ECONF, "list v in /DiracX/DisabledVOs"),
]


@pytest.mark.parametrize(("exc", "code", "part"), EXAMPLES, ids=[type(e).__name__ for e, _, _ in EXAMPLES])
def test_each_error_builds_its_message_and_s_error(exc: errors.BridgeError, code: int, part: str) -> None:
    assert isinstance(exc, SErrorException)
    assert type(exc).code == code
    result = exc.result
    assert result["OK"] is False
    assert result["Errno"] == code
    assert DErrno.cmpError(result, code) or code == 0  # cmpError treats 0 as "no code"
    assert part in result["Message"]
    assert result["CallStack"] == []
    assert str(exc) == exc.message
    if code:
        assert exc.message in result["Message"]
    else:
        assert result["Message"] == exc.message  # errno 0: the text alone, as a legacy S_ERROR


@pytest.mark.parametrize(("exc", "code", "part"), EXAMPLES, ids=[type(e).__name__ for e, _, _ in EXAMPLES])
def test_errors_survive_pickling(exc: errors.BridgeError, code: int, part: str) -> None:
    """multiprocessing hands exceptions back to the parent: the message and the fields come back."""
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc)
    assert again.message == exc.message
    assert again.result["Errno"] == code
    assert getattr(again, "path", None) == getattr(exc, "path", None)


def test_the_tree_drawn_in_the_module_docstring_is_the_real_one() -> None:
    """Every class of errors.py is in the drawing, under the parent it really has."""
    import inspect
    import re

    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^\s*([│ ]*)(?:├── |└── )?([A-Z][A-Za-z]+)\b", line)
        if match and match.group(2) in vars(errors):
            drawn[match.group(2)] = len(match.group(1)) // 4 + (0 if line.strip().startswith("Bridge") else 1)
    classes = {n: c for n, c in vars(errors).items() if inspect.isclass(c) and issubclass(c, errors.BridgeError)}
    assert set(drawn) == set(classes)


def test_file_errors_are_also_the_python_errors_callers_expect() -> None:
    assert isinstance(errors.ProxyFileNotFound("/p"), FileNotFoundError)
    assert isinstance(errors.TokenFileLockTimeout("/p", 1), TimeoutError)


def test_diracx_rejected_keeps_status_and_detail() -> None:
    exc = errors.DiracXRejected("reading x", status=422, detail="bad value")
    assert exc.status == 422
    assert exc.detail == "bad value"
    assert exc.result["Errno"] == DErrno.EVALUE
    assert "bad value" in exc.result["Message"]


def test_code_override_and_extra_keys() -> None:
    exc = errors.LegacyRefusal("Unknown job attribute: Foo")
    assert exc.result["Errno"] == 0
    assert exc.result["Message"] == "Unknown job attribute: Foo"  # errno 0: the text alone, as legacy S_ERROR
    with_extra = errors.LegacyRefusal("no", code=errno.EPERM, extra={"NonauthorizedJobIDs": [3]})
    assert with_extra.result["NonauthorizedJobIDs"] == [3]
    assert with_extra.result["Errno"] == errno.EPERM


def test_a_dirac_s_error_is_kept_as_it_is() -> None:
    """``S_ERROR(code, text)`` already names its DErrno: the refusal must not name it twice."""
    from DIRACCommon.Core.Utilities.ReturnValues import S_ERROR

    legacy = S_ERROR(DErrno.EWMSJDL, "Illegal number of job parameters 0")
    legacy["Status"] = "Failed"
    exc = errors.LegacyRefusal.of(legacy)
    assert (
        exc.result["Message"]
        == legacy["Message"]
        == "Invalid job description ( 1501 : Illegal number of job parameters 0)"
    )
    assert exc.result["Errno"] == DErrno.EWMSJDL
    assert exc.result["Status"] == "Failed"
    assert exc.result["CallStack"] == []  # the bridge's own stack, not DIRAC's
    plain = errors.LegacyRefusal.of({"OK": False, "Message": f"no, Bearer {access_jwt()}", "rpcStub": ["x"]})
    assert plain.result["Errno"] == 0 and "rpcStub" not in plain.result
    assert "eyJ" not in plain.result["Message"]


def test_messages_are_redacted_at_construction() -> None:
    token = access_jwt()
    exc = errors.DiracXServerError("http://x", "a refresh", detail=f"failed with Authorization: Bearer {token}")
    assert token not in str(exc)
    assert token not in exc.result["Message"]
    assert token not in repr(exc.result)


def test_convert_to_return_value_gives_the_bridge_s_error() -> None:
    @convertToReturnValue
    def fails() -> None:
        raise errors.NoTokenBlock("/tmp/p")

    result = fails()
    assert result["OK"] is False
    assert result["Errno"] == DErrno.EATOKENFIND
    assert "ExecInfo" not in result
