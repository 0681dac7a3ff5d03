"""Storage faults inside the gateway, made for real while the plant keeps alarming: the data_dir's
file system fills up (a 4 MB tmpfs) and the outbox is made read-only, then both are undone; another
process holds the outbox's write lock past the busy timeout, then lets go.

Each ends the same way: every alarm the outbox committed reached the receiver through a real
mosquitto, first arrivals in seq order without a hole, none of the transitions made during the
fault was lost (each tag's alarm alternates active / cleared, so one lost transition shows as two
of the same in a row), and the ``outbox/storage`` alarm was raised and cleared in that order.
While the fault lasts, the ``outbox/storage`` alarm reaches the receiver unnumbered, sent from
the agent's memory (the outbox cannot take it); its numbered record follows once stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.receiver import Receiver, connect
from tests.faults.helpers import (
    PLANT,
    Flipper,
    assert_every_committed_seq_arrived_in_order,
    plant_config,
    tag_addresses,
    wait_for,
)
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

TAGS = 8


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs as the data_dir, unmounted after the test."""
    path = tmp_path / "data"
    path.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def storage(receiver: Receiver) -> dict:
    return (receiver.status.get(PLANT) or {}).get("outbox", {}).get("storage") or {}


def loop_state(receiver: Receiver, name: str) -> dict:
    return ((receiver.status.get(PLANT) or {}).get("loops") or {}).get(name) or {}


def states_of(receiver: Receiver, alarm_id: str) -> list[str]:
    return [a["state"] for a in receiver.alarms if a["id"] == alarm_id]


def unnumbered_of(receiver: Receiver, alarm_id: str) -> list[str]:
    return [a["state"] for a in receiver.unnumbered if a["id"] == alarm_id]


def twin(receiver: Receiver, doc: dict) -> list[dict]:
    """The numbered records of an unnumbered alarm: same id, state and ts (docs/PAYLOADS.md)."""
    return [a for a in receiver.alarms if (a["id"], a["state"], a["ts"]) == (doc["id"], doc["state"], doc["ts"])]


class Plant:
    """A PLC whose TAGS tags cross their H limit every 0.3 s, the agent watching it, a receiver."""

    def __init__(self, tmp_path: Path, broker, write_config, data_dir: Path, more_uplinks: tuple = (), **uplink):
        """``more_uplinks``: [[uplinks]] entries beside the MQTT one (then named ``park``)."""
        self.receiver = Receiver(emit=lambda line: None)
        self.sub = connect(self.receiver, broker.url, PLANT)
        self.plc_cm = start_server(holding={})
        self.plc = self.plc_cm.__enter__()
        for a in tag_addresses(TAGS):
            self.plc.set_value(a, 120.0, type="float32")
        data = plant_config(self.plc.url, broker.url, tags=TAGS, **uplink)
        data["agent"]["data_dir"] = str(data_dir)
        if more_uplinks:
            data["uplinks"] = [{"name": "park", **data.pop("uplink")}, *more_uplinks]
        self.outbox = data_dir / "outbox.db"
        self.agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        self.flipper = Flipper(self.plc, tag_addresses(TAGS), period=0.3)

    def start(self) -> None:
        assert wait_for(lambda: " running: plant " in self.agent.output(), 30), self.agent.output()
        self.flipper.start()
        assert self.receiver.wait(lambda r: len(r.alarms) >= 2 * TAGS, 30), self.receiver.summary()

    def pause(self) -> None:
        self.flipper.stop()

    def resume(self) -> None:
        self.flipper = Flipper(self.plc, tag_addresses(TAGS), period=0.3)
        self.flipper.start()

    def log_has(self, text: str, timeout: float = 60) -> bool:
        return wait_for(lambda: text in self.agent.output(), timeout)

    def wait_unnumbered_storage_alarm(self) -> None:
        """The ``outbox/storage`` alarm arrived from the agent's memory, unnumbered, while the
        fault lasts: its numbered record cannot have arrived (the outbox has not stored it)."""
        assert self.receiver.wait(lambda r: unnumbered_of(r, "outbox/storage") == ["active"], 30), \
            (self.receiver.unnumbered, self.agent.output()[-3000:])
        assert states_of(self.receiver, "outbox/storage") == []
        doc = next(a for a in self.receiver.unnumbered if a["id"] == "outbox/storage")
        assert "seq" not in doc and doc["unnumbered"] is True and doc["context"]["error"], doc

    def wait_pending(self, n: int) -> None:
        """The status message, sent from memory, says at least ``n`` alarm messages wait."""
        assert self.receiver.wait(lambda r: storage(r).get("pending_alarms", 0) >= n, 60), \
            (storage(self.receiver), self.agent.output()[-3000:])

    def finish(self) -> list[int]:
        """Stop the burst and the agent; the checks every storage fault ends with."""
        assert self.receiver.wait(lambda r: states_of(r, "outbox/storage")[-1:] == ["cleared"], 60), \
            self.agent.output()[-3000:]
        self.flipper.stop()
        assert self.agent.signal(signal.SIGTERM) == 0, self.agent.output()[-3000:]
        seqs = assert_every_committed_seq_arrived_in_order(self.receiver, self.outbox)
        assert states_of(self.receiver, "outbox/storage") == ["active", "cleared"]
        cleared = next(a for a in self.receiver.alarms if a["id"] == "outbox/storage" and a["state"] == "cleared")
        assert cleared["context"]["lost"] == 0
        for i in range(TAGS):
            states = [s for s in states_of(self.receiver, f"R{101 + i}.TI01/limit") if s in ("active", "cleared")]
            assert len(states) >= 4, states
            assert all(a != b for a, b in zip(states, states[1:], strict=False)), (i, states)
        assert storage(self.receiver).get("ok") is True
        # every message sent from memory has its numbered record, exactly once, of the same epoch
        assert unnumbered_of(self.receiver, "outbox/storage") == ["active"]
        for doc in self.receiver.unnumbered:
            numbered = twin(self.receiver, doc)
            assert len(numbered) == 1 and numbered[0]["epoch"] == doc["epoch"], (doc, numbered)
        return seqs

    def close(self) -> None:
        self.flipper.stop()
        self.agent.kill()
        self.sub.loop_stop()
        self.plc_cm.__exit__(None, None, None)


