"""The history recorder of the live agent and its storage policy.

Part of the shell. ``History.record`` runs on the event loop for every batch the agent
handles: the samples are buffered and, every ``CHUNK`` of them, the compressor
(agent.history_compress, one numpy pass) picks the points to archive, which are buffered in
memory. Every ``flush_s`` a worker thread commits the buffer to the
day files (agent.history_store: appended to each file's ``recent`` table); once a minute the
same thread moves ``recent`` into ``points`` (``Store.compact``), applies retention and the size
policy, and the loop raises or clears the ``storage`` alarms ``history/storage`` and
``history.retention/storage`` through the alarm manager and the outbox, like the outbox's own
storage alarm. History is not the alarm
path: a crash loses at most ``flush_s`` of buffered points (and each tag's held sample, whose
value lies within the deviation of the last archived segment).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.alarms import AlarmManager
from agent.config import Config
from agent.history_compress import Compressor, Points
from agent.history_store import DAY_S, Store, day_name, day_of
from drivers.base import SampleBatch

log = logging.getLogger("plantwatch.history")

MB = 2**20
MAINTENANCE_S = 60.0
# samples buffered before they are compressed: one numpy pass per chunk (at 100,000 tags polled
# each second, ~0.7 s of them), not per batch, and the raw samples of a whole ``flush_s`` are
# not held (5 s of them were ~13 MB at 100,000 tags)
CHUNK = 1 << 16


def deviations(cfg: Config) -> np.ndarray:
    """Each tag's error bound: its `history_deviation`, else `[history] deviation`, else
    `deviation_pct` of its range, else 0 (every change archived)."""
    h = cfg.history
    out = np.zeros(len(cfg.tags))
    for t in cfg.tags:
        if t.history_deviation is not None:
            out[t.index] = t.history_deviation
        elif h.deviation > 0:
            out[t.index] = h.deviation
        elif t.range is not None:
            out[t.index] = (t.range[1] - t.range[0]) * h.deviation_pct / 100.0
    return out


@dataclass
class Plan:
    """What one maintenance pass does and says (see ``plan``)."""

    used: int
    projected: int  # bytes that retention_days (plus today) is expected to take
    expired: list[int] = field(default_factory=list)  # days older than the retention: routine
    cut: list[int] = field(default_factory=list)  # days within the retention dropped for room
    full: bool = False  # over the limits with nothing left to drop but today
    warn: list[str] = field(default_factory=list)  # why the retention is not expected to fit
    loss: list[str] = field(default_factory=list)  # what history is being lost, and why


# linear: the policy, one rule after the other, each with its reason
def plan(days: dict[int, int], now: float, retention_days: int, max_bytes: int, free: int, min_free: int) -> Plan:
    """The storage policy, from the day files' sizes (day number -> bytes), the time, the cap
    and the file system's free bytes. Days wholly older than ``retention_days`` are expired.
    The daily size is the largest complete day, or today's so far scaled to a whole day (after
    its first hour), whichever is larger; ``retention_days + 1`` of those (today's file is
    open too) is the projection. A projection above the cap, or growth the free space cannot
    hold, is a warning while nothing is lost yet. Only when the files are over the cap, or the
    free space is below ``min_free``, is the oldest day dropped, then the next, while it is."""
    today = day_of(now)
    keep_from = now - retention_days * DAY_S
    expired = [d for d in days if (d + 1) * DAY_S <= keep_from and d < today]
    live = {d: b for d, b in days.items() if d not in expired}
    used = sum(live.values())
    free += sum(days[d] for d in expired)
    rate = float(max((b for d, b in live.items() if d < today), default=0))
    elapsed = now - today * DAY_S
    if today in live:
        rate = max(rate, live[today] * DAY_S / elapsed if elapsed >= 3600 else live[today])
    projected = int(rate * (retention_days + 1))
    p = Plan(used, projected, expired)
    if projected > max_bytes:
        p.warn.append(f"{retention_days} days of history projected at {projected / MB:.1f} MB, "
                      f"above max_mb {max_bytes / MB:.1f}")
    if projected - used > free - min_free:
        p.warn.append(f"free disk space {free / MB:.1f} MB will not hold the {(projected - used) / MB:.1f} MB "
                      f"the next days need (min_free_mb {min_free / MB:.1f})")
    for d in sorted(live):
        if used <= max_bytes and free >= min_free:
            break
        if d >= today:
            p.full = True
            p.loss.append(f"history full ({used / MB:.1f} MB, {free / MB:.1f} MB free): new points are dropped")
            break
        p.cut.append(d)
        used -= live[d]
        free += live[d]
    if p.cut:
        p.loss.insert(0, f"days inside the {retention_days} days of retention deleted to make room: "
                      + ", ".join(day_name(d) for d in p.cut))
    p.used = used
    return p


class History:
    """Compresses every batch the agent handles and keeps the day files within their limits."""

    def __init__(self, cfg: Config, manager: AlarmManager, commit: Callable[[list[dict[str, Any]]], None]):
        """``commit`` makes the storage alarm's messages durable and sends them."""
        h = cfg.history
        self.cfg = h
        self.dir = h.path(cfg.agent.data_dir)
        self.compressor = Compressor(deviations(cfg), h.compression, h.max_interval_s)
        self.store = Store(self.dir, [t.name for t in cfg.tags])
        self.manager = manager
        self.commit = commit
        self.pending: list[Points] = []  # samples not compressed yet
        self.pending_n = 0  # how many
        self.archived: list[Points] = []  # what the compressor picked since the last take
        self.chunk = CHUNK
        self.maintained = -math.inf  # loop time of the last maintenance pass
        self.full = False
        self.dropped = 0  # points lost to a full store or a failed write since the last pass
        self.written = 0
        self.used_mb = 0.0
        # "history": the retention is not expected to fit; "history.retention": history is being lost
        self.active = {d: bool((a := manager.alarms.get(f"{d}/storage")) and a.active)
                       for d in ("history", "history.retention")}  # as restored from before a restart

    def record(self, batch: SampleBatch) -> None:
        """On the event loop: the batch's samples into the buffer, compressed once ``chunk``
        samples are buffered."""
        if len(batch):
            self.pending.append(Points(batch.tag, batch.ts, batch.value, batch.quality))
            self.pending_n += len(batch)
            if self.pending_n >= self.chunk:
                self.archived.append(self._compress())

    def _compress(self) -> Points:
        """One compressor pass over the buffered samples (per tag in time order, as the batches
        came), not one per batch: at 1,613 batches a second the per-call cost of numpy was most
        of the history's CPU."""
        raw, self.pending, self.pending_n = Points.concat(self.pending), [], 0
        return self.compressor.add(raw.tag, raw.ts, raw.value, raw.quality)

    def take(self) -> Points:
        """The points to archive from the samples recorded since the last take."""
        done, self.archived = self.archived, []
        return Points.concat([*done, self._compress()])

    def write(self, pts: Points, now: float, maintain: bool) -> dict[str, Any]:
        """In a worker thread: commit the points, and (``maintain``) apply the policy."""
        report: dict[str, Any] = {"error": None, "plan": None}
        if self.full:
            self.dropped += len(pts)
        else:
            try:
                self.written += self.store.write(pts)
            except Exception as exc:  # a full or broken disk: say so, keep recording
                self.dropped += len(pts)
                report["error"] = f"{type(exc).__name__}: {exc}"
        if maintain:
            try:
                self.store.compact()  # the minute's points from recent into points (agent.history_store)
            except Exception as exc:  # they stay in recent, read from there; the next pass tries again
                report["compact_error"] = f"{type(exc).__name__}: {exc}"
            days = self.store.days()
            self.dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.dir).free
            p = plan(days, now, self.cfg.retention_days, int(self.cfg.max_mb * MB), free, int(self.cfg.min_free_mb * MB))
            for d in p.expired + p.cut:
                self.store.drop(d)
            self.full = p.full
            report["plan"] = p
        return report

    async def flush(self, final: bool = False) -> None:
        loop = asyncio.get_running_loop()
        pts = self.take()
        if final:
            pts = Points.concat([pts, self.compressor.flush()])
        maintain = not final and loop.time() - self.maintained >= MAINTENANCE_S
        if maintain:
            self.maintained = loop.time()
        report = await asyncio.to_thread(self.write, pts, time.time(), maintain)
        self.after(report)

    async def run(self) -> None:
        """Commit the buffer every ``flush_s``; the policy once a minute (and at start)."""
        while True:
            try:
                await self.flush()
            except Exception:
                log.exception("history: writing failed")  # the next pass tries again
            await asyncio.sleep(self.cfg.flush_s)

    async def close(self) -> None:
        """Write what is buffered and every tag's held sample, then close the files (each
        compacted: its ``recent`` moved into ``points``)."""
        try:
            await self.flush(final=True)
        finally:
            await asyncio.to_thread(self.store.close)

    def after(self, report: dict[str, Any]) -> None:
        """On the loop: log, and raise or clear the two ``storage`` alarms."""
        p = report["plan"]
        if report["error"]:
            log.error("history: writing %s failed: %s", self.dir, report["error"])
            self.storage_alarm("history.retention", [f"history write failed: {report['error']}"], p)
        if report.get("compact_error"):
            log.error("history: moving the recent points of %s into points failed: %s", self.dir,
                      report["compact_error"])
        if p is None:
            return
        self.used_mb = round(p.used / MB, 3)
        for d in p.expired:
            log.info("history: %s deleted (older than %d days)", day_name(d), self.cfg.retention_days)
        loss = list(p.loss)
        if self.dropped:
            loss.append(f"{self.dropped} points not written")
        self.dropped = 0
        self.storage_alarm("history", p.warn, p)
        self.storage_alarm("history.retention", loss, p)

    def storage_alarm(self, device: str, reasons: list[str], p: Plan | None) -> None:
        """``history/storage`` while the retention is not expected to fit (nothing lost yet);
        ``history.retention/storage`` while history is being lost (days inside the retention
        deleted, points not written). Each is cleared by the first maintenance pass without
        its reasons."""
        bad = bool(reasons)
        if bad:
            log.warning("history storage: %s", "; ".join(reasons))
        if bad == self.active[device]:
            return
        self.active[device] = bad
        max_mb = self.cfg.max_mb
        projected = round(p.projected / MB, 3) if p is not None else float("nan")
        if bad:
            what = "历史数据丢失 history lost" if device == "history.retention" else "历史数据存储不足 history storage"
            text = f"{what}: " + "; ".join(reasons)
        else:
            text = (f"历史数据存储恢复 history storage: {self.cfg.retention_days} days fit within {max_mb:g} MB"
                    if device == "history" else "历史数据恢复 history: nothing lost in the last pass")
        context = {"text": text, "reasons": reasons, "retention_days": self.cfg.retention_days,
                   "used_mb": round(p.used / MB, 3) if p is not None else None, "projected_mb": projected,
                   "dropped_days": [day_name(d) for d in p.cut] if p is not None else []}
        self.commit(self.manager.raise_system("storage", device, bad, time.time(), context,
                                              value=projected, limit=max_mb, unit="MB"))

