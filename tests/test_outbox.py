"""The outbox: batched durable commits, lanes, retention, telemetry thinning, the size cap."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

from agent.config import parse
from agent.outbox import ALARM, TELEMETRY, Outbox
from agent.payloads import dumps, validator
from agent.runtime import Agent
from tests.conftest import config_dict
from tests.faults.helpers import PLANT, TOPIC

DAY = 86400.0


def alarm_docs(n: int) -> list[dict]:
    return [{"schema": "plantwatch.alarm/2", "plant": PLANT, "id": f"T{i}/limit", "state": "active"} for i in range(n)]


def telemetry(ts: float, change: bool = False, size: int = 10) -> bytes:
    doc = {"schema": "plantwatch.telemetry/1", "plant": PLANT, "ts": "2026-01-01T00:00:00.000Z",
           "tags": {f"T{i}": {"v": ts + i, "q": "good"} for i in range(size)}}
    if change:
        doc["change"] = True
    return dumps(doc)


def test_a_batch_of_alarms_is_one_commit_with_contiguous_seqs(tmp_path):
    ob = Outbox(tmp_path / "outbox.db")
    assert ob.append_alarms(TOPIC, alarm_docs(500)) == list(range(1, 501))
    assert ob.append_alarms(TOPIC, alarm_docs(3)) == [501, 502, 503]
    assert [a["seq"] for a in ob.alarms()] == list(range(1, 504))


def test_a_new_outbox_opened_while_another_connection_writes_it_waits_for_the_lock(tmp_path):
    # the uplink and the pipeline open one new file at once, so one can find it created but
    # not yet in WAL, and written by the other: SQLite answers the switch to WAL with
    # SQLITE_BUSY at once (no busy timeout) while another connection holds a write lock
    path = tmp_path / "outbox.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE early (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO early VALUES (1)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    outbox = Outbox(path)
    release.join()
    other.close()
    assert time.monotonic() - t0 >= 0.4
    assert outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.append_alarms(TOPIC, [{"id": "a"}], now=1.0) == [1]
    outbox.close()


def test_alarms_pending_before_telemetry_in_their_own_lane(tmp_path):
    ob = Outbox(tmp_path / "outbox.db")
    ob.append("t", telemetry(1.0), lane=TELEMETRY)
    ob.append_alarms(TOPIC, alarm_docs(2))
    ob.append("t", telemetry(2.0), lane=TELEMETRY)
    assert [r.seq for r in ob.pending(ALARM)] == [1, 2]
    assert [r.lane for r in ob.pending(TELEMETRY)] == [TELEMETRY, TELEMETRY]
    assert ob.depth() == {"alarm": 2, "telemetry": 2, "status": 0}


def test_committed_alarms_survive_sigkill_of_the_writer(tmp_path):
    """A writer process commits batches and reports each commit; it is SIGKILLed mid-stream.
    Every seq it reported is in the outbox afterwards."""
    path = tmp_path / "outbox.db"
    script = textwrap.dedent(f"""
        import sys
        from agent.outbox import Outbox
        ob = Outbox({str(path)!r})
        while True:
            seqs = ob.append_alarms("t", [{{"plant": "p", "state": "active"}} for _ in range(50)])
            print(seqs[-1], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    reported = []
    try:
        while len(reported) < 40:
            line = proc.stdout.readline()
            assert line, "the writer died"
            reported.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    stored = [a["seq"] for a in Outbox(path).alarms()]
    assert stored == list(range(1, len(stored) + 1))
    assert reported[-1] <= len(stored)


def test_retention_keeps_30_days_of_sent_rows_and_every_unsent_one(tmp_path):
    ob = Outbox(tmp_path / "outbox.db")
    now = 100 * DAY
    ob.append_alarms(TOPIC, alarm_docs(3), now=now - 40 * DAY)
    rows = ob.pending(ALARM)
    ob.mark_sent([rows[0].id], now=now - 31 * DAY)  # sent 31 days ago: goes
    ob.mark_sent([rows[1].id], now=now - 29 * DAY)  # sent 29 days ago: stays
    assert ob.prune(now=now) == 1
    assert [a["seq"] for a in ob.alarms()] == [2, 3]
    assert [r.seq for r in ob.pending(ALARM)] == [3]


def test_old_sent_telemetry_is_thinned_to_one_snapshot_per_bucket(tmp_path):
    ob = Outbox(tmp_path / "outbox.db")
    now = 10 * DAY
    old = now - 2 * DAY
    start = old - old % 900
    ids = [ob.append("t", telemetry(t, change=(k % 3 == 1)), now=start + t) for k, t in enumerate(range(0, 1800, 60))]
    recent = ob.append("t", telemetry(0), now=now - 60)
    unsent_old = ob.append("t", telemetry(0), now=start + 5)
    ob.mark_sent(ids + [recent], now=now)
    deleted = ob.downsample_telemetry(now=now, older_than_s=DAY, bucket_s=900)
    left = [r[0] for r in ob.db.execute("SELECT id FROM outbox ORDER BY id")]
    # two 15-minute buckets: the first snapshot of each is kept, change messages never
    assert left == [ids[0], ids[15], recent, unsent_old]
    assert deleted == len(ids) - 2
    for rid in left:
        payload = ob.db.execute("SELECT payload FROM outbox WHERE id=?", (rid,)).fetchone()[0]
        assert "change" not in json.loads(payload)


def test_cap_drops_sent_then_unsent_telemetry_and_never_an_unsent_alarm(tmp_path):
    ob = Outbox(tmp_path / "outbox.db")
    now = time.time()
    sent = [ob.append("t", telemetry(i, size=100), now=now) for i in range(1500)]
    ob.mark_sent(sent)
    ob.append_alarms(TOPIC, alarm_docs(200))
    unsent = [ob.append("t", telemetry(i, size=100), now=now) for i in range(1500)]
    ob.append_alarms(TOPIC, alarm_docs(200))
    full = ob.used_bytes()

    report = ob.enforce_cap(int(full * 0.35))  # sent telemetry is about half of it
    assert report["over"] is False and report["used_bytes"] <= full * 0.35
    assert report["dropped"]["sent_telemetry"] == 1500  # all sent telemetry went first
    assert 0 < report["dropped"]["unsent_telemetry"] < 1500
    left = [r.id for r in ob.pending(TELEMETRY, limit=10_000)]
    assert left == unsent[-len(left):], "the oldest unsent telemetry goes first"
    assert [r.seq for r in ob.pending(ALARM, limit=10_000)] == list(range(1, 401))

    report = ob.enforce_cap(4096)  # impossible: only alarms would be left to drop
    assert report["over"] is True
    assert ob.depth() == {"alarm": 400, "telemetry": 0, "status": 0}
    assert [a["seq"] for a in ob.alarms()] == list(range(1, 401))


def test_full_outbox_raises_a_storage_alarm_then_clears_it(tmp_path):
    data = config_dict()
    data["agent"]["data_dir"] = str(tmp_path / "data")
    data["uplink"]["max_outbox_mb"] = 1.0
    agent = Agent(parse(data, base=tmp_path))
    try:
        for i in range(600):  # ~2 MB of unsent telemetry over a 1 MB cap
            agent.outbox.append(agent.telemetry.topic, telemetry(i, size=100))
        agent.housekeeping.storage_alarm(agent.housekeeping.maintain(2**20))
        agent.housekeeping.storage_alarm(agent.housekeeping.maintain(2**20))  # still full: no second message
        for row in agent.outbox.pending(TELEMETRY, limit=10_000):
            agent.outbox.mark_sent([row.id])
        agent.housekeeping.storage_alarm(agent.housekeeping.maintain(2**20))
        alarms = agent.outbox.alarms()
    finally:
        agent.outbox.close()
    assert [(a["seq"], a["id"], a["kind"], a["state"]) for a in alarms] == [
        (1, "gateway/storage", "storage", "active"),
        (2, "gateway/storage", "storage", "cleared"),
    ]
    assert alarms[0]["context"]["dropped"]["unsent_telemetry"] > 0
    for a in alarms:
        validator("alarm").validate(a)


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, lane INTEGER NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, qos INTEGER NOT NULL DEFAULT 1, retain INTEGER NOT NULL DEFAULT 0, seq INTEGER,
    created REAL NOT NULL, sent REAL);
