"""The DIRACX block: exact DIRAC 9.1.22 format both ways, round trips, byte-preserved X509 part, modes."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bundle_test_helpers import jwt_like, write_private

from diracx_bridge import tokens
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


def dirac_layout_block(credentials_json: str) -> str:
    """The block exactly as ``addTokenToPEM`` builds it (``DIRAC/Core/Security/DiracX.py`` l.65-68)."""
    block = f"{PEM_BEGIN}\n"
    block += textwrap.fill(base64.b64encode(credentials_json.encode("utf-8")).decode(), width=64)
    block += f"\n{PEM_END}\n"
    return block


@pytest.fixture
def dirac_add_token(monkeypatch: pytest.MonkeyPatch):
    """DIRAC's real ``addTokenToPEM``, with only its RPC and CS look-ups replaced.

    ``addTokenToPEM`` (``DIRAC/Core/Security/DiracX.py`` l.46-75) asks the Registry for the VO
    (l.50), the CS for DisabledVOs (l.53), and ProxyManager for a token (l.55-57, via
    ``DIRAC.Core.Base.Client.Client`` imported at call time, l.48); everything after that (the
    TokenResponse, ``serialize_credentials``, base64, textwrap, the file rewrite) runs for real.
    """
    import DIRAC.Core.Base.Client as client_module
    from DIRAC import S_OK
    from DIRAC.Core.Security import DiracX

    answers: list[dict] = []

    class FakeProxyManager:
        def __init__(self, url: str, proxyLocation: str) -> None:
            assert url == "Framework/ProxyManager"
            self.proxy_location = proxyLocation

        def exchangeProxyForToken(self) -> dict:
            answer = {
                "access_token": jwt_like("access", 1200),
                "expires_in": 1200,
                "token_type": "Bearer",
                "refresh_token": jwt_like("refresh", 86400),
            }
            answers.append(answer)
            return S_OK(answer)

    class FakeConfig:
        def getValue(self, path: str, default: object = None) -> object:
            assert path == "/DiracX/DisabledVOs"
            return default

    monkeypatch.setattr(client_module, "Client", FakeProxyManager)
    monkeypatch.setattr(DiracX, "gConfig", FakeConfig())
    monkeypatch.setattr(DiracX.Registry, "getVOForGroup", lambda group: "testvo")

    def add(path: Path) -> dict:
        result = DiracX.addTokenToPEM(str(path), "dirac_user")
        assert result["OK"], result
        return answers[-1]

    return add


def test_round_trip(proxy_file: Path, make_token) -> None:
    token = make_token()
    write_token(proxy_file, token)
    assert read_token(proxy_file) == token
    newer = make_token(expires_on=token.expires_on + 600)
    write_token(proxy_file, newer)
    assert read_token(proxy_file) == newer
    assert proxy_file.read_text().count(PEM_BEGIN) == 1


def test_encode_block_is_dirac_layout_byte_for_byte(make_token) -> None:
    """``encode_block`` equals DIRAC's construction on diracx's ``serialize_credentials`` output."""
    from diracx.core.models import TokenResponse
    from diracx.core.utils import serialize_credentials

    token = make_token()
    serialized = serialize_credentials(
        TokenResponse(access_token=token.access_token, expires_in=1200, refresh_token=token.refresh_token)
    )
    ours = DiracxToken(token.access_token, token.refresh_token, json.loads(serialized)["expires_on"])
    assert encode_block(ours) == dirac_layout_block(serialized)
    assert decode_block(dirac_layout_block(serialized)) == ours


def test_expiry_computed_like_diracx() -> None:
    """``from_token_response`` gives ``serialize_credentials``'s ``expires_on`` (same grace, same rounding)."""
    from diracx.core.models import TokenResponse
    from diracx.core.utils import EXPIRES_GRACE_SECONDS, serialize_credentials

    assert tokens.EXPIRES_GRACE_SECONDS == EXPIRES_GRACE_SECONDS
    response = {
        "access_token": jwt_like("access"),
        "expires_in": 1200,
        "token_type": "Bearer",
        "refresh_token": jwt_like("refresh"),
    }
    before = time.time()
    theirs = json.loads(serialize_credentials(TokenResponse(**response)))["expires_on"]
    ours = DiracxToken.from_token_response(response)
    assert abs(ours.expires_on - theirs) <= int(time.time() - before) + 1
    assert DiracxToken.from_token_response(response, now=1_000_000.9).expires_on == 1_000_000 + 1200 - 15
    assert DiracxToken.from_token_response(TokenResponse(**response), now=0).expires_on == 1185


def test_from_token_response_refuses_incomplete_answers() -> None:
    secret = jwt_like("access")
    with pytest.raises(ValueError, match="refresh_token") as info:
        DiracxToken.from_token_response({"access_token": secret, "expires_in": 1200, "refresh_token": None})
    assert secret not in str(info.value)
    with pytest.raises(TypeError, match="expires_in"):
        DiracxToken.from_token_response({"access_token": secret, "expires_in": "soon", "refresh_token": secret})


def test_dirac_reads_what_we_write(proxy_file: Path, make_token) -> None:
    from DIRAC.Core.Security.DiracX import diracxTokenFromPEM

    token = make_token()
    write_token(proxy_file, token)
    assert diracxTokenFromPEM(str(proxy_file)) == token.as_dict()
    # ... and DIRAC still loads the proxy itself from our file.
    from DIRAC.Core.Security.m2crypto.X509Chain import X509Chain

    chain = X509Chain()
    assert chain.loadProxyFromFile(str(proxy_file))["OK"]
    assert chain.getDIRACGroup()["Value"] == "dirac_user"


