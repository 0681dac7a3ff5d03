"""Per-device counters for the console's devices view and the status document: reads, errors,
the rate of reads achieved, the last read's latency, and what the driver reports of itself.

Part of the shell (it holds the running drivers). The agent calls ``batch`` for every batch on
its event loop; ``view`` builds the device rows once a second while a page is open. Nothing here
knows a protocol: the driver's own words come from its ``report()`` hook (drivers.base.Driver).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("plantwatch.console")

RATE_WINDOW = 20  # batches the achieved rate is measured over
STALE_S = 10.0  # no batch for this long: the achieved rate is 0


@dataclass
class Counters:
    reads: int = 0
    errors: int = 0
    last_error_at: float | None = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def rate(self, now: float) -> float:
        """Batches per second over the last ``RATE_WINDOW`` batches (0 when they stopped coming)."""
        times = self.arrivals
        if len(times) < 2 or now - times[-1] > STALE_S:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


class DeviceStats:
    def __init__(self, names: list[str]):
        self.counters = {name: Counters() for name in names}
        self.drivers: dict[str, Any] = {}  # device name -> its running driver (set by the agent)

    def batch(self, device: str, failed: bool, now: float | None = None) -> None:
        c = self.counters.get(device)
        if c is None:
            return
        now = time.monotonic() if now is None else now
        c.reads += 1
        c.arrivals.append(now)
        if failed:
            c.errors += 1
            c.last_error_at = time.time()

    def counts(self, device: str) -> dict[str, Any]:
        """The status document's counters of ``device``: reads, errors, rate, latency."""
        c = self.counters[device]
        driver = self.drivers.get(device)
        latency = getattr(driver, "last_latency_s", None)
        return {"reads": c.reads, "errors": c.errors, "rate_hz": round(c.rate(time.monotonic()), 3),
                "interval_s": driver.device.interval_s if driver is not None else None,
                "latency_ms": round(latency * 1000, 1) if latency is not None else None}

    def view(self, state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each device's comm state with its counters and the driver's report."""
        out = {}
        for name, st in state.items():
            row = {**st, **self.counts(name)} if name in self.counters else dict(st)
            driver = self.drivers.get(name)
            if driver is not None:
                try:
                    row["details"] = driver.report()
                except Exception as exc:  # a driver's report must not stop the page's frames
                    log.warning("console: the report of device %s failed: %s", name, exc)
                    row["details"] = []
            out[name] = row
        return out
