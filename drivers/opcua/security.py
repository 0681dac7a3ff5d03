"""Client security for OPC-UA: the application certificate, the server trust list and user login.

The server certificate is checked against the configured trust list before the secure channel
is opened and again in CreateSession (so a server that comes back with another certificate after
a restart is refused too). Nothing is sent that identifies the user (ActivateSession carries the
password) before the server has been found trustworthy. The password is read from its file when
connecting and is never put in a log line, an error text or a repr.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification

from drivers.base import DriverError
from drivers.opcua.certs import application_uri, describe, load_certificate

log = logging.getLogger(__name__)

POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class UntrustedServerError(DriverError):
    """The server presented a certificate that is not in the trust list."""


class ClientKeyError(DriverError):
    """The client private key cannot be loaded; ``key`` names the config key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _first_der(chain: bytes) -> bytes:
    # ServerCertificate may be a concatenated chain; the leaf is the first DER SEQUENCE
    return uacrypto.der_from_x509(uacrypto.x509_from_der(chain))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class TrustList:
    """Server certificates the gateway accepts: each pinned exactly, or issued by a trusted CA.

    A trusted certificate that is a CA (basicConstraints CA:TRUE) accepts every server
    certificate whose chain ends at it. The chain is checked with cryptography's X.509 path
    validation: the CA's signature, both certificates' validity periods, and the RFC 5280 / CA/B
    rules for the CA (basicConstraints, keyCertSign, path length, allowed signature algorithms).
    The server certificate's own extensions are not held to web-PKI rules: OPC-UA application
    certificates carry an application URI rather than a host name, and their key and extended key
    usages vary between vendors. A pinned certificate that is not a CA only ever matches itself,
    so a self-signed server certificate in the list cannot vouch for others.
    """

    def __init__(self, files: tuple[Path, ...] | list[Path]):
        self.files = tuple(files)
        self.certs = [load_certificate(f) for f in self.files]
        self._ders = {c.public_bytes(serialization.Encoding.DER) for c in self.certs}
        self.cas = [c for c in self.certs if _is_ca(c)]

    def _chain_problem(self, cert: x509.Certificate, now: dt.datetime) -> str:
        """Why ``cert`` does not chain to a trusted CA (the caller knows it is not pinned)."""
        if not self.cas:
            return "it is not in the trust list, which holds no CA certificate"
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(self.cas))
            .time(now)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            # the client verifier checks no subject name; permit_all drops its clientAuth EKU rule
            .build_client_verifier()
        )
        try:
            verifier.verify(cert, [])
        except verification.VerificationError as exc:
            return f"issuer {cert.issuer.rfc4514_string()} is not a trusted CA or the chain is invalid ({exc})"
        return ""

    def problem(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is not acceptable, or None when it is."""
        now = dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            return (f"server certificate {describe(cert)} is outside its validity period "
                    f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})")
        if cert.public_bytes(serialization.Encoding.DER) in self._ders:
            return None
        reason = self._chain_problem(cert, now)
        if not reason:
            return None
        where = ", ".join(str(f) for f in self.files) if self.files else "empty"
        return (f"server certificate {describe(cert)} is not trusted: {reason} (trust list: {where}); "
                "if this is the right server, add its certificate or its CA's certificate to the device's "
                "trust = [...]")

    async def validate(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        """asyncua's certificate_validator hook, run on every CreateSession (reconnects too)."""
        if self.problem(cert) is not None:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


def read_secret(path: Path) -> str:
    """A password or key passphrase from its file; one trailing newline is not part of it."""
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def load_client_key(key_file: Path, password_file: Path | None) -> PrivateKeyTypes:
    """The client private key (PEM or DER, encrypted when ``password_file`` is given).

    Raises ClientKeyError naming the file at fault. The passphrase never appears in the message:
    cryptography's errors do not carry it, and none is formatted in here.
    """
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise ClientKeyError("key_file", f"cannot read key_file {key_file}: {exc.strerror}") from None
    load = (serialization.load_pem_private_key if data.lstrip().startswith(b"-----BEGIN")
            else serialization.load_der_private_key)
    # a first load without a passphrase tells an encrypted key from a plain or malformed one, so a
    # malformed key is not reported as a wrong passphrase
    try:
        key = load(data, password=None)
        encrypted = False
    except TypeError:
        encrypted = True
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ClientKeyError("key_file", f"key_file {key_file} is not a PEM or DER private key ({exc})") from None
    if not encrypted:
        if password_file is not None:
            raise ClientKeyError("key_password_file", f"key_file {key_file} is not encrypted, yet "
                                 f"key_password_file {password_file} is set; remove key_password_file")
        return key
    if password_file is None:
        raise ClientKeyError("key_password_file", f"key_file {key_file} is encrypted; set key_password_file "
                             "to a file holding its passphrase")
    try:
        password = read_secret(password_file).encode()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ClientKeyError("key_password_file", f"cannot read key_password_file {password_file}: {reason}") from None
    try:
        return load(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ClientKeyError("key_password_file", f"cannot decrypt key_file {key_file} with the passphrase in "
                             f"key_password_file {password_file} (wrong passphrase?)") from None


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
        if not opts.secure:  # allowed only by allow_insecure_login; asyncua's own warning is silenced
            log.warning("OPC-UA %s: the password of user %s is sent in clear (security_policy None, "
                        "allow_insecure_login = true)", opts.url, opts.username)
        client.set_user(opts.username)
        try:
            client.set_password(read_secret(opts.password_file))
        except OSError as exc:
            raise DriverError(f"cannot read password_file {opts.password_file}: {exc.strerror}") from None
    cert = key_der = None
    if opts.cert_file is not None and opts.key_file is not None:
        try:
            cert = load_certificate(opts.cert_file)
        except (OSError, ValueError) as exc:
            raise DriverError(f"cannot load cert_file {opts.cert_file}: {exc}") from None
        key = load_client_key(opts.key_file, opts.key_password_file)
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
