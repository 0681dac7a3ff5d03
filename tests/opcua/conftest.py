"""Fixtures for the OPC-UA driver tests: certificates (self-signed and from test CAs) made once per run,
and quiet asyncua logs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drivers.opcua.certs import make_self_signed
from tests.opcua.helpers import SERVER_URI

CLIENT_URI = "urn:plantwatch:test:client"


@dataclass(frozen=True)
class Certs:
    server_cert: Path
    server_key: Path
    other_server_cert: Path
    other_server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate the servers do not trust
    stranger_key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("pki")
    server = make_self_signed(root / "server", "plant server", SERVER_URI, 30)
    other = make_self_signed(root / "other-server", "impostor server", SERVER_URI, 30)
    client = make_self_signed(root / "client", "plantwatch gateway", CLIENT_URI, 30)
    stranger = make_self_signed(root / "stranger", "unknown gateway", CLIENT_URI, 30)
    return Certs(*server, *other, *client, *stranger)


@pytest.fixture(autouse=True)
def _quiet_asyncua():
    # asyncua logs every refused request and reconnect attempt with a traceback; the tests
    # provoke many of those on purpose
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def _rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(out: Path, common_name: str, *, expired: bool = False):
    """A root CA (key, certificate) as a plant's PKI or a GDS would have; its certificate is written to ``out``."""
    key = _rsa_key()
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=400), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue_server_cert(issuer_key, issuer_cert: x509.Certificate, out_dir: Path, common_name: str,
                      uri: str = SERVER_URI) -> tuple[Path, Path]:
    """An OPC-UA application instance certificate for a server, signed by ``issuer``: (cert DER, key PEM)."""
    key = _rsa_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=20))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, True, True, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.der", out_dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass(frozen=True)
class CaPki:
    ca_cert: Path  # the plant's CA, which the gateway trusts
    server_cert: Path  # issued by that CA
    server_key: Path
    other_ca_cert: Path  # a CA the gateway does not trust
    impostor_cert: Path  # same subject and application URI as server_cert, issued by the other CA
    impostor_key: Path


@pytest.fixture(scope="session")
def ca_pki(tmp_path_factory: pytest.TempPathFactory) -> CaPki:
    root = tmp_path_factory.mktemp("ca-pki")
    ca_key, ca = make_ca(root / "plant-ca.pem", "Plant CA")
    other_key, other = make_ca(root / "other-ca.pem", "Other CA")
    server = issue_server_cert(ca_key, ca, root / "server", "plant server")
    impostor = issue_server_cert(other_key, other, root / "impostor", "plant server")
    return CaPki(root / "plant-ca.pem", *server, root / "other-ca.pem", *impostor)
