"""The agent refuses a broker it cannot verify: a certificate from a CA it does not trust, or one
issued for another host. A real mosquitto serves each certificate on a TLS listener; the platform
listens on a second, plain loopback listener of the same broker. The agent must not connect, must
send nothing (no MQTT CONNECT, so no user name or password, no status, no alarm) and must keep
its alarms in the outbox. The same setup with the right certificate delivers, so each refusal is
the certificate's doing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from agent.broker import Mosquitto, free_port, wait_port
from agent.outbox import Outbox
from agent.receiver import Receiver, connect
from tests.faults.certs import CertificateAuthority
from tests.faults.helpers import PLANT, plant_config
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

PASSWORD = "pw-tls-refusal-5d41402abc4b2a76"


def tls_broker(tmp_path: Path, ca: CertificateAuthority, names: tuple[str, ...]) -> tuple[Mosquitto, int]:
    server = ca.issue("broker", server=True, names=names)
    tls_port, plain_port = free_port(), free_port()
    while plain_port == tls_port:
        plain_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {ca.path}\ncertfile {server.cert}\nkeyfile {server.key}\n"
             f"listener {plain_port} 127.0.0.1\nallow_anonymous true\nlog_type all\n")
    broker = Mosquitto(port=tls_port, extra=extra, workdir=tmp_path / "mosquitto").start()
    wait_port(plain_port)  # start() waits for the TLS listener only; the plain one may open after it
    return broker, plain_port


@pytest.mark.parametrize("case", ["untrusted CA", "wrong host name", "trusted"])
def test_the_agent_sends_nothing_to_a_broker_it_cannot_verify(case, tmp_path, write_config):
    pki = CertificateAuthority(tmp_path / "pki", name="platform CA")
    other = CertificateAuthority(tmp_path / "other", name="impostor CA")
    names = ("broker.platform.example",) if case == "wrong host name" else ("localhost", "127.0.0.1")
    broker, plain_port = tls_broker(tmp_path, other if case == "untrusted CA" else pki, names)
    (tmp_path / "mqtt.password").write_text(PASSWORD + "\n")
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, f"mqtt://127.0.0.1:{plain_port}", PLANT)
    try:
        with start_server(holding={}) as plc:
            plc.set_value(100, 170.0, type="float32")  # an alarm to deliver
            data = plant_config(plc.url, f"mqtts://127.0.0.1:{broker.port}", tags=1, username="gateway",
                                password_file="mqtt.password", ca_file=str(pki.path))
            agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
            try:
                deadline = time.monotonic() + 30
                while agent.output().count("uplink: cannot connect") < 3 and not receiver.alarms:
                    assert time.monotonic() < deadline, agent.output()
                    time.sleep(0.2)
                if case == "trusted":
                    assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), agent.output()
                assert agent.signal(signal.SIGTERM) == 0, agent.output()
            finally:
                agent.kill()
    finally:
        sub.loop_stop()
        broker.close()
    log, broker_log = agent.output(), broker.log.read_text(errors="replace")
    assert PASSWORD not in log
    if case == "trusted":
        assert "uplink: connected" in log and receiver.alarms[0]["state"] == "active"
        assert f"as plantwatch-{PLANT} (p2, c1, k2, u'gateway')" in broker_log  # what a session looks like
        return
    # (the broker sends its CA along: the chain ends at a self-signed CA nobody trusts here)
    why, alert = {"untrusted CA": ("certificate verify failed: self-signed certificate in certificate chain",
                                   "tlsv1 alert unknown ca"),
                  "wrong host name": ("certificate verify failed: IP address mismatch", "alert bad certificate")}[case]
    assert why in log, log
    assert "uplink: connected" not in log
    # the agent broke off the TLS handshake: the broker saw no MQTT session (no CONNECT, so no
    # user name or password), no publish; nothing reached the platform
    assert alert in broker_log, broker_log
    assert f"as plantwatch-{PLANT}" not in broker_log and "gateway" not in broker_log, broker_log
    assert "Received PUBLISH" not in broker_log, broker_log
    assert receiver.alarms == [] and PLANT not in receiver.status
    outbox = Outbox(tmp_path / "data" / "outbox.db")
    try:
        assert outbox.depth()["alarm"] >= 1  # kept for a broker the agent can verify
    finally:
        outbox.close()
