"""Self-signed OPC-UA application instance certificates for the gateway (``plantwatch opcua-cert``).

OPC-UA servers identify a client by its application instance certificate; the application URI
must appear in the certificate's subjectAltName and match the ApplicationUri the client sends in
CreateSession, or most servers refuse the session.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "plantwatch-opcua-cert.der"
KEY_NAME = "plantwatch-opcua-key.pem"


# declarative: the certificate is one builder chain naming every extension OPC-UA asks for
def make_self_signed(
    out_dir: str | os.PathLike[str],
    common_name: str = "plantwatch",
    application_uri: str | None = None,
    days: int = 3650,
    *,
    host_name: str | None = None,
    key_size: int = 2048,
) -> tuple[Path, Path]:
    """Write a new RSA key (PEM, mode 0600) and a self-signed certificate (DER) into ``out_dir``.

    The certificate carries the key usages OPC-UA asks of an application instance certificate
    (signature, non-repudiation, key and data encipherment, client and server auth) and the
    application URI and host name in its subjectAltName. Returns ``(cert_path, key_path)``.
    """
    host = host_name or socket.gethostname()
    uri = application_uri or f"urn:{host}:plantwatch"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri), x509.DNSName(host)]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        pass
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # a few minutes of slack: gateway and server clocks rarely agree to the second
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = out / CERT_NAME
    key_path = out / KEY_NAME
    _write_private_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


def _write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # the key is written with 0600 from the start so it is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """A certificate from a DER or PEM file."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def application_uri(cert: x509.Certificate) -> str | None:
    """The first URI in the certificate's subjectAltName, which OPC-UA uses as application URI."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, the form server admin tools show."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(cert: x509.Certificate) -> str:
    """One line naming a certificate for error messages: subject and fingerprint."""
    return f"{cert.subject.rfc4514_string()} (SHA-256 {fingerprint(cert)})"
