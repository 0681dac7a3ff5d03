"""Alarm manager, outbox and uplink against a real mosquitto: seq, order, durability."""

from __future__ import annotations

import time

from agent.alarms import AlarmManager, TagInfo
from agent.config import UplinkSection
from agent.outbox import ALARM, Outbox
from agent.payloads import STATUS_SCHEMA, parse_rfc3339, validator
from agent.receiver import Receiver, connect
from agent.uplink import Uplink
from detectors.base import ConditionChange
from tests.helpers import PLANT

TOPIC = f"plantwatch/{PLANT}/alarm"


def manager() -> AlarmManager:
    return AlarmManager(PLANT, [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度", 2), TagInfo("R101.PI01", "r1-plc", "MPa")])


def change(level: str, active: bool, value: float, ts: float, limit: float = 160.0) -> ConditionChange:
    return ConditionChange(0, "limit", level, active, value, limit, ts)


def test_escalation_is_one_alarm_changing_level():
    m = manager()
    msgs = m.on_changes([change("H", True, 161.0, 1.0), change("HH", True, 181.0, 2.0, 180.0), change("H", True, 175.0, 3.0)])
    msgs += m.on_changes([change("H", False, 150.0, 4.0)])
    assert [(x["id"], x["state"], x["level"]) for x in msgs] == [
        ("R101.TI01/limit", "active", "H"),
        ("R101.TI01/limit", "active", "HH"),
        ("R101.TI01/limit", "active", "H"),
        ("R101.TI01/limit", "cleared", "H"),
    ]
    assert [x["priority"] for x in msgs] == [2, 1, 2, 2]
    assert msgs[1]["limit"] == 180.0 and msgs[1]["unit"] == "°C"
    assert "1#反应釜温度" in msgs[1]["message"]
    assert m.alarms["R101.TI01/limit"].active is False


def test_repeated_condition_gives_no_message():
    m = manager()
    assert len(m.on_changes([change("H", True, 161.0, 1.0)])) == 1
    assert m.on_changes([change("H", True, 162.0, 2.0)]) == []
    assert m.on_changes([change("H", False, 150.0, 3.0)])[0]["state"] == "cleared"
    assert m.on_changes([change("H", False, 150.0, 4.0)]) == []


def test_comm_alarm_raised_once_and_cleared():
    m = manager()
    assert m.on_device("r1-plc", None, 1.0) == []
    raised = m.on_device("r1-plc", "TimeoutError", 2.0)
    assert m.on_device("r1-plc", "TimeoutError", 3.0) == []
    cleared = m.on_device("r1-plc", None, 4.0)
    assert [(x["id"], x["kind"], x["state"], x["tag"]) for x in raised + cleared] == [
        ("r1-plc/comm", "comm", "active", None),
        ("r1-plc/comm", "comm", "cleared", None),
    ]


def test_messages_match_the_published_schema():
    m = manager()
    msgs = m.on_changes([change("HH", True, 181.0, 1_800_000_000.25, 180.0)]) + m.on_device("r1-plc", "refused", 1.0)
    for i, msg in enumerate(msgs, 1):
        msg["epoch"], msg["seq"] = "0123456789abcdef", i
        validator("alarm").validate(msg)
    assert msgs[0]["ts"] == "2027-01-15T08:00:00.250Z"
    assert parse_rfc3339(msgs[0]["ts"]) == 1_800_000_000.25


def test_seq_survives_reopen_and_is_never_reused(tmp_path):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    m = manager()
    assert ob.append_alarms(TOPIC, m.on_changes([change("H", True, 161.0, 1.0)])) == [1]
    assert ob.append_alarms(TOPIC, m.on_changes([change("HH", True, 181.0, 2.0), ])) == [2]
    ob.close()
    ob = Outbox(path)
    assert ob.last_seq() == 2
    assert ob.append_alarms(TOPIC, m.on_changes([change("H", False, 150.0, 3.0)])) == [3]
    assert [a["seq"] for a in ob.alarms()] == [1, 2, 3]
    rows = ob.pending(ALARM)
    assert [r.seq for r in rows] == [1, 2, 3]
    ob.mark_sent([rows[0].id])
    assert [r.seq for r in ob.pending(ALARM)] == [2, 3]
    assert ob.depth()["alarm"] == 2


def status_doc(online: bool) -> dict:
    return {"schema": STATUS_SCHEMA, "plant": PLANT, "online": online, "ts": "2026-01-01T00:00:00.000Z", "version": "test"}


def fill(ob: Outbox, n: int, start_ts: float = 1.0) -> list[int]:
    m = manager()
    seqs = []
    for i in range(n):
        level_active = i % 2 == 0
        seqs += ob.append_alarms(TOPIC, m.on_changes([change("H", level_active, 150.0 + i, start_ts + i)]))
    return seqs


def test_uplink_delivers_backlog_in_order_and_marks_sent(tmp_path, mosquitto):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    fill(ob, 200)
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    up = Uplink(UplinkSection(url=mosquitto.url, heartbeat_s=1.0), PLANT, path, status_doc)
    up.start()
    try:
        assert receiver.wait(lambda r: len(r.alarms) >= 200, 20), receiver.summary()
        assert [a["seq"] for a in receiver.alarms] == list(range(1, 201))
        assert receiver.wait(lambda r: r.plants[PLANT].online is True, 5)
        deadline = time.monotonic() + 5
        while ob.depth()["alarm"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ob.depth()["alarm"] == 0
    finally:
        up.stop(2.0)
        sub.loop_stop()
    assert receiver.invalid == []


def test_broker_restart_loses_no_alarm(tmp_path, persistent_mosquitto):
    """Alarms committed while the broker is down all arrive after it returns, in seq order."""
    mosquitto = persistent_mosquitto
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    up = Uplink(UplinkSection(url=mosquitto.url, heartbeat_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5), PLANT, path, status_doc)
    up.start()
    assert up.connected.wait(10)
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT, client_id="platform-1")
    m = manager()
    seq = 0
    try:
        for i in range(20):
            seq = ob.append_alarms(TOPIC, m.on_changes([change("H", i % 2 == 0, 150.0 + i, 1.0 + i)]))[-1]
            up.wake()
        assert receiver.wait(lambda r: len(r.alarms) >= 20, 10)

        mosquitto.wait_saved()  # the platform's session is on disk
        mosquitto.stop(kill=True)
        for i in range(20, 60):  # raised while the broker is down
            seq = ob.append_alarms(TOPIC, m.on_changes([change("H", i % 2 == 0, 150.0 + i, 1.0 + i)]))[-1]
            up.wake()
        time.sleep(1.0)
        mosquitto.start()
        assert receiver.wait(lambda r: len(r.alarms) >= seq, 30), receiver.summary()
    finally:
        up.stop(2.0)
        sub.loop_stop()
    assert seq == 60
    seqs = [a["seq"] for a in receiver.alarms]
    assert seqs == list(range(1, 61))
    # duplicates, if any, are only of seqs already received
    assert set(receiver.arrivals) == set(range(1, 61))
    assert up.connections >= 2
