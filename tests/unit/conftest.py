"""Fixtures shared by the unit tests: a real DIRAC proxy (no network, no server)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from diracx_bridge import capabilities, settings
from diracx_bridge.adapters import _registry


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
            x509.NameAttribute(NameOID.COMMON_NAME, "unit tester"),
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


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    """Settings (per DIRAC CS version), the adapter registry and the DiracX server's capabilities are
    cached per process: no test sees another's."""
    settings.clear_cache()
    _registry.forget()
    capabilities.forget()


@pytest.fixture
def bare_proxy(tmp_path: Path, proxy_pem: str) -> Path:
    """A proxy file without a DIRACX block, 0600, named as dirac-proxy-init names it."""
    path = tmp_path / f"x509up_u{os.geteuid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(proxy_pem)
    return path