def test_a_full_disk_then_a_read_only_outbox_lose_no_alarm(tmp_path, mosquitto, write_config, small_disk):
    """The free-disk watch raises gateway/storage while alarms can still be stored; then the disk
    fills to the last byte mid-burst, and the outbox files are made immutable (on Linux that stops
    only descriptors opened after it: the agent's retries open their own); the disk is freed first,
    the files made writable last. Nothing is lost, nothing reordered."""
    plant = Plant(tmp_path, mosquitto, write_config, small_disk, min_free_mb=2.0, telemetry_interval_s=0.5)
    filler = small_disk / "filler"
    try:
        plant.start()
        plant.pause()
        # below min_free_mb, not yet full: the watch's alarm is stored and sent like any other
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"\0" * max(0, os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - (7 << 18)))
        os.close(fd)
        assert plant.receiver.wait(lambda r: states_of(r, "gateway/storage")[-1:] == ["active"], 30), \
            plant.agent.output()[-3000:]
        plant.resume()
        fill(filler)
        assert plant.log_has("cannot store alarm messages"), plant.agent.output()[-3000:]
        plant.wait_pending(2 * TAGS)
        plant.wait_unnumbered_storage_alarm()  # the disk is still full
        assert os.statvfs(small_disk).f_bavail == 0
        # the telemetry loop cannot store its snapshots either: it says so and goes on
        assert plant.receiver.wait(lambda r: loop_state(r, "telemetry").get("state") == "failing", 30), \
            plant.receiver.status.get(PLANT)
        outbox_files = [str(p) for p in small_disk.glob("outbox.db*")]
        run("chattr", "+i", *outbox_files)
        filler.unlink()
        # the disk has room again; the outbox is still read-only, and the status says so
        assert plant.receiver.wait(lambda r: "readonly database" in storage(r).get("error", ""), 30), \
            storage(plant.receiver)
        plant.wait_pending(4 * TAGS)
        run("chattr", "-i", *outbox_files)
        assert plant.log_has("kept in memory are stored now"), plant.agent.output()[-3000:]
        assert plant.receiver.wait(lambda r: states_of(r, "gateway/storage")[-1:] == ["cleared"], 30), \
            plant.agent.output()[-3000:]
        telemetry = plant.receiver.telemetry
        assert plant.receiver.wait(lambda r: r.telemetry > telemetry + 2, 30)  # snapshots again
        seqs = plant.finish()
    finally:
        plant.close()
    assert len(seqs) > 8 * TAGS
    telemetry_loop = loop_state(plant.receiver, "telemetry")
    assert telemetry_loop["state"] == "ok" and telemetry_loop["errors"] >= 1, telemetry_loop
    assert states_of(plant.receiver, "gateway/storage") == ["active", "cleared"]
    assert "Traceback" in plant.agent.output()  # the first failure is logged with its cause


HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()  # until the test says so
    db.execute("ROLLBACK")
""")


def test_a_write_lock_held_past_the_busy_timeout_loses_no_alarm(tmp_path, mosquitto, write_config):
    """Another process holds the outbox's write lock until the agent has given up waiting for it
    (SQLite's busy timeout, 10 s) and kept transitions in memory; then lets go."""
    data_dir = tmp_path / "data"
    plant = Plant(tmp_path, mosquitto, write_config, data_dir)
    holder = None
    try:
        plant.start()
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(plant.outbox)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        assert plant.log_has("cannot store alarm messages (OperationalError: database is locked)"), \
            plant.agent.output()[-3000:]
        plant.wait_pending(3 * TAGS)  # a few transitions of each tag held back
        plant.wait_unnumbered_storage_alarm()  # the lock is still held
        assert holder.poll() is None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        assert plant.log_has("kept in memory are stored now"), plant.agent.output()[-3000:]
        seqs = plant.finish()
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        plant.close()
    assert len(seqs) > 4 * TAGS
    # the uplink never waited out the lock to mark rows sent: its connection stayed up throughout
    assert "uplink: connection lost" not in plant.agent.output(), plant.agent.output()[-3000:]


def test_a_held_lock_with_an_http_uplink_beside_mqtt_reaches_both_platforms(tmp_path, mosquitto, write_config):
    """Two uplinks, MQTT and HTTPS (json profile): each platform gets the unnumbered storage
    alarm while the lock is still held, then every numbered alarm in order, the numbered
    storage alarm among them."""
    from tests.http_platform import Platform

    platform = Platform(tmp_path).start()
    province = {"name": "province", "url": platform.url, "ca_file": str(platform.ca.path), "timeout_s": 2.0,
                "backoff_initial_s": 0.1, "backoff_max_s": 1.0}
    plant = Plant(tmp_path, mosquitto, write_config, tmp_path / "data", more_uplinks=(province,))
    holder = None

    def unnumbered_at_province(p: Platform) -> list[dict]:
        with p.cond:
            docs = [json.loads(b) for b in p.accepted if b.startswith(b"{")]
        return [d for d in docs if d.get("unnumbered")]

    try:
        plant.start()
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(plant.outbox)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        plant.wait_unnumbered_storage_alarm()
        assert platform.wait(lambda p: [d["id"] for d in unnumbered_at_province(p)] == ["outbox/storage"], 30), \
            plant.agent.output()[-3000:]
        plant.wait_pending(3 * TAGS)  # a few transitions of each tag held back
        assert holder.poll() is None  # all while the lock is still held
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        seqs = plant.finish()
        assert platform.wait(lambda p: list(dict.fromkeys(p.seqs())) == seqs, 60), (platform.seqs(), seqs)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        plant.close()
        platform.stop()
    doc = unnumbered_at_province(platform)[0]
    numbered = [d for d in map(json.loads, platform.accepted) if "seq" in d]  # alarms, not status posts
    twins = {(d["epoch"], d["seq"]) for d in numbered if (d["id"], d["state"], d["ts"]) == (doc["id"], doc["state"], doc["ts"])}
    assert "seq" not in doc and len(twins) == 1 and next(iter(twins))[0] == doc["epoch"], (doc, twins)


def test_beyond_max_pending_alarms_the_newest_are_counted_lost_and_their_state_kept(small_disk):
    """The queue's bound with a real full disk, in process: what fits waits and lands in order
    with contiguous seqs; what does not is counted, and its alarm's latest state is still saved."""
    import asyncio

    from agent.alarms import AlarmManager, TagInfo
    from agent.outbox import Outbox
    from agent.pending import Committer
    from detectors.base import ConditionChange

    outbox = Outbox(small_disk / "outbox.db")
    committer = Committer(outbox, small_disk / "outbox.db", limit=4)
    faults: list[tuple[bool, int]] = []
    landed: list[dict] = []
    committer.on_fault = lambda failing: faults.append((failing, committer.lost))
    committer.on_committed = landed.extend
    manager = AlarmManager(PLANT, [TagInfo(f"T{i}", "plc", "°C", f"{i}#温度") for i in range(2)])

    def commit(active: bool) -> list[int]:
        msgs = manager.on_changes([ConditionChange(i, "limit", "H", active, 170.0 if active else 150.0, 160.0, 1.0)
                                   for i in range(2)])
        return committer.append_alarms("t/alarm", msgs, states=[(m["id"], manager.snapshot(m["id"])) for m in msgs])

    assert commit(True) == [1, 2]
    filler = small_disk / "filler"
    fill(filler)
    for active in (False, True, False):  # 6 messages: the first 4 wait, the last 2 are lost
        assert commit(active) == []
    assert (committer.queued, committer.lost, faults) == (4, 2, [(True, 0)])
    filler.unlink()

    async def drain() -> None:
        task = asyncio.create_task(committer.run())
        while committer.queue or committer.since is not None:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(asyncio.wait_for(drain(), 30))
    assert [m["seq"] for m in landed] == [3, 4, 5, 6]
    assert [(m["id"], m["state"]) for m in landed] == [("T0/limit", "cleared"), ("T1/limit", "cleared"),
                                                       ("T0/limit", "active"), ("T1/limit", "active")]
    assert faults == [(True, 0), (False, 2)]  # the recovery says how many were lost
    assert outbox.last_seq() == 6
    # the lost transitions (cleared) are what the manager knew last: that is the state on disk
    assert {s["id"]: s["active"] for s in outbox.alarm_states()} == {"T0/limit": False, "T1/limit": False}
    outbox.close()


def test_a_clear_that_cannot_be_stored_raises_the_storage_alarm_again(small_disk):
    """The queue lands, and the disk fills again before the storage alarm's clear is stored: the
    fault is back, and so is its alarm (never cleared while nothing can be stored)."""
    import asyncio

    from agent.alarms import AlarmManager
    from agent.outbox import Outbox
    from agent.pending import Committer

    path = small_disk / "outbox.db"
    outbox = Outbox(path)
    committer = Committer(outbox, path, limit=100)
    manager = AlarmManager(PLANT, [])
    filler = small_disk / "filler"
    faults: list[bool] = []
    landed: list[dict] = []

    def on_fault(failing: bool) -> None:
        faults.append(failing)
        if faults == [True, False]:
            fill(filler)  # just as the queue landed
        msgs = manager.raise_system("storage", "outbox", failing, 1.0, {"text": "storage"})
        if committer.append_alarms("t/alarm", msgs, states=[(m["id"], manager.snapshot(m["id"])) for m in msgs]):
            landed.extend(msgs)  # stored at once

    committer.on_fault = on_fault
    committer.on_committed = landed.extend
    fill(filler)
    msgs = manager.raise_system("gateway", "task.x", True, 1.0, {"text": "a transition made during the fault"})
    assert committer.append_alarms("t/alarm", msgs) == []

    async def drain(until) -> None:
        task = asyncio.create_task(committer.run())
        while not until():
            await asyncio.sleep(0.05)
        task.cancel()

    filler.unlink()
    asyncio.run(asyncio.wait_for(drain(lambda: len(faults) >= 3), 30))
    assert faults == [True, False, True]
    assert manager.alarms["outbox/storage"].active  # raised again: the disk is full again
    filler.unlink()
    asyncio.run(asyncio.wait_for(drain(lambda: committer.since is None), 30))
    assert faults == [True, False, True, False]
    states = [(m["id"], m["state"]) for m in landed]
    assert states == [("task.x/gateway", "active"), ("outbox/storage", "active"), ("outbox/storage", "cleared"),
                      ("outbox/storage", "active"), ("outbox/storage", "cleared")]
    assert [m["seq"] for m in landed] == [1, 2, 3, 4, 5]
    outbox.close()
