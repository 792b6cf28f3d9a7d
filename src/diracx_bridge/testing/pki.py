"""A throw-away certificate authority for the grid-in-a-box.

DIRAC authenticates every DISET call with X509: services use a host certificate, users a
certificate from which ``dirac-proxy-init`` makes a proxy, and both trust a CA directory laid
out the grid way (``<subject hash>.0`` plus an empty CRL ``<subject hash>.r0``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORG = "DIRAC CI"


def dn_of(name: x509.Name) -> str:
    """The DIRAC (OpenSSL one-line) form of a subject, e.g. ``/O=DIRAC CI/CN=localhost``."""
    short = {NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN"}
    return "".join(f"/{short[a.oid]}={a.value}" for a in name)


@dataclass(frozen=True)
class Identity:
    """A certificate and key on disk, with the DN DIRAC's Registry knows it by."""

    cert: Path
    key: Path
    dn: str


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; an end entity signs and encrypts (TLS, proxies)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o400)  # grid tools refuse keys readable by anyone else


class TestCA:
    """A CA that signs host and user certificates valid for a few days."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = _key()
        self.name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                x509.NameAttribute(NameOID.COMMON_NAME, "DIRAC CI Test CA"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def write_ca_dir(self, certificates: Path) -> Path:
        """The hashed CA directory (``X509_CERT_DIR``) with the CA and an empty CRL."""
        certificates.mkdir(parents=True, exist_ok=True)
        pem = self.cert.public_bytes(serialization.Encoding.PEM)
        # OpenSSL's own subject hash (canonical-DER SHA-1): M2Crypto's as_hash() is not the same.
        subject_hash = (
            subprocess.run(["openssl", "x509", "-noout", "-subject_hash"], input=pem, capture_output=True, check=True)
            .stdout.decode()
            .strip()
        )
        (certificates / f"{subject_hash}.0").write_bytes(pem)
        now = dt.datetime.now(dt.UTC)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(now - dt.timedelta(hours=1))
            .next_update(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        (certificates / f"{subject_hash}.r0").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return certificates

    def issue(self, directory: Path, stem: str, subject: list[tuple[str, str]], *, host: bool = False) -> Identity:
        oids = {"O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
        name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in subject])
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if host:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}cert.pem", directory / f"{stem}key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return Identity(cert=cert_path, key=key_path, dn=dn_of(name))
