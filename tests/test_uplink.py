"""The uplink against a real mosquitto: lanes, MQTT 5 properties, the broker's Receive Maximum,
and on-change telemetry with a deadband through the whole agent."""

from __future__ import annotations

import json
import signal
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.broker import Mosquitto
from agent.config import UplinkSection
from agent.outbox import TELEMETRY, Outbox
from agent.receiver import Receiver, connect
from agent.uplink import Uplink
from tests.faults.helpers import (
    PLANT,
    TOPIC,
    Burst,
    assert_every_committed_seq_arrived_in_order,
    plant_config,
    status_doc,
)
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

TELEMETRY_TOPIC = f"plantwatch/{PLANT}/telemetry"


class Capture:
    """An MQTT 5 subscriber that keeps every message with its properties, in arrival order."""

    def __init__(self, url_port: int):
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Condition()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.client.on_connect = lambda c, ud, f, rc, p: c.subscribe(f"plantwatch/{PLANT}/#", qos=1)
        self.client.on_subscribe = lambda c, ud, mid, rcs, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", url_port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client, ud, msg) -> None:
        with self.lock:
            self.messages.append(msg)
            self.lock.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self.messages), timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def on(topic: str):
    return lambda msgs: [m for m in msgs if m.topic == topic]


def test_backlog_alarms_overtake_older_telemetry(tmp_path, mosquitto):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    for i in range(50):
        ob.append(TELEMETRY_TOPIC, json.dumps({"i": i}).encode(), lane=TELEMETRY)
    Burst(path, lambda: None, total=50, batch=10, pause=0.0).run()
    cap = Capture(mosquitto.port)
    up = Uplink(UplinkSection(url=mosquitto.url, heartbeat_s=5.0), PLANT, path, status_doc)
    up.start()
    try:
        assert cap.wait(lambda m: len(on(TOPIC)(m)) >= 50 and len(on(TELEMETRY_TOPIC)(m)) >= 50, 20)
    finally:
        up.stop(2.0)
        cap.close()
    order = [m.topic for m in cap.messages if m.topic in (TOPIC, TELEMETRY_TOPIC)]
    # every alarm was committed after every telemetry row, yet all of them went first
    assert order == [TOPIC] * 50 + [TELEMETRY_TOPIC] * 50
    assert [json.loads(m.payload)["seq"] for m in on(TOPIC)(cap.messages)] == list(range(1, 51))
    assert [json.loads(m.payload)["i"] for m in on(TELEMETRY_TOPIC)(cap.messages)] == list(range(50))


def test_mqtt5_messages_carry_schema_and_plant_and_only_telemetry_expires(tmp_path, mosquitto):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    ob.append(TELEMETRY_TOPIC, b'{"schema":"plantwatch.telemetry/1"}', lane=TELEMETRY)
    cap = Capture(mosquitto.port)
    cfg = UplinkSection(url=mosquitto.url, mqtt_version=5, session_expiry_s=300, telemetry_expiry_s=600, heartbeat_s=5.0)
    up = Uplink(cfg, PLANT, path, status_doc)
    up.start()
    try:
        assert cap.wait(lambda m: len(on(TOPIC)(m)) >= 3 and on(TELEMETRY_TOPIC)(m), 20)
        assert cap.wait(lambda m: on(f"plantwatch/{PLANT}/status")(m), 10)
    finally:
        up.stop(2.0)
        cap.close()
    alarm, telemetry = on(TOPIC)(cap.messages)[0], on(TELEMETRY_TOPIC)(cap.messages)[0]
    status = on(f"plantwatch/{PLANT}/status")(cap.messages)[0]
    assert dict(alarm.properties.UserProperty) == {"schema": "plantwatch.alarm/2", "plant": PLANT}
    assert dict(telemetry.properties.UserProperty) == {"schema": "plantwatch.telemetry/1", "plant": PLANT}
    assert dict(status.properties.UserProperty) == {"schema": "plantwatch.status/1", "plant": PLANT}
    assert alarm.properties.ContentType == "application/json"
    assert not hasattr(alarm.properties, "MessageExpiryInterval")
    assert 0 < telemetry.properties.MessageExpiryInterval <= 600
    assert alarm.qos == 1
    assert "(p5, c1," in mosquitto.log.read_text()  # connected as MQTT 5, clean start


