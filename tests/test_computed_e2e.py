"""A computed tag on the whole path: pymodbus PLC -> `plantwatch run` -> mosquitto -> platform.
A flow difference over two read tags raises and clears its limit alarm, and its value and
quality go out in telemetry like a read tag's."""

from __future__ import annotations

import signal

import pytest

from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess
from tests.modbus.server import start_server


class TelemetryReceiver(Receiver):
    """The reference receiver, keeping the telemetry documents too."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.docs: list[dict] = []

    def _telemetry(self, doc):
        self.docs.append(doc)
        super()._telemetry(doc)


@pytest.fixture
def plc():
    with start_server(holding={}) as srv:
        srv.set_value(100, 120.0, type="float32")
        srv.set_value(102, 118.0, type="float32")
        yield srv


def test_a_flow_difference_alarm_end_to_end(write_config, plc, mosquitto, tmp_path):
    data = config_dict()
    data["uplink"].update(url=mosquitto.url, heartbeat_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5,
                          telemetry_interval_s=0.5)
    data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.5)
    data["tags"] = [
        {"name": "CW.FI01", "device": "r1-plc", "address": "hr:100", "type": "float32", "unit": "m3/h"},
        {"name": "CW.FI02", "device": "r1-plc", "address": "hr:102", "type": "float32", "unit": "m3/h"},
        {"name": "CW.DF01", "expr": "CW.FI01 - CW.FI02", "unit": "m3/h", "desc": "循环水回水流量差",
         "alarms": {"h": 5.0, "deadband": 0.5}},
    ]
    receiver = TelemetryReceiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
    try:
        assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
        assert receiver.wait(lambda r: any(d["tags"]["CW.DF01"]["v"] == 2.0 for d in r.docs), 10), agent.output()
        plc.set_value(102, 111.5, type="float32")  # difference 8.5 > 5
        assert receiver.wait(lambda r: len(r.alarms) >= 1, 10), agent.output()
        plc.set_value(102, 119.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
        assert receiver.wait(lambda r: r.docs[-1]["tags"]["CW.DF01"]["v"] == 1.0, 10), receiver.docs[-1]
        assert agent.signal(signal.SIGTERM) == 0, agent.output()
    finally:
        sub.loop_stop()
        agent.kill()
    got = [(a["seq"], a["id"], a["state"], a["level"], a["value"], a["limit"], a["device"], a["unit"])
           for a in receiver.alarms]
    assert got == [(1, "CW.DF01/limit", "active", "H", 8.5, 5.0, "", "m3/h"),
                   (2, "CW.DF01/limit", "cleared", "H", 1.0, 5.0, "", "m3/h")]
    assert receiver.alarms[0]["message"].startswith("循环水回水流量差")
    last = receiver.docs[-1]["tags"]["CW.DF01"]
    assert (last["v"], last["q"]) == (1.0, "good")
    assert receiver.invalid == []
    assert "Traceback" not in agent.output()
