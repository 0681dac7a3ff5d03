"""Outbox housekeeping and the gateway's ``storage`` alarm.

Part of the shell: once a minute, in a worker thread, the outbox applies retention, thins old
telemetry and keeps under ``max_outbox_mb``; when that cap costs unsent data, an alarm about
the gateway itself says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.alarms import AlarmManager
from agent.outbox import Outbox

log = logging.getLogger("plantwatch.agent")


class Housekeeping:
    """Keeps the outbox within its limits and raises or clears the storage alarm."""

    def __init__(self, outbox_path: Path, max_outbox_mb: float, manager: AlarmManager,
                 commit: Callable[[list[dict[str, Any]]], None]):
        """``commit`` makes the storage alarm's messages durable and sends them."""
        self.outbox_path = outbox_path
        self.max_bytes = int(max_outbox_mb * 1024 * 1024)
        self.manager = manager
        self.commit = commit
        self.maintenance_s = 60.0
        self.used_mb = 0.0
        storage = manager.alarms.get("gateway/storage")  # as restored from before a restart
        self.storage_active = bool(storage and storage.active)
        # uplink name -> dead-lettered rows, as last seen (restored alarms count as seen)
        self.dead: dict[str, int] = {a.device.removeprefix("uplink."): 1 for a in manager.alarms.values()
                                     if a.kind == "storage" and a.device.startswith("uplink.") and a.active}

    def maintain(self, max_bytes: int) -> dict[str, Any]:
        """Runs in a worker thread, on a connection of its own (SQLite connections are per thread)."""
        outbox = Outbox(self.outbox_path, durable=False)
        try:
            report = outbox.maintain(max_bytes)
            report["dead_letters"] = outbox.dead_letter_counts()
            return report
        finally:
            outbox.close()

    async def run(self) -> None:
        """Retention (30 days), telemetry thinning and the ``max_outbox_mb`` cap, once a minute."""
        while True:
            try:
                report = await asyncio.to_thread(self.maintain, self.max_bytes)
                self.used_mb = round(report["used_bytes"] / 2**20, 3)
                self.storage_alarm(report)
                self.dead_letter_alarms(report["dead_letters"])
            except Exception:
                # housekeeping failing must not stop the agent; the next pass tries again
                log.exception("outbox housekeeping failed")
            await asyncio.sleep(self.maintenance_s)

    def storage_alarm(self, report: dict[str, Any]) -> None:
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
            text = (f"网关存储已满 outbox storage full: {used_mb:.1f} of {max_mb:.1f} MB used, "
                    f"{dropped} unsent telemetry messages dropped")
        else:
            text = f"网关存储恢复 outbox storage back under its cap: {used_mb:.1f} of {max_mb:.1f} MB used"
        context = {"dropped": dict(report["dropped"]), "over": report["over"], "text": text}
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
