"""The hardening findings of "Token files that another local user cannot break", one test (or more) each.

Every test here failed on the code before the fix it names (see the commit that added it).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import stat
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tokens_test_helpers import NOBODY, Refresher, access, refresh
from unit_helpers import run_as

from diracx_bridge import errors, identity, log, session
from diracx_bridge.proxy_token_exchange.cli import whoami
from diracx_bridge.proxy_token_exchange.info import when
from diracx_bridge.settings import BridgeSettings
from diracx_bridge.tokens import PEM_BEGIN, PEM_END, DiracxToken, locked, read_token, write_token

URL = "http://diracx.invalid"
SETTINGS = BridgeSettings(URL, frozenset(), 5.0, 30.0, 0, 1000)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return path


def raw_block(payload: bytes) -> str:
    data = base64.b64encode(payload).decode()
    return PEM_BEGIN + "\n" + "\n".join(data[i : i + 64] for i in range(0, len(data), 64)) + "\n" + PEM_END + "\n"


def forged_jwt(payload: bytes) -> str:
    """A JWT-shaped string with this exact payload text (PyJWT cannot write ``1e400``)."""
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{head}.{body}.c2lnbmF0dXJl"


def stale_token() -> DiracxToken:
    """Access token used up (``expires_on`` past), refresh token good."""
    return DiracxToken(access(), refresh(), int(time.time()) - 5)


def user_process(proxy: Path, dx: Refresher) -> tuple[session.TokenAuth, httpx.Client]:
    auth = session.TokenAuth(proxy, URL, SETTINGS)
    auth.lock_timeout = 0.5
    transport = httpx.MockTransport(dx.handle)
    auth._refresh_client = httpx.Client(transport=transport)
    return auth, httpx.Client(base_url=URL, auth=auth, transport=transport)


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the bridge says through gLogger (warnings and above)."""
    messages: list[str] = []

    class Logger:
        def warn(self, message: object, *_: object) -> None:
            messages.append(str(message))

        warning = error = warn

        def debug(self, *_: object) -> None:
            pass

        info = verbose = debug

    monkeypatch.setattr(log, "logger", Logger)
    return messages


