"""``plantwatch receive --store``: messages stored in PostgreSQL (a server of the tests' own) or
SQLite, acknowledged to the broker only once stored; gaps, epochs and presence read from the store."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alarms import AlarmManager, TagInfo
from agent.ingest import Worker, connect
from agent.payloads import STATUS_SCHEMA, TELEMETRY_SCHEMA, dumps
from agent.store import Store
from detectors.base import ConditionChange
from tests.helpers import PLANT
from tests.postgres import Postgres
from tests.test_receiver import EPOCH, alarm

ALARMS = f"plantwatch/{PLANT}/alarm"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.db"
    return request.getfixturevalue("pg_url")


def publish(port: int, items: list[tuple[str, bytes]], pause_s: float = 0.0) -> None:
    """QoS 1, each acknowledged by the broker, as a gateway's uplink publishes."""
    p = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    p.max_queued_messages_set(0)
    p.connect("127.0.0.1", port)
    p.loop_start()
    infos = []
    for topic, payload in items:
        infos.append(p.publish(topic, payload, qos=1))
        if pause_s:
            time.sleep(pause_s)
    for info in infos:
        info.wait_for_publish(30)
    p.disconnect()
    p.loop_stop()


def sent_from_memory(seq: int | None = None) -> bytes:
    """An alarm the gateway sent unnumbered (``seq`` None), or its numbered record."""
    m = AlarmManager(PLANT, [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度")])
    doc = m.on_changes([ConditionChange(0, "limit", "H", True, 161.0, 160.0, 5.0)])[0]
    doc["epoch"] = EPOCH
    doc.update({"seq": seq} if seq else {"unnumbered": True})
    return dumps(doc)


def status(online: bool, plant: str = PLANT, ts: str = "2026-11-28T00:00:00.000Z") -> bytes:
    return dumps({"schema": STATUS_SCHEMA, "plant": plant, "online": online, "ts": ts, "version": "1"})


def query(url: str, sql: str) -> list[tuple]:
    store = Store.open(url)
    try:
        return store.query(sql)
    finally:
        store.close()


def report(url: str, offline_after: float, now: float | None = None):
    store = Store.open(url)
    try:
        return store.report(offline_after, now)
    finally:
        store.close()


def stored(url: str) -> int:
    return query(url, "SELECT COUNT(*) FROM alarms")[0][0]


def until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


class InProcess:
    """A storing worker in this process."""

    def __init__(self, broker: str, url: str, client_id: str, group: str | None = None):
        self.lines: list[str] = []
        self.worker = Worker(Store.open(url, client_id), emit=self.lines.append).start()
        self.client = connect(self.worker, broker, client_id, group=group)

    def close(self) -> None:
        self.worker.close()
        self.client.disconnect()
        self.client.loop_stop()
        self.worker.store.close()


class Process:
    """``plantwatch receive --store`` in a process of its own, its output collected."""

    def __init__(self, broker: str, url: str, client_id: str, group: str | None = "platform"):
        cmd = [sys.executable, "-m", "agent.cli", "receive", "--broker", broker, "--store", url, "--client-id", client_id]
        self.proc = subprocess.Popen(cmd + (["--group", group] if group else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        until(lambda: any(line.startswith("receiving from") for line in self.lines) or self.proc.poll() is not None,
              30, "the worker subscribed")
        assert self.proc.poll() is None, "\n".join(self.lines)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, start: str) -> bool:
        return any(line.startswith(start) for line in self.lines)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return "\n".join(self.lines)


def test_redelivered_and_resent_alarms_are_stored_once(mosquitto, store_url):
    w = InProcess(mosquitto.url, store_url, "w1")
    try:
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in (1, 2, 3, 2, 3, 3)])
        until(lambda: w.worker.stored["alarm"] >= 6, what="six messages stored")
    finally:
        w.close()
    assert query(store_url, "SELECT seq, copies FROM alarms ORDER BY seq") == [(1, 1), (2, 2), (3, 3)]
    found = report(store_url, 180)
    assert found.gaps == []
    assert [row[5] for row in found.epochs] == [3]  # copies received again, stored once


def test_copies_in_one_batch_and_across_batches_are_counted_the_same(store_url):
    from agent.store import Row

    def rows(seqs: list[int]) -> list[Row]:
        ts = "2026-11-28T00:00:00.000Z"
        out = [Row("alarm", PLANT, ts, f'{{"seq":{s}}}', 1.0 + i, epoch=EPOCH, seq=s, alarm_id="T/limit",
                   state="active") for i, s in enumerate(seqs)]
        out += [Row("unnumbered", PLANT, ts, "{}", 2.0, epoch=EPOCH, alarm_id="T/limit", state="active")] * 2
        out += [Row("status", PLANT, ts, "{}", 3.0, online=True)] * 2
        out += [Row("telemetry", PLANT, ts, "{}", 4.0, digest="d")] * 2
        return out

    store = Store.open(store_url, worker="w")
    try:
        store.write(rows([1, 2, 2, 3, 3, 3]))  # the same alarm three times in one transaction
        store.write(rows([3, 4]))
    finally:
        store.close()
    assert query(store_url, "SELECT seq, copies FROM alarms ORDER BY seq") == [(1, 1), (2, 2), (3, 4), (4, 1)]
    assert query(store_url, "SELECT doc, received_at FROM alarms WHERE seq = 3") == [('{"seq":3}', 4.0)]  # the first
    assert query(store_url, "SELECT copies FROM unnumbered") == [(4,)]
    assert query(store_url, "SELECT COUNT(*) FROM statuses") == [(1,)]
    assert query(store_url, "SELECT COUNT(*) FROM telemetry") == [(1,)]
    assert query(store_url, "SELECT plant, last_seen FROM plants") == [(PLANT, 6.0)]


def test_two_workers_share_a_subscription_and_gaps_are_judged_across_them(mosquitto, pg_url):
    a = InProcess(mosquitto.url, pg_url, "wa", group="platform")
    b = InProcess(mosquitto.url, pg_url, "wb", group="platform")
    missing = {37, 38, 77}
    try:
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in range(1, 101) if s not in missing])
        until(lambda: stored(pg_url) == 97, what="97 alarms stored")
        found = report(pg_url, 180)
        assert [(g[2], g[3]) for g in found.gaps] == [(37, 38), (77, 77)]
        publish(mosquitto.port, [(ALARMS, alarm(37))])  # late, to whichever worker
        until(lambda: stored(pg_url) == 98, what="the late alarm stored")
    finally:
        a.close()
        b.close()
    workers = dict(query(pg_url, "SELECT worker, COUNT(*) FROM alarms GROUP BY worker"))
    assert set(workers) == {"wa", "wb"}, workers  # each got a share: the gap spans both
    assert [(g[2], g[3]) for g in report(pg_url, 180).gaps] == [(38, 38), (77, 77)]


