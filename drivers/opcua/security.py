"""Client security for OPC-UA: the application certificate, the server trust list and user login.

The server certificate is checked against the configured trust list before the secure channel
is opened and again in CreateSession (so a server that comes back with another certificate after
a restart is refused too). Nothing is sent that identifies the user (ActivateSession carries the
password) before the server has been found trustworthy. The password is read from its file when
connecting and is never put in a log line, an error text or a repr.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.base import DriverError
from drivers.opcua.certs import application_uri, describe, load_certificate

POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class UntrustedServerError(DriverError):
    """The server presented a certificate that is not in the trust list."""


def _first_der(chain: bytes) -> bytes:
    # ServerCertificate may be a concatenated chain; the leaf is the first DER SEQUENCE
    return uacrypto.der_from_x509(uacrypto.x509_from_der(chain))


class TrustList:
    """Server certificates the gateway accepts: each pinned exactly, or as the CA that issued it."""

    def __init__(self, files: tuple[Path, ...] | list[Path]):
        self.files = tuple(files)
        self.certs = [load_certificate(f) for f in self.files]
        self._ders = {c.public_bytes(serialization.Encoding.DER) for c in self.certs}

    def problem(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is not acceptable, or None when it is."""
        now = dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            return (f"server certificate {describe(cert)} is outside its validity period "
                    f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})")
        if cert.public_bytes(serialization.Encoding.DER) in self._ders:
            return None
        for ca in self.certs:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, Exception):  # wrong issuer name, algorithm or signature
                continue
            return None
        where = ", ".join(str(f) for f in self.files) if self.files else "empty"
        return (f"server certificate {describe(cert)} is not trusted (trust list: {where}); "
                "if this is the right server, save its certificate and add the file to the device's trust = [...]")

    async def validate(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        """asyncua's certificate_validator hook, run on every CreateSession (reconnects too)."""
        if self.problem(cert) is not None:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


def read_secret(path: Path) -> str:
    """A password or key passphrase from its file; one trailing newline is not part of it."""
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


async def apply(client: Client, opts) -> None:
    """Configure ``client`` for ``opts`` (a DeviceOptions): timeouts, identity, security.

    With a security policy this asks the server for its endpoints over an unsecured discovery
    channel, refuses the server unless its certificate is trusted, then sets up the secure channel
    pinned to that certificate. Raises DriverError with a text fit for a ``comm`` alarm.
    """
    client.session_timeout = int(opts.session_timeout_s * 1000)
    client.name = client.description = "plantwatch"
    client.product_uri = "urn:plantwatch"
    if opts.username:
        client.set_user(opts.username)
        try:
            client.set_password(read_secret(opts.password_file))
        except OSError as exc:
            raise DriverError(f"cannot read password_file {opts.password_file}: {exc.strerror}") from None
    cert = key_der = None
    if opts.cert_file is not None and opts.key_file is not None:
        try:
            cert = load_certificate(opts.cert_file)
            password = read_secret(opts.key_password_file).encode() if opts.key_password_file else None
            key_data = opts.key_file.read_bytes()
            if key_data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(key_data, password=password)
            else:
                key = serialization.load_der_private_key(key_data, password=password)
        except (OSError, ValueError, TypeError) as exc:
            raise DriverError(f"cannot load client certificate or key: {exc}") from None
        key_der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    uri = opts.application_uri or (application_uri(cert) if cert is not None else None)
    if uri:
        client.application_uri = uri
    if not opts.secure:
        return
    assert cert is not None and key_der is not None  # config.parse requires both with a policy
    trust = TrustList(opts.trust)
    policy = POLICY_CLASSES[opts.security_policy]
    mode = getattr(ua.MessageSecurityMode, opts.security_mode)
    endpoints = await client.connect_and_get_server_endpoints()
    endpoint = next(
        (ep for ep in endpoints if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode), None
    )
    if endpoint is None:
        offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints})
        raise DriverError(
            f"server offers no endpoint with {opts.security_policy}/{opts.security_mode}; it offers: {', '.join(offered)}"
        )
    server_der = _first_der(endpoint.ServerCertificate)
    problem = trust.problem(x509.load_der_x509_certificate(server_der))
    if problem is not None:
        raise UntrustedServerError(problem)
    client.certificate_validator = trust.validate
    await client.set_security(
        policy,
        uacrypto.CertProperties(cert.public_bytes(serialization.Encoding.DER), extension="der"),
        uacrypto.CertProperties(key_der, extension="der"),
        server_certificate=uacrypto.CertProperties(server_der, extension="der"),
        mode=mode,
    )
