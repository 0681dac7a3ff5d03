"""A corrupt outbox at start, with the agent run as systemd runs it: the file is moved aside (kept),
a new outbox starts with a new epoch, a ``gateway`` alarm says so, and the platform's receiver
reports an epoch change, not duplicates, although seq starts again at 1."""

from __future__ import annotations

import signal
import socket

from agent.outbox_check import set_aside
from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_until(config, log, receiver: Receiver, alarms: int) -> str:
    agent = AgentProcess(config, log).start()
    try:
        assert receiver.wait(lambda r: len(r.alarms) >= alarms, 30), (receiver.summary(), agent.output())
        assert agent.signal(signal.SIGTERM) == 0, agent.output()
    finally:
        agent.kill()
    return agent.output()


def test_corrupt_outbox_is_moved_aside_and_the_platform_sees_a_new_epoch(tmp_path, mosquitto, write_config):
    data = config_dict()
    data["uplink"].update(url=mosquitto.url, backoff_initial_s=0.1, backoff_max_s=1.0)
    # a PLC that does not answer: its comm alarm is the alarm of every run
    data["devices"][0].update(url=f"tcp://127.0.0.1:{closed_port()}", interval_s=0.2, timeout_s=0.2)
    config = write_config(data)
    lines: list[str] = []
    receiver = Receiver(emit=lines.append)
    sub = connect(receiver, mosquitto.url, PLANT)
    outbox = tmp_path / "data" / "outbox.db"
    try:
        run_until(config, tmp_path / "run1.log", receiver, 1)
        first = receiver.alarms[0]
        assert (first["id"], first["seq"]) == ("r1-plc/comm", 1)
        garbage = b"\x13\x37 worn flash " * 500
        outbox.write_bytes(garbage)
        out = run_until(config, tmp_path / "run2.log", receiver, 3)
        # the operator deals with the kept file; the next start finds none left and clears the alarm
        assert [p.read_bytes() == garbage for p in set_aside(outbox.parent)] == [True]
        set_aside(outbox.parent)[0].rename(tmp_path / "kept-for-analysis.db")
        run_until(config, tmp_path / "run3.log", receiver, 4)
    finally:
        sub.loop_stop()
    gateway, comm = receiver.alarms[1], receiver.alarms[2]
    assert gateway["epoch"] != first["epoch"] and comm["epoch"] == gateway["epoch"]
    assert (gateway["id"], gateway["kind"], gateway["state"], gateway["seq"]) == ("outbox/gateway", "gateway", "active", 1)
    assert "the outbox was corrupt (file is not a database)" in gateway["message"]
    assert gateway["context"]["moved_to"].startswith(str(outbox.parent / "outbox.corrupt-"))
    assert (comm["id"], comm["state"], comm["seq"]) == ("r1-plc/comm", "active", 2)
    cleared = receiver.alarms[3]
    assert (cleared["id"], cleared["state"], cleared["epoch"], cleared["seq"]) == \
        ("outbox/gateway", "cleared", gateway["epoch"], 3)
    assert f"was corrupt (file is not a database): moved to {outbox.parent}/outbox.corrupt-" in out
    track = receiver.plants[PLANT]
    assert track.duplicates == 0 and track.missing() == [] and receiver.invalid == []
    assert [line for line in lines if line.startswith(("EPOCH", "GAP", "duplicate"))] == [
        f"EPOCH {PLANT}: new sequence epoch {gateway['epoch']} (was {first['epoch']}): the gateway started a new "
        "outbox, seq starts again at 1"]