@pytest.mark.parametrize("kind, workers", [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)])
def test_a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(mosquitto, request, tmp_path, kind, workers):
    store_url = f"sqlite:///{tmp_path}/platform.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    procs = [Process(mosquitto.url, store_url, f"w{i}") for i in range(workers)]
    total = 3000
    sender = threading.Thread(target=publish, args=(mosquitto.port, [(ALARMS, alarm(s)) for s in range(1, total + 1)],
                                                    0.001))
    sender.start()
    until(lambda: stored(store_url) >= 300, what="300 alarms stored")
    procs[0].kill()
    time.sleep(0.5)
    procs[0] = Process(mosquitto.url, store_url, "w0")  # back under its client id: its session is waiting
    sender.join(120)
    until(lambda: stored(store_url) >= total, 60, f"all {total} alarms stored")
    for p in procs:
        p.stop()
    assert query(store_url, "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM alarms") == [(total, total, 1, total)]
    assert report(store_url, 180).gaps == []


def test_database_down_messages_stay_with_the_broker_until_stored(mosquitto):
    pg = Postgres().start()
    try:
        w = Process(mosquitto.url, pg.url, "w0")
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in range(1, 11)])
        until(lambda: stored(pg.url) == 10, what="10 alarms stored")
        pg.stop()
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in range(11, 61)])
        until(lambda: w.said("STORE DOWN"), what="the worker says the store is down")
        assert "held unacknowledged" in "\n".join(w.lines)
        w.kill()  # what it held is still the broker's
        pg.start()
        w = Process(mosquitto.url, pg.url, "w0")
        until(lambda: stored(pg.url) == 60, what="the held alarms stored after the restart")
        pg.stop()  # down again, this time the worker lives through it
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in range(61, 81)])
        until(lambda: w.said("STORE DOWN"), what="the worker says the store is down")
        pg.start()
        until(lambda: w.said("STORE BACK"), what="the worker says the store is back")
        until(lambda: stored(pg.url) == 80, what="all 80 alarms stored")
        w.stop()
        assert query(pg.url, "SELECT COUNT(DISTINCT seq), MAX(seq) FROM alarms") == [(80, 80)]
        assert report(pg.url, 180).gaps == []
    finally:
        pg.close()


def test_new_epoch_is_reported_as_such(mosquitto, store_url):
    new = "fedcba9876543210"
    w = InProcess(mosquitto.url, store_url, "w1")
    try:
        publish(mosquitto.port, [(ALARMS, alarm(s)) for s in (1, 2, 3)])
        publish(mosquitto.port, [(ALARMS, alarm(s, epoch=new)) for s in (1, 2)] + [(ALARMS, alarm(4))])
        until(lambda: w.worker.stored["alarm"] >= 6, what="six alarms stored")
    finally:
        w.close()
    found = report(store_url, 180)
    assert found.gaps == []  # seq 1 of the new epoch is neither a gap nor a duplicate
    assert [(r[1], r[2], r[3], r[4]) for r in found.epochs] == [(EPOCH, 4, 1, 4), (new, 2, 1, 2)]
    lines = found.lines()
    assert f"EPOCH {PLANT}: new sequence epoch {new} (was {EPOCH})" in "\n".join(lines)


