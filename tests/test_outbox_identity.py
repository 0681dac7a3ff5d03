"""The outbox's identity and its recovery at start: the epoch every alarm carries beside seq, and
a corrupt outbox moved aside (kept) for a new one with a new epoch."""

from __future__ import annotations

import re

import pytest

from agent.outbox import ALARM, Outbox, OutboxCorrupt, OutboxError
from agent.outbox_check import damage, open_checked, set_aside
from agent.payloads import dumps
from tests.faults.helpers import TOPIC
from tests.test_outbox import alarm_docs


def test_every_outbox_has_an_epoch_of_its_own_carried_beside_seq(tmp_path):
    first = Outbox(tmp_path / "a" / "outbox.db")
    assert re.fullmatch(r"[0-9a-f]{16}", first.epoch)
    docs = alarm_docs(3)
    first.append_alarms(TOPIC, docs)
    assert [(d["epoch"], d["seq"]) for d in docs] == [(first.epoch, 1), (first.epoch, 2), (first.epoch, 3)]
    assert [(a["epoch"], a["seq"]) for a in first.alarms()] == [(first.epoch, s) for s in (1, 2, 3)]
    reader = Outbox(tmp_path / "a" / "outbox.db", durable=False)  # another connection: the same epoch
    assert reader.epoch == first.epoch
    first.close()
    reader.close()
    assert Outbox(tmp_path / "a" / "outbox.db").epoch == first.epoch  # kept across restarts
    # a new file (disk replaced, data_dir wiped) numbers from 1 again under another epoch
    second = Outbox(tmp_path / "b" / "outbox.db")
    assert second.epoch != first.epoch and second.append_alarms(TOPIC, alarm_docs(1)) == [1]


def test_a_schema_2_outbox_gets_an_epoch_and_keeps_its_seq(tmp_path):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    ob.append_alarms(TOPIC, alarm_docs(2))
    ob.db.execute("DROP TABLE identity")  # what schema 2 had
    ob.db.execute("UPDATE meta SET value=2 WHERE key='schema'")
    ob.close()
    up = Outbox(path)
    assert re.fullmatch(r"[0-9a-f]{16}", up.epoch)
    assert up.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == 3
    docs = alarm_docs(1)
    assert up.append_alarms(TOPIC, docs) == [3] and docs[0]["epoch"] == up.epoch


def test_a_newer_schema_is_refused_not_taken_for_corrupt(tmp_path):
    path = tmp_path / "outbox.db"
    Outbox(path).db.execute("UPDATE meta SET value=9 WHERE key='schema'")
    with pytest.raises(OutboxError, match="outbox schema 9") as err:
        open_checked(path)
    assert not isinstance(err.value, OutboxCorrupt) and set_aside(tmp_path) == []


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_outbox_started(tmp_path):
    path = tmp_path / "outbox.db"
    garbage = b"\x00plantwatch? no: flash wear\xff" * 300
    path.write_bytes(garbage)
    (tmp_path / "outbox.db-wal").write_bytes(b"old wal")
    outbox, moved = open_checked(path)
    assert moved is not None
    aside, problem = moved
    assert "file is not a database" in problem
    assert set_aside(tmp_path) == [aside] and re.fullmatch(r"outbox\.corrupt-\d{8}T\d{6}Z\.db", aside.name)
    assert aside.read_bytes() == garbage  # kept as it was, never deleted
    assert aside.with_name(aside.name + "-wal").read_bytes() == b"old wal"
    assert outbox.append_alarms(TOPIC, alarm_docs(1)) == [1] and damage(path) is None
    outbox.close()
    again, moved = open_checked(path)  # the new one is sound: nothing more is moved
    assert moved is None and set_aside(tmp_path) == [aside]
    again.close()


def test_damaged_pages_are_found_at_start_and_the_file_moved_aside(tmp_path):
    path = tmp_path / "outbox.db"
    ob = Outbox(path)
    for _ in range(20):
        ob.append_alarms(TOPIC, alarm_docs(50))
        ob.append(TOPIC, dumps({"pad": "x" * 2000}))
    epoch = ob.epoch
    ob.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = ob.db.execute("PRAGMA page_size").fetchone()[0]
    pages = ob.db.execute("PRAGMA page_count").fetchone()[0]
    ob.close()
    with open(path, "r+b") as f:  # a page in the middle overwritten, as a failing flash block would
        f.seek(page * (pages // 2))
        f.write(b"\xa5" * page)
    outbox, moved = open_checked(path)
    assert moved is not None, "the damage was not found"
    assert outbox.epoch != epoch and outbox.last_seq() == 0 and outbox.pending(ALARM) == []
    assert damage(moved[0]) == moved[1]  # the moved file is the damaged one, kept
    assert damage(path) is None


def test_a_cleanly_closed_outbox_is_not_read_through_at_start(tmp_path):
    """Reading a large outbox through takes time on a slow card: a start after a clean stop
    skips it; after an unclean one (power cut, kill, watchdog) the file is read through."""
    path = tmp_path / "outbox.db"
    outbox, _ = open_checked(path)
    outbox.append_alarms(TOPIC, alarm_docs(3))
    outbox.close()  # not marked clean: the agent died
    assert damage(path, always=False) is None  # read through, and sound
    outbox, _ = open_checked(path)
    for _ in range(20):
        outbox.append_alarms(TOPIC, alarm_docs(50))
    outbox.closed_cleanly()
    outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = outbox.db.execute("PRAGMA page_size").fetchone()[0]
    pages = outbox.db.execute("PRAGMA page_count").fetchone()[0]
    outbox.close()
    with open(path, "r+b") as f:  # damage the agent cannot have made: the check is skipped
        f.seek(page * (pages // 2))
        f.write(b"\xa5" * page)
    assert damage(path, always=True) is not None
    assert damage(path, always=False) is None
    outbox, moved = open_checked(path)  # and the start marks it running again
    assert moved is None
    assert outbox.db.execute("SELECT value FROM meta WHERE key='clean'").fetchone() == (0,)
