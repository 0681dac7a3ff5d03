"""The provincial repeat-while-active survives a restart of the agent: an alarm active before it
is repeated after it, with the seq of its last message (rebuilt from the outbox at start)."""

from __future__ import annotations

import signal
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import parse
from tests.helpers import AgentProcess
from tests.modbus.server import start_server
from tests.test_provincial import KEY_HEX, provincial_config


def test_an_alarm_active_before_a_restart_is_repeated_after_it(tmp_path, write_config, mosquitto):
    (tmp_path / "sm4.key").write_text(KEY_HEX)
    got: list[tuple[str, bytes]] = []
    arrived = threading.Condition()

    def on_message(c, u, msg):
        with arrived:
            got.append((msg.topic, msg.payload))
            arrived.notify_all()

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("plantwatch/640100000001/alarm", qos=1)
    sub.loop_start()
    log = tmp_path / "agent.log"
    with start_server() as plc:
        plc.set_value(100, 185.0, type="float32")  # in alarm from the first poll, and throughout
        data = provincial_config(tmp_path, sm4_key_file="sm4.key", repeat_s=0.5)
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        profile = parse(data, base=tmp_path).provincial

        def alarms(since: int = 0) -> list[dict]:
            return [profile.decode(p) for _, p in got[since:]]

        def wait(pred, timeout=30.0):
            with arrived:
                return arrived.wait_for(pred, timeout)

        agent = AgentProcess(config, log).start()
        try:
            assert wait(lambda: len(alarms()) >= 2), agent.output()  # the alarm and a repeat
            assert agent.signal(signal.SIGTERM) == 0
            with arrived:
                before = len(got)
            agent = AgentProcess(config, log).start()
            # after the restart: repeats of the alarm raised before it, with its seq
            assert wait(lambda: len(alarms(before)) >= 3), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
            sub.loop_stop()
    first = alarms()[0]
    assert first["xh"] == 1 and first["bjzt"] == "1"
    after = alarms(before)
    assert all(a["xh"] == 1 and a["bjzt"] == "1" for a in after), after  # repeats, not new transitions
    assert all(a == first for a in after)
    assert agent.output().count(" running: plant ") == 2
