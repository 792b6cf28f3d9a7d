"""Damaged or unsafe proxy files through the public paths: an adapted DIRAC call, ``whoami``, ``dirac-proxy-info``.

Each case starts from a real proxy made by ``dirac-proxy-init``; each must give a clear message
naming the file and the fix, and leave the file exactly as it was (the certificate and key
above all: a user can still use the proxy on the legacy services, or repair it).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from traffic import observe

from diracx_bridge.tokens import (
    PEM_BEGIN,
    PEM_END,
)

pytestmark = pytest.mark.integration

JOB_MONITORING = "DIRAC.WorkloadManagementSystem.Client.JobMonitoringClient.JobMonitoringClient"
ADAPTER_ON = {"/DiracX/FutureClientEnabled/WorkloadManagement/JobMonitoring": "yes"}
NOBODY = 65534


def _block(payload: bytes) -> str:
    return f"{PEM_BEGIN}\n{base64.b64encode(payload).decode()}\n{PEM_END}\n"


def two_blocks(x509: str, block: str) -> str:
    return x509 + block + block


def truncated(x509: str, block: str) -> str:
    return x509 + block[: len(block) // 2]


def garbage_base64(x509: str, block: str) -> str:
    return x509 + f"{PEM_BEGIN}\n%%% this is not base64 %%%\n{PEM_END}\n"


def no_refresh_token(x509: str, block: str) -> str:
    return x509 + _block(json.dumps({"access_token": "x", "expires_on": 1}).encode())


#: (case, how to damage the file, mode, owner, what the message must say)
CASES: list[tuple[str, Callable[[str, str], str], int, int | None, str]] = [
    ("two-blocks", two_blocks, 0o600, None, "holds 2 DiracX token blocks"),
    ("truncated", truncated, 0o600, None, "without its '-----END DIRACX-----' line (the file looks truncated"),
    ("garbage-base64", garbage_base64, 0o600, None, "is not valid base64"),
    ("no-refresh-token", no_refresh_token, 0o600, None, "has no refresh_token"),
    ("group-readable", lambda x509, block: x509 + block, 0o640, None, "run 'chmod 600"),
    ("another-users", lambda x509, block: x509 + block, 0o600, NOBODY, f"belongs to uid {NOBODY}, not to you"),
]


@pytest.fixture(scope="module")
def good_proxy(grid_session, tmp_path_factory) -> tuple[str, str]:
    """(certificate+key part, DIRACX block) of a real proxy."""
    path = tmp_path_factory.mktemp("bad-input") / "good.pem"
    grid_session.grid.run(["dirac-proxy-init", "-g", "civo_user", "--out", str(path)])
    text = path.read_text()
    at = text.index(PEM_BEGIN)
    return text[:at], text[at:]


def make(tmp_path: Path, name: str, content: str, mode: int, owner: int | None) -> Path:
    path = tmp_path / f"{name}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)  # the suite runs as root on these machines; a PermissionError says otherwise
    return path


@pytest.mark.parametrize(("name", "damage", "mode", "owner", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_proxy_gives_a_clear_error_and_stays_as_it_was(
    gs, grid, tmp_path, good_proxy, name, damage, mode, owner, expected
):
    x509, block = good_proxy
    path = make(tmp_path, name, damage(x509, block), mode, owner)
    before = path.read_bytes()
    # An unchanged DIRAC client, switched to DiracX: an S_ERROR, never an exception, from the
    # bridge itself (neither DiracX nor the legacy service was asked).
    with observe(grid) as traffic:
        result = gs.worker().call(
            JOB_MONITORING, "getJobsStates", [1], client_kwargs={"proxyLocation": str(path)}, cs=ADAPTER_ON
        )
    traffic.assert_answered_locally("getJobsStates")
    assert not result["OK"]
    assert expected in result["Message"] and str(path) in result["Message"], result["Message"]
    # whoami says the same, and exits 1 (no usable token).
    res = grid.run(["diracx-bridge", "whoami", "--proxy", str(path)], check=False)
    assert res.returncode == 1, res.stdout
    assert expected in res.stderr
    # DIRAC's own dirac-proxy-info no longer dies on a damaged block (9.1.22 raises from getProxyInfo).
    info = grid.run(["dirac-proxy-info", "-f", str(path)], check=False)
    assert "Traceback" not in info.stderr, info.stderr
    if owner is None and mode == 0o600:
        assert info.returncode == 0 and "DiracX error : " in info.stdout and expected in info.stdout, info.stdout
    assert path.read_bytes() == before
    assert path.read_bytes().startswith(x509.encode())
