"""Self-signed OPC-UA application instance certificates for the gateway (``plantwatch opcua-cert``).

OPC-UA servers identify a client by its application instance certificate; the application URI
must appear in the certificate's subjectAltName and match the ApplicationUri the client sends in
CreateSession, or most servers refuse the session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import ipaddress
import os
import secrets
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
    replace: bool = False,
) -> tuple[Path, Path]:
    """Write a new RSA key (PEM, mode 0600) and a self-signed certificate (DER) into ``out_dir``.

    An existing key or certificate there is an error (FileExistsError) unless ``replace``: then
    both are replaced atomically (written beside and renamed over, so a reader sees the old pair
    or the new one, never half a key). A symbolic link at either path is never followed.

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
    if not replace:
        for path in (key_path, cert_path):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "exists (replace it with --force)", str(path))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_new(key_path, key_pem, 0o600, replace=replace)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.DER), 0o644, replace=replace)
    return cert_path, key_path


def write_new(path: Path, data: bytes, mode: int, replace: bool = False) -> None:
    """Write ``data`` to a file created with exactly ``mode``, whatever the umask.

    The file is created with O_EXCL | O_NOFOLLOW: an existing file or a symbolic link at ``path``
    is never opened, so a key can neither inherit an older, looser mode nor be written through a
    planted link. It is opened with ``mode`` from the start (never readable by others, not even
    briefly) and fchmod'ed to it (the umask can only have taken bits away). With ``replace`` it
    goes to a new name beside ``path`` first and is renamed over it (a link there is replaced,
    not followed).
    """
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            with contextlib.suppress(OSError):
                os.unlink(target)
        raise


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
