"""Operators act on alarms of a running agent: the local API, the CLI, the MQTT command topic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from agent.broker import free_port
from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess
from tests.modbus.server import start_server

ID = "R101.TI01/limit"


@pytest.fixture
def running(tmp_path, write_config, mosquitto):
    """An agent with the local API on a free port, a PLC with the temperature in H, a receiver."""
    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port, "commands": True}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
            plc.set_value(100, 170.0, type="float32")
            assert receiver.wait(lambda r: len(r.alarms) >= 1, 10), agent.output()
            yield config, port, receiver, agent
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60)


def http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ack_and_shelve_from_the_command_line(running):
    config, port, receiver, agent = running
    listed = plantwatch("alarms", str(config))
    assert listed.returncode == 0, listed.stderr
    assert ID in listed.stdout and "UNACKED" in listed.stdout

    acked = plantwatch("ack", str(config), ID, "--user", "张工", "--comment", "现场确认")
    assert acked.returncode == 0, acked.stderr
    assert receiver.wait(lambda r: len(r.alarms) >= 2, 10)
    msg = receiver.alarms[1]
    assert (msg["seq"], msg["state"], msg["acked"], msg["context"]["user"]) == (2, "acked", True, "张工")

    again = plantwatch("ack", str(config), ID)
    assert again.returncode == 1 and "already acknowledged" in again.stderr

    shelved = plantwatch("shelve", str(config), ID, "--for", "600")
    assert shelved.returncode == 0, shelved.stderr
    assert receiver.wait(lambda r: len(r.alarms) >= 3, 10)
    assert receiver.alarms[2]["state"] == "shelved" and "shelved_until" in receiver.alarms[2]["context"]

    too_long = plantwatch("shelve", str(config), ID, "--for", "999999")
    assert too_long.returncode == 1 and "duration_s must be in" in too_long.stderr

    unknown = plantwatch("ack", str(config), "R999/limit")
    assert unknown.returncode == 1 and "no alarm 'R999/limit'" in unknown.stderr
    assert [a["seq"] for a in receiver.alarms] == [1, 2, 3]


def test_local_api_validates_and_serves_metrics(running):
    config, port, receiver, agent = running
    status, body = http(port, "POST", f"/alarms/{ID.replace('/', '%2F')}/ack", b'{"user": 5}')
    assert status == 400 and b"user: 5 is not of type 'string'" in body
    status, body = http(port, "POST", f"/alarms/{ID.replace('/', '%2F')}/explode", b"{}")
    assert status == 400 and b"op:" in body
    status, body = http(port, "GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert "plantwatch_alarms_active 1" in text
    assert "plantwatch_commands_rejected_total 2" in text
    assert 'plantwatch_device_up{device="r1-plc"} 1' in text
    status, body = http(port, "GET", "/status")
    assert status == 200 and json.loads(body)["alarms"]["active"] == 1


def publish_command(url_port: int, payload: bytes) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    c.publish(f"plantwatch/{PLANT}/cmd", payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def test_commands_on_the_mqtt_topic_are_validated_and_applied(running, mosquitto):
    config, port, receiver, agent = running
    publish_command(mosquitto.port, b'{"schema": "plantwatch.cmd/1", "plant": "640100000001", "op": "ack", "id": 7}')
    publish_command(mosquitto.port, b"not json")
    publish_command(mosquitto.port, json.dumps({"schema": "plantwatch.cmd/1", "plant": "999", "op": "ack", "id": ID}).encode())
    publish_command(mosquitto.port, json.dumps({"schema": "plantwatch.cmd/1", "plant": PLANT, "op": "ack", "id": ID,
                                                "user": "省平台"}).encode())
    assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
    acked = receiver.alarms[1]
    assert (acked["state"], acked["context"]["user"]) == ("acked", "省平台")
    status, body = http(port, "GET", "/metrics")
    assert "plantwatch_commands_rejected_total 3" in body.decode()
    log = agent.output()
    assert "mqtt command rejected: id: 7 is not of type 'string'" in log
    assert "mqtt command rejected: plant: '999' is not this plant" in log


def test_commands_are_ignored_unless_enabled(tmp_path, write_config, mosquitto):
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), agent.output()
            publish_command(mosquitto.port, json.dumps({"schema": "plantwatch.cmd/1", "plant": PLANT, "op": "ack",
                                                        "id": ID}).encode())
            plc.set_value(100, 185.0, type="float32")  # a later event proves the agent is still publishing
            assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
            sub.loop_stop()
    assert [a["state"] for a in receiver.alarms] == ["active", "active"]
    assert receiver.alarms[1]["acked"] is False


def test_alarm_state_survives_an_agent_restart(tmp_path, write_config, mosquitto):
    """Acknowledged before a restart, still acknowledged after it; a condition that ended
    while the agent was down is cleared once the detector had its chance to confirm it."""
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        first = AgentProcess(config, tmp_path / "first.log").start()
        try:
            assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), first.output()
            assert plantwatch("ack", str(config), ID).returncode == 0
            assert receiver.wait(lambda r: len(r.alarms) >= 2, 10)
            assert first.signal(signal.SIGTERM) == 0

            second = AgentProcess(config, tmp_path / "second.log").start()
            assert receiver.wait(lambda r: r.plants[PLANT].online, 20), second.output()
            status, body = http_retry(port, "/alarms")
            alarm = next(a for a in json.loads(body)["alarms"] if a["id"] == ID)
            assert (alarm["active"], alarm["acked"]) == (True, True)
            assert second.signal(signal.SIGTERM) == 0

            plc.set_value(100, 120.0, type="float32")  # the condition ends while no agent runs
            third = AgentProcess(config, tmp_path / "third.log").start()
            assert receiver.wait(lambda r: len(r.alarms) >= 3, 20), third.output()
            assert third.signal(signal.SIGTERM) == 0
        finally:
            for p in (first,):
                p.kill()
            sub.loop_stop()
    states = [(a["seq"], a["state"], a["acked"]) for a in receiver.alarms]
    assert states == [(1, "active", False), (2, "acked", True), (3, "cleared", True)]
    assert receiver.alarms[2]["context"]["reason"] == "not confirmed after a restart of the agent"


def http_retry(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """The API comes up a moment after the agent connects to the broker."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return http(port, "GET", path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