def test_mqtt5_window_respects_the_brokers_receive_maximum(tmp_path):
    """The broker advertises Receive Maximum 10 in its CONNACK; a client with more QoS 1
    messages unacknowledged breaks the protocol (EMQX and HiveMQ disconnect it; mosquitto
    tolerates it). The uplink's window of 100 shrinks to 10 and everything still arrives."""
    # the helper's own "max_inflight_messages 0" comes first in the file; the later line wins
    with Mosquitto(workdir=tmp_path / "mosquitto", extra="max_inflight_messages 10\n") as broker:
        path = tmp_path / "outbox.db"
        Burst(path, lambda: None, total=1000, batch=100, pause=0.0).run()
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, broker.url, PLANT)
        up = Uplink(UplinkSection(url=broker.url, mqtt_version=5, inflight=100, heartbeat_s=5.0), PLANT, path, status_doc)
        up.start()
        try:
            assert_every_committed_seq_arrived_in_order(receiver, path, timeout=30)
        finally:
            up.stop(2.0)
            sub.loop_stop()
        assert up.window == 10
        assert list(up.drops) == [] and up.connections == 1


def test_telemetry_on_change_respects_the_deadband(tmp_path, mosquitto, write_config):
    cap = Capture(mosquitto.port)
    with start_server(holding={}) as plc:
        plc.set_value(100, 120.0, type="float32")
        plc.set_value(102, 50.0, type="float32")
        data = plant_config(plc.url, mosquitto.url, tags=2, telemetry_interval_s=3600.0, telemetry_change_s=0.2,
                            telemetry_deadband=0.1)
        data["tags"][0]["telemetry_deadband"] = 1.0  # the tag's own deadband wins over [uplink]'s
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        changes = on(TELEMETRY_TOPIC)
        try:
            # the first look sends every tag (nothing was sent before)
            assert cap.wait(lambda m: any(json.loads(x.payload)["tags"].get("R101.TI01", {}).get("v") == 120.0
                                          for x in changes(m)), 20), agent.output()
            plc.set_value(100, 120.6, type="float32")  # within the deadband
            plc.set_value(102, 55.0, type="float32")  # beyond it: a message with only this tag
            assert cap.wait(lambda m: any("R102.TI01" in json.loads(x.payload)["tags"]
                                          and json.loads(x.payload)["tags"]["R102.TI01"]["v"] == 55.0
                                          for x in changes(m)), 10), agent.output()
            plc.set_value(100, 121.5, type="float32")  # 1.5 from the last sent 120.0: beyond
            assert cap.wait(lambda m: any(abs((json.loads(x.payload)["tags"].get("R101.TI01") or {"v": 0})["v"] - 121.5) < 1e-4
                                          for x in changes(m)), 10), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
            cap.close()
    docs = [json.loads(x.payload) for x in changes(cap.messages)]
    sent_ti = [round(d["tags"]["R101.TI01"]["v"], 3) for d in docs if "R101.TI01" in d["tags"]]
    assert sent_ti == [120.0, 121.5], sent_ti  # 120.6 was within the deadband of 120.0
    assert all(d.get("change") is True for d in docs)


def test_a_plant_whose_status_outgrows_the_mqtt_will_still_connects_and_sends(tmp_path, mosquitto):
    devices = {f"D{d:04d}": {"state": "comm_fail", "error": "cannot connect to 127.0.0.1:50000 (no answer within 2 s)",
                             "since": "2026-01-01T00:00:00.000Z"} for d in range(1613)}

    def status(online: bool) -> dict:
        return {**status_doc(online), "devices": devices}

    assert len(json.dumps(status(False))) > 65535  # more than an MQTT will can carry
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    cap = Capture(mosquitto.port)
    up = Uplink(UplinkSection(url=mosquitto.url, heartbeat_s=5.0), PLANT, path, status)
    up.start()
    try:
        assert cap.wait(lambda m: len(on(TOPIC)(m)) >= 3, 20), "the uplink never connected"
    finally:
        up.stop(2.0)
        cap.close()
    assert [json.loads(m.payload)["seq"] for m in on(TOPIC)(cap.messages)] == [1, 2, 3]
