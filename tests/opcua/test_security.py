"""Security: every supported policy works, server certificates are checked against the trust
list (pinned, or through the CA that issued them), client certificates are checked by the server,
encrypted client keys are opened with their passphrase file, and passwords stay secret."""

from __future__ import annotations

import datetime as dt
import logging

from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from drivers.base import COMM_FAIL, GOOD
from drivers.opcua import OpcUaDriver
from drivers.opcua.certs import load_certificate
from drivers.opcua.security import TrustList
from tests.opcua.conftest import issue_server_cert, make_ca
from tests.opcua.helpers import Collector, PasswordUsers, PlantServer, device, plant_tags, run

POLICIES = [
    ("Basic256Sha256", "Sign"),
    ("Basic256Sha256", "SignAndEncrypt"),
    ("Aes128Sha256RsaOaep", "SignAndEncrypt"),
    ("Aes256Sha256RsaPss", "SignAndEncrypt"),
]


def secure_device(url, certs, trust, policy="Basic256Sha256", security_mode="SignAndEncrypt", cert=None,
                  key=None, interval_s=0.2, **kw):
    return device(url, interval_s=interval_s, publishing_interval_ms=50, reconnect_max_s=0.5,
                  security_policy=policy, security_mode=security_mode, cert_file=str(cert or certs.client_cert),
                  key_file=str(key or certs.client_key), trust=[str(t) for t in trust], **kw)


async def first_batch(driver: OpcUaDriver):
    async with Collector(driver) as c:
        await c.wait_for(lambda c: len(c.batches) >= 1, what="first batch")
        return c.batches[0]


def secure_server(certs, **kw) -> PlantServer:
    policies = [getattr(ua.SecurityPolicyType, f"{p}_{m}") for p, m in POLICIES]
    return PlantServer(policies=policies, cert=certs.server_cert, key=certs.server_key,
                       trusted_clients=[certs.client_cert], **kw)


def test_every_security_policy_connects_to_a_trusted_server(certs):
    async def main():
        async with secure_server(certs) as srv:
            for policy, mode in POLICIES:
                batch = await first_batch(OpcUaDriver(
                    secure_device(srv.url, certs, [certs.server_cert], policy, mode), plant_tags()))
                assert batch.error is None, (policy, mode, batch.error)
                assert (batch.quality == GOOD).all() and batch.value[0] == 85.0

    run(main())


def test_untrusted_server_certificate_is_refused_with_a_clear_error(certs):
    async def main():
        async with secure_server(certs) as srv:
            for trust in ([], [certs.other_server_cert]):
                driver = OpcUaDriver(secure_device(srv.url, certs, trust), plant_tags())
                async with Collector(driver) as c:
                    await c.wait_for(lambda c: len(c.batches) >= 2, what="two failed batches")
                for b in c.batches:
                    assert (b.quality == COMM_FAIL).all()
                    assert "server certificate CN=plant server" in b.error and "not trusted" in b.error
                    assert "trust = [...]" in b.error
                # refused before any session was created
                assert srv.session_count() == 0

    run(main())


def test_server_refuses_an_unknown_client_certificate(certs):
    async def main():
        async with secure_server(certs) as srv:
            driver = OpcUaDriver(secure_device(srv.url, certs, [certs.server_cert], cert=certs.stranger_cert,
                                               key=certs.stranger_key), plant_tags())
            batch = await first_batch(driver)
            assert batch.error is not None and "BadCertificateUntrusted" in batch.error
            assert (batch.quality == COMM_FAIL).all()
            assert srv.session_count() == 0

    run(main())


def test_server_refuses_a_client_without_certificate(certs):
    async def main():
        async with secure_server(certs) as srv:
            # no security configured: the server offers no endpoint without it
            driver = OpcUaDriver(device(srv.url, reconnect_max_s=0.5), plant_tags())
            batch = await first_batch(driver)
            assert batch.error is not None and "No matching endpoints" in batch.error
            assert (batch.quality == COMM_FAIL).all()

    run(main())


