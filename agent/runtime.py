"""The live agent: drivers -> engine -> alarm manager -> outbox -> uplink, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

import detectors
import drivers
from agent.alarms import AlarmManager, TagInfo
from agent.config import Config
from agent.outbox import TELEMETRY, Outbox
from agent.payloads import STATUS_SCHEMA, TELEMETRY_SCHEMA, dumps, number, rfc3339, topic
from agent.uplink import Uplink
from detectors.engine import Engine
from drivers.base import SampleBatch

log = logging.getLogger("plantwatch.agent")

QUALITY_NAMES = ("good", "uncertain", "bad", "comm_fail")


def agent_version() -> str:
    try:
        return version("plantwatch")
    except PackageNotFoundError:
        return "0+unknown"


def build_engine(cfg: Config) -> Engine:
    """One family object per detector family in use, each watching the tags configured for it."""
    per_family: dict[str, dict[int, dict]] = {}
    for tag in cfg.tags:
        for fam, params in tag.families.items():
            per_family.setdefault(fam, {})[tag.index] = dict(params)
    families = []
    for name in sorted(per_family, key=lambda n: (n != "sensor", n)):
        cls = detectors.load(name)
        families.append(cls(len(cfg.tags), per_family[name]))
    return Engine(len(cfg.tags), families)


def build_manager(cfg: Config) -> AlarmManager:
    infos = [TagInfo(t.name, t.device, t.unit, t.desc, t.priority) for t in cfg.tags]
    return AlarmManager(cfg.agent.plant, infos)


class Pipeline:
    """Engine + alarm manager + outbox: what happens to every batch, live or replayed."""

    def __init__(self, cfg: Config, outbox: Outbox):
        self.cfg = cfg
        self.engine = build_engine(cfg)
        self.manager = build_manager(cfg)
        self.outbox = outbox
        self.alarm_topic = topic(cfg.uplink.topic_prefix, cfg.agent.plant, "alarm")

    def process(self, batch: SampleBatch) -> list[dict[str, Any]]:
        """Judge a batch; commit the resulting alarm messages (fsync) and return them."""
        messages: list[dict[str, Any]] = []
        if batch.error is not None or len(batch):
            ts = float(batch.ts[0]) if len(batch) else time.time()
            messages += self.manager.on_device(batch.device, batch.error, ts)
        if len(batch):
            changes = self.engine.process(batch.tag, batch.value, batch.ts, batch.quality)
            messages += self.manager.on_changes(changes)
        if messages:
            self.outbox.append_alarms(self.alarm_topic, messages)
        return messages


class Agent:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data_dir = cfg.agent.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox_path = self.data_dir / "outbox.db"
        self.outbox = Outbox(self.outbox_path)
        self.pipeline = Pipeline(cfg, self.outbox)
        self.started = time.time()
        n = len(cfg.tags)
        self.last_value = np.full(n, np.nan)
        self.last_quality = np.full(n, 3, dtype=np.uint8)
        self.last_ts = np.zeros(n)
        self.device_state: dict[str, dict[str, Any]] = {d.name: {"state": "starting"} for d in cfg.devices}
        self.uplink = Uplink(cfg.uplink, cfg.agent.plant, self.outbox_path, self.status)
        self.telemetry_topic = topic(cfg.uplink.topic_prefix, cfg.agent.plant, "telemetry")
        self.batches = 0

    def status(self, online: bool) -> dict[str, Any]:
        # called from the uplink thread: read only values that handle() replaces atomically
        return {
            "schema": STATUS_SCHEMA,
            "plant": self.cfg.agent.plant,
            "name": self.cfg.agent.name,
            "online": online,
            "ts": rfc3339(time.time()),
            "version": agent_version(),
            "started": rfc3339(self.started),
            "devices": dict(self.device_state),
            "outbox": {"last_seq": self.outbox_seq, "sent": self.uplink.sent_count},
            "alarms": self.alarm_counts,
        }

    outbox_seq = 0
    alarm_counts: dict[str, int] = {"active": 0, "unacked": 0}

    def handle(self, batch: SampleBatch) -> None:
        messages = self.pipeline.process(batch)
        self.batches += 1
        if messages:
            self.outbox_seq = messages[-1]["seq"]
            for m in messages:
                log.info("alarm seq=%s %s %s %s %s", m["seq"], m["id"], m["state"], m["level"], m["value"])
            active = self.pipeline.manager.active()
            self.alarm_counts = {"active": len(active), "unacked": sum(1 for a in active if not a.acked)}
            self.uplink.wake()
        old = self.device_state[batch.device]
        if batch.error is not None:
            since = old["since"] if old.get("state") == "comm_fail" else rfc3339(time.time())
            self.device_state[batch.device] = {"state": "comm_fail", "error": batch.error, "since": since}
        elif old.get("state") != "ok":
            self.device_state[batch.device] = {"state": "ok"}
        if len(batch):
            self.last_value[batch.tag] = batch.value
            self.last_quality[batch.tag] = batch.quality
            self.last_ts[batch.tag] = batch.ts

    def telemetry(self) -> dict[str, Any]:
        return {
            "schema": TELEMETRY_SCHEMA,
            "plant": self.cfg.agent.plant,
            "ts": rfc3339(time.time()),
            "tags": {
                t.name: {"v": number(self.last_value[t.index]), "q": QUALITY_NAMES[self.last_quality[t.index]]}
                for t in self.cfg.tags
            },
        }

    async def _device_loop(self, driver) -> None:
        async for batch in driver.batches():
            try:
                self.handle(batch)
            except Exception:
                # a bug in one batch's processing must not stop the plant being watched
                log.exception("processing a batch from %s failed", batch.device)

    async def _telemetry_loop(self) -> None:
        interval = self.cfg.uplink.telemetry_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self.outbox.append(self.telemetry_topic, dumps(self.telemetry()), lane=TELEMETRY)
            self.uplink.wake()

    async def run(self, stop: asyncio.Event) -> None:
        self.outbox_seq = self.outbox.last_seq()
        self.uplink.start()
        driver_objs = []
        for d in self.cfg.devices:
            cls = drivers.load(d.driver)
            driver_objs.append(cls(d, [t.spec for t in self.cfg.device_tags(d.name)]))
        tasks = [asyncio.create_task(self._device_loop(drv), name=f"device:{drv.device.name}") for drv in driver_objs]
        tasks.append(asyncio.create_task(self._telemetry_loop(), name="telemetry"))
        log.info("plantwatch %s running: plant %s, %d devices, %d tags", agent_version(), self.cfg.agent.plant, len(driver_objs), len(self.cfg.tags))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for drv in driver_objs:
                with contextlib.suppress(Exception):
                    await drv.close()
            await asyncio.to_thread(self.uplink.stop, 5.0)
            self.outbox.close()
            log.info("plantwatch stopped")
