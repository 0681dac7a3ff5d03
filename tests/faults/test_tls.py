"""MQTT over TLS with client certificates against a mosquitto that requires them, a client
certificate from another CA refused, and the password and key never showing in any output.

The PKI is made here (cryptography): a CA, a server certificate for 127.0.0.1/localhost, a
client certificate for the agent and one for the platform; a second CA for the impostor.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.broker import Mosquitto, free_port
from agent.config import UplinkSection
from agent.outbox import Outbox
from agent.receiver import Receiver, connect
from agent.uplink import Uplink
from tests.faults.certs import CertificateAuthority, Issued
from tests.faults.helpers import (
    PLANT,
    Burst,
    assert_every_committed_seq_arrived_in_order,
    plant_config,
    status_doc,
    tag_addresses,
    wait_for,
)
from tests.helpers import AgentProcess
from tests.modbus.server import start_server


@dataclass
class TlsBroker:
    broker: Mosquitto
    ca: CertificateAuthority
    agent: Issued
    platform: Issued
    password: str
    platform_password: str

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker.port}"

    def receiver(self) -> tuple[Receiver, object]:
        receiver = Receiver(emit=lambda line: None)
        url = f"mqtts://platform:{self.platform_password}@127.0.0.1:{self.broker.port}"
        sub = connect(receiver, url, PLANT, ca_file=str(self.ca.path), cert_file=str(self.platform.cert),
                      key_file=str(self.platform.key))
        return receiver, sub


@pytest.fixture
def tls_broker(tmp_path: Path):
    pki = tmp_path / "pki"
    ca = CertificateAuthority(pki)
    server = ca.issue("server", server=True)
    agent, platform = ca.issue("gateway-640100000001", server=False), ca.issue("platform", server=False)
    password, platform_password = f"pw-{secrets.token_hex(16)}", f"pw-{secrets.token_hex(16)}"
    passwd = tmp_path / "mosquitto.passwd"
    for user, pw in (("gateway-640100000001", password), ("platform", platform_password)):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwd.exists() else []), str(passwd), user, pw],
                       check=True, capture_output=True)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\n"
        f"cafile {ca.path}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        "require_certificate true\n"
        f"password_file {passwd}\nallow_anonymous false\n"
    )
    broker = Mosquitto(port=port, extra=extra, workdir=tmp_path / "mosquitto").start()
    yield TlsBroker(broker, ca, agent, platform, password, platform_password)
    broker.close()


def secret_fragments(tls: TlsBroker) -> list[str]:
    """The password, and every line of the agent's private key (a line is 64 base64 chars)."""
    key_lines = [ln for ln in tls.agent.key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return [tls.password, *key_lines]


def test_agent_over_mutual_tls_delivers_alarms_and_never_shows_secrets(tmp_path, tls_broker, write_config):
    tls = tls_broker
    (tmp_path / "mqtt.password").write_text(tls.password + "\n")
    receiver, sub = tls.receiver()
    with start_server(holding={}) as plc:
        addresses = tag_addresses(2)
        for a in addresses:
            plc.set_value(a, 120.0, type="float32")
        data = plant_config(plc.url, tls.url, tags=2, mqtt_version=5, username="gateway-640100000001",
                            password_file="mqtt.password", ca_file=str(tls.ca.path), cert_file=str(tls.agent.cert),
                            key_file=str(tls.agent.key))
        data["agent"]["log_level"] = "DEBUG"
        config = write_config(data)
        check = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 30), agent.output()
            for n, value in enumerate((170.0, 150.0, 175.0), 1):  # H on both tags, cleared, H again
                for a in addresses:
                    plc.set_value(a, value, type="float32")
                assert receiver.wait(lambda r, n=n: len(r.alarms) >= 2 * n, 20), (receiver.summary(), agent.output())
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()
    seqs = assert_every_committed_seq_arrived_in_order(receiver, tmp_path / "data" / "outbox.db")
    assert len(seqs) == 6
    outputs = {
        "agent log": agent.output(),
        "check output": check.stdout + check.stderr,
        "payloads": json.dumps(receiver.alarms + list(receiver.status.values()), ensure_ascii=False),
        "outbox": (tmp_path / "data" / "outbox.db").read_bytes().decode("latin-1"),
    }
    assert "uplink: connected" in outputs["agent log"]
    for where, text in outputs.items():
        for fragment in secret_fragments(tls):
            assert fragment not in text, f"a secret appears in the {where}"


def test_client_certificate_from_another_ca_is_refused(tmp_path, tls_broker):
    tls = tls_broker
    impostor = CertificateAuthority(tmp_path / "other-pki", name="impostor CA").issue("gateway-640100000001", server=False)
    password_file = tmp_path / "mqtt.password"
    password_file.write_text(tls.password)
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    burst = Burst(path, lambda: None, total=50, batch=10, pause=0.0)
    burst.run()
    assert burst.error is None
    receiver, sub = tls.receiver()

    def uplink(cert: Issued) -> Uplink:
        cfg = UplinkSection(url=tls.url, username="gateway-640100000001", password_file=password_file,
                            ca_file=tls.ca.path, cert_file=cert.cert, key_file=cert.key,
                            keepalive_s=2.0, heartbeat_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.3)
        return Uplink(cfg, PLANT, path, status_doc)

    wrong = uplink(impostor)
    wrong.start()
    try:
        assert wait_for(lambda: wrong.connect_failures >= 3, 30), wrong.last_error
        assert wrong.connections == 0
        assert "certificate verify failed" in tls.broker.log.read_text(errors="replace")
        assert receiver.alarms == [] and PLANT not in receiver.status
        assert outbox.depth()["alarm"] == 50  # still there, for a gateway with the right certificate
    finally:
        wrong.stop(1.0)
    assert tls.password not in wrong.last_error
    right = uplink(tls.agent)
    right.start()
    try:
        assert_every_committed_seq_arrived_in_order(receiver, path, timeout=30)
        assert right.connections >= 1
    finally:
        right.stop(2.0)
        sub.loop_stop()
        outbox.close()