def test_username_and_password_from_file_and_never_logged(certs, tmp_path, caplog):
    secret = "Wx9-pl@nt-s3cret"
    pw_file = tmp_path / "opcua.pw"
    pw_file.write_text(secret + "\n")
    wrong_file = tmp_path / "wrong.pw"
    wrong_file.write_text("guess\n")

    async def main():
        users = PasswordUsers("gateway", secret)
        async with secure_server(certs, users=users) as srv:
            ok = await first_batch(OpcUaDriver(
                secure_device(srv.url, certs, [certs.server_cert], username="gateway", password_file=str(pw_file)),
                plant_tags()))
            assert ok.error is None and ok.value[0] == 85.0
            bad = await first_batch(OpcUaDriver(
                secure_device(srv.url, certs, [certs.server_cert], username="gateway", password_file=str(wrong_file)),
                plant_tags()))
            assert bad.error is not None and (bad.quality == COMM_FAIL).all()
            assert users.attempts == ["gateway", "gateway"]
            return ok, bad

    with caplog.at_level(logging.DEBUG):
        ok, bad = run(main())
    assert secret not in caplog.text
    assert all(secret not in str(b) for b in (ok, bad))
    assert "password" not in (bad.error or "").lower() or secret not in bad.error


def test_poll_mode_reports_a_refused_client_certificate_and_keeps_trying(certs):
    async def main():
        async with secure_server(certs) as srv:
            driver = OpcUaDriver(secure_device(srv.url, certs, [certs.server_cert], cert=certs.stranger_cert,
                                               key=certs.stranger_key, mode="poll", interval_s=0.1),
                                 plant_tags())
            async with Collector(driver) as c:
                await c.wait_for(lambda c: len(c.batches) >= 3, what="three failed polls")
            assert all("BadCertificateUntrusted" in b.error for b in c.batches)
            assert all((b.quality == COMM_FAIL).all() for b in c.batches)

    run(main())


def encrypted_key(certs, tmp_path, passphrase: str):
    """The client key re-written as PKCS#8 PEM encrypted with ``passphrase``, and its passphrase file."""
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    key_file = tmp_path / "client-key.enc.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(passphrase.encode())))
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    pw_file = tmp_path / "client-key.pw"
    pw_file.write_text(passphrase + "\n")
    return key_file, pw_file


def test_encrypted_client_key_with_passphrase_file(certs, tmp_path, caplog):
    passphrase = "Kx7-c4st!ng-key"
    key_file, pw_file = encrypted_key(certs, tmp_path, passphrase)
    wrong_file = tmp_path / "wrong.pw"
    wrong_file.write_text("not-the-passphrase\n")

    def dev(url, password_file):
        return secure_device(url, certs, [certs.server_cert], key=key_file, key_password_file=str(password_file))

    async def main():
        async with secure_server(certs) as srv:
            ok = await first_batch(OpcUaDriver(dev(srv.url, pw_file), plant_tags()))
            assert ok.error is None and (ok.quality == GOOD).all() and ok.value[0] == 85.0
            # the passphrase file is replaced by a wrong one while the gateway runs: every
            # connection attempt fails with the reason, and no session is created
            driver = OpcUaDriver(dev(srv.url, pw_file), plant_tags())
            pw_file.write_text("rotated-elsewhere\n")
            bad = await first_batch(driver)
            assert (bad.quality == COMM_FAIL).all()
            assert bad.error == (f"ClientKeyError: cannot decrypt key_file {key_file} with the passphrase in "
                                 f"key_password_file {pw_file} (wrong passphrase?)")
            assert srv.session_count() == 0
            return ok, bad

    with caplog.at_level(logging.DEBUG):
        ok, bad = run(main())

    # `plantwatch check` reports a wrong or missing passphrase before the gateway runs
    problems = OpcUaDriver.check(dev("opc.tcp://127.0.0.1:4840", wrong_file), plant_tags())
    assert [(p.key, p.message) for p in problems] == [(
        "key_password_file",
        f"cannot decrypt key_file {key_file} with the passphrase in key_password_file {wrong_file} "
        "(wrong passphrase?)",
    )]
    missing = OpcUaDriver.check(secure_device("opc.tcp://127.0.0.1:4840", certs, [certs.server_cert],
                                              key=key_file), plant_tags())
    assert [p.key for p in missing] == ["key_password_file"]
    assert f"key_file {key_file} is encrypted" in missing[0].message
    texts = [caplog.text, str(ok), str(bad), *(p.message for p in problems + missing)]
    for secret in (passphrase, "rotated-elsewhere", "not-the-passphrase"):
        assert all(secret not in t for t in texts)