def test_we_read_what_dirac_writes(proxy_file: Path, proxy_pem: str, dirac_add_token) -> None:
    before = time.time()
    answer = dirac_add_token(proxy_file)
    after = time.time()
    token = read_token(proxy_file)
    assert (token.access_token, token.refresh_token) == (answer["access_token"], answer["refresh_token"])
    # 1200 s from the moment DIRAC wrote it, less DIRAC's 15 s grace: bracketed, whatever the load.
    assert int(before) + 1200 - 15 - 1 <= token.expires_on <= after + 1200 - 15
    # DIRAC rewrites leave an empty line behind each time (its re.sub keeps the newline after
    # END); we read such a file, and our rewrite keeps that line rather than adding more.
    second = dirac_add_token(proxy_file)
    assert proxy_file.read_text().startswith(proxy_pem + "\n" + PEM_BEGIN)
    assert read_token(proxy_file).access_token == second["access_token"]
    remove_token(proxy_file)
    assert proxy_file.read_text() == proxy_pem + "\n"


def test_extra_json_keys_are_ignored(make_token) -> None:
    token = make_token()
    payload = json.dumps({**token.as_dict(), "token_type": "Bearer", "future": {"x": 1}})
    assert decode_block(dirac_layout_block(payload)) == token


def test_x509_part_is_byte_identical(proxy_file: Path, make_token) -> None:
    original = proxy_file.read_bytes()
    write_token(proxy_file, make_token())
    assert proxy_file.read_bytes().startswith(original)
    write_token(proxy_file, make_token())
    data = proxy_file.read_bytes()
    assert data.startswith(original)
    assert data[len(original) :].decode() == encode_block(read_token(proxy_file))
    assert remove_token(proxy_file) is True
    assert proxy_file.read_bytes() == original
    assert remove_token(proxy_file) is False
    assert proxy_file.read_bytes() == original


def test_odd_bytes_outside_the_block_survive(tmp_path: Path, proxy_pem: str, make_token) -> None:
    """Comments, CRLF line ends, non-ASCII bytes and no final newline: all kept exactly."""
    odd = b"# written by hand \xc3\xa9\xff\r\n" + proxy_pem.replace("\n", "\r\n").encode().rstrip(b"\r\n")
    path = write_private(tmp_path / "proxy", odd)
    token = make_token()
    write_token(path, token)
    assert path.read_bytes() == odd + b"\n" + encode_block(token).encode()
    assert read_token(path) == token
    remove_token(path)
    assert path.read_bytes() == odd + b"\n"


def test_block_in_the_middle_is_moved_to_the_end(tmp_path: Path, proxy_pem: str, make_token) -> None:
    first, rest = proxy_pem.split("-----BEGIN PRIVATE KEY-----")
    old, new = make_token(), make_token()
    path = write_private(tmp_path / "proxy", first + encode_block(old) + "-----BEGIN PRIVATE KEY-----" + rest)
    assert read_token(path) == old
    write_token(path, new)
    assert path.read_text() == proxy_pem + encode_block(new)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_mode_is_0600_whatever_the_umask(proxy_file: Path, make_token, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_token(proxy_file, make_token())
        remove_token(proxy_file)
        update_token(proxy_file, lambda current: make_token())
    finally:
        os.umask(previous)
    st = proxy_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_group_is_kept(proxy_file: Path, make_token) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to an arbitrary gid needs root")
    os.chown(proxy_file, -1, 4321)
    write_token(proxy_file, make_token())
    assert proxy_file.stat().st_gid == 4321


def test_write_is_atomic_rename(proxy_file: Path, make_token) -> None:
    """A new inode each time (readers holding the old one keep a whole file); no temp file left."""
    before = proxy_file.stat().st_ino
    write_token(proxy_file, make_token())
    assert proxy_file.stat().st_ino != before
    assert sorted(p.name for p in proxy_file.parent.iterdir()) == [proxy_file.name]  # no lock or temp file


def test_identical_write_does_not_touch_the_file(proxy_file: Path, make_token) -> None:
    token = make_token()
    write_token(proxy_file, token)
    st = proxy_file.stat()
    write_token(proxy_file, token)
    assert (proxy_file.stat().st_ino, proxy_file.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_update_token_semantics(proxy_file: Path, make_token) -> None:
    seen: list[DiracxToken | None] = []
    first = make_token()

    def put_first(current: DiracxToken | None) -> DiracxToken:
        seen.append(current)
        return first

    assert update_token(proxy_file, put_first) == first
    assert seen == [None]
    inode = proxy_file.stat().st_ino
    # Returning the same object, or None, means: no write; the current token is returned.
    assert update_token(proxy_file, lambda current: current) == first
    assert update_token(proxy_file, lambda current: None) == first
    assert proxy_file.stat().st_ino == inode
    second = make_token()
    assert update_token(proxy_file, lambda current: second) == second
    assert read_token(proxy_file) == second


def test_expired() -> None:
    token = DiracxToken(jwt_like("a"), jwt_like("r"), 1000)
    assert not token.expired(now=999)
    assert token.expired(now=1000)
    assert token.expired(margin=300, now=701)
    assert not token.expired(margin=300, now=699)
    assert DiracxToken(jwt_like("a"), jwt_like("r"), int(time.time()) + 3600).expired() is False


def test_importing_the_bundle_imports_neither_dirac_nor_diracx() -> None:
    code = (
        "import sys, diracx_bridge.proxy_token_exchange as m; "
        "bad = [k for k in sys.modules if k.split('.')[0] in ('DIRAC', 'DIRACCommon') or k.startswith('diracx.')"
        " and k != 'diracx._client_importer']; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
