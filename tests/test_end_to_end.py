"""The whole path on real pieces: pymodbus PLC -> `plantwatch run` -> mosquitto -> platform."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess
from tests.modbus.server import start_server


@pytest.fixture
def plc():
    with start_server(holding={}) as srv:
        srv.set_value(100, 120.0, type="float32")
        srv.set_value(102, 0.8, type="float32")
        yield srv


def agent_config(write_config, plc, broker_url: str, **alarm_changes) -> Path:
    data = config_dict()
    data["uplink"].update(url=broker_url, heartbeat_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.5)
    data["tags"][0]["alarms"].update(alarm_changes)
    return write_config(data)


@pytest.fixture
def agent_factory(tmp_path):
    procs: list[AgentProcess] = []

    def make(config: Path) -> AgentProcess:
        p = AgentProcess(config, tmp_path / "agent.log").start()
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()


def states(receiver: Receiver) -> list[tuple[int, str, str, str]]:
    return [(a["seq"], a["id"], a["state"], a["level"]) for a in receiver.alarms]


def test_hh_raised_and_cleared_with_seq(write_config, plc, mosquitto, agent_factory):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    agent = agent_factory(agent_config(write_config, plc, mosquitto.url))
    try:
        assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
        plc.set_value(100, 170.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 1, 10), agent.output()
        plc.set_value(100, 185.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 2, 10), agent.output()
        plc.set_value(100, 150.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 3, 10), agent.output()
        assert agent.signal(signal.SIGTERM) == 0, agent.output()
        assert receiver.wait(lambda r: r.plants[PLANT].online is False, 10)
    finally:
        sub.loop_stop()
    assert states(receiver) == [
        (1, "R101.TI01/limit", "active", "H"),
        (2, "R101.TI01/limit", "active", "HH"),
        (3, "R101.TI01/limit", "cleared", "HH"),
    ]
    hh = receiver.alarms[1]
    assert (hh["value"], hh["limit"], hh["unit"], hh["device"], hh["priority"]) == (185.0, 180.0, "°C", "r1-plc", 1)
    assert receiver.invalid == []
    # read-only: the PLC saw nothing but read function codes
    assert plc.function_codes and plc.function_codes <= {1, 2, 3, 4}, plc.function_codes
    assert "Traceback" not in agent.output()


def test_seq_continues_after_restart(write_config, plc, mosquitto, agent_factory):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    config = agent_config(write_config, plc, mosquitto.url)
    try:
        first = agent_factory(config)
        plc.set_value(100, 170.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), first.output()
        assert first.signal(signal.SIGTERM) == 0
        plc.set_value(100, 120.0, type="float32")
        second = agent_factory(config)
        # the restarted engine starts from normal; the value is normal: nothing to report yet
        plc.set_value(100, 190.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 2, 20), second.output()
        assert second.signal(signal.SIGTERM) == 0
    finally:
        sub.loop_stop()
    assert [a["seq"] for a in receiver.alarms] == [1, 2]


def test_broker_down_alarms_arrive_in_order_after_restart(write_config, plc, persistent_mosquitto, agent_factory):
    """The broker is killed, alarms are raised meanwhile, it comes back: all arrive, in order."""
    broker = persistent_mosquitto
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, broker.url, PLANT, client_id="platform")
    agent = agent_factory(agent_config(write_config, plc, broker.url))
    try:
        plc.set_value(100, 170.0, type="float32")
        assert receiver.wait(lambda r: len(r.alarms) >= 1, 20), agent.output()
        broker.wait_saved()
        broker.stop(kill=True)
        # while the broker is down: HH, back to H, cleared, H again — each a committed alarm
        outbox = Outbox(agent.config.parent / "data" / "outbox.db", durable=False)
        for seq, value in enumerate((185.0, 170.0, 150.0, 165.0), start=2):
            plc.set_value(100, value, type="float32")
            deadline = time.monotonic() + 10
            while outbox.last_seq() < seq and time.monotonic() < deadline:
                time.sleep(0.05)
        outbox.close()
        broker.start()
        assert receiver.wait(lambda r: len(r.alarms) >= 5, 30), (receiver.summary(), agent.output(), broker.log.read_text())
        assert agent.signal(signal.SIGTERM) == 0
    finally:
        sub.loop_stop()
    assert states(receiver) == [
        (1, "R101.TI01/limit", "active", "H"),
        (2, "R101.TI01/limit", "active", "HH"),
        (3, "R101.TI01/limit", "active", "H"),
        (4, "R101.TI01/limit", "cleared", "H"),
        (5, "R101.TI01/limit", "active", "H"),
    ]
    assert set(receiver.arrivals) == {1, 2, 3, 4, 5}


def test_killed_agent_is_reported_offline_by_its_will(write_config, plc, mosquitto, agent_factory):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    data = config_dict()
    data["uplink"].update(url=mosquitto.url, keepalive_s=1.0)
    data["devices"][0].update(url=plc.url)
    agent = agent_factory(write_config(data))
    try:
        assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
        os.kill(agent.proc.pid, signal.SIGKILL)
        agent.wait()
        assert receiver.wait(lambda r: r.plants[PLANT].online is False, 10)
    finally:
        sub.loop_stop()


def test_dead_plc_raises_and_clears_comm_alarm(write_config, mosquitto, agent_factory):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    with start_server(holding={}) as srv:
        port = srv.port
        srv.set_value(100, 120.0, type="float32")
        data = config_dict()
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=srv.url, interval_s=0.1, timeout_s=0.3)
        agent = agent_factory(write_config(data))
        assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
        time.sleep(0.5)
    # the PLC is gone
    try:
        assert receiver.wait(lambda r: len(r.alarms) >= 1, 15), agent.output()
        with start_server(port=port, holding={}) as srv:
            srv.set_value(100, 120.0, type="float32")
            assert receiver.wait(lambda r: len(r.alarms) >= 2, 30), agent.output()
        assert agent.signal(signal.SIGTERM) == 0
    finally:
        sub.loop_stop()
    assert [(a["seq"], a["id"], a["kind"], a["state"]) for a in receiver.alarms[:2]] == [
        (1, "r1-plc/comm", "comm", "active"),
        (2, "r1-plc/comm", "comm", "cleared"),
    ]


def test_sigterm_during_startup_still_exits_0(write_config, plc, mosquitto, tmp_path):
    data = config_dict()
    data["uplink"].update(url=mosquitto.url)
    data["devices"][0].update(url=plc.url)
    agent = AgentProcess(write_config(data), tmp_path / "early.log").start()
    # the first thing `run` does is catch SIGTERM; the signal comes right after that, while the
    # agent is still importing the detectors and drivers and loading the config (before it,
    # on a loaded machine, the interpreter itself may still be starting)
    deadline = time.monotonic() + 30
    while not _catches(agent.proc.pid, signal.SIGTERM):
        assert agent.proc.poll() is None and time.monotonic() < deadline, agent.output()
        time.sleep(0.001)
    assert agent.signal(signal.SIGTERM) == 0, agent.output()


def _catches(pid: int, sig: int) -> bool:
    """Whether process pid has a handler for sig (the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (int(sig) - 1) & 1)
