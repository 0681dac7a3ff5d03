"""The reference receiver: schema validation, de-duplication, gaps, presence, shared subscriptions."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.alarms import AlarmManager, TagInfo
from agent.payloads import STATUS_SCHEMA, TELEMETRY_SCHEMA, dumps
from agent.receiver import Receiver, connect
from detectors.base import ConditionChange
from tests.helpers import PLANT

EPOCH = "0123456789abcdef"

def alarm(seq: int, active: bool = True, epoch: str = EPOCH) -> bytes:
    m = AlarmManager(PLANT, [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度")])
    doc = m.on_changes([ConditionChange(0, "limit", "H", True, 161.0, 160.0, 1.0)])[0]
    if not active:
        doc = m.on_changes([ConditionChange(0, "limit", "H", False, 150.0, 160.0, 2.0)])[0]
    doc["epoch"], doc["seq"] = epoch, seq
    return dumps(doc)


def status(online: bool) -> bytes:
    return dumps({"schema": STATUS_SCHEMA, "plant": PLANT, "online": online, "ts": "2026-11-28T00:00:00.000Z", "version": "1"})


def feed(r: Receiver, kind: str, payload: bytes) -> None:
    r.feed(f"plantwatch/{PLANT}/{kind}", payload)


def test_gap_reported_and_closed_duplicate_ignored():
    lines: list[str] = []
    r = Receiver(emit=lines.append)
    for seq in (1, 2, 4, 2, 3):
        feed(r, "alarm", alarm(seq))
    assert [a["seq"] for a in r.alarms] == [1, 2, 4, 3]
    assert r.arrivals == [1, 2, 4, 2, 3]
    assert r.plants[PLANT].duplicates == 1
    assert r.plants[PLANT].missing() == []
    assert any(line.startswith(f"GAP {PLANT}: seq 3..3 missing") for line in lines)
    assert any(line.startswith(f"duplicate {PLANT} seq=2") for line in lines)
    assert any(line.startswith(f"late {PLANT} seq=3") for line in lines)


def test_new_epoch_is_reported_as_such_not_as_duplicates_or_a_gap():
    """A gateway with a new outbox numbers from 1 again under a new epoch: its alarms are new
    alarms, and a late or repeated message of the old epoch is still recognised."""
    lines: list[str] = []
    r = Receiver(emit=lines.append)
    new = "fedcba9876543210"
    for seq, epoch in ((1, EPOCH), (2, EPOCH), (3, EPOCH), (1, new), (2, new), (2, EPOCH), (3, new), (4, new)):
        feed(r, "alarm", alarm(seq, epoch=epoch))
    assert [(a["epoch"], a["seq"]) for a in r.alarms] == [(EPOCH, 1), (EPOCH, 2), (EPOCH, 3), (new, 1), (new, 2),
                                                          (new, 3), (new, 4)]
    track = r.plants[PLANT]
    assert (track.epoch, track.highest, track.missing(), track.duplicates) == (new, 4, [], 1)
    assert [line for line in lines if line.startswith("EPOCH")] == [
        f"EPOCH {PLANT}: new sequence epoch {new} (was {EPOCH}): the gateway started a new outbox, seq starts again at 1"]
    assert f"duplicate {PLANT} epoch={EPOCH} seq=2 (ignored)" in lines  # the old epoch's, after the change
    assert not any(line.startswith(("GAP", "late", f"duplicate {PLANT} seq=")) for line in lines), lines
    assert r.summary()[0].endswith(f"epoch {new} (1 earlier)") and track.missing_earlier() == {}
    # an old epoch's message that had not arrived yet is a first arrival, not a gap of the new one
    feed(r, "alarm", alarm(4, epoch=EPOCH))
    assert (r.alarms[-1]["epoch"], r.alarms[-1]["seq"]) == (EPOCH, 4) and track.epoch == new
    feed(r, "alarm", alarm(6, epoch=EPOCH))  # and a gap in an earlier epoch is still a gap
    assert track.missing_earlier() == {EPOCH: [5]} and f"MISSING [5] of epoch {EPOCH}" in r.summary()[0]


def test_unfilled_gap_is_in_the_summary():
    r = Receiver(emit=lambda line: None)
    for seq in (1, 2, 5):
        feed(r, "alarm", alarm(seq))
    assert r.plants[PLANT].missing() == [3, 4]
    assert "MISSING [3, 4]" in r.summary()[0]


def test_schema_violations_are_rejected_with_the_field():
    r = Receiver(emit=lambda line: None)
    doc = json.loads(alarm(1))
    doc["priority"] = 9
    feed(r, "alarm", dumps(doc))
    del doc["priority"]
    feed(r, "alarm", dumps(doc))
    feed(r, "alarm", b"{not json")
    feed(r, "status", dumps({"schema": STATUS_SCHEMA, "plant": PLANT, "online": "yes", "ts": "x", "version": "1"}))
    feed(r, "telemetry", dumps({"schema": TELEMETRY_SCHEMA, "plant": PLANT, "ts": "2026-11-28T00:00:00.000Z",
                                "tags": {"R101.TI01": {"v": 1.0, "q": "excellent"}}}))
    assert r.alarms == []
    assert len(r.invalid) == 5
    assert r.invalid[0].endswith("priority: 9 is greater than the maximum of 4")
    assert "'priority' is a required property" in r.invalid[1]
    assert "not JSON" in r.invalid[2]
    assert "online" in r.invalid[3]
    assert "tags/R101.TI01/q" in r.invalid[4]


def test_online_offline_changes_are_reported_once():
    lines: list[str] = []
    r = Receiver(emit=lines.append)
    for online in (True, True, False, True):
        feed(r, "status", status(online))
    assert [line.split()[2] for line in lines] == ["ONLINE", "OFFLINE", "ONLINE"]


def publish(url_port: int, items: list[tuple[str, bytes]]) -> None:
    p = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    p.connect("127.0.0.1", url_port)
    p.loop_start()
    for topic, payload in items:
        p.publish(topic, payload, qos=1).wait_for_publish(5)
    p.loop_stop()
    p.disconnect()


def test_shared_subscription_splits_alarms_between_receivers(mosquitto):
    a, b = Receiver(emit=lambda line: None), Receiver(emit=lambda line: None)
    ca = connect(a, mosquitto.url, None, group="platform")
    cb = connect(b, mosquitto.url, None, group="platform")
    try:
        publish(mosquitto.port, [(f"plantwatch/{PLANT}/alarm", alarm(s)) for s in range(1, 41)])
        assert a.wait(lambda r: len(r.alarms) + len(b.alarms) >= 40, 10)
    finally:
        ca.loop_stop()
        cb.loop_stop()
    got = sorted(x["seq"] for x in a.alarms + b.alarms)
    assert got == list(range(1, 41))  # each message went to exactly one receiver
    assert a.alarms and b.alarms


def test_receive_cli_strict_exit_code_and_out_file(mosquitto, tmp_path):
    out = tmp_path / "alarms.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "receive", "--broker", mosquitto.url, "--plant", PLANT,
         "--out", str(out), "--strict", "--seconds", "20", "--count", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("receiving from"), first
    time.sleep(0.3)
    publish(mosquitto.port, [(f"plantwatch/{PLANT}/alarm", alarm(s)) for s in (1, 2, 4)])
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, output  # seq 3 is missing
    assert "GAP 640100000001: seq 3..3 missing before seq=4" in output
    assert "MISSING [3]" in output
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [1, 2, 4]