CREATE INDEX outbox_unsent ON outbox (lane, id) WHERE sent IS NULL;
CREATE UNIQUE INDEX outbox_seq ON outbox (seq) WHERE seq IS NOT NULL;
CREATE INDEX outbox_lane_created ON outbox (lane, created);
CREATE TABLE alarm_state (id TEXT PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', 1), ('seq', 4);
"""


def test_a_schema_1_outbox_is_migrated_and_its_sent_rows_stay_sent(tmp_path):
    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA_1)
    old.executemany("INSERT INTO outbox (lane, topic, payload, seq, created, sent) VALUES (0, ?, ?, ?, 1.0, ?)",
                    [(TOPIC, dumps({"seq": s}), s, 2.0 if s <= 2 else None) for s in range(1, 5)])
    old.commit()
    old.close()
    outbox = Outbox(path)
    assert outbox.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == 3
    assert outbox.last_seq() == 4 and outbox.append_alarms(TOPIC, alarm_docs(1)) == [5]
    assert [r.seq for r in outbox.pending(ALARM)] == [3, 4, 5]  # what the default uplink had not sent
    # a second uplink added later starts with the rows not yet sent everywhere, not the history
    outbox.set_uplinks(["default", "province"])
    assert [r.seq for r in outbox.pending(ALARM, uplink="province")] == [3, 4, 5]
    outbox.close()
    assert Outbox(path).depth() == {"alarm": 3, "telemetry": 0, "status": 0}


def test_a_row_is_sent_only_when_every_uplink_has_it(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.set_uplinks(["park", "province"])
    outbox.append_alarms(TOPIC, alarm_docs(3), now=1.0)
    ids = [r.id for r in outbox.pending(ALARM, uplink="park")]
    outbox.mark_sent(ids, now=2.0, uplink="park")
    assert outbox.pending(ALARM, uplink="park") == []
    assert outbox.depth()["alarm"] == 3 and outbox.depth("park")["alarm"] == 0 and outbox.depth("province")["alarm"] == 3
    assert outbox.prune(now=1e9, keep_s=1.0) == 0  # unsent for the province: retention keeps them
    outbox.mark_sent(ids[:2], now=3.0, uplink="province")
    assert outbox.depth()["alarm"] == 1
    outbox.dead_letter(outbox.pending(ALARM, uplink="province"), "HTTP 400", uplink="province", now=4.0)
    assert outbox.depth()["alarm"] == 0 and outbox.dead_letter_counts() == {"province": 1}
    assert outbox.db.execute("SELECT count(*) FROM delivered").fetchone()[0] == 0  # cursors of sent rows go
    # an uplink dropped from the config no longer holds rows back
    outbox.append_alarms(TOPIC, alarm_docs(1), now=5.0)
    outbox.mark_sent([r.id for r in outbox.pending(ALARM, uplink="park")], uplink="park")
    outbox.set_uplinks(["park"])
    assert outbox.depth()["alarm"] == 0


def test_the_oldest_unsent_row_overall_and_per_uplink(tmp_path):
    from agent.outbox import unsent_view

    outbox = Outbox(tmp_path / "outbox.db")
    outbox.set_uplinks(["park", "province"])
    assert outbox.oldest_unsent() is None and unsent_view(None, 10.0) is None
    first = outbox.append(TOPIC, b"{}", lane=TELEMETRY, now=1.0)
    outbox.append_alarms(TOPIC, alarm_docs(2), now=2.0)
    oldest = outbox.oldest_unsent()
    assert oldest == {"id": first, "lane": "telemetry", "seq": None, "created": 1.0}
    outbox.mark_sent([first], now=3.0, uplink="park")
    # the park has the telemetry row; the province still owes it, so it is the oldest unsent overall
    assert outbox.oldest_unsent()["id"] == first and outbox.oldest_unsent("province")["id"] == first
    park = outbox.oldest_unsent("park")
    assert (park["lane"], park["seq"], park["created"]) == ("alarm", 1, 2.0)
    assert unsent_view(park, 12.5) == {"id": park["id"], "lane": "alarm", "seq": 1,
                                       "created": "1970-01-01T00:00:02.000Z", "age_s": 10.5}
    everything = [r.id for lane in (ALARM, TELEMETRY) for r in outbox.pending(lane, uplink="province")]
    outbox.mark_sent(everything, now=4.0, uplink="province")
    outbox.mark_sent([r.id for r in outbox.pending(ALARM, uplink="park")], now=4.0, uplink="park")
    assert outbox.oldest_unsent() is None and outbox.oldest_unsent("park") is None
