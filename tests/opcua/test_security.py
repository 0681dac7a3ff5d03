"""Security: every supported policy works, server certificates are checked against the trust
list, client certificates are checked by the server, and the password stays secret."""

from __future__ import annotations

import logging

from asyncua import ua

from drivers.base import COMM_FAIL, GOOD
from drivers.opcua import OpcUaDriver
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
