"""Bad proxy files: each gives a clear error naming the file and the fix, leaves the file as it was,
and no message, repr or log line ever contains token text."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import stat
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bundle_test_helpers import jwt_like, write_private

from diracx_bridge.errors import (
    MalformedTokenBlock,
    NotAProxyFile,
    NoTokenBlock,
    ProxyFileNotFound,
    TokenFileError,
    UnsafeTokenFile,
)
from diracx_bridge.tokens import (
    PEM_BEGIN,
    PEM_END,
    DiracxToken,
    decode_block,
    encode_block,
    read_token,
    remove_token,
    update_token,
    write_token,
)

#: Every token string a test put in a file; no error text may contain any of them (or a JWT segment).
SECRETS: list[str] = []


def secret_token(expires_on: int = 2_000_000_000) -> DiracxToken:
    token = DiracxToken(jwt_like("access"), jwt_like("refresh"), expires_on)
    SECRETS.extend([token.access_token, token.refresh_token])
    return token


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        for part in (secret, *secret.split(".")):
            assert part not in text, "token text leaked"


def raw_block(payload: bytes) -> str:
    data = base64.b64encode(payload).decode()
    return PEM_BEGIN + "\n" + "\n".join(data[i : i + 64] for i in range(0, len(data), 64)) + "\n" + PEM_END + "\n"


def snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st = path.lstat()
    return (path.read_bytes() if path.is_file() else b"", st.st_mode, st.st_uid, st.st_ino)


def check_error(exc: BaseException, path: Path, *fragments: str) -> None:
    """Names the file, says what is wrong (``fragments``), says what to do, leaks nothing."""
    message = str(exc)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert any(hint in message for hint in ("dirac-proxy-init", "chmod 600", "rm ", "X509_USER_PROXY", "retry"))
    assert "[Errno" not in message
    assert_no_secret(message)
    assert_no_secret(repr(exc))
    assert_no_secret("".join(traceback.format_exception(exc)))


@pytest.fixture
def all_writers(make_token) -> Iterator[dict[str, Callable[[Path], object]]]:
    yield {
        "write": lambda p: write_token(p, secret_token()),
        "remove": remove_token,
        "update": lambda p: update_token(p, lambda current: secret_token()),
    }


# ---- reading -------------------------------------------------------------------------------


def test_no_block(proxy_file: Path) -> None:
    with pytest.raises(NoTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "no DiracX token", "DisabledVOs")


def test_two_blocks(proxy_file: Path, proxy_pem: str) -> None:
    from DIRAC.Core.Security.DiracX import diracxTokenFromPEM

    write_private(proxy_file, proxy_pem + encode_block(secret_token()) + encode_block(secret_token()))
    before = snapshot(proxy_file)
    with pytest.raises(MalformedTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "2 DiracX token blocks")
    with pytest.raises(ValueError, match="multiple"):  # DIRAC refuses it too
        diracxTokenFromPEM(str(proxy_file))
    assert snapshot(proxy_file) == before
    # A write repairs it into one block, key material untouched.
    token = secret_token()
    write_token(proxy_file, token)
    assert proxy_file.read_text() == proxy_pem + encode_block(token)


def test_truncated_block(proxy_file: Path, proxy_pem: str, all_writers) -> None:
    cut = encode_block(secret_token())[:150]
    write_private(proxy_file, proxy_pem + cut)
    before = snapshot(proxy_file)
    with pytest.raises(MalformedTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "without its", "truncated")
    for name, writer in all_writers.items():
        with pytest.raises(MalformedTokenBlock) as info:
            writer(proxy_file)
        check_error(info.value, proxy_file, "truncated")
        assert snapshot(proxy_file) == before, name


def test_end_without_begin(proxy_file: Path, proxy_pem: str) -> None:
    write_private(proxy_file, proxy_pem + PEM_END + "\n")
    with pytest.raises(MalformedTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "without its")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not*base64*at*all!", "not valid base64"),
        ("", "is empty"),
        (base64.b64encode(b"\xff\xfe{{").decode(), "does not hold JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "JSON list"),
    ],
)
def test_garbage_block(proxy_file: Path, proxy_pem: str, body: str, fragment: str) -> None:
    write_private(proxy_file, f"{proxy_pem}{PEM_BEGIN}\n{body}\n{PEM_END}\n")
    before = snapshot(proxy_file)
    with pytest.raises(MalformedTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, fragment)
    assert snapshot(proxy_file) == before


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"refresh_token": None}, "no refresh_token"),
        ({"access_token": None}, "no access_token"),
        ({"expires_on": None}, "no expires_on"),
        ({"expires_on": "SECRET-IN-A-WRONG-PLACE"}, "expires_on must be an int"),
        ({"expires_on": True}, "expires_on must be an int"),
        ({"access_token": 12345}, "access_token must be a str"),
        ({"refresh_token": ""}, "refresh_token must not be empty"),
    ],
)
def test_bad_json_content(proxy_file: Path, proxy_pem: str, change: dict, fragment: str) -> None:
    SECRETS.append("SECRET-IN-A-WRONG-PLACE")
    data = {**secret_token().as_dict(), **change}
    data = {key: value for key, value in data.items() if value is not None}
    write_private(proxy_file, proxy_pem + raw_block(json.dumps(data).encode()))
    with pytest.raises(MalformedTokenBlock) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, fragment)


def test_empty_file(proxy_file: Path, all_writers) -> None:
    write_private(proxy_file, b"")
    with pytest.raises(NotAProxyFile) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "is empty")
    for name, writer in all_writers.items():
        if name == "remove":
            assert remove_token(proxy_file) is False  # nothing to remove, nothing written
            continue
        with pytest.raises(NotAProxyFile) as info:
            writer(proxy_file)
        check_error(info.value, proxy_file, "no certificate or private key")
        assert proxy_file.read_bytes() == b""


def test_missing_file(tmp_path: Path, all_writers) -> None:
    path = tmp_path / "x509up_u12345"
    with pytest.raises(ProxyFileNotFound) as info:
        read_token(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, TokenFileError)
    assert info.value.filename == str(path)
    check_error(info.value, path, "No proxy at")
    for writer in all_writers.values():
        with pytest.raises(ProxyFileNotFound):
            writer(path)
    assert list(tmp_path.iterdir()) == []  # no lock file left next to a proxy that is not there


def test_directory_is_not_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(NotAProxyFile) as info:
        read_token(tmp_path)
    check_error(info.value, tmp_path, "not a regular file")


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    with pytest.raises(NotAProxyFile):
        read_token(path)


def test_huge_file_is_not_read(tmp_path: Path, proxy_pem: str) -> None:
    path = write_private(tmp_path / "big", proxy_pem + "#" * (2 << 20))
    with pytest.raises(NotAProxyFile, match="larger than"):
        read_token(path)


# ---- unsafe files ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610])
def test_group_or_world_accessible(proxy_file: Path, proxy_pem: str, mode: int, all_writers) -> None:
    write_private(proxy_file, proxy_pem + encode_block(secret_token()))
    os.chmod(proxy_file, mode)
    before = snapshot(proxy_file)
    with pytest.raises(UnsafeTokenFile) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, f"mode {mode:04o}", f"chmod 600 {proxy_file}")
    for name, writer in all_writers.items():
        with pytest.raises(UnsafeTokenFile):
            writer(proxy_file)
        assert snapshot(proxy_file) == before, name


def test_0400_is_accepted(proxy_file: Path, proxy_pem: str) -> None:
    token = secret_token()
    write_private(proxy_file, proxy_pem + encode_block(token))
    os.chmod(proxy_file, 0o400)
    assert read_token(proxy_file) == token
    write_token(proxy_file, secret_token())
    assert stat.S_IMODE(proxy_file.stat().st_mode) == 0o400  # a read-only proxy stays read-only


def test_owned_by_another_user(proxy_file: Path, proxy_pem: str, all_writers) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root (os.chown); CI runs this suite as root")
    write_private(proxy_file, proxy_pem + encode_block(secret_token()))
    os.chown(proxy_file, 4242, -1)
    before = snapshot(proxy_file)
    with pytest.raises(UnsafeTokenFile) as info:
        read_token(proxy_file)
    check_error(info.value, proxy_file, "belongs to uid 4242", f"uid {os.geteuid()}")
    for name, writer in all_writers.items():
        with pytest.raises(UnsafeTokenFile):
            writer(proxy_file)
        assert snapshot(proxy_file) == before, name


def test_symlink(tmp_path: Path, proxy_file: Path, proxy_pem: str, all_writers) -> None:
    """A link of the user's own is followed, for reading and writing (the policy of docs/tokens.md)."""
    token = secret_token()
    write_private(proxy_file, proxy_pem + encode_block(token))
    link = tmp_path / "link-to-proxy"
    link.symlink_to(proxy_file)
    assert read_token(link) == token
    for name, writer in all_writers.items():
        writer(link)
        assert link.is_symlink(), name
    assert proxy_file.read_text().startswith(proxy_pem)