def ca_server(certs, pki, *, impostor: bool = False) -> PlantServer:
    cert, key = (pki.impostor_cert, pki.impostor_key) if impostor else (pki.server_cert, pki.server_key)
    return PlantServer(policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], cert=cert, key=key,
                       trusted_clients=[certs.client_cert])


def test_server_certificate_trusted_through_its_ca(certs, ca_pki):
    async def main():
        async with ca_server(certs, ca_pki) as srv:
            # only the CA is in the trust list, not the server's own certificate
            driver = OpcUaDriver(secure_device(srv.url, certs, [ca_pki.ca_cert]), plant_tags())
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="first value")
                await srv.set("R101.TI01", 91.0)
                await c.wait_for(lambda c: c.last(0)[0] == 91.0, what="a change over the secure channel")
            assert all(b.error is None for b in c.batches)

    run(main())


def test_server_certificate_from_another_ca_is_refused(certs, ca_pki):
    async def main():
        # same subject and application URI as the real server, but issued by a CA nobody trusts
        async with ca_server(certs, ca_pki, impostor=True) as srv:
            for trust in ([ca_pki.ca_cert], [ca_pki.ca_cert, certs.server_cert]):
                driver = OpcUaDriver(secure_device(srv.url, certs, trust), plant_tags())
                async with Collector(driver) as c:
                    await c.wait_for(lambda c: len(c.batches) >= 2, what="two failed batches")
                for b in c.batches:
                    assert (b.quality == COMM_FAIL).all()
                    assert b.error.startswith("UntrustedServerError: server certificate CN=plant server")
                    assert "issuer CN=Other CA is not a trusted CA" in b.error
                    assert str(ca_pki.ca_cert) in b.error and "trust = [...]" in b.error
                assert srv.session_count() == 0

    run(main())


def test_chain_check_rejects_an_expired_ca_and_a_pinned_leaf_as_issuer(certs, tmp_path):
    now = dt.datetime.now(dt.UTC)
    # a CA that expired yesterday still signs correctly; its certificates must not be accepted
    old_key, old_ca = make_ca(tmp_path / "expired-ca.pem", "Expired CA", expired=True)
    server_cert, _ = issue_server_cert(old_key, old_ca, tmp_path / "by-expired", "plant server")
    reason = TrustList([tmp_path / "expired-ca.pem"]).problem(load_certificate(server_cert))
    assert reason is not None and "issuer CN=Expired CA is not a trusted CA or the chain is invalid" in reason
    # a pinned self-signed server certificate (not a CA) vouches only for itself, not for a
    # certificate signed with its key
    pinned = load_certificate(certs.server_cert)
    pinned_key = serialization.load_pem_private_key(certs.server_key.read_bytes(), password=None)
    forged = (
        x509.CertificateBuilder().subject_name(pinned.subject).issuer_name(pinned.subject)
        .public_key(pinned_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(pinned_key, hashes.SHA256())
    )
    trust = TrustList([certs.server_cert])
    assert trust.problem(pinned) is None
    reason = trust.problem(forged)
    assert reason is not None and "not in the trust list, which holds no CA certificate" in reason
