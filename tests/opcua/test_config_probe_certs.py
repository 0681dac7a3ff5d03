"""Config checks, `plantwatch check` plan lines, the address-space probe and certificate making."""

from __future__ import annotations

import stat

from asyncua import ua
from cryptography import x509

from drivers import load
from drivers.base import TagSpec
from drivers.opcua import OpcUaDriver
from drivers.opcua.certs import application_uri, load_certificate, make_self_signed
from drivers.opcua.probe import probe
from tests.opcua.helpers import PlantServer, device, plant_tags, run, tags


def problems(dev, tag_list=()):
    return {(p.key, p.tag.name if p.tag else None): p.message for p in OpcUaDriver.check(dev, list(tag_list))}


def test_entry_point_loads_the_driver():
    assert load("opcua") is OpcUaDriver
    assert OpcUaDriver.schemes == ("opc.tcp",)
    assert {"mode", "security_policy", "trust", "password_file"} <= OpcUaDriver.device_keys
    assert {"sampling_interval_ms", "deadband_abs", "deadband_percent"} <= OpcUaDriver.tag_keys


def test_valid_config_has_no_problems_and_a_plan():
    dev = device("opc.tcp://10.0.0.5:4840/plc", publishing_interval_ms=500, batch_size=2)
    t = plant_tags(deadband_abs=0.5)
    assert OpcUaDriver.check(dev, t) == []
    plan = OpcUaDriver.plan(dev, t)
    assert "1 subscription, publishing interval 500 ms, 5 monitored items created in 3 request(s)" in plan[0]
    assert "5 item(s) with deadband; no security; anonymous" in plan[1]
    poll = OpcUaDriver.plan(device("opc.tcp://h:4840", mode="poll", interval_s=2.0), t)
    assert poll == ["poll 5 nodes every 2 s in 1 Read request(s) of up to 1000 nodes; no security; anonymous"]


def test_every_problem_is_reported_with_its_key(tmp_path):
    dev = device("tcp://h:4840", mode="push", publishing_interval_ms=0, security_policy="Basic128",
                 username="op", password="inline", trust=["/nonexistent.der"], queue_size=1.5)
    bad_tags = [
        TagSpec(0, "T0", "plc", "R101.TI01"),
        TagSpec(1, "T1", "plc", "ns=2;x=1"),
        TagSpec(2, "T2", "plc", "ns=2;s=ok", options={"deadband_abs": 1.0, "deadband_percent": 5.0}),
        TagSpec(3, "T3", "plc", "ns=2;i=5", options={"sampling_interval_ms": -1}),
    ]
    found = problems(dev, bad_tags)
    assert "opc.tcp://" in found[("url", None)]
    assert "subscribe, poll" in found[("mode", None)]
    assert "> 0" in found[("publishing_interval_ms", None)]
    assert "Basic256Sha256" in found[("security_policy", None)]
    assert "password_file" in found[("password", None)]
    assert "required with username" in found[("password_file", None)]
    assert "file not found" in found[("trust[0]", None)]
    assert "integer" in found[("queue_size", None)]
    assert "ns=2;s=R101.TI01" in found[("address", "T0")]
    assert "not an OPC-UA node id" in found[("address", "T1")]
    assert "not both" in found[("deadband_percent", "T2")]
    assert ">= 0" in found[("sampling_interval_ms", "T3")]


def test_login_or_trust_under_policy_none_needs_allow_insecure_login(tmp_path):
    password = tmp_path / "pw"
    password.write_text("secret\n")
    from drivers.opcua.certs import make_self_signed

    cert, _ = make_self_signed(tmp_path, "plc", key_size=1024)
    found = problems(device("opc.tcp://h:4840", username="op", password_file=str(password), trust=[str(cert)]))
    assert "sent in clear to an unverified server" in found[("username", None)]
    assert "is not used with security_policy None" in found[("trust", None)]
    allowed = device("opc.tcp://h:4840", username="op", password_file=str(password), trust=[str(cert)],
                     allow_insecure_login=True)
    assert problems(allowed) == {}
    assert "user op (PASSWORD IN CLEAR: allow_insecure_login)" in "\n".join(OpcUaDriver.plan(allowed, []))
    assert "true or false" in problems(device("opc.tcp://h:4840", allow_insecure_login="yes"))[
        ("allow_insecure_login", None)]


def test_security_needs_certificate_and_key():
    found = problems(device("opc.tcp://h:4840", security_policy="Aes256Sha256RsaPss", security_mode="None"))
    assert "opcua-cert" in found[("cert_file", None)] and ("key_file", None) in found
    assert "does not go with" in found[("security_mode", None)]


def test_make_self_signed_writes_a_usable_certificate(tmp_path):
    cert_path, key_path = make_self_signed(tmp_path / "pki", "gateway 7", "urn:plant:gw7", days=10)
    cert = load_certificate(cert_path)
    assert application_uri(cert) == "urn:plant:gw7"
    assert cert.subject.rfc4514_string() == "CN=gateway 7"
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 10
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes()


def test_probe_lists_node_ids_types_and_values():
    async def main():
        async with PlantServer() as srv:
            await srv.set("R101.CNT", 0, status=ua.StatusCodes.BadSensorFailure)
            return await probe(srv.url, depth=3)

    lines = run(main())
    by_id = {line.split()[0]: line for line in lines}
    assert by_id["ns=2;s=R101.TI01"].split()[1:3] == ["Double", "85"]
    assert by_id["ns=2;s=R101.PI01"].split()[1:3] == ["Float", "1.5"]
    assert by_id["ns=2;s=R101.RUN"].split()[1:3] == ["Boolean", "True"]
    assert by_id["ns=2;s=R101.CNT"].split()[1:3] == ["Int32", "BadSensorFailure"]
    assert "(R101/R101.TI01)" in by_id["ns=2;s=R101.TI01"]


def test_probe_refuses_bad_security_options():
    try:
        run(probe("opc.tcp://127.0.0.1:1/x", security_policy="Basic256Sha256"))
    except ValueError as exc:
        assert "cert_file" in str(exc)
    else:
        raise AssertionError("probe accepted a policy without certificate")


def test_driver_tags_keep_config_indices():
    t = tags(["ns=2;s=A", "ns=2;s=B"], first_index=40)
    d = OpcUaDriver(device("opc.tcp://h:4840"), t)
    assert d.tag_indices.tolist() == [40, 41]