def test_symlink_to_a_group_readable_file_is_refused_on_read(tmp_path: Path, proxy_file: Path) -> None:
    os.chmod(proxy_file, 0o644)
    link = tmp_path / "link"
    link.symlink_to(proxy_file)
    with pytest.raises(UnsafeTokenFile, match="chmod 600"):
        read_token(link)


# ---- what is not a proxy is never written --------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "no certificate or private key"),
        ("just some text\n", "no certificate"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "no private key"),
        ("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "no certificate"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n", "without its END"),
        ("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "damaged"),
    ],
)
def test_refuses_to_write_without_a_proxy(tmp_path: Path, content: str, fragment: str, all_writers) -> None:
    path = write_private(tmp_path / "proxy", content + encode_block(secret_token()))
    before = snapshot(path)
    for name, writer in all_writers.items():
        with pytest.raises(NotAProxyFile) as info:
            writer(path)
        check_error(info.value, path, fragment)
        assert snapshot(path) == before, name


def test_update_sees_damaged_block_as_none_and_repairs(proxy_file: Path, proxy_pem: str, caplog) -> None:
    write_private(proxy_file, f"{proxy_pem}{PEM_BEGIN}\n!!!garbage!!!\n{PEM_END}\n")
    seen = []
    new = secret_token()
    with caplog.at_level(logging.WARNING):
        update_token(proxy_file, lambda current: seen.append(current) or new)
    assert seen == [None]
    assert "not valid base64" in caplog.text
    assert proxy_file.read_text() == proxy_pem + encode_block(new)


