"""Fixtures for the proxy+token bundle tests: a real DIRAC proxy, JWT-shaped tokens, proxy files."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from bundle_test_helpers import jwt_like
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from diracx_bridge.proxy_token_exchange.bundle import DiracxToken


@pytest.fixture(scope="session")
def proxy_pem() -> str:
    """A real RFC 3820 proxy as DIRAC dumps it: proxy certificate, private key, user certificate.

    The user certificate is self-signed (made with ``cryptography``); DIRAC's own ``X509Chain``
    derives the proxy from it, with a DIRAC group extension, so the layout is exactly DIRAC's.
    """
    from DIRAC.Core.Security.m2crypto.X509Chain import X509Chain

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diracx-bridge tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "bundle tester"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    chain = X509Chain()
    assert chain.loadChainFromString(cert.public_bytes(serialization.Encoding.PEM).decode())["OK"]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    assert chain.loadKeyFromString(key_pem)["OK"]
    result = chain.generateProxyToString(86400, diracGroup="dirac_user")
    assert result["OK"], result
    pem = result["Value"]
    assert pem.count("-----BEGIN CERTIFICATE-----") == 2
    assert "PRIVATE KEY-----" in pem
    return pem


@pytest.fixture
def make_token() -> Callable[..., DiracxToken]:
    def factory(expires_on: int | None = None) -> DiracxToken:
        expires = int(datetime.datetime.now(datetime.UTC).timestamp()) + 1200 if expires_on is None else expires_on
        return DiracxToken(jwt_like("access", 1200), jwt_like("refresh", 86400), expires)

    return factory


@pytest.fixture
def proxy_file(tmp_path: Path, proxy_pem: str) -> Path:
    """A DIRAC proxy without a token, 0600, where dirac-proxy-init would put it (name-wise)."""
    path = tmp_path / f"x509up_u{os.geteuid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(proxy_pem)
    return path
