"""The live agent: drivers -> engine -> alarm manager -> outbox -> uplink, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

import drivers
from agent.alarms import Alarm, CommandError
from agent.api import LocalApi
from agent.commands import COMMAND_SCHEMA, Command, InvalidCommand, parse_command, parse_payload
from agent.config import Config
from agent.outbox import ALARM, TELEMETRY, Outbox
from agent.payloads import STATUS_SCHEMA, TELEMETRY_SCHEMA, dumps, number, rfc3339, topic
from agent.pipeline import Pipeline
from agent.uplink import Uplink
from drivers.base import SampleBatch, cancel_and_wait

log = logging.getLogger("plantwatch.agent")

QUALITY_NAMES = ("good", "uncertain", "bad", "comm_fail")


def agent_version() -> str:
    try:
        return version("plantwatch")
    except PackageNotFoundError:
        return "0+unknown"


def alarm_view(a: Alarm) -> dict[str, Any]:
    """An alarm's current state for the local API."""
    return {
        "id": a.id, "kind": a.kind, "tag": a.tag, "device": a.device, "level": a.level,
        "active": a.active, "acked": a.acked, "shelved": a.shelved,
        "shelved_until": rfc3339(a.shelve_until) if a.shelve_until else None,
        "suppressed": a.suppressed, "out_of_service": a.out_of_service, "latched": a.latched,
        "chattering": a.chattering, "value": number(a.value), "limit": number(a.limit),
        "ts": rfc3339(a.ts) if a.ts else None,
        "active_since": rfc3339(a.active_since) if a.active_since else None,
    }


