"""Progress bars for the long commands (``replay``, ``train``): on stderr, and only when stderr
is a terminal, so that logs, pipes and files get none of the carriage-return noise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 30


class Progress:
    """``progress(done, total)`` redraws one line at most every ``every_s`` seconds."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = 0.2, unit: str = "rows"):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label, self.every_s, self.unit = label, every_s, unit
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.every_s and done < total:
            return
        self._last = now
        frac = done / total if total else 1.0
        rate = done / max(now - self.start, 1e-9)
        bar = "#" * int(frac * BAR) + "." * (BAR - int(frac * BAR))
        speed = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2g}"
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f} % {done}/{total} {self.unit} {speed} {self.unit}/s")
        self.stream.flush()
        self._drawn = True

    def done(self) -> float:
        """End the bar's line; the seconds since the start."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        return time.monotonic() - self.start
