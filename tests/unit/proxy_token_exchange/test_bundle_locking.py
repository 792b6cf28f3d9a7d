"""The proxy's lock (a flock on the proxy itself): re-entrancy, timeouts, leftovers of dead processes,
unusable directories, and writers that ignore the lock (DIRAC's own)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundle_test_helpers import jwt_like, write_private
from unit_helpers import run_as

from diracx_bridge.errors import (
    TokenFileError,
    TokenFileLockTimeout,
    TokenFileWriteError,
)
from diracx_bridge.tokens import (
    DiracxToken,
    encode_block,
    locked,
    read_token,
    remove_token,
    store,
    update_token,
    write_token,
)

NOBODY = 65534


def bump(token: DiracxToken | None) -> DiracxToken:
    assert token is not None
    return DiracxToken(token.access_token, token.refresh_token, token.expires_on + 1)


@pytest.fixture
def held_elsewhere(proxy_file: Path) -> Iterator[Path]:
    """The proxy's lock held exclusively through another open file description (as another process would)."""
    fd = os.open(proxy_file, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield proxy_file
    finally:
        os.close(fd)


def test_reentrant_within_a_thread(proxy_file: Path, make_token) -> None:
    first, second = make_token(), make_token()
    with locked(proxy_file):
        write_token(proxy_file, first)
        with locked(proxy_file):
            assert read_token(proxy_file) == first
        assert update_token(proxy_file, lambda current: second) == second
        assert remove_token(proxy_file) is True


def test_timeout(held_elsewhere: Path, make_token) -> None:
    before = held_elsewhere.read_bytes()
    with pytest.raises(TokenFileLockTimeout) as info:
        write_token(held_elsewhere, make_token(), timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, TokenFileError)
    message = str(info.value)
    assert str(held_elsewhere) in message
    assert "retry" in message
    assert "[Errno" not in message
    with pytest.raises(TokenFileLockTimeout), locked(held_elsewhere, timeout=0):
        pass
    assert held_elsewhere.read_bytes() == before
    # Readers need no lock.
    write_private(held_elsewhere, before.decode() + encode_block(make_token(expires_on=5)))
    assert read_token(held_elsewhere).expires_on == 5


def test_lock_of_a_killed_holder_is_released(proxy_file: Path, make_token) -> None:
    """flock dies with its process: SIGKILL a holder, the next writer goes ahead at once."""
    code = (
        "import sys, time; from diracx_bridge.tokens import locked\n"
        "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(proxy_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TokenFileLockTimeout):
            write_token(proxy_file, make_token(), timeout=0.1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    token = make_token()
    write_token(proxy_file, token, timeout=2)
    assert read_token(proxy_file) == token


def test_no_file_is_left_next_to_the_proxy(proxy_file: Path, make_token) -> None:
    write_token(proxy_file, make_token())
    update_token(proxy_file, bump)
    remove_token(proxy_file)
    assert [p.name for p in proxy_file.parent.iterdir()] == [proxy_file.name]


def test_lock_follows_the_file_across_rewrites(proxy_file: Path, make_token) -> None:
    """Inside one locked() the proxy is rewritten twice: its new inode is locked each time."""
    with locked(proxy_file):
        for _ in range(2):
            write_token(proxy_file, make_token())
            fd = os.open(proxy_file, os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)


def test_leftover_temp_file_of_a_crashed_writer_is_removed(proxy_file: Path, make_token) -> None:
    tmp = proxy_file.parent / f".{proxy_file.name}.k2j3h4g5.diracx-bridge.tmp"
    tmp.write_text("half a proxy from a writer killed mid-write")
    token = make_token()
    write_token(proxy_file, token)
    assert read_token(proxy_file) == token
    assert not tmp.exists()


@pytest.fixture
def readonly_dir_proxy(proxy_pem: str) -> Iterator[tuple[Path, DiracxToken]]:
    """A proxy of uid 65534 (nobody) in a root-owned 0755 directory: nobody can read it, not create files next to it.

    Built outside pytest's 0700 tmp root so that nobody can reach it.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a proxy to another uid in a directory that uid cannot write")
    directory = Path(tempfile.mkdtemp(prefix="bundle-ro-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        token = DiracxToken(jwt_like("access"), jwt_like("refresh"), 2_000_000_000)
        proxy = write_private(directory / f"x509up_u{NOBODY}", proxy_pem + encode_block(token))
        os.chown(proxy, NOBODY, NOBODY)
        yield proxy, token
    finally:
        shutil.rmtree(directory)


def test_directory_we_cannot_write(readonly_dir_proxy: tuple[Path, DiracxToken]) -> None:
    proxy, token = readonly_dir_proxy
    before = proxy.read_bytes()

    def scenario() -> dict:
        out: dict = {"read": read_token(proxy).as_dict()}
        for name, call in (
            ("write", lambda: write_token(proxy, DiracxToken("a", "r", 1))),
            ("remove", lambda: remove_token(proxy)),
            ("update", lambda: update_token(proxy, bump)),
        ):
            try:
                call()
                out[name] = "no error"
            except TokenFileWriteError as exc:
                out[name] = str(exc)
        return out

    result = run_as(NOBODY, scenario)
    assert result["read"] == token.as_dict()
    for name in ("write", "remove", "update"):
        assert result[name].startswith(f"cannot rewrite the proxy file {proxy} (Permission denied)"), result[name]
        assert "directory you can write to" in result[name]
    assert proxy.read_bytes() == before
    assert [p.name for p in proxy.parent.iterdir()] == [proxy.name]


def test_writer_ignoring_the_lock_is_not_overwritten(proxy_file: Path, proxy_pem: str, make_token) -> None:
    """dirac-proxy-init renews the proxy between our read and our rename: we redo, on its new file."""
    write_private(proxy_file, proxy_pem + encode_block(make_token()))
    renewed_pem = "# renewed by dirac-proxy-init\n" + proxy_pem
    dirac_token, ours = make_token(), make_token()
    seen: list[DiracxToken | None] = []

    def refresh(current: DiracxToken | None) -> DiracxToken:
        seen.append(current)
        if len(seen) == 1:  # DIRAC's addTokenToPEM rewrites in place, without our lock
            proxy_file.write_text(renewed_pem + encode_block(dirac_token))
        return ours

    assert update_token(proxy_file, refresh) == ours
    assert seen[1] == dirac_token
    assert proxy_file.read_text() == renewed_pem + encode_block(ours)


def test_writer_that_never_stops(proxy_file: Path, proxy_pem: str, make_token, monkeypatch) -> None:
    calls = []

    def meddle(current: DiracxToken | None) -> DiracxToken:
        calls.append(current)
        proxy_file.write_text(proxy_pem + f"# {len(calls)}\n")
        return make_token()

    with pytest.raises(TokenFileError, match="kept changing") as info:
        update_token(proxy_file, meddle)
    assert str(proxy_file) in str(info.value)
    assert len(calls) == store.MAX_REWRITE_ATTEMPTS
    assert not list(proxy_file.parent.glob(".*.tmp"))


def test_threads_do_not_lose_updates(proxy_file: Path, make_token) -> None:
    write_token(proxy_file, make_token(expires_on=0))
    per_thread, threads = 40, 8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                update_token(proxy_file, bump)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert read_token(proxy_file).expires_on == per_thread * threads