def test_update_fn_failure_leaves_file_alone(proxy_file: Path, proxy_pem: str) -> None:
    write_private(proxy_file, proxy_pem + encode_block(secret_token()))
    before = snapshot(proxy_file)

    def boom(current: DiracxToken | None) -> DiracxToken:
        raise RuntimeError("refresh failed")

    with pytest.raises(RuntimeError, match="refresh failed"):
        update_token(proxy_file, boom)
    assert snapshot(proxy_file) == before
    with pytest.raises(TypeError, match="must return a DiracxToken"):
        update_token(proxy_file, lambda current: current.as_dict())
    assert snapshot(proxy_file) == before


def test_update_not_called_when_file_cannot_be_written(tmp_path: Path) -> None:
    path = write_private(tmp_path / "proxy", encode_block(secret_token()))
    calls = []
    with pytest.raises(NotAProxyFile):
        update_token(path, calls.append)
    assert calls == []


def test_write_rejects_non_tokens(proxy_file: Path) -> None:
    with pytest.raises(TypeError):
        write_token(proxy_file, {"access_token": "a", "refresh_token": "r", "expires_on": 1})


# ---- no token text anywhere ----------------------------------------------------------------


def test_repr_and_str_hide_tokens(make_token) -> None:
    token = secret_token(expires_on=1_700_000_000)
    for text in (repr(token), str(token), f"{token}", f"{token!r}", repr([token]), repr({"t": token})):
        assert_no_secret(text)
        assert "1700000000" in text
        assert "2023-11-14T22:13:20Z" in text
        assert token.fingerprint in text
    assert token.fingerprint != secret_token().fingerprint
    with pytest.raises(ValueError, match="out of range"):
        DiracxToken("a", "r", 10**20)


def test_logs_hide_tokens(proxy_file: Path, proxy_pem: str, caplog) -> None:
    """Debug logging of every operation, including the warning about a damaged block, shows no token."""
    damaged = {**secret_token().as_dict()}
    del damaged["refresh_token"]
    write_private(proxy_file, proxy_pem + raw_block(json.dumps(damaged).encode()))
    with caplog.at_level(logging.DEBUG):
        update_token(proxy_file, lambda current: secret_token())
        write_token(proxy_file, secret_token())
        remove_token(proxy_file)
    assert "no refresh_token" in caplog.text
    assert_no_secret(caplog.text)


def test_decode_block_pure_helper(make_token) -> None:
    token = secret_token()
    assert decode_block(encode_block(token)) == token
    assert decode_block("junk before\n" + encode_block(token) + "junk after", "/some/where") == token
    with pytest.raises(NoTokenBlock, match="the proxy /some/where"):
        decode_block("nothing here", "/some/where")
    with pytest.raises(MalformedTokenBlock, match="2 DiracX token blocks"):
        decode_block(encode_block(token) * 2)


def test_token_constructor_messages_hide_values() -> None:
    with pytest.raises(TypeError) as info:
        DiracxToken("SECRET-VALUE", b"SECRET-BYTES", 1)
    assert "SECRET" not in str(info.value)


def test_errors_pickle_with_their_path(tmp_path: Path) -> None:
    try:
        read_token(tmp_path / "missing")
    except ProxyFileNotFound as exc:
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is ProxyFileNotFound
        assert (str(clone), clone.path) == (str(exc), str(tmp_path / "missing"))
