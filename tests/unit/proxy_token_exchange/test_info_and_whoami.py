"""Identity and expiries of a proxy's token: ``diracx-bridge whoami`` and DIRAC's own proxy description."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from ptx_helpers import access_token, refresh_token

from diracx_bridge import tokens
from diracx_bridge.cli import main
from diracx_bridge.proxy_token_exchange.info import (
    TokenInfo,
    duration,
    make_format_with_token,
    make_tolerant_token_from_pem,
    when,
)
from diracx_bridge.tokens import (
    DiracxToken,
)

NOW = 1_800_000_000.0


def admin_token(now: float = NOW) -> DiracxToken:
    return DiracxToken(
        access_token(group="civo_admin", properties=("NormalUser", "JobAdministrator"), exp=now + 1200),
        refresh_token(exp=now + 86400),
        int(now + 1185),
    )


def test_token_info_reads_identity_and_both_expiries() -> None:
    info = TokenInfo.of(admin_token())
    assert (info.username, info.vo, info.group) == ("ciuser", "civo", "civo_admin")
    assert info.properties == ("NormalUser", "JobAdministrator")
    assert info.access_expires == NOW + 1200 and info.refresh_expires == NOW + 86400
    rows = dict(info.rows(now=NOW))
    assert rows["DiracX props"] == "NormalUser, JobAdministrator"
    assert rows["access token"] == when(NOW + 1200, NOW) == "2027-01-15 08:20:00 UTC (20m 00s left)"
    assert rows["refresh token"].endswith("(1d 00h 00m left)")
    later = dict(info.rows(now=NOW + 1190))
    assert later["access token"].endswith("; renewed on next use")
    gone = dict(info.rows(now=NOW + 90000))
    assert "expired" in gone["refresh token"] and gone["refresh token"].endswith(
        "run dirac-proxy-init -g civo_admin for a new one"
    )


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (5, 65, 3700, 90061)] == ["5s", "1m 05s", "1h 01m", "1d 01h 01m"]


def test_whoami_shows_the_token_without_dirac(proxy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = admin_token(time.time())
    tokens.write_token(proxy_file, token)
    assert main(["whoami", "--proxy", str(proxy_file)]) == 0
    out = capsys.readouterr().out
    for expected in ("DiracX user   : ciuser", "DiracX VO     : civo", "DiracX group  : civo_admin", "access token  :"):
        assert expected in out
    assert "refresh token : " in out and "proxy cert    : " in out
    assert token.access_token not in out and token.refresh_token not in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "carries no DiracX token"),
        ("two", "2 DiracX token blocks"),
        ("garbage", "not valid base64"),
    ],
)
def test_whoami_explains_an_unusable_proxy(
    proxy_file: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    if content == "two":
        block = tokens.encode_block(admin_token())
        proxy_file.write_text(proxy_file.read_text() + block + block)
    elif content == "garbage":
        proxy_file.write_text(proxy_file.read_text() + f"{tokens.PEM_BEGIN}\n%%%not base64%%%\n{tokens.PEM_END}\n")
    before = proxy_file.read_bytes()
    assert main(["whoami", "--proxy", str(proxy_file)]) == 1
    assert expected in capsys.readouterr().err
    assert proxy_file.read_bytes() == before


def test_whoami_says_when_the_session_is_over(proxy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens.write_token(proxy_file, admin_token(time.time() - 90000))
    assert main(["whoami", "--proxy", str(proxy_file)]) == 1
    assert "run dirac-proxy-init -g civo_admin" in capsys.readouterr().err


def test_the_whoami_module_imports_no_dirac() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import diracx_bridge.proxy_token_exchange.cli\n"
        "print([m for m in set(sys.modules) - before if m.split('.')[0] in ('DIRAC', 'DIRACCommon')])\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_dirac_proxy_info_description_gains_identity_and_expiries(proxy_file: Path) -> None:
    from DIRAC.Core.Security.ProxyInfo import formatProxyInfoAsString

    original = getattr(formatProxyInfoAsString, "__diracx_bridge_original__", formatProxyInfoAsString)
    tokens.write_token(proxy_file, admin_token(time.time()))
    info = {"subject": "/CN=me", "group": "civo_admin", "hasDiracxToken": True, "path": str(proxy_file)}
    lines = make_format_with_token(original)(info).split("\n")
    assert lines[0].startswith("subject")
    at = lines.index("DiracX       : True")
    assert lines[at + 1] == "DiracX user  : ciuser"
    assert lines[at + 3] == "DiracX group : civo_admin"
    assert lines[at + 5].startswith("access token : ") and lines[at + 6].startswith("refresh token: ")
    assert lines[-1] == f"path         : {proxy_file}"


def test_a_damaged_block_no_longer_crashes_proxy_info(proxy_file: Path) -> None:
    """DIRAC 9.1.22's reader raises on two blocks; getProxyInfo lets it escape into dirac-proxy-info."""
    from DIRAC.Core.Security.DiracX import diracxTokenFromPEM as dirac_reader

    block = tokens.encode_block(admin_token())
    proxy_file.write_text(proxy_file.read_text() + block + block)
    with pytest.raises(ValueError, match="multiple DiracX tokens"):
        dirac_reader(str(proxy_file))
    assert make_tolerant_token_from_pem(dirac_reader)(str(proxy_file)) is None
    from DIRAC.Core.Security.ProxyInfo import formatProxyInfoAsString

    original = getattr(formatProxyInfoAsString, "__diracx_bridge_original__", formatProxyInfoAsString)
    text = make_format_with_token(original)({"hasDiracxToken": False, "path": str(proxy_file), "VO": "civo"})
    assert "DiracX error : the DiracX token block of the proxy" in text and "2 DiracX token blocks" in text
