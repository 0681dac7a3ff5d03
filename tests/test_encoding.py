"""One stored row, many encodings: a json uplink sends the stored bytes unchanged, a provincial
uplink maps them onto the province's fields at send time; reminders are for provincial uplinks only."""

from __future__ import annotations

import json

from agent.encoding import json_rows, row_encoder
from agent.outbox import ALARM, TELEMETRY
from agent.payloads import dumps
from agent.provincial import Profile

ALARM_DOC = {"schema": "plantwatch.alarm/1", "plant": "P1", "seq": 7, "id": "T1/limit", "tag": "T1", "device": "plc",
             "kind": "limit", "level": "H", "priority": 2, "state": "active", "value": 170.0, "limit": 160.0,
             "unit": "°C", "ts": "2026-01-01T00:00:00.000Z", "message": "1#温度 高"}
TELEMETRY_DOC = {"schema": "plantwatch.telemetry/1", "plant": "P1", "ts": "2026-01-01T00:00:00.000Z",
                 "tags": {"T1": {"v": 1.5, "q": "good"}, "T2": {"v": None, "q": "comm_fail"}}}


def test_a_json_uplink_sends_the_stored_bytes_unchanged_and_skips_reminders():
    stored = dumps(ALARM_DOC)
    assert json_rows(ALARM, 7, stored) is stored
    assert json_rows(TELEMETRY, None, dumps(TELEMETRY_DOC)) == dumps(TELEMETRY_DOC)
    assert json_rows(ALARM, None, stored) is None  # a reminder: a repeat with no seq of its own
    assert row_encoder("json", Profile("E", "G")) is json_rows


def test_a_provincial_uplink_encodes_alarms_reminders_and_data_at_send_time():
    profile = Profile("E1", "G1", timezone="UTC")
    encode = row_encoder("provincial", profile)
    alarm = json.loads(encode(ALARM, 7, dumps(ALARM_DOC)))
    assert alarm == profile.alarm(ALARM_DOC)
    assert json.loads(encode(ALARM, None, dumps(ALARM_DOC))) == profile.alarm(ALARM_DOC, repeat=True)
    data = json.loads(encode(TELEMETRY, None, dumps(TELEMETRY_DOC)))
    assert data["cjsj"] == "2026-01-01 00:00:00"  # the snapshot's own time, not the time it was sent
    assert data["datas"] == [{"cdbm": "T1", "cdz": "1.500", "zt": "0"}, {"cdbm": "T2", "cdz": "", "zt": "3"}]
    # a document already in the province's fields (no schema) is only encoded
    assert json.loads(encode(TELEMETRY, None, dumps({"qybm": "E1"}))) == {"qybm": "E1"}