@pytest.fixture
def sticky_dir() -> Iterator[Path]:
    """A world-writable sticky directory like /tmp, reachable by another uid (pytest's tmp root is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="tokens-sticky-", dir="/tmp"))
    directory.chmod(0o1777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def leaks(exc: BaseException, *secrets: str) -> list[str]:
    """The secrets that a traceback formatter printing frame locals would show for ``exc``.

    The first frame is the test's own (which holds the secrets on purpose): only the bridge's frames count.
    """
    assert exc.__traceback__ is not None
    frames = exc.__traceback__.tb_next
    text = "".join(traceback.TracebackException(type(exc), exc, frames, capture_locals=True).format())
    return [secret for secret in secrets if secret in text or secret.split(".")[1] in text]


# ---- 1. another local user cannot block the token with files at predictable names -------------


@needs_root
def test_files_planted_by_another_user_next_to_the_proxy_block_nothing(
    sticky_dir: Path, proxy_pem: str, said: list[str]
) -> None:
    proxy = write_private(sticky_dir / "x509up_u0", proxy_pem)
    planted = [sticky_dir / "x509up_u0.lock", sticky_dir / ".x509up_u0.diracx-bridge.tmp"]

    def plant() -> list[str]:
        for path in planted:
            path.write_text("mine now\n")
        return [str(path) for path in planted]

    run_as(NOBODY, plant)
    token = DiracxToken(access(), refresh(), int(time.time()) + 1000)
    write_token(proxy, token, timeout=1)
    assert read_token(proxy) == token
    # And a refresh is written back, not merely kept in memory.
    write_token(proxy, stale_token())
    dx = Refresher()
    _, client = user_process(proxy, dx)
    assert client.get("/api/ping").status_code == 200
    assert dx.refreshes == 1
    assert read_token(proxy).access_token == dx.minted[0]
    assert said == []
    assert all(path.read_text() == "mine now\n" for path in planted)  # not ours to remove


# ---- 2. a refreshed token is never lost when the write-back fails ----------------------------


def _fail_fsync_of_files(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_temp_creation(code: int):
    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        real = os.open

        def open_(path: str, flags: int, *args: int, **kwargs: int) -> int:
            if "diracx-bridge" in os.fspath(path) and flags & os.O_CREAT:
                raise OSError(code, os.strerror(code), path)
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)

    return install


@pytest.mark.parametrize(
    ("install", "reason"),
    [
        (_fail_fsync_of_files, "No space left on device"),
        (_fail_temp_creation(errno.EROFS), "Read-only file system"),
        (_fail_temp_creation(errno.EACCES), "Permission denied"),
    ],
    ids=["ENOSPC", "EROFS", "EACCES"],
)
def test_a_refreshed_token_is_kept_in_memory_when_it_cannot_be_written_back(
    bare_proxy: Path, monkeypatch: pytest.MonkeyPatch, said: list[str], install, reason: str
) -> None:
    write_token(bare_proxy, stale_token())
    before = bare_proxy.read_bytes()
    dx = Refresher()
    _, client = user_process(bare_proxy, dx)
    install(monkeypatch)
    for _ in range(3):
        response = client.get("/api/ping")
        assert response.status_code == 200
        assert response.request.headers["Authorization"] == f"Bearer {dx.minted[0]}"
    monkeypatch.undo()
    assert dx.refreshes == 1  # not one per call
    assert bare_proxy.read_bytes() == before
    assert len(said) == 1, said
    assert str(bare_proxy) in said[0] and reason in said[0] and "kept in memory" in said[0]
    assert sorted(p.name for p in bare_proxy.parent.iterdir()) == [bare_proxy.name]


# ---- 3. the lock is released explicitly ------------------------------------------------------


def test_a_child_forked_under_the_lock_does_not_keep_it(bare_proxy: Path) -> None:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    with locked(bare_proxy):
        pid = os.fork()
        if pid == 0:  # keeps every inherited descriptor open until told to go
            os.close(ready_r)
            os.close(go_w)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            os._exit(0)
        os.close(ready_w)
        os.close(go_r)
        assert os.read(ready_r, 1) == b"x"
    try:
        with locked(bare_proxy, timeout=0):  # a new open file description, as another process has: LOCK_NB
            pass
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(go_w)


# ---- 4. bad input never escapes as a foreign exception ---------------------------------------


def test_deeply_nested_json_in_the_block(bare_proxy: Path, proxy_pem: str) -> None:
    write_private(bare_proxy, proxy_pem + raw_block(b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(errors.MalformedTokenBlock) as info:
        read_token(bare_proxy)
    assert str(bare_proxy) in str(info.value) and "dirac-proxy-init" in str(info.value)


@pytest.mark.parametrize("expires_in", ["Infinity", "1e400", "1" + "0" * 400, "NaN", '"soon"'])
def test_a_refresh_answer_with_an_absurd_expires_in_is_a_server_error(bare_proxy: Path, expires_in: str) -> None:
    write_token(bare_proxy, stale_token())
    dx = Refresher()
    new = access()
    dx.answer = lambda request: httpx.Response(
        200, content=f'{{"access_token": "{new}", "expires_in": {expires_in}}}'.encode()
    )
    _, client = user_process(bare_proxy, dx)
    with pytest.raises(errors.DiracXServerError, match="not a token response") as info:
        client.get("/api/ping")
    assert leaks(info.value, new) == []  # 6: the new token is in no frame a formatter may print


@pytest.mark.parametrize("expires_in", [float("inf"), float("nan"), 10**400, 1e300])
def test_token_from_an_absurd_response_is_refused(expires_in: float) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        DiracxToken.from_token_response({"access_token": "a", "refresh_token": "r", "expires_in": expires_in})


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        (b'{"dirac_properties": "NormalUser"}', "properties", ()),
        (b'{"dirac_properties": 5}', "properties", ()),
        (b'{"dirac_properties": ["NormalUser", 3]}', "properties", ("NormalUser",)),
        (b'{"exp": "soon"}', "expires", None),
        (b'{"exp": 1e400}', "expires", None),
        (b'{"exp": true}', "expires", None),
        (b'{"preferred_username": ["a"]}', "username", "?"),
        (b'{"legacy_exchange": "yes"}', "legacy_exchange", False),
        (b"[" * 100_000, "username", "?"),
    ],
)
def test_claims_of_the_wrong_type_read_as_absent(payload: bytes, field: str, expected: object) -> None:
    claims = session.Claims.of(forged_jwt(payload))
    assert getattr(claims, field) == expected
    assert claims.describe()  # and a message can always be built from them


def test_whoami_shows_an_out_of_range_expiry_readably(
    bare_proxy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = DiracxToken(forged_jwt(b'{"preferred_username": "alice", "exp": 1e400}'), refresh(), int(time.time()) + 99)
    write_token(bare_proxy, token)
    args = type("Args", (), {"proxy": bare_proxy, "check": False})()
    assert whoami(args) == 0
    out = capsys.readouterr().out
    assert "DiracX user   : alice" in out and "access token  :" in out
    assert "out of range" in when(1e20) and "out of range" in when(float("inf"))


def test_an_out_of_range_expires_on_is_a_malformed_block(bare_proxy: Path, proxy_pem: str, capsys) -> None:
    data = {"access_token": access(), "refresh_token": refresh(), "expires_on": 10**400}
    write_private(bare_proxy, proxy_pem + raw_block(json.dumps(data).encode()))
    with pytest.raises(errors.MalformedTokenBlock, match="out of range"):
        read_token(bare_proxy)
    args = type("Args", (), {"proxy": bare_proxy, "check": False})()
    assert whoami(args) == 1
    assert str(bare_proxy) in capsys.readouterr().err


# ---- 5. linear parsing, a bounded number of PEM markers ---------------------------------------


def test_many_unterminated_pem_lines_are_refused(bare_proxy: Path, proxy_pem: str) -> None:
    """5000 lines: quadratic matching took seconds under the lock (see the commit); now one linear pass."""
    write_private(bare_proxy, proxy_pem + "-----BEGIN JUNK-----\nAAAA\n" * 5000)
    with pytest.raises(errors.NotAProxyFile, match="more than 64 PEM") as info:
        write_token(bare_proxy, DiracxToken(access(), refresh(), 1))
    assert str(bare_proxy) in str(info.value)


def test_many_diracx_markers_are_refused(bare_proxy: Path, proxy_pem: str) -> None:
    write_private(bare_proxy, proxy_pem + (PEM_BEGIN + "\n") * 70)
    with pytest.raises(errors.TokenFileError, match="more than 64"):
        read_token(bare_proxy)


# ---- 6. file details --------------------------------------------------------------------------


def test_a_read_only_proxy_stays_read_only(bare_proxy: Path, fresh_token: DiracxToken) -> None:
    bare_proxy.chmod(0o400)
    write_token(bare_proxy, fresh_token)
    assert stat.S_IMODE(bare_proxy.stat().st_mode) == 0o400
    assert read_token(bare_proxy) == fresh_token


def test_a_proxy_with_another_hard_link_is_not_rewritten(bare_proxy: Path, fresh_token: DiracxToken) -> None:
    other = bare_proxy.parent / "other-name"
    os.link(bare_proxy, other)
    before = bare_proxy.read_bytes()
    with pytest.raises(errors.TokenFileWriteError, match="hard link") as info:
        write_token(bare_proxy, fresh_token)
    assert str(bare_proxy) in str(info.value)
    assert bare_proxy.read_bytes() == before == other.read_bytes()


def test_a_link_of_the_user_is_followed_for_writing(tmp_path: Path, bare_proxy: Path, fresh_token) -> None:
    link = tmp_path / "link"
    link.symlink_to(bare_proxy)
    write_token(link, fresh_token)
    assert link.is_symlink()
    assert read_token(bare_proxy) == fresh_token == read_token(link)


@needs_root
def test_a_link_of_another_user_is_refused_everywhere(
    tmp_path: Path, bare_proxy: Path, fresh_token, monkeypatch
) -> None:
    write_token(bare_proxy, fresh_token)
    link = tmp_path / "planted"
    link.symlink_to(bare_proxy)
    os.lchown(link, 4242, 4242)
    with pytest.raises(errors.UnsafeTokenFile, match="symbolic link") as info:
        read_token(link)
    assert "4242" in str(info.value)
    with pytest.raises(errors.UnsafeTokenFile):
        write_token(link, fresh_token)
    monkeypatch.setenv("X509_USER_PROXY", str(link))
    monkeypatch.delenv("GRID_PROXY_FILE", raising=False)
    assert identity.default_proxy_location() == link  # not resolved: the store then refuses it
    mine = tmp_path / "mine"
    mine.symlink_to(bare_proxy)
    monkeypatch.setenv("X509_USER_PROXY", str(mine))
    assert identity.default_proxy_location() == bare_proxy


def test_an_io_error_syncing_the_directory_is_a_token_file_error(
    bare_proxy: Path, fresh_token: DiracxToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(errors.TokenFileWriteError, match="Input/output error") as info:
        write_token(bare_proxy, fresh_token)
    assert str(bare_proxy) in str(info.value)


def test_a_short_lived_token_is_not_refreshed_on_every_call(bare_proxy: Path) -> None:
    """75 s tokens: ``expires_on`` is now+60, the 60 s margin would make every call refresh."""
    write_token(bare_proxy, DiracxToken(access(75), refresh(), int(time.time()) + 60))
    dx = Refresher(lifetime=75)
    _, client = user_process(bare_proxy, dx)
    for _ in range(3):
        assert client.get("/api/ping").status_code == 200
    assert dx.refreshes == 0


def test_a_block_with_a_bad_field_leaves_no_token_in_frame_locals(bare_proxy: Path, proxy_pem: str) -> None:
    secret = access()
    data = {"access_token": secret, "refresh_token": refresh(), "expires_on": "not a number"}
    write_private(bare_proxy, proxy_pem + raw_block(json.dumps(data).encode()))
    with pytest.raises(errors.MalformedTokenBlock) as info:
        read_token(bare_proxy)
    assert leaks(info.value, secret) == []


def test_a_lock_held_too_long_by_another_process_keeps_the_token_in_memory(bare_proxy: Path, said: list[str]) -> None:
    import fcntl

    write_token(bare_proxy, stale_token())
    dx = Refresher()
    _, client = user_process(bare_proxy, dx)  # lock_timeout 0.5 s
    fd = os.open(bare_proxy, os.O_RDONLY)  # another open file description: another process's lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert [client.get("/api/ping").status_code for _ in range(3)] == [200] * 3
    finally:
        os.close(fd)
    assert dx.refreshes == 1
    assert len(said) == 1 and "kept in memory" in said[0] and "more than 0.5 s" in said[0]