def test_offline_from_the_status_and_from_silence(mosquitto, store_url, tmp_path):
    quiet, gone = "640100000002", "640100000003"
    p = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    p.connect("127.0.0.1", mosquitto.port)
    p.loop_start()
    # a gateway that went away before the platform started: only its retained will is left
    p.publish(f"plantwatch/{gone}/status", status(True, plant=gone), qos=1, retain=True).wait_for_publish(5)
    p.disconnect()
    p.loop_stop()
    w = InProcess(mosquitto.url, store_url, "w1")
    try:
        publish(mosquitto.port, [
            (f"plantwatch/{PLANT}/status", status(True, ts="2026-11-28T00:00:05.000Z")),
            (f"plantwatch/{PLANT}/status", status(False, ts="2026-11-28T00:00:00.000Z")),  # the will: older ts
            (f"plantwatch/{quiet}/status", status(True, plant=quiet)),
            (f"plantwatch/{quiet}/telemetry", dumps({"schema": TELEMETRY_SCHEMA, "plant": quiet,
                                                     "ts": "2026-11-28T00:00:00.000Z",
                                                     "tags": {"R101.TI01": {"v": 1.0, "q": "good"}}})),
        ])
        until(lambda: sum(w.worker.stored.values()) >= 5, what="five messages stored")
    finally:
        w.close()
    found = report(store_url, 60)
    # PLANT: its latest status (as received) is the will; gone: a retained status is no sign of life
    assert found.offline() == [(PLANT, "status offline at 2026-11-28T00:00:00.000Z"),
                                (gone, "never heard, only its retained status")]
    assert query(store_url, "SELECT COUNT(*) FROM telemetry") == [(1,)]
    later = report(store_url, 60, time.time() + 120)
    assert [p for p, _ in later.offline()] == [PLANT, quiet, gone]
    out = subprocess.run([sys.executable, "-m", "agent.cli", "receive", "--store", store_url, "--report",
                          "--strict", "--offline-after", "60"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"plant {PLANT}: OFFLINE (status offline at 2026-11-28T00:00:00.000Z)" in out.stdout


def test_unnumbered_alarms_are_kept_out_of_the_sequence_and_matched_with_their_record(mosquitto, store_url):
    w = InProcess(mosquitto.url, store_url, "w1")
    try:
        publish(mosquitto.port, [(ALARMS, sent_from_memory()), (ALARMS, sent_from_memory()), (ALARMS, alarm(2))])
        until(lambda: w.worker.stored["unnumbered"] == 2 and w.worker.stored["alarm"] == 1, what="three stored")
        before = report(store_url, 180)
        publish(mosquitto.port, [(ALARMS, sent_from_memory(1))])  # its numbered record
        until(lambda: w.worker.stored["alarm"] == 2, what="the numbered record stored")
    finally:
        w.close()
    assert [row[4] for row in before.unnumbered] == [None]  # stored once, no numbered record yet
    assert [(g[2], g[3]) for g in before.gaps] == [(1, 1)]  # it reserved no seq: 1 is missing until its record
    after = report(store_url, 180)
    assert [row[4] for row in after.unnumbered] == [1] and after.gaps == []
    assert query(store_url, "SELECT copies FROM unnumbered") == [(2,)]
    assert "its numbered record is seq 1" in "\n".join(after.lines())


def test_invalid_messages_are_acknowledged_and_counted_not_stored(mosquitto, tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    w = InProcess(mosquitto.url, url, "w1")
    try:
        publish(mosquitto.port, [(ALARMS, b"{not json"), (ALARMS, alarm(1)),
                                 ("plantwatch/640100000009/alarm", alarm(2))])
        until(lambda: sum(w.worker.refused.values()) == 2 and w.worker.stored["alarm"] == 1, what="counted")
    finally:
        w.close()
    assert dict(w.worker.refused) == {"not JSON": 1, "plant mismatch": 1}
    assert any(line.startswith("INVALID plantwatch/640100000009/alarm") for line in w.lines)


@pytest.mark.parametrize("args, says", [
    (["--store", "mysql://x/y", "--broker", "mqtt://127.0.0.1:1"], "the scheme must be postgresql:// or sqlite:///"),
    (["--store", "sqlite://relative.db", "--report"], "give sqlite:///PATH"),
    (["--report"], "--report reads the store: give --store URL"),
    (["--store", "sqlite:///tmp/x.db", "--broker", "mqtt://127.0.0.1:1", "--group", "g"], "own --client-id"),
    (["--store", "sqlite:///tmp/x.db", "--listen", "http://127.0.0.1:0/p"], "--listen, --config and --out"),
])
def test_bad_store_arguments_exit_2_naming_the_option(args, says):
    out = subprocess.run([sys.executable, "-m", "agent.cli", "receive", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr


def test_report_of_an_unreachable_database_says_so():
    out = subprocess.run([sys.executable, "-m", "agent.cli", "receive", "--report", "--store",
                          "postgresql://nobody@127.0.0.1:1/none"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "receive: store postgresql://nobody@127.0.0.1:1/none:" in out.stderr
