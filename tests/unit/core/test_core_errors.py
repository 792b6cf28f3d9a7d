"""errors.py: secrets never reach a message; each failure has its DErrno/errno code and S_ERROR form."""

from __future__ import annotations

import errno

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


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.BridgeError, DErrno.EWMSUKN),
        (errors.ConfigurationError, DErrno.ECONF),
        (errors.CredentialsNotFound, DErrno.EPROXYFIND),
        (errors.TokenNotFound, DErrno.EATOKENFIND),
        (errors.TokenUnreadable, DErrno.EATOKENREAD),
        (errors.SessionExpired, errno.EKEYEXPIRED),
        (errors.DiracXUnreachable, DErrno.ERESUNA),
        (errors.Unauthenticated, DErrno.ENOAUTH),
        (errors.Forbidden, errno.EPERM),
        (errors.DiracXServerError, DErrno.ERESUNA),
        (errors.NotServed, errno.ENOTSUP),
    ],
)
def test_error_classes_have_their_code_and_s_error(cls: type[errors.BridgeError], code: int) -> None:
    exc = cls("what happened; run dirac-proxy-init")
    assert isinstance(exc, SErrorException)
    assert cls.code == code
    result = exc.result
    assert result["OK"] is False
    assert result["Errno"] == code
    assert DErrno.cmpError(result, code)
    assert "what happened; run dirac-proxy-init" in result["Message"]
    assert result["CallStack"] == []
    assert str(exc) == "what happened; run dirac-proxy-init"


def test_diracx_rejected_keeps_status_and_detail() -> None:
    exc = errors.DiracXRejected("DiracX refused x (HTTP 422): bad value", status=422, detail="bad value")
    assert exc.status == 422
    assert exc.detail == "bad value"
    assert exc.result["Errno"] == DErrno.EVALUE
    assert "bad value" in exc.result["Message"]


def test_code_override_and_extra_keys() -> None:
    exc = errors.BridgeError("Unknown job attribute: Foo", code=0)
    assert exc.result["Errno"] == 0
    assert exc.result["Message"] == "Unknown job attribute: Foo"  # errno 0: the text alone, as legacy S_ERROR
    with_extra = errors.Forbidden("no", extra={"NonauthorizedJobIDs": [3]})
    assert with_extra.result["NonauthorizedJobIDs"] == [3]
    assert with_extra.result["Errno"] == errno.EPERM


def test_messages_are_redacted_at_construction() -> None:
    token = access_jwt()
    exc = errors.DiracXServerError(f"failed with Authorization: Bearer {token}")
    assert token not in str(exc)
    assert token not in exc.result["Message"]
    assert token not in repr(exc.result)


def test_convert_to_return_value_gives_the_bridge_s_error() -> None:
    @convertToReturnValue
    def fails() -> None:
        raise errors.TokenNotFound("no token")

    result = fails()
    assert result["OK"] is False
    assert result["Errno"] == DErrno.EATOKENFIND
    assert "ExecInfo" not in result
