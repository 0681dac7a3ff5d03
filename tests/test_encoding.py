"""One stored row, many encodings: a json uplink sends the stored bytes unchanged, a provincial
uplink maps them onto the province's fields at send time; reminders are for provincial uplinks only."""

from __future__ import annotations

import json

from agent.encoding import json_rows, row_encoder
from agent.outbox import ALARM, TELEMETRY
from agent.payloads import dumps
from agent.provincial import Profile

ALARM_DOC = {"schema": "plantwatch.alarm/2", "plant": "P1", "seq": 7, "id": "T1/limit", "tag": "T1", "device": "plc",
             "kind": "limit", "level": "H", "priority": 2, "state": "active", "value": 170.0, "limit": 160.0,
             "unit": "°C", "ts": "2026-01-01T00:00:00.000Z", "message": "1#温度 高"}
TELEMETRY_DOC = {"schema": "plantwatch.telemetry/1", "plant": "P1", "ts": "2026-01-01T00:00:00.000Z",
                 "tags": {"T1": {"v": 1.5, "q": "good", "t": "2025-12-31T23:59:58.000Z"},
                          "T2": {"v": None, "q": "comm_fail", "t": None}}}
T0 = 1767225600.0  # 2026-01-01T00:00:00Z, the snapshot's time


def test_a_json_uplink_sends_the_stored_bytes_unchanged_and_skips_reminders():
    stored = dumps(ALARM_DOC)
    assert json_rows(ALARM, 7, stored, T0) is stored
    assert json_rows(TELEMETRY, None, dumps(TELEMETRY_DOC), T0) == dumps(TELEMETRY_DOC)
    assert json_rows(ALARM, None, stored, T0) is None  # a reminder: a repeat with no seq of its own
    assert row_encoder("json", Profile("E", "G")) is json_rows


def test_a_provincial_uplink_encodes_alarms_reminders_and_data_at_send_time():
    profile = Profile("E1", "G1", timezone="UTC")
    encode = row_encoder("provincial", profile)
    alarm = json.loads(encode(ALARM, 7, dumps(ALARM_DOC), T0))
    assert alarm == profile.alarm(ALARM_DOC)
    assert json.loads(encode(ALARM, None, dumps(ALARM_DOC), T0)) == profile.alarm(ALARM_DOC, repeat=True)
    data = json.loads(encode(TELEMETRY, None, dumps(TELEMETRY_DOC), T0 + 5))
    assert data["cjsj"] == "2026-01-01 00:00:00"  # the snapshot's own time, not the time it was sent
    # each point with the time of its own sample (the message's when it has none yet)
    assert data["datas"] == [{"cdbm": "T1", "cjsj": "2025-12-31 23:59:58", "cdz": "1.500", "zt": "0"},
                             {"cdbm": "T2", "cjsj": "2026-01-01 00:00:00", "cdz": "", "zt": "3"}]
    assert data["bc"] == "0"
    # a document already in the province's fields (no schema) is only encoded
    assert json.loads(encode(TELEMETRY, None, dumps({"qybm": "E1"}), T0)) == {"qybm": "E1"}


def test_a_snapshot_sent_after_an_outage_carries_the_resend_mark():
    encode = row_encoder("provincial", Profile("E1", "G1", timezone="UTC", late_after_s=300.0))
    assert json.loads(encode(TELEMETRY, None, dumps(TELEMETRY_DOC), T0 + 300))["bc"] == "0"
    assert json.loads(encode(TELEMETRY, None, dumps(TELEMETRY_DOC), T0 + 301))["bc"] == "1"
    # alarms carry no mark, however late: their seq says what they are
    assert "bc" not in json.loads(encode(ALARM, 7, dumps(ALARM_DOC), T0 + 3600))
