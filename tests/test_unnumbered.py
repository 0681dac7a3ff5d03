"""Unnumbered alarms: a storage alarm the outbox cannot take is sent from memory, without a seq.

The schema takes them (and refuses a numbered message without a seq, or an unnumbered one with
one); the reference receiver shows them apart from the sequence and matches them with their
numbered record; every transport carries them ahead of its outbox rows, again after a failure,
until taken or withdrawn; a provincial uplink only when the province names a field for them.
The storage faults that raise them for real are in tests/faults/test_storage.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from agent.alarms import AlarmManager
from agent.config import parse
from agent.outbox import Outbox
from agent.payloads import dumps, unnumbered, validator
from agent.receiver import Receiver, connect
from agent.uplinks import Uplinks, build
from tests.conftest import config_dict
from tests.faults.helpers import PLANT, Burst, status_doc, wait_for
from tests.http_platform import Platform
from tests.test_http_uplink import gongmao_uplink, json_uplink, reference_platform
from tests.test_receiver import EPOCH, alarm, feed


def storage_alarm(active: bool = True) -> dict:
    """The ``outbox/storage`` alarm as the agent raises it (no seq: the outbox did not take it)."""
    m = AlarmManager(PLANT, [])
    doc = m.raise_system("storage", "outbox", True, 100.0, {"error": "OperationalError: database or disk is full",
                                                            "pending": 3, "lost": 0, "text": "网关存储故障"},
                         value=0.0, limit=0.0, unit="messages")[0]
    if not active:
        doc = m.raise_system("storage", "outbox", False, 101.0, {"text": "网关存储恢复"}, value=0.0, limit=0.0,
                             unit="messages")[0]
    return doc


def errors(doc: dict) -> list[str]:
    return [e.message for e in validator("alarm").iter_errors(doc)]


def test_the_schema_takes_an_unnumbered_alarm_and_only_without_a_seq():
    doc = unnumbered(storage_alarm(), EPOCH)
    assert "seq" not in doc and doc["unnumbered"] is True and doc["epoch"] == EPOCH
    assert errors(doc) == []
    assert errors({**doc, "seq": 7}) != []  # unnumbered with a seq: refused
    numbered = json.loads(alarm(3))
    assert errors(numbered) == [] and errors({**numbered, "unnumbered": False}) == []
    del numbered["seq"]
    assert errors(numbered) == ["'seq' is a required property"]  # numbered without a seq


def test_the_receiver_shows_an_unnumbered_alarm_apart_and_matches_its_numbered_record():
    lines: list[str] = []
    r = Receiver(emit=lines.append)
    feed(r, "alarm", alarm(1))
    doc = unnumbered(storage_alarm(), EPOCH)
    feed(r, "alarm", dumps(doc))
    feed(r, "alarm", dumps(doc))  # sent again after a reconnect
    assert [a["id"] for a in r.unnumbered] == ["outbox/storage"] and r.alarms[-1]["seq"] == 1
    assert any(line.startswith(f"UNNUMBERED {PLANT} 1970-01-01T00:01:40.000Z outbox/storage active") for line in lines)
    assert any(line.startswith(f"duplicate unnumbered {PLANT}") for line in lines)
    t = r.plants[PLANT]
    assert (t.highest, t.gaps, t.duplicates, t.unnumbered) == (1, [], 0, 1)  # not in the sequence
    # the numbered record: booked as seq 2, no gap, named as the record of the unnumbered one
    feed(r, "alarm", dumps({**storage_alarm(), "epoch": EPOCH, "seq": 2}))
    assert [a["seq"] for a in r.alarms] == [1, 2] and t.gaps == [] and t.duplicates == 0
    assert f"numbered {PLANT} seq=2: the record of the unnumbered alarm received before" in lines
    feed(r, "alarm", dumps(doc))  # late, after its record: nothing new
    assert len(r.unnumbered) == 1 and lines[-1].endswith("(numbered seq=2; ignored)")
    assert r.invalid == [] and r.errors == 0
    assert r.summary() == [f"plant {PLANT}: 2 alarms, seq 1..2, no gaps, 0 duplicates, 1 unnumbered (sent from "
                           f"memory), unknown, epoch {EPOCH}"]


def test_mqtt_sends_it_from_memory_ahead_of_the_outbox_and_again_once_the_broker_is_back(tmp_path,
                                                                                        persistent_mosquitto):
    """Held while the broker is down, published QoS 1 on the alarm topic once it is up, before
    the outbox's backlog; withdrawn copies are never sent."""
    data = config_dict()
    mosquitto = persistent_mosquitto
    data["uplink"].update(url=mosquitto.url, backoff_initial_s=0.1, backoff_max_s=0.3, keepalive_s=2.0)
    cfg = parse(data, base=tmp_path)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=20, batch=20, pause=0.0).run()  # a backlog in the outbox
    lines: list[str] = []
    receiver = Receiver(emit=lines.append)
    sub = connect(receiver, mosquitto.url, PLANT, client_id="platform")  # its session outlives the restart
    mosquitto.stop()
    uplinks = Uplinks([build(cfg, cfg.uplink, path, status_doc)])
    uplinks.send_unnumbered([unnumbered(storage_alarm(), EPOCH)])
    uplinks.withdraw_unnumbered()  # stored meanwhile: its record follows, this copy is dropped
    uplinks.send_unnumbered([unnumbered(storage_alarm(False), EPOCH)])
    uplinks.start()
    try:
        time.sleep(1.0)  # the uplink retries against no broker
        mosquitto.start()
        assert receiver.wait(lambda r: len(r.alarms) >= 20 and r.unnumbered, 30), receiver.summary()
    finally:
        uplinks.stop(2.0)
        sub.loop_stop()
    assert [(a["id"], a["state"]) for a in receiver.unnumbered] == [("outbox/storage", "cleared")]
    assert [a["seq"] for a in receiver.alarms] == list(range(1, 21)) and receiver.invalid == []
    assert uplinks.view()["default"]["unnumbered_sent"] == 1
    kinds = [line.split()[0] for line in lines if line.startswith(("UNNUMBERED", "ALARM"))]
    assert kinds == ["UNNUMBERED"] + ["ALARM"] * 20  # ahead of the backlog


