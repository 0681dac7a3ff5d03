"""Outbox housekeeping and the gateway's ``storage`` alarm.

Part of the shell: once a minute, in a worker thread, the outbox applies retention, thins old
telemetry and keeps under ``max_outbox_mb``, and the C heap gives its free pages back to the
system (agent.heap); when that cap costs unsent data, an alarm about
the gateway itself says so. Every 2 s the free space of ``data_dir``'s file system is
looked at: below ``min_free_mb`` the same alarm is raised, before a full disk can stop alarms
being stored, and the cap shrinks (the oldest telemetry goes) to give the space back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import heap
from agent.alarms import AlarmManager
from agent.loops import LoopHealth
from agent.outbox import Outbox

log = logging.getLogger("plantwatch.agent")


class Housekeeping:
    """Keeps the outbox within its limits and raises or clears the storage alarm."""

    def __init__(self, outbox_path: Path, max_outbox_mb: float, manager: AlarmManager,
                 commit: Callable[[list[dict[str, Any]]], None], min_free_mb: float = 0.0,
                 health: LoopHealth | None = None):
        """``commit`` makes the storage alarm's messages durable and sends them (from memory,
        unnumbered, while the outbox cannot take them)."""
        self.outbox_path = outbox_path
        self.max_bytes = int(max_outbox_mb * 1024 * 1024)
        self.min_free = int(min_free_mb * 1024 * 1024)
        self.manager = manager
        self.commit = commit
        self.health = health or LoopHealth()
        self.maintenance_s = 60.0
        self.disk_check_s = 2.0
        self.used_mb = 0.0
        self.free_mb: float | None = None
        self.last_report: dict[str, Any] | None = None
        storage = manager.alarms.get("gateway/storage")  # as restored from before a restart
        self.storage_active = bool(storage and storage.active)
        # uplink name -> dead-lettered rows, as last seen (restored alarms count as seen)
        self.dead: dict[str, int] = {a.device.removeprefix("uplink."): 1 for a in manager.alarms.values()
                                     if a.kind == "storage" and a.device.startswith("uplink.") and a.active}

    def free_bytes(self) -> int:
        """Free space (for an unprivileged writer) on the file system of ``data_dir``."""
        st = os.statvfs(self.outbox_path.parent)
        return st.f_bavail * st.f_frsize

    def maintain(self, max_bytes: int) -> dict[str, Any]:
        """Runs in a worker thread, on a connection of its own (SQLite connections are per
        thread). With less than ``min_free_mb`` free, the cap is what would leave it free."""
        outbox = Outbox(self.outbox_path, durable=False)
        try:
            cap = max_bytes
            if self.min_free:
                cap = min(max_bytes, max(0, outbox.used_bytes() + self.free_bytes() - self.min_free))
            report = outbox.maintain(cap)
            report["shrunk"] = cap < max_bytes  # by the free-disk watch
            report["dead_letters"] = outbox.dead_letter_counts()
        finally:
            outbox.close()
        report["heap_trimmed"] = heap.trim()  # what the last minute's temporaries left free
        return report

    async def run(self) -> None:
        """Retention (30 days), telemetry thinning and the ``max_outbox_mb`` cap once a minute,
        and at once when the free space falls below ``min_free_mb``; the free space every
        ``disk_check_s``."""
        loop = asyncio.get_running_loop()
        next_maintenance = loop.time()
        while True:
            with self.health.guard("outbox-maintenance"):
                free = await asyncio.to_thread(self.free_bytes)
                self.free_mb = round(free / 2**20, 3)
                low = free < self.min_free
                # while the disk is low, every check (a checkpoint gives the WAL's space back),
                # and once more after, for a report under the cap of a disk that is not low
                last = self.last_report or {}
                if loop.time() >= next_maintenance or low or (last.get("over") and last.get("shrunk")):
                    next_maintenance = loop.time() + self.maintenance_s
                    report = await asyncio.to_thread(self.maintain, self.max_bytes)
                    self.used_mb = round(report["used_bytes"] / 2**20, 3)
                    self.last_report = report
                    self.dead_letter_alarms(report["dead_letters"])
                if self.last_report is not None:
                    self.storage_alarm(self.last_report, free)
            await asyncio.sleep(self.disk_check_s)

    def storage_alarm(self, report: dict[str, Any], free: int | None = None) -> None:
        """The ``storage`` alarm: raised when the cap cost unsent telemetry or cannot be met
        (only alarms are left, which are never dropped), or the file system has less than
        ``min_free_mb`` free; cleared once none of these holds. Dropping old *sent* telemetry
        is routine."""
        # raised below min_free_mb, cleared only 10 % above it: no flapping
        margin = self.min_free // 10 if self.storage_active else 0
        low = free is not None and free < self.min_free + margin
        bad = report["over"] or report["dropped"]["unsent_telemetry"] > 0 or low
        if bad and not self.storage_active:
            log.warning("outbox storage: %.1f of %.1f MB used, dropped %s, %s MB free on the disk",
                        report["used_bytes"] / 2**20, report["max_bytes"] / 2**20, report["dropped"],
                        "?" if free is None else f"{free / 2**20:.1f}")
        if bad == self.storage_active:
            return
        self.storage_active = bad
        used_mb, max_mb = report["used_bytes"] / 2**20, report["max_bytes"] / 2**20
        dropped = report["dropped"]["unsent_telemetry"]
        free_text = "" if free is None else f", {free / 2**20:.1f} MB free on the disk"
        if low:
            text = (f"网关磁盘空间不足 data_dir disk nearly full: {free / 2**20:.1f} MB free, below min_free_mb "
                    f"{self.min_free / 2**20:.1f}; {dropped} unsent telemetry messages dropped")
        elif bad:
            text = (f"网关存储已满 outbox storage full: {used_mb:.1f} of {max_mb:.1f} MB used, "
                    f"{dropped} unsent telemetry messages dropped{free_text}")
        else:
            text = f"网关存储恢复 outbox storage back under its cap: {used_mb:.1f} of {max_mb:.1f} MB used{free_text}"
        context = {"dropped": dict(report["dropped"]), "over": report["over"], "text": text}
        if free is not None:
            context["free_mb"] = round(free / 2**20, 3)
        self.commit(self.manager.raise_system("storage", "gateway", bad, time.time(), context,
                                              value=round(used_mb, 3), limit=round(max_mb, 3), unit="MB"))

    def dead_letter_alarms(self, counts: dict[str, int]) -> None:
        """A ``storage`` alarm per uplink (device ``uplink.NAME``) while its platform has refused
        rows for good: they sit in the outbox's dead-letter table until an operator deals with
        them (docs/OPERATIONS.md), never dropped silently. Cleared when the table has none left."""
        for name in sorted(set(counts) | set(self.dead)):
            n = counts.get(name, 0)
            was = self.dead.get(name, 0) > 0
            self.dead[name] = n
            if (n > 0) == was:
                continue  # still active: one alarm, not one per refused row
            text = (f"平台拒收 uplink {name}: the platform refused {n} message(s) for good; kept in the dead-letter "
                    "table" if n else f"uplink {name}: no refused messages left in the dead-letter table")
            self.commit(self.manager.raise_system("storage", f"uplink.{name}", n > 0, time.time(),
                                                  {"uplink": name, "dead_letters": n, "text": text},
                                                  value=float(n), limit=0.0, unit="messages"))
