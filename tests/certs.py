"""A certificate authority of a test's own, for Ray's TLS: a CA and, per host, a key and a certificate it signs."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write_private(path: Path, data: bytes) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


@dataclass
class Authority:
    """A CA: its key stays in memory; its certificate is written to `ca_cert`."""

    folder: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, folder: Path, name: str = "pool CA") -> Authority:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                       .sign(key, hashes.SHA256()))
        authority = cls(folder, key, certificate)
        _write_private(authority.ca_cert, certificate.public_bytes(serialization.Encoding.PEM))
        return authority

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    def issue(self, name: str, addresses: list[str]) -> dict[str, str]:
        """A key and certificate for a host reached at `addresses`; returns Ray's TLS environment for it."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses] + [x509.DNSName("localhost")]
        certificate = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                       .issuer_name(self.certificate.subject).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.SubjectAlternativeName(names), critical=False)
                       .sign(self.key, hashes.SHA256()))
        key_path = _write_private(self.folder / f"{name}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cert_path = _write_private(self.folder / f"{name}.crt",
                                   certificate.public_bytes(serialization.Encoding.PEM))
        return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": str(cert_path), "RAY_TLS_SERVER_KEY": str(key_path),
                "RAY_TLS_CA_CERT": str(self.ca_cert)}