def test_http_sends_it_ahead_of_the_outbox_retries_it_and_never_dead_letters_a_refusal(tmp_path):
    platform = Platform(tmp_path).start()
    platform.script.extend(["5xx", "ok", "4xx"])  # the first: retried; the second: refused for good
    cfg, u = json_uplink(tmp_path, platform)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=5, batch=5, pause=0.0).run()
    up = build(cfg, u, path, status_doc)
    up.memory.add([unnumbered(storage_alarm(), EPOCH), unnumbered(storage_alarm(False), EPOCH)])
    up.start()
    try:
        assert platform.wait(lambda p: len(p.seqs()) >= 5, 30)
    finally:
        up.stop(2.0)
        platform.stop()
    bodies = [json.loads(body) for answer, _, body in platform.requests if b'"schema":"plantwatch.alarm' in body]
    answers = [answer for answer, _, body in platform.requests if b'"schema":"plantwatch.alarm' in body]
    assert [(b.get("seq"), b["state"], b.get("unnumbered")) for b in bodies[:3]] == [
        (None, "active", True), (None, "active", True), (None, "cleared", True)]
    assert answers[:3] == ["5xx", "ok", "4xx"]
    assert [b["seq"] for b in bodies[3:]] == [1, 2, 3, 4, 5]  # then the outbox, in order
    assert up.memory.pending() == [] and up.memory.sent == 1
    assert up.dead_letters == 0 and Outbox(path).dead_letters() == []  # nothing stands behind it


def test_a_provincial_uplink_carries_it_only_when_the_province_names_a_field_for_it(tmp_path):
    cfg = gongmao_uplink(tmp_path)
    assert build(cfg, cfg.uplink, tmp_path / "outbox.db", status_doc).memory.add([storage_alarm()]) is False
    cfg = replace(cfg, provincial=replace(cfg.provincial, fields={**cfg.provincial.fields, "unnumbered": "lsbj"}))
    platform, r = reference_platform(cfg.provincial)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=2, batch=2, pause=0.0).run()
    up = build(cfg, replace(cfg.uplink, url=platform.url), path, status_doc)
    assert up.memory.add([unnumbered(storage_alarm(), EPOCH)]) is True
    up.start()
    try:
        assert r.wait(lambda r: len(r.alarms) >= 2, 20), r.summary()
    finally:
        up.stop(2.0)
        platform.close()
    assert len(r.unnumbered) == 1 and r.invalid == []
    doc = r.unnumbered[0]
    assert doc["lsbj"] == "1" and "xh" not in doc and doc["bjlx"] == "11"  # the storage alarm code
    assert [int(a["xh"]) for a in r.alarms] == [1, 2]
    assert wait_for(lambda: up.memory.sent == 1, 5)


def test_tcp_carries_it_in_the_province_envelope_ahead_of_the_outbox(tmp_path):
    from tests.test_tcp_uplink import platform_for, provincial_config

    cfg = provincial_config(tmp_path)
    cfg = replace(cfg, provincial=replace(cfg.provincial, fields={**cfg.provincial.fields, "unnumbered": "lsbj"}))
    platform, r = platform_for(cfg)
    lines: list[str] = []
    r.emit = lines.append
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    up = build(cfg, replace(cfg.uplink, url=platform.url), path, status_doc)
    up.memory.add([unnumbered(storage_alarm(), EPOCH)])
    up.start()
    try:
        assert r.wait(lambda r: len(r.alarms) >= 3, 20), r.summary()
    finally:
        up.stop(2.0)
        platform.close()
    assert [line.split()[0] for line in lines if line.startswith(("UNNUMBERED", "ALARM"))] == \
        ["UNNUMBERED", "ALARM", "ALARM", "ALARM"]
    assert r.unnumbered[0]["lsbj"] == "1" and r.invalid == [] and up.memory.sent == 1