class Agent:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data_dir = cfg.agent.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox_path = self.data_dir / "outbox.db"
        self.outbox = Outbox(self.outbox_path)
        self.pipeline = Pipeline(cfg, self.outbox)
        self.started = time.time()
        self.pipeline.manager.restore(self.outbox.alarm_states(), self.started, self.confirm_within)
        storage = self.pipeline.manager.alarms.get("gateway/storage")
        self.storage_active = bool(storage and storage.active)
        self.alarm_counts = self.pipeline.manager.kpis(self.started)
        n = len(cfg.tags)
        self.last_value = np.full(n, np.nan)
        self.last_quality = np.full(n, 3, dtype=np.uint8)
        self.last_ts = np.zeros(n)
        self.device_state: dict[str, dict[str, Any]] = {d.name: {"state": "starting"} for d in cfg.devices}
        profile = cfg.provincial
        self.uplink = Uplink(
            cfg.uplink, cfg.agent.plant, self.outbox_path, self.status,
            encode=dumps if profile is None else lambda doc: profile.encode(profile.status(time.time(), doc["online"])),
            on_command=self._command_from_uplink if cfg.alarm_system.commands else None,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.seq_of = {}
        self.telemetry_topic = topic(cfg.uplink.topic_prefix, cfg.agent.plant, "telemetry")
        self.batches = 0

    def confirm_within(self, alarm: Alarm) -> float:
        """How long a detector may take to raise a restored alarm again: its on-delay and
        warm-up, plus a few polls of the device."""
        tag = next((t for t in self.cfg.tags if t.name == alarm.tag), None)
        if tag is None:
            return 0.0
        device = next((d for d in self.cfg.devices if d.name == tag.device), None)
        interval = device.interval_s if device else 1.0
        params = tag.families.get(alarm.kind, {})
        if alarm.kind in ("pca",):
            model = next((m for m in self.cfg.models if m.name == alarm.context.get("model")), None)
            params = model.options if model else {}
        on_delay = float(params.get("on_delay_s", 0.0) or 0.0)
        warmup = float(params.get("warmup", 0) or 0) * interval
        return on_delay + warmup + 3 * interval + 2.0

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
            "outbox": {"last_seq": self.outbox_seq, "sent": self.uplink.sent_count, "depth": self.outbox_depth,
                       "used_mb": self.outbox_used_mb, "storage_alarm": self.storage_active},
            "alarms": self.alarm_counts,
        }

    outbox_depth: dict[str, int] = {}
    outbox_used_mb = 0.0
    seq_of: dict[str, int] = {}  # alarm id -> seq of its last message (provincial repeats)

    outbox_seq = 0
    alarm_counts: dict[str, Any] = {"active": 0, "unacked": 0}
    api: LocalApi | None = None

    def committed(self, messages: list[dict[str, Any]]) -> None:
        """Alarm messages are durable: log them, refresh the KPIs, let the uplink send them."""
        if not messages:
            return
        self.outbox_seq = messages[-1]["seq"]
        for m in messages:
            self.seq_of[m["id"]] = m["seq"]
            log.info("alarm seq=%s %s %s %s %s", m["seq"], m["id"], m["state"], m["level"], m["value"])
        self.alarm_counts = self.pipeline.manager.kpis(time.time())
        self.uplink.wake()

    def handle(self, batch: SampleBatch) -> None:
        self.committed(self.pipeline.process(batch, time.time()))
        self.batches += 1
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

    def telemetry(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        """A snapshot of every tag, or (``mask``) an on-change message with only those tags."""
        tags = self.cfg.tags if mask is None else [self.cfg.tags[i] for i in np.flatnonzero(mask)]
        doc = {
            "schema": TELEMETRY_SCHEMA,
            "plant": self.cfg.agent.plant,
            "ts": rfc3339(time.time()),
            "tags": {
                t.name: {"v": number(self.last_value[t.index]), "q": QUALITY_NAMES[self.last_quality[t.index]]}
                for t in tags
            },
        }
        if mask is not None:
            doc["change"] = True  # lets the outbox thin old history down to the snapshots
        return doc

    def encode_telemetry(self, doc: dict[str, Any]) -> bytes:
        profile = self.cfg.provincial
        if profile is None:
            return dumps(doc)
        samples = [(name, t["v"], t["q"]) for name, t in doc["tags"].items()]
        return profile.encode(profile.data(time.time(), samples))

    async def _repeat_loop(self) -> None:
        """Provincial profile: every active alarm is sent again each ``repeat_s``, with the seq
        of its last transition (a reminder, not a new event)."""
        profile = self.cfg.provincial
        if profile is None or profile.repeat_s <= 0:
            return
        while True:
            await asyncio.sleep(profile.repeat_s)
            manager = self.pipeline.manager
            for alarm in manager.active():
                seq = self.seq_of.get(alarm.id)
                if seq is None:
                    continue
                doc = {**manager.message(alarm, "active", alarm.ts), "seq": seq}
                self.outbox.append(self.pipeline.alarm_topic, profile.encode(profile.alarm(doc, repeat=True)), lane=ALARM)
            self.uplink.wake()

    async def _device_loop(self, driver) -> None:
        async for batch in driver.batches():
            try:
                self.handle(batch)
            except Exception:
                # a bug in one batch's processing must not stop the plant being watched
                log.exception("processing a batch from %s failed", batch.device)

    async def _telemetry_loop(self) -> None:
        """A snapshot of every tag each ``telemetry_interval_s``; between snapshots, every
        ``telemetry_change_s``, the tags that moved by more than the deadband or changed quality
        since they were last sent."""
        u = self.cfg.uplink
        interval, change_s = u.telemetry_interval_s, u.telemetry_change_s
        if interval <= 0 and change_s <= 0:
            return
        n = len(self.cfg.tags)
        deadband = np.array([u.telemetry_deadband if t.telemetry_deadband is None else t.telemetry_deadband
                             for t in self.cfg.tags], dtype=np.float64).reshape(n)
        sent_value = np.full(n, np.nan)
        sent_quality = np.full(n, 255, dtype=np.uint8)  # nothing sent yet: the first look sends all
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + interval if interval > 0 else float("inf")
        while True:
            wake = next_snapshot if change_s <= 0 else min(next_snapshot, loop.time() + change_s)
            await asyncio.sleep(max(0.0, wake - loop.time()))
            value, quality = self.last_value, self.last_quality
            if loop.time() >= next_snapshot:
                mask = None
                next_snapshot += interval * max(1, (loop.time() - next_snapshot) // interval + 1)
            else:
                was_nan, is_nan = np.isnan(sent_value), np.isnan(value)
                with np.errstate(invalid="ignore"):
                    moved = np.abs(value - sent_value) > deadband
                mask = moved | (was_nan != is_nan) | (quality != sent_quality)
                if not mask.any():
                    continue
            doc = self.telemetry(mask)
            # a tag within its deadband keeps the value it was last sent with as the reference,
            # so a slow drift is still reported once it adds up to more than the deadband
            sent = slice(None) if mask is None else mask
            sent_value[sent], sent_quality[sent] = value[sent], quality[sent]
            self.outbox.append(self.telemetry_topic, self.encode_telemetry(doc), lane=TELEMETRY)
            self.uplink.wake()

    # --- outbox housekeeping and the storage alarm ------------------------------------------------

    maintenance_s = 60.0
    storage_active = False

    def _maintain_outbox(self, max_bytes: int) -> dict[str, Any]:
        """Runs in a worker thread, on a connection of its own (SQLite connections are per thread)."""
        outbox = Outbox(self.outbox_path, durable=False)
        try:
            return outbox.maintain(max_bytes)
        finally:
            outbox.close()

    async def _maintenance_loop(self) -> None:
        """Retention (30 days), telemetry thinning and the ``max_outbox_mb`` cap, once a minute."""
        max_bytes = int(self.cfg.uplink.max_outbox_mb * 1024 * 1024)
        while True:
            try:
                report = await asyncio.to_thread(self._maintain_outbox, max_bytes)
                self.outbox_used_mb = round(report["used_bytes"] / 2**20, 3)
                self._storage_alarm(report)
            except Exception:
                # housekeeping failing must not stop the agent; the next pass tries again
                log.exception("outbox housekeeping failed")
            await asyncio.sleep(self.maintenance_s)

    def _storage_alarm(self, report: dict[str, Any]) -> None:
        """The ``storage`` alarm: raised when the cap cost unsent telemetry or cannot be met
        (only alarms are left, which are never dropped); cleared by the first pass that ends
        under the cap without dropping unsent data. Dropping old *sent* telemetry is routine."""
        bad = report["over"] or report["dropped"]["unsent_telemetry"] > 0
        if bad:
            log.warning("outbox storage: %.1f of %.1f MB used, dropped %s",
                        report["used_bytes"] / 2**20, report["max_bytes"] / 2**20, report["dropped"])
        if bad == self.storage_active:
            return
        self.storage_active = bad
        used_mb, max_mb = report["used_bytes"] / 2**20, report["max_bytes"] / 2**20
        dropped = report["dropped"]["unsent_telemetry"]
        if bad:
            text = f"网关存储已满 outbox storage full: {used_mb:.1f} of {max_mb:.1f} MB used, {dropped} unsent telemetry messages dropped"
        else:
            text = f"网关存储恢复 outbox storage back under its cap: {used_mb:.1f} of {max_mb:.1f} MB used"
        context = {"dropped": dict(report["dropped"]), "over": report["over"], "text": text}
        messages = self.pipeline.manager.raise_system("storage", "gateway", bad, time.time(), context,
                                                      value=round(used_mb, 3), limit=round(max_mb, 3), unit="MB")
        self.committed(self.pipeline.commit(messages))

    # --- operators: commands, the local API, metrics --------------------------------------------

    def apply_command(self, cmd: Command, source: str) -> tuple[int, dict[str, Any]]:
        """Apply an operator command; the resulting alarm message is committed like any other."""
        try:
            messages = self.pipeline.manager.command(cmd.op, cmd.id, time.time(), cmd.user, cmd.comment, cmd.duration_s)
        except CommandError as exc:
            log.warning("%s command %s %s rejected: %s", source, cmd.op, cmd.id, exc)
            self.alarm_counts = self.pipeline.manager.kpis(time.time())
            return 409, {"ok": False, "error": str(exc)}
        self.committed(self.pipeline.commit(messages))
        log.info("%s command %s %s by %r applied", source, cmd.op, cmd.id, cmd.user)
        return 200, {"ok": True, "messages": messages}

    def _command_from_uplink(self, payload: bytes) -> None:
        """On the uplink thread: hand the command to the event loop, which owns the alarms."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.mqtt_command, payload)

    def mqtt_command(self, payload: bytes) -> None:
        """A message on {prefix}/{plant}/cmd (only subscribed when commands are enabled)."""
        try:
            cmd = parse_payload(payload, self.cfg.agent.plant)
        except InvalidCommand as exc:
            self.pipeline.manager.commands_rejected += 1
            log.warning("mqtt command rejected: %s", exc)
            return
        self.apply_command(cmd, "mqtt")

    def api_post(self, alarm_id: str, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        doc = {"schema": COMMAND_SCHEMA, "plant": self.cfg.agent.plant, "op": op, "id": alarm_id, **body}
        try:
            cmd = parse_command(doc, self.cfg.agent.plant)
        except InvalidCommand as exc:
            self.pipeline.manager.commands_rejected += 1
            return 400, {"ok": False, "error": str(exc)}
        return self.apply_command(cmd, "local")

    def api_get(self, path: str) -> tuple[int, str, bytes]:
        if path == "/alarms":
            alarms = [alarm_view(a) for a in self.pipeline.manager.alarms.values()]
            return 200, "application/json", dumps({"alarms": alarms})
        if path == "/status":
            return 200, "application/json", dumps(self.status(self.uplink.connected.is_set()))
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics().encode()
        return 404, "application/json", dumps({"error": f"no such resource {path}"})

    def metrics(self) -> str:
        k = self.pipeline.manager.kpis(time.time())
        depth = self.outbox.depth()
        lines = [
            ("plantwatch_alarms_active", "gauge", "active alarms", k["active"]),
            ("plantwatch_alarms_unacked", "gauge", "unacknowledged alarms", k["unacked"]),
            ("plantwatch_alarms_shelved", "gauge", "shelved alarms", k["shelved"]),
            ("plantwatch_alarms_suppressed", "gauge", "suppressed alarms", k["suppressed"]),
            ("plantwatch_alarms_chattering", "gauge", "alarms chattering now", len(k["chattering"])),
            ("plantwatch_alarms_stale", "gauge", "alarms active longer than stale_s", len(k["stale"])),
            ("plantwatch_alarm_flood", "gauge", "1 while more than flood_count alarms in flood_window_s", int(k["flood"])),
            ("plantwatch_alarm_floods_total", "counter", "alarm floods begun", k["floods"]),
            ("plantwatch_commands_rejected_total", "counter", "operator commands rejected", k["commands_rejected"]),
            ("plantwatch_alarm_seq", "counter", "last alarm seq committed", self.outbox_seq),
            ("plantwatch_uplink_sent_total", "counter", "messages acknowledged by the broker", self.uplink.sent_count),
            ("plantwatch_uplink_connected", "gauge", "1 while connected to the broker", int(self.uplink.connected.is_set())),
            ("plantwatch_batches_total", "counter", "sample batches processed", self.batches),
        ]
        out = []
        for name, kind, text, value in lines:
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        out += ["# HELP plantwatch_outbox_depth unsent messages per lane", "# TYPE plantwatch_outbox_depth gauge"]
        out += [f'plantwatch_outbox_depth{{lane="{lane}"}} {n}' for lane, n in depth.items()]
        out += ["# HELP plantwatch_device_up 1 while the device answers", "# TYPE plantwatch_device_up gauge"]
        out += [f'plantwatch_device_up{{device="{d}"}} {int(s.get("state") == "ok")}' for d, s in self.device_state.items()]
        return "\n".join(out) + "\n"

    async def _alarm_clock_loop(self) -> None:
        """Once a second: timed shelves expire, health KPIs (stale, flood window) move on."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            self.committed(self.pipeline.commit(self.pipeline.manager.tick(now)))
            self.alarm_counts = self.pipeline.manager.kpis(now)
            self.outbox_depth = self.outbox.depth()  # here, on the loop's own connection

    async def run(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.outbox_seq = self.outbox.last_seq()
        self.outbox_depth = self.outbox.depth()
        self.uplink.start()
        driver_objs = []
        for d in self.cfg.devices:
            cls = drivers.load(d.driver)
            driver_objs.append(cls(d, [t.spec for t in self.cfg.device_tags(d.name)]))
        tasks = [asyncio.create_task(self._device_loop(drv), name=f"device:{drv.device.name}") for drv in driver_objs]
        tasks.append(asyncio.create_task(self._telemetry_loop(), name="telemetry"))
        tasks.append(asyncio.create_task(self._alarm_clock_loop(), name="alarm-clock"))
        tasks.append(asyncio.create_task(self._repeat_loop(), name="provincial-repeat"))
        api = None
        if self.cfg.alarm_system.api_port:
            api = LocalApi(self.cfg.alarm_system.api_port, self.api_get, self.api_post)
            try:
                await api.start()
            except OSError as exc:
                log.error("local API: cannot listen on 127.0.0.1:%d: %s", self.cfg.alarm_system.api_port, exc)
                api = None
        self.api = api
        tasks.append(asyncio.create_task(self._maintenance_loop(), name="outbox-maintenance"))
        log.info("plantwatch %s running: plant %s, %d devices, %d tags", agent_version(), self.cfg.agent.plant, len(driver_objs), len(self.cfg.tags))
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(tasks)
            if api is not None:
                await api.close()
            for drv in driver_objs:
                with contextlib.suppress(Exception):
                    await drv.close()
            await asyncio.to_thread(self.uplink.stop, 5.0)
            self.outbox.close()
            log.info("plantwatch stopped")
