"""The ISA-18.2 / OPC UA Part 9 alarm lifecycle and the alarm-system health KPIs."""

from __future__ import annotations

import pytest

from agent.alarms import AlarmManager, CommandError, TagInfo
from agent.config import AlarmSystemSection, parse
from agent.payloads import validator
from agent.pipeline import build_manager
from detectors.base import ConditionChange
from tests.conftest import config_dict
from tests.helpers import PLANT

ID = "R101.TI01/limit"


def manager(rules: AlarmSystemSection | None = None, latch: bool = False, priority=2, preset: str = "") -> AlarmManager:
    return AlarmManager(PLANT, [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度", priority, latch, preset)], rules)


def up(m: AlarmManager, ts: float, level: str = "H", value: float = 165.0):
    return m.on_changes([ConditionChange(0, "limit", level, True, value, 160.0, ts)])


def down(m: AlarmManager, ts: float, level: str = "H"):
    return m.on_changes([ConditionChange(0, "limit", level, False, 150.0, 160.0, ts)])


def valid(msgs):
    for i, msg in enumerate(msgs, 1):
        validator("alarm").validate({**msg, "seq": i})
    return msgs


def test_flags_are_separate_through_ack_and_clear():
    m = manager()
    raised = up(m, 1.0)[0]
    assert (raised["state"], raised["active"], raised["acked"]) == ("active", True, False)
    acked = m.command("ack", ID, 2.0, user="张工", comment="checked on site")[0]
    assert (acked["state"], acked["active"], acked["acked"]) == ("acked", True, True)
    assert acked["context"] == {"user": "张工", "comment": "checked on site"}
    assert acked["ts"] == "1970-01-01T00:00:02.000Z"
    cleared = down(m, 3.0)[0]
    assert (cleared["state"], cleared["active"], cleared["acked"]) == ("cleared", False, True)
    with pytest.raises(CommandError, match="already acknowledged"):
        m.command("ack", ID, 4.0)
    valid([raised, acked, cleared])


def test_cleared_unacked_alarm_stays_unacked():
    m = manager()
    up(m, 1.0)
    cleared = down(m, 2.0)[0]
    assert (cleared["active"], cleared["acked"]) == (False, False)
    assert m.kpis(2.0)["unacked"] == 1
    assert m.command("ack", ID, 3.0)[0]["acked"] is True
    assert m.kpis(3.0)["unacked"] == 0


def test_latching_alarm_latches_until_acknowledged():
    m = manager(latch=True)
    up(m, 1.0)
    cleared = down(m, 2.0)[0]
    assert cleared["latched"] is True and cleared["active"] is False
    acked = m.command("ack", ID, 3.0)[0]
    assert acked["latched"] is False
    # acknowledged before the return: no latch
    up(m, 4.0)
    m.command("ack", ID, 5.0)
    assert down(m, 6.0)[0]["latched"] is False


def test_timed_shelve_expires_and_is_capped():
    m = manager(AlarmSystemSection(max_shelve_s=3600))
    up(m, 0.0)
    with pytest.raises(CommandError, match="duration_s must be in"):
        m.command("shelve", ID, 1.0, duration_s=7200)
    shelved = m.command("shelve", ID, 1.0, duration_s=600)[0]
    assert shelved["shelved"] is True
    assert shelved["context"]["shelved_until"] == "1970-01-01T00:10:01.000Z"
    # transitions while shelved still reach the platform, flagged
    assert down(m, 2.0)[0]["shelved"] is True
    assert m.tick(500.0) == []
    unshelved = m.tick(601.0)
    assert [(x["state"], x["shelved"]) for x in unshelved] == [("unshelved", False)]
    assert m.tick(700.0) == []


def test_one_shot_shelve_ends_when_the_alarm_clears():
    m = manager()
    with pytest.raises(CommandError, match="no alarm"):
        m.command("shelve", ID, 0.0)
    up(m, 0.0)
    assert m.command("shelve", ID, 1.0)[0]["shelved"] is True
    assert "shelved_until" not in m.alarms[ID].context
    assert down(m, 2.0)[0]["shelved"] is False
    with pytest.raises(CommandError, match="not active"):
        m.command("shelve", ID, 3.0)
    with pytest.raises(CommandError, match="not shelved"):
        m.command("unshelve", ID, 3.0)


def test_suppress_and_out_of_service_are_their_own_flags():
    m = manager()
    up(m, 0.0)
    msgs = (m.command("suppress", ID, 1.0, comment="by design during start-up", duration_s=600.0)
            + m.command("out_of_service", ID, 2.0, comment="sensor replaced", duration_s=3600.0))
    assert [(x["state"], x["suppressed"], x["out_of_service"], x["active"]) for x in msgs] == [
        ("suppressed", True, False, True),
        ("out_of_service", True, True, True),
    ]
    msgs = m.command("in_service", ID, 3.0) + m.command("unsuppress", ID, 4.0)
    assert [(x["state"], x["suppressed"], x["out_of_service"]) for x in msgs] == [
        ("in_service", True, False),
        ("unsuppressed", False, False),
    ]
    with pytest.raises(CommandError, match="unknown operation"):
        m.command("delete", ID, 5.0)
    valid(msgs)
    assert m.kpis(5.0)["commands_rejected"] == 1


def test_suppress_and_out_of_service_need_a_reason_and_a_bounded_duration_and_end_by_themselves():
    m = manager(AlarmSystemSection(max_suppress_s=600.0, max_out_of_service_s=3600.0))
    up(m, 0.0)
    for op, longest in (("suppress", 600), ("out_of_service", 3600)):
        with pytest.raises(CommandError, match=f"{op} needs a reason"):
            m.command(op, ID, 1.0, duration_s=60.0)
        with pytest.raises(CommandError, match=rf"{op} needs duration_s in \(0, {longest}\], not None"):
            m.command(op, ID, 1.0, comment="why")
        with pytest.raises(CommandError, match=f"not {longest + 1}"):
            m.command(op, ID, 1.0, comment="why", duration_s=longest + 1.0)
    assert not m.alarms[ID].suppressed and not m.alarms[ID].out_of_service  # nothing changed
    s = m.command("suppress", ID, 10.0, comment="start-up", duration_s=600.0)[0]
    o = m.command("out_of_service", ID, 10.0, comment="sensor swap", duration_s=1200.0)[0]
    assert s["context"]["suppressed_until"] == "1970-01-01T00:10:10.000Z" and s["context"]["comment"] == "start-up"
    assert o["context"]["out_of_service_until"] == "1970-01-01T00:20:10.000Z"
    assert m.tick(609.0) == []
    ended = m.tick(610.0) + m.tick(1210.0)
    assert [(x["state"], x["context"]["user"], x["suppressed"], x["out_of_service"]) for x in ended] == [
        ("unsuppressed", "plantwatch", False, True), ("in_service", "plantwatch", False, False)]
    valid(ended)
    # saved by an older version without an end: ends after the longest allowed now
    state = {**m.snapshot(ID), "suppressed": True}
    del state["suppress_until"]
    restored = manager(AlarmSystemSection(max_suppress_s=600.0))
    restored.restore([state], 2000.0, lambda a: 5.0)
    assert restored.alarms[ID].suppress_until == 2600.0


def test_the_author_and_a_claimed_name_are_kept_apart():
    m = manager()
    up(m, 0.0)
    msg = m.command("ack", ID, 1.0, user="alice", actor={"via": "socket", "claimed_user": "张工"})[0]
    assert {k: msg["context"][k] for k in ("user", "via", "claimed_user")} == {
        "user": "alice", "via": "socket", "claimed_user": "张工"}
    assert msg["message"].endswith("— acked by alice")
    valid([msg])


def test_escalation_keeps_one_alarm_and_priority_follows_level():
    m = manager(priority={"HH": 1, "H": 3})
    msgs = up(m, 0.0, "H") + up(m, 1.0, "HH", 185.0) + up(m, 2.0, "H")
    assert [(x["id"], x["level"], x["priority"]) for x in msgs] == [(ID, "H", 3), (ID, "HH", 1), (ID, "H", 3)]
    assert len(m.alarms) == 1
    assert m.kpis(2.0)["active"] == 1


def test_chattering_detected_and_auto_shelved():
    m = manager(AlarmSystemSection(chatter_count=3, chatter_window_s=60, chatter_shelve_s=300))
    msgs = []
    for t in (0.0, 10.0, 20.0):
        msgs += up(m, t) + down(m, t + 1)
    states = [x["state"] for x in msgs]
    assert states == ["active", "cleared", "active", "cleared", "active", "shelved", "cleared"]
    assert msgs[5]["context"]["user"] == "plantwatch" and "chattering" in msgs[5]["context"]["comment"]
    assert m.kpis(30.0)["chattering"] == [ID]
    assert m.kpis(200.0)["chattering"] == []  # the window has passed
    assert [x["state"] for x in m.tick(321.0)] == ["unshelved"]


def test_no_chattering_when_activations_are_spread_out():
    m = manager(AlarmSystemSection(chatter_count=3, chatter_window_s=60, chatter_shelve_s=300))
    for t in (0.0, 50.0, 100.0, 150.0):
        assert [x["state"] for x in up(m, t) + down(m, t + 1)] == ["active", "cleared"]
    assert m.kpis(151.0)["chattering"] == []


def test_flood_and_stale_kpis():
    tags = [TagInfo(f"T{i}", "plc") for i in range(12)]
    m = AlarmManager(PLANT, tags, AlarmSystemSection(flood_count=10, flood_window_s=600, stale_s=3600))
    for i in range(11):
        m.on_changes([ConditionChange(i, "limit", "H", True, 1.0, 0.5, float(i))])
    k = m.kpis(20.0)
    assert k["flood"] is True and k["floods"] == 1 and k["new_in_window"] == 11
    assert m.kpis(700.0)["flood"] is False
    assert len(m.kpis(3611.0)["stale"]) == 11  # active since 0 .. 10 s
    assert m.kpis(3601.5)["stale"] == ["T0/limit", "T1/limit"]


def test_gb50493_gas_preset():
    data = config_dict()
    data["tags"][1] = {"name": "GD101", "device": "r1-plc", "address": "hr:110", "type": "float32",
                       "desc": "可燃气体探测器", "preset": "gb50493"}
    cfg = parse(data)
    gas = cfg.tags[1]
    assert gas.families["limit"]["h"] == 25.0 and gas.families["limit"]["hh"] == 50.0
    assert gas.unit == "%LEL"
    m = build_manager(cfg)
    first = m.on_changes([ConditionChange(1, "limit", "H", True, 26.0, 25.0, 0.0)])[0]
    second = m.on_changes([ConditionChange(1, "limit", "HH", True, 51.0, 50.0, 1.0)])[0]
    assert "一级报警" in first["message"] and first["context"]["grade"] == 1 and first["priority"] == 2
    assert "二级报警" in second["message"] and second["context"]["grade"] == 2 and second["priority"] == 1
    assert second["context"]["standard"] == "GB/T 50493-2019"
    # a plant may set its own (lower) set-points
    data["tags"][1]["alarms"] = {"h": 20.0}
    assert parse(data).tags[1].families["limit"] == {"h": 20.0, "hh": 50.0, "deadband": 1.0}


def restored(m: AlarmManager, now: float, grace: float = 5.0) -> AlarmManager:
    """A new manager (a restarted agent) given the states the old one saved."""
    fresh = AlarmManager(PLANT, m.tags, m.rules)
    fresh.restore([m.snapshot(i) for i in m.alarms], now, lambda alarm: grace)
    return fresh


def test_acknowledged_and_shelved_state_survives_a_restart():
    m = manager()
    up(m, 0.0)
    m.command("ack", ID, 1.0)
    m.command("shelve", ID, 2.0, duration_s=600)
    again = restored(m, 100.0)
    a = again.alarms[ID]
    assert (a.active, a.acked, a.shelved, a.shelve_until, a.level) == (True, True, True, 602.0, "H")
    # the detector confirms the condition after the restart: nothing new to say
    assert up(again, 101.0) == []
    assert again.tick(200.0) == []
    assert [x["state"] for x in again.tick(602.0)] == ["unshelved"]


def test_restored_alarm_that_ended_meanwhile_is_cleared_after_its_grace():
    m = manager()
    up(m, 0.0, "HH", 185.0)
    again = restored(m, 100.0, grace=5.0)
    assert again.tick(104.0) == []
    cleared = again.tick(105.0)
    assert [(x["state"], x["level"], x["acked"]) for x in cleared] == [("cleared", "HH", False)]
    assert cleared[0]["context"]["reason"] == "not confirmed after a restart of the agent"
    valid(cleared)


def test_restored_alarm_is_kept_while_its_device_is_unreachable():
    m = manager()
    up(m, 0.0)
    again = restored(m, 100.0, grace=5.0)
    again.on_device("r1-plc", "TimeoutError", 101.0)
    assert again.tick(110.0) == []
    assert again.alarms[ID].active is True
    # the device answers again; the detector gets its grace, then the alarm is cleared
    again.on_device("r1-plc", None, 111.0)
    assert again.tick(112.0) == []
    assert [x["state"] for x in again.tick(116.0)] == ["cleared"]
