"""The live agent: drivers -> pipeline (engine, alarm manager, outbox) -> uplink, on one event loop.

``Agent`` composes the pieces of the shell around the functional core (agent.pipeline): the
telemetry publisher, outbox housekeeping, the provincial reminders, the operators' commands and
API, and runs them as tasks until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import time
from collections.abc import Awaitable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import drivers
from agent import heap
from agent.api import Answer, LocalApi, SocketApi
from agent.config import Config
from agent.config.sections import listen_address
from agent.device_stats import DeviceStats
from agent.history import History
from agent.housekeeping import Housekeeping
from agent.lan import LanApi, tls_context
from agent.loops import LoopHealth
from agent.operators import Operators
from agent.outbox import unsent_view
from agent.outbox_check import open_checked, set_aside
from agent.payloads import STATUS_SCHEMA, rfc3339, unnumbered
from agent.pending import Committer
from agent.pipeline import Pipeline
from agent.registration import send_if_changed
from agent.reminders import Reminders
from agent.supervise import Notifier, Supervisor
from agent.telemetry import Telemetry
from agent.trends import Trends
from agent.uplinks import Uplinks, build
from agent.webconsole import Console
from drivers.base import SampleBatch, cancel_and_wait

log = logging.getLogger("plantwatch.agent")


def agent_version() -> str:
    try:
        return version("plantwatch")
    except PackageNotFoundError:
        return "0+unknown"


class DataDirError(Exception):
    """``data_dir`` cannot be created or written: nothing can be stored, so nothing starts."""


def check_data_dir(path: Path) -> None:
    """Create ``path`` if needed and prove a file can be written, synced and removed there."""
    probe = path / ".plantwatch-write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"plantwatch")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"[agent] data_dir {str(path)!r} cannot be created or written: "
                           f"{exc.strerror or exc} (the outbox and the alarm state live there)") from None


class Agent:
    def __init__(self, cfg: Config):
        heap.configure()  # freed blocks go back to the system (agent.heap)
        self.cfg = cfg
        self.data_dir = cfg.agent.data_dir
        check_data_dir(self.data_dir)
        self.outbox_path = self.data_dir / "outbox.db"
        # a corrupt outbox is moved aside and a new one started (agent.outbox_check)
        self.outbox, self.outbox_set_aside = open_checked(self.outbox_path)
        # what the outbox cannot store waits in memory, in order (agent.pending)
        self.committer = Committer(self.outbox, self.outbox_path, cfg.uplink.max_pending_alarms)
        self.committer.on_committed = self.committed
        self.committer.on_fault = self.storage_fault
        self.health = LoopHealth()
        self.pipeline = Pipeline(cfg, self.committer)
        self.started = time.time()
        manager = self.pipeline.manager
        manager.restore(self.outbox.alarm_states(), self.started, self.pipeline.restore_grace)
        # what the status message and the metrics report, replaced (not mutated) on the loop:
        # the uplink thread reads them
        self.alarm_counts: dict[str, Any] = manager.kpis(self.started)
        self.outbox_seq = 0
        self.outbox_depth: dict[str, int] = {}
        self.outbox_oldest: dict[str, Any] | None = None  # the oldest row some uplink has not delivered
        self.uplink_oldest: dict[str, dict[str, Any] | None] = {}  # the same, per uplink
        self._oldest_at = 0.0  # when uplink_oldest was last looked up (several uplinks)
        self.batches = 0
        self.device_state: dict[str, dict[str, Any]] = {d.name: {"state": "starting"} for d in cfg.devices}
        self.device_stats = DeviceStats([d.name for d in cfg.devices])
        self.operators = Operators(self)
        self.loop: asyncio.AbstractEventLoop | None = None  # set by run
        on_command = self.operators.from_uplink if cfg.alarm_system.commands else None
        # commands come from the first MQTT uplink only: one operator channel, not one per platform
        first_mqtt = next((u.name for u in cfg.uplinks if u.transport == "mqtt"), None)
        self.uplinks = Uplinks([
            build(cfg, u, self.outbox_path, self.status, on_command if u.name == first_mqtt else None,
                  self.refused)
            for u in cfg.uplinks])
        self.outbox.set_uplinks(self.uplinks.names)
        self.uplink = self.uplinks.members[0]  # the first (or only) uplink
        self.telemetry = Telemetry(cfg, self.outbox, self.uplinks.wake, self.health)
        self.housekeeping = Housekeeping(self.outbox_path, cfg.uplink.max_outbox_mb, manager, self.commit_storage,
                                         cfg.uplink.min_free_mb, self.health)
        self.reminders = Reminders(self.pipeline, self.outbox, self.uplinks.wake, self.health)
        # an alarm active before a restart is repeated after it with the seq of its last message
        self.reminders.seq_of.update(self.outbox.last_seqs())
        self.history = History(cfg, manager, self.commit) if cfg.history.enabled else None
        self.api: LocalApi | None = None
        self.lan: LanApi | None = None
        self.console = Console(self)
        self.trends = Trends(cfg)
        self.console.routes.update({"/trend": self.trends.route, "/trend/models": self.trends.route})
        self.socket_api: SocketApi | None = None
        self.supervisor = Supervisor(self.failed)
        self.restarts: dict[str, int] = {}  # supervised work -> restarts after a failure (replaced, not mutated)
        self.notifier = Notifier()
        for u in self.uplinks.members:
            u.on_fault = self.failed_elsewhere

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
            "devices": {name: {**st, **self.device_stats.counts(name)} for name, st in self.device_state.items()},
            "outbox": {"last_seq": self.outbox_seq, "sent": self.uplinks.sent_count, "depth": self.outbox_depth,
                       "oldest_unsent": unsent_view(self.outbox_oldest, time.time()),
                       "used_mb": self.housekeeping.used_mb, "free_mb": self.housekeeping.free_mb,
                       "storage_alarm": self.housekeeping.storage_active or not self.committer.view()["ok"],
                       "storage": self.committer.view()},
            "loops": self.health.view(),
            "uplinks": self.uplink_view(),
            "alarms": self.alarm_counts,
            "restarts": self.restarts,
        }

    def uplink_view(self) -> dict[str, dict[str, Any]]:
        """Each uplink's state with the oldest row it has not delivered (its age, its seq)."""
        now, oldest = time.time(), self.uplink_oldest
        return {name: {**u, "oldest_unsent": unsent_view(oldest.get(name), now)} for name, u in self.uplinks.view().items()}

    def failed(self, name: str, exc: BaseException | None) -> None:
        """Supervised work (a timer loop, an uplink) failed and is restarting, or ran long enough
        after a restart (``exc`` None): the ``gateway`` alarm of device ``name`` says so."""
        device = name.replace(" ", ".") if name.startswith("uplink ") else f"task.{name}"
        if exc is not None:
            self.restarts = {**self.restarts, name: self.restarts.get(name, 0) + 1}
            text = f"网关内部故障 {name} failed and restarts: {type(exc).__name__}: {exc}"
        else:
            text = f"{name} runs again"
        context = {"task": name, "text": text, **({"error": f"{type(exc).__name__}: {exc}"} if exc else {})}
        self.commit(self.pipeline.manager.raise_system("gateway", device, exc is not None, time.time(), context))

    def failed_elsewhere(self, name: str, exc: BaseException | None) -> None:
        """``failed`` from another thread (an uplink's)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.failed, name, exc)

    def outbox_alarm(self) -> None:
        """The ``gateway`` alarm of device ``outbox``: raised when the outbox was corrupt at start
        and moved aside; cleared at a start that finds no moved-aside outbox left in data_dir
        (the operator has dealt with it, docs/OPERATIONS.md)."""
        left = set_aside(self.data_dir, self.outbox_path.name)
        if self.outbox_set_aside is not None:
            aside, problem = self.outbox_set_aside
            log.error("outbox %s was corrupt (%s): moved to %s, a new outbox started with epoch %s",
                      self.outbox_path, problem, aside, self.outbox.epoch)
            text = (f"网关缓存损坏 the outbox was corrupt ({problem}): kept as {aside.name}, a new outbox started "
                    f"(epoch {self.outbox.epoch}); alarms not yet sent from the old one may be in that file")
            context = {"text": text, "moved_to": str(aside), "problem": problem, "epoch": self.outbox.epoch}
        elif not left:
            context = {"text": "no corrupt outbox left in the data directory"}
        else:
            return
        self.commit(self.pipeline.manager.raise_system("gateway", "outbox", self.outbox_set_aside is not None,
                                                       time.time(), context))

    def refused(self, uplink: str, reason: str) -> None:
        """On an uplink's thread: a platform refused rows for good; the loop raises the alarm."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.dead_letters)

    def dead_letters(self) -> None:
        self.housekeeping.dead_letter_alarms(self.outbox.dead_letter_counts())

    def commit(self, messages: list[dict[str, Any]]) -> None:
        """Make alarm messages durable, then let everyone else see them."""
        self.committed(self.pipeline.commit(messages))

    def storage_fault(self, failing: bool) -> None:
        """The outbox cannot store alarm messages (or can again): the ``outbox/storage`` alarm,
        and the status message, which every uplink publishes at once from memory."""
        c = self.committer
        if failing:
            text = (f"网关存储故障 the outbox cannot store alarm messages ({c.error}): they are kept in memory, in "
                    f"order, and stored when it can")
        else:
            text = "网关存储恢复 the outbox stores alarm messages again" + (
                f"; {c.lost} alarm transition(s) were lost: more than max_pending_alarms waited" if c.lost else
                ": none was lost")
        context = {"error": c.error, "pending": c.queued, "lost": c.lost, "text": text}
        if not failing:  # what was sent from memory is stored now: the numbered records follow
            self.uplinks.withdraw_unnumbered()
        self.commit_storage(self.pipeline.manager.raise_system("storage", "outbox", failing, time.time(), context,
                                                               value=float(c.lost), limit=0.0, unit="messages"))
        self.uplinks.announce()

    def commit_storage(self, messages: list[dict[str, Any]]) -> None:
        """A ``storage`` alarm's messages: committed like any; those the outbox cannot take now
        are also sent at once from memory, unnumbered (docs/PAYLOADS.md), by every uplink that
        can carry them. Their numbered records follow once the outbox stores them."""
        stored = self.pipeline.commit(messages)
        if stored:
            self.committed(stored)
        elif messages:
            log.warning("outbox: %d storage alarm message(s) sent from memory, unnumbered, until stored", len(messages))
            self.uplinks.send_unnumbered([unnumbered(m, self.outbox.epoch) for m in messages])

    def committed(self, messages: list[dict[str, Any]]) -> None:
        """Alarm messages are durable: log them, refresh the KPIs, let the uplink send them."""
        if not messages:
            return
        self.outbox_seq = messages[-1]["seq"]
        self.reminders.committed(messages)
        for m in messages:
            log.info("alarm seq=%s %s %s %s %s", m["seq"], m["id"], m["state"], m["level"], m["value"])
        self.alarm_counts = self.pipeline.manager.kpis(time.time())
        self.uplinks.wake()

    def handle(self, batch: SampleBatch) -> None:
        now = time.time()
        self.committed(self.pipeline.process(batch, now))
        self.batches += 1
        self.device_stats.batch(batch.device, batch.error is not None)
        old = self.device_state[batch.device]
        if batch.error is not None:
            if old.get("state") != "comm_fail":
                log.warning("device %s: %s", batch.device, batch.error)
            since = old["since"] if old.get("state") == "comm_fail" else rfc3339(now)
            self.device_state[batch.device] = {"state": "comm_fail", "error": batch.error, "since": since}
        elif old.get("state") != "ok":
            if old.get("state") == "comm_fail":
                log.info("device %s: answers again", batch.device)
            self.device_state[batch.device] = {"state": "ok"}
        self.telemetry.record(batch)
        self.trends.record(batch)
        if len(batch):  # the engine judged it: the model statistics it computed
            self.trends.record_statistics(self.pipeline.engine.statistics())
        if self.pipeline.derived is not None:  # the computed tags the batch moved
            self.telemetry.record(self.pipeline.derived)
            self.trends.record(self.pipeline.derived)
        if self.history is not None:
            self.history.record(batch)
            if self.pipeline.derived is not None:
                self.history.record(self.pipeline.derived)

    async def _device_loop(self, driver) -> None:
        try:
            async for batch in driver.batches():
                try:
                    self.handle(batch)
                except Exception:
                    # a bug in one batch's processing must not stop the plant being watched
                    log.exception("processing a batch from %s failed", batch.device)
            # the contract: batches() yields until cancelled; one that ends stopped polling
            raise RuntimeError("the driver's batches() ended")
        except Exception:
            with contextlib.suppress(Exception):  # the restart starts from a fresh connection
                await driver.close()
            raise

    def driver_failed(self, driver, name: str, exc: BaseException | None) -> None:
        """A driver raised out of ``batches()``: its device is in comm failure (the ``comm``
        alarm) until the restarted driver reads it again."""
        if exc is not None:
            self.restarts = {**self.restarts, name: self.restarts.get(name, 0) + 1}
            error = f"driver failed, restarting: {type(exc).__name__}: {exc}"
            self.handle(SampleBatch.failed(driver.device.name, driver.tag_indices, time.time(), error))

    def _start_tasks(self, driver_objs) -> list[asyncio.Task]:
        """Every device and timer loop, supervised (agent.supervise)."""
        sup = self.supervisor
        tasks = [sup.task(f"device:{drv.device.name}", functools.partial(self._device_loop, drv),
                          functools.partial(self.driver_failed, drv)) for drv in driver_objs]
        tasks.append(sup.task("outbox-pending", self.committer.run))
        tasks.append(sup.task("telemetry", self.telemetry.run))
        tasks.append(sup.task("alarm-clock", self._alarm_clock_loop))
        tasks.append(sup.task("console", self.console.run))
        tasks.append(sup.task("provincial-repeat", self.reminders.run))
        tasks.append(sup.task("outbox-maintenance", self.housekeeping.run))
        if self.history is not None:
            tasks.append(sup.task("history", self.history.run))
        tasks.append(asyncio.create_task(self.notifier.watchdog(), name="watchdog"))
        return tasks

    async def _alarm_clock_loop(self) -> None:
        """Once a second: timed shelves expire, health KPIs (stale, flood window) move on."""
        while True:
            await asyncio.sleep(1.0)
            with self.health.guard("alarm-clock"):
                now = time.time()
                self.commit(self.pipeline.manager.tick(now))
                self.alarm_counts = self.pipeline.manager.kpis(now)
                self.outbox_depth = self.outbox.depth()  # here, on the loop's own connection
                self._refresh_oldest(now)

    def _refresh_oldest(self, now: float) -> None:
        """The oldest unsent row, every second; per uplink the same row when there is one uplink
        (a row is sent once every uplink has it), else every 10 s: with one platform away and a
        backlog, finding what each other uplink still owes walks the rows the away one holds."""
        self.outbox_oldest = self.outbox.oldest_unsent()
        names = self.uplinks.names
        if len(names) == 1:
            self.uplink_oldest = {names[0]: self.outbox_oldest}
        elif now - self._oldest_at >= 10.0:
            self._oldest_at = now
            self.uplink_oldest = {name: self.outbox.oldest_unsent(name) for name in names}

    async def _start_api(self) -> LocalApi | None:
        rules, ops = self.cfg.alarm_system, self.operators
        path = rules.socket_path(self.data_dir)
        socket_api = SocketApi(path, rules.api_socket_group, ops.api_get, ops.api_post, ops.api_refusal)
        try:
            await socket_api.start()
            self.socket_api = socket_api
        except OSError as exc:  # the alarms are still watched; operators act once it is fixed
            log.error("operator socket: cannot listen on %s: %s", path, exc)
        port = rules.api_port
        if not port:
            return None
        api = LocalApi(port, self._api_get, ops.api_post, ops.api_refusal, rules.api_token_file, self.console.stream)
        try:
            await api.start()
        except OSError as exc:
            log.error("local API: cannot listen on 127.0.0.1:%d: %s", port, exc)
            return None
        return api

    def _api_get(self, target: str) -> Answer | Awaitable[Answer]:
        """A GET of either listener: the console's files and routes, else the operator API's."""
        return self.console.get(target) or self.operators.api_get(target)

    async def _start_lan(self) -> LanApi | None:
        """The console on ``console_listen`` (HTTPS, logins), when configured."""
        rules, ops = self.cfg.alarm_system, self.operators
        if not rules.console_listen or rules.console_cert_file is None or rules.console_key_file is None:
            return None  # the config check refuses a listen address without TLS
        host, port = listen_address(rules.console_listen)
        try:
            lan = LanApi(host, port, tls_context(rules.console_cert_file, rules.console_key_file),
                         self._api_get, ops.api_post, ops.api_refusal,
                         users_file=rules.console_users_file, token_file=rules.api_token_file,
                         session_s=rules.console_session_s, events=self.console.stream)
            await lan.start()
        except (OSError, ValueError) as exc:
            log.error("console: cannot listen on https://%s: %s", rules.console_listen, exc)
            return None
        return lan

    async def run(self, stop: asyncio.Event) -> None:
        self.operators.loop = self.loop = asyncio.get_running_loop()
        self.outbox_seq = self.outbox.last_seq()
        send_if_changed(self.cfg, self.outbox, time.time())
        self.outbox_depth = self.outbox.depth()
        self.dead_letters()  # refused rows from before a restart still want an operator
        self.outbox_alarm()
        self.uplinks.start()
        driver_objs = []
        for d in self.cfg.devices:
            cls = drivers.load(d.driver)
            driver_objs.append(cls(d, [t.spec for t in self.cfg.device_tags(d.name)]))
        self.device_stats.drivers = {drv.device.name: drv for drv in driver_objs}
        self.api = await self._start_api()
        self.lan = await self._start_lan()
        # what start-up built (the config, the tags' tables, the engine) lives as long as the
        # agent: out of the cyclic collector's sight, a full collection no longer walks it (at
        # 100,000 tags that walk held the loop for ~0.4 s)
        gc.collect()
        gc.freeze()
        heap.trim()  # and the start-up's temporaries are given back
        tasks = self._start_tasks(driver_objs)
        log.info("plantwatch %s running: plant %s, %d devices, %d tags", agent_version(), self.cfg.agent.plant,
                 len(driver_objs), len(self.cfg.tags))
        self.notifier.ready(f"running: {len(driver_objs)} devices, {len(self.cfg.tags)} tags")
        try:
            await stop.wait()
        finally:
            self.notifier.stopping()
            await cancel_and_wait(tasks)
            if self.history is not None:
                try:
                    await self.history.close()  # the buffer and every tag's held sample
                except Exception:
                    log.exception("history: the last write failed")
            self.trends.close()  # requests waiting for the history are answered 503
            self.console.close()  # open pages' streams end, so the port closes at once
            for server in (self.api, self.lan, self.socket_api):
                if server is not None:
                    await server.close()
            for drv in driver_objs:
                with contextlib.suppress(Exception):
                    await drv.close()
            self.committer.flush_now()  # alarm messages still waiting in memory: one last try
            await asyncio.to_thread(self.uplinks.stop, 5.0)
            try:
                self.outbox.closed_cleanly()
            except Exception:  # the next start reads the file through: slower, not wrong
                log.exception("outbox: cannot mark the clean stop")
            self.outbox.close()
            self.notifier.close()
            log.info("plantwatch stopped")
