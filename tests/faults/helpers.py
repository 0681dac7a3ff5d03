"""What the fault tests share: an alarm burst writer, a PLC that keeps alarming, agent configs,
and the one check every fault test ends with — the receiver has every committed seq, in order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from agent.alarms import AlarmManager, TagInfo
from agent.outbox import Outbox
from agent.payloads import STATUS_SCHEMA
from agent.receiver import Receiver
from detectors.base import ConditionChange
from tests.conftest import config_dict
from tests.helpers import PLANT

TOPIC = f"plantwatch/{PLANT}/alarm"


def status_doc(online: bool) -> dict[str, Any]:
    return {"schema": STATUS_SCHEMA, "plant": PLANT, "online": online, "ts": "2026-01-01T00:00:00.000Z", "version": "test"}


class Burst(threading.Thread):
    """Commits ``total`` alarms in batches (one fsynced transaction each) as fast as ``pause``
    allows, waking the uplink after each commit, as the pipeline does."""

    def __init__(self, path: Path, wake, total: int, batch: int = 20, pause: float = 0.01):
        super().__init__(name="burst", daemon=True)
        self.path, self.wake, self.total, self.batch, self.pause = path, wake, total, batch, pause
        self.committed = 0
        self.error: BaseException | None = None
        self.gate = threading.Event()  # cleared: the burst holds before its next commit
        self.gate.set()

    def run(self) -> None:
        outbox = Outbox(self.path)
        manager = AlarmManager(PLANT, [TagInfo(f"T{i}", "plc", "°C", f"{i}#温度", 2) for i in range(self.batch)])
        try:
            active = False
            while self.committed < self.total:
                self.gate.wait()
                active = not active
                ts = time.time()
                changes = [ConditionChange(i, "limit", "H", active, 170.0 if active else 150.0, 160.0, ts)
                           for i in range(min(self.batch, self.total - self.committed))]
                self.committed += len(outbox.append_alarms(TOPIC, manager.on_changes(changes)))
                self.wake()
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            outbox.close()


class Flipper(threading.Thread):
    """Moves PLC values across their H limit and back every ``period`` s: a steady stream of
    alarm transitions (active H, cleared H) for the agent to commit."""

    def __init__(self, plc, addresses: list[int], period: float = 0.3):
        super().__init__(name="flipper", daemon=True)
        self.plc, self.addresses, self.period = plc, addresses, period
        self._halt = threading.Event()

    def run(self) -> None:
        high = False
        while not self._halt.is_set():
            high = not high
            for a in self.addresses:
                self.plc.set_value(a, 170.0 if high else 150.0, type="float32")
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)
        for a in self.addresses:
            self.plc.set_value(a, 120.0, type="float32")


def plant_config(plc_url: str, broker_url: str, tags: int = 4, **uplink: Any) -> dict[str, Any]:
    """An agent polling ``tags`` float32 limit tags at hr:100, 102, ... every 0.1 s."""
    data = config_dict()
    data["uplink"].update(url=broker_url, heartbeat_s=2.0, keepalive_s=2.0, backoff_initial_s=0.1, backoff_max_s=1.0)
    data["uplink"].update(uplink)
    data["devices"][0].update(url=plc_url, interval_s=0.1, timeout_s=0.5)
    template = data["tags"][0]
    data["tags"] = [
        {**template, "name": f"R{101 + i}.TI01", "address": f"hr:{100 + 2 * i}", "desc": f"{i + 1}#反应釜温度"}
        for i in range(tags)
    ]
    return data


def tag_addresses(tags: int = 4) -> list[int]:
    return [100 + 2 * i for i in range(tags)]


def committed_seqs(path: Path) -> list[int]:
    outbox = Outbox(path, durable=False)
    try:
        return [a["seq"] for a in outbox.alarms()]
    finally:
        outbox.close()


def assert_every_committed_seq_arrived_in_order(receiver: Receiver, outbox_path: Path, timeout: float = 60) -> list[int]:
    """The guarantee: every alarm the outbox committed reached the receiver, first arrivals in
    seq order, each (plant, epoch, seq) once after de-duplication, and any duplicate is of a seq
    already received."""
    expected = committed_seqs(outbox_path)
    assert expected == list(range(1, len(expected) + 1)), "the outbox's seqs have a hole"
    arrived = receiver.wait(lambda r: len(r.alarms) >= len(expected), timeout)
    assert arrived, receiver.summary()
    assert [a["seq"] for a in receiver.alarms] == expected, receiver.summary()
    assert set(receiver.arrivals) == set(expected)
    assert receiver.invalid == []
    # one (plant, epoch, seq) each: all of this outbox's epoch, no epoch change seen
    outbox = Outbox(outbox_path, durable=False)
    try:
        assert {a["epoch"] for a in receiver.alarms} == {outbox.epoch}
    finally:
        outbox.close()
    assert all(t.epoch == outbox.epoch and not t.earlier for t in receiver.plants.values())
    return expected


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
