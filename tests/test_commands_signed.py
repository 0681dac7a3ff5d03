"""Signed operator commands through a real broker to a running agent: HMAC-SHA256 and Ed25519
applied once with their author; unsigned, badly signed, stale, replayed, retained commands and
those beyond the rate refused, counted in /metrics by reason, logged without their secrets, and
never changing an alarm. Commands stay off unless enabled, and enabling them needs a key."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import signal
import subprocess
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.broker import free_port
from agent.receiver import Receiver, connect
from agent.signing import sign
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess
from tests.modbus.server import start_server
from tests.test_operators import http, metric, wait_for_socket

ID = "R101.TI01/limit"


def publish(port: int, payload: bytes, retain: bool = False) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(f"plantwatch/{PLANT}/cmd", payload, qos=1, retain=retain).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def command(op: str = "ack", t: float | None = None, **extra) -> dict:
    when = dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC)
    return {"schema": "plantwatch.cmd/1", "plant": PLANT, "op": op, "id": ID,
            "ts": when.isoformat(timespec="milliseconds"), "nonce": secrets.token_hex(16), **extra}


def test_signed_commands_are_applied_once_and_everything_else_is_refused(tmp_path, write_config, mosquitto):
    key = secrets.token_bytes(32)
    (tmp_path / "cmd.key").write_bytes(key)
    private = Ed25519PrivateKey.generate()
    (tmp_path / "cmd.pub").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # a valid, retained command left on the broker before the agent starts: delivered at subscribe, refused
    publish(mosquitto.port, sign(command("shelve", duration_s=60), "hmac-sha256", key), retain=True)
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port, "commands": True, "command_key_file": "cmd.key",
                                "command_public_key_file": "cmd.pub", "command_rate_per_min": 12}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), agent.output()
            wait_for_socket(tmp_path / "data" / "api.sock")
            ack = sign(command(user="省平台"), "hmac-sha256", key)
            tampered = json.loads(sign(command("out_of_service", duration_s=60, comment="x"), "hmac-sha256", key))
            tampered["command"] = tampered["command"].replace("out_of_service", "suppress")
            bad = [
                json.dumps(command("unshelve")).encode(),  # unsigned
                json.dumps(tampered).encode(),  # signature
                sign(command("suppress", duration_s=60, comment="x"), "hmac-sha256", secrets.token_bytes(32)),
                sign(command("unshelve", t=time.time() - 3600), "hmac-sha256", key),  # stale
                ack,  # the valid ack ...
                ack,  # ... replayed
                b"\x00\xff not json",
            ]
            for payload in bad:
                publish(mosquitto.port, payload)
            assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
            shelve = sign(command("shelve", duration_s=600, comment="维修"), "ed25519", private)
            publish(mosquitto.port, shelve)
            assert receiver.wait(lambda r: len(r.alarms) >= 3, 10), agent.output()
            for _ in range(5):  # 7 + 1 = 8 so far this minute (a retained one is refused first); the limit is 12
                publish(mosquitto.port, sign(command("unshelve"), "hmac-sha256", key))
            assert receiver.wait(lambda r: len(r.alarms) >= 4, 10), agent.output()
            deadline = time.monotonic() + 10
            while metric(port, 'plantwatch_commands_refused_total{reason="rate"}').split()[-1] != "1":
                assert time.monotonic() < deadline, agent.output()
                time.sleep(0.1)
            counts = {r: metric(port, f'plantwatch_commands_refused_total{{reason="{r}"}}').split()[-1]
                      for r in ("retained", "unsigned", "signature", "stale", "replay", "malformed", "rate")}
            status, body = http(port, "GET", "/alarms")
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()
    assert counts == {"retained": "1", "unsigned": "1", "signature": "2", "stale": "1", "replay": "1",
                      "malformed": "1", "rate": "1"}
    # applied: the HMAC ack, the Ed25519 shelve and one unshelve; the rest changed nothing
    assert [(a["state"], a["context"].get("user"), a["context"].get("via")) for a in receiver.alarms] == [
        ("active", None, None), ("acked", "mqtt:hmac-sha256", "mqtt"), ("shelved", "mqtt:ed25519", "mqtt"),
        ("unshelved", "mqtt:hmac-sha256", "mqtt")]
    assert receiver.alarms[1]["context"]["claimed_user"] == "省平台"
    alarm = next(a for a in json.loads(body)["alarms"] if a["id"] == ID)
    assert (alarm["suppressed"], alarm["out_of_service"], alarm["shelved"]) == (False, False, False)
    log = agent.output()
    for reason in ("retained", "unsigned", "signature", "stale", "replay", "malformed", "rate"):
        assert f"mqtt command refused ({reason})" in log, reason
    assert "Traceback" not in log
    secrets_in_log = [base64.b64encode(key).decode(), key.hex(), json.loads(ack)["sig"], json.loads(shelve)["sig"]]
    assert not [s for s in secrets_in_log if s in log]


def test_commands_need_a_key_and_stay_off_unless_enabled(tmp_path, write_config, mosquitto):
    data = config_dict()
    data["alarm_system"] = {"commands": True}
    out = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(write_config(data))],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "alarm_system.commands: commands over MQTT must be signed" in out.stderr
    key = secrets.token_bytes(32)
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        (tmp_path / "cmd.key").write_bytes(key)
        data["alarm_system"] = {"api_port": 0, "command_key_file": "cmd.key"}  # a key, but commands off
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), agent.output()
            publish(mosquitto.port, sign(command(), "hmac-sha256", key))
            plc.set_value(100, 185.0, type="float32")  # a later event proves the agent is still publishing
            assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
            sub.loop_stop()
    assert [a["state"] for a in receiver.alarms] == ["active", "active"]
    assert receiver.alarms[1]["acked"] is False
