"""Trend rings: the recent past of many series (tags, or a model's statistics) in fixed memory.

Part of the functional core: numpy arrays, no clock, no I/O. Time is cut into buckets of
``resolution_s`` (bucket ``k`` holds ``k * resolution_s <= ts < (k + 1) * resolution_s``), and
a ring of ``slots`` buckets keeps, per series and bucket, the lowest, the highest and the last
value (float32 each: 12 bytes per series and slot, ``BYTES_PER_SLOT``). The newest bucket seen
is the head; a sample older than the ring is dropped, a newer one moves the head on and the
buckets it passes are emptied (one row write each, for every series at once). A batch is
written with three vectorised scatters (``fmin.at``, ``fmax.at`` and an assignment): no Python
work per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BYTES_PER_SLOT = 12  # lowest, highest, last: float32 each


def ring_slots(window_s: float, resolution_s: float, series: int, max_bytes: float) -> int:
    """How many buckets a ring of ``series`` keeps: ``window_s / resolution_s``, fewer when that
    would take more than ``max_bytes`` (the buckets then grow, see ``ring_resolution``); at
    least 2."""
    wanted = math.ceil(window_s / resolution_s)
    fits = int(max_bytes // (BYTES_PER_SLOT * max(series, 1)))
    return max(2, min(wanted, fits))


def ring_resolution(window_s: float, resolution_s: float, slots: int) -> float:
    """The bucket width that makes ``slots`` buckets cover ``window_s``: ``resolution_s``
    unless memory forced fewer buckets."""
    return max(resolution_s, window_s / slots)


@dataclass(frozen=True)
class Series:
    """One series' buckets over a time range, oldest first: each bucket's middle, its lowest,
    highest and last value (NaN-free: empty buckets are left out)."""

    ts: np.ndarray
    low: np.ndarray
    high: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def concat(cls, parts: list[Series]) -> Series:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0)
                     for f in ("ts", "low", "high", "last")))

    def rows(self) -> list[list[float]]:
        """``[t, low, high, last]`` per bucket for JSON: times to the millisecond, values to
        float32's 7 significant digits (what the ring keeps)."""
        cols = [[float(f"{v:.7g}") for v in np.asarray(c, dtype=np.float64).tolist()]
                for c in (self.low, self.high, self.last)]
        return [[round(t, 3), a, b, c] for t, a, b, c in zip(self.ts.tolist(), *cols, strict=True)]


class Ring:
    """``rows`` series over ``slots`` buckets of ``resolution_s`` (module docstring)."""

    def __init__(self, rows: int, slots: int, resolution_s: float):
        self.slots = slots
        self.resolution_s = float(resolution_s)
        self.rows = rows
        self.head: int | None = None  # the newest bucket written
        self.first: float | None = None  # the time of the first sample kept
        self.low, self.high, self.last = (np.full((slots, rows), np.nan, dtype=np.float32) for _ in range(3))

    @property
    def nbytes(self) -> int:
        return self.low.nbytes + self.high.nbytes + self.last.nbytes

    def grow(self, rows: int) -> None:
        """Room for ``rows`` series (a new series found later: a model's first statistics)."""
        if rows <= self.rows:
            return
        pad = np.full((self.slots, rows - self.rows), np.nan, dtype=np.float32)
        self.low, self.high, self.last = (np.hstack([a, pad]) for a in (self.low, self.high, self.last))
        self.rows = rows

    def add(self, row: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """Samples (series index, time, value); non-finite values are not kept."""
        if len(ts) == 0:
            return
        if isinstance(ts, np.ndarray) and ts.ndim == 1 and _one_time(ts):
            self._add_at(float(ts[0]), row, value)  # one time for all: a poll's batch
        else:
            self._add_each(row, ts, value)

    def _add_each(self, row: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """``add`` for samples with times of their own: each to its bucket."""
        k = np.floor(np.asarray(ts, dtype=np.float64) / self.resolution_s).astype(np.int64)
        self._advance(int(k.max()))
        assert self.head is not None
        v = np.asarray(value, dtype=np.float32)
        keep = (k > self.head - self.slots) & np.isfinite(v)
        if not keep.all():
            k, v, row, ts = k[keep], v[keep], np.asarray(row)[keep], np.asarray(ts)[keep]
        if len(v) == 0:
            return
        if self.first is None:
            self.first = float(np.min(ts))
        at = (k % self.slots) * self.rows + np.asarray(row, dtype=np.int64)
        np.fmin.at(self.low.reshape(-1), at, v)
        np.fmax.at(self.high.reshape(-1), at, v)
        self.last.reshape(-1)[at] = v  # in time order: the last of equal indices wins

    def _add_at(self, t: float, row: np.ndarray, value: np.ndarray) -> None:
        """``add`` for samples that share one time: one bucket, written through its row of
        each array (a poll's batch: one time for all its samples)."""
        k = math.floor(t / self.resolution_s)
        self._advance(k)
        assert self.head is not None
        if k <= self.head - self.slots:
            return
        v = np.asarray(value, dtype=np.float32)
        finite = np.isfinite(v)
        if not finite.all():
            row, v = np.asarray(row)[finite], v[finite]
            if len(v) == 0:
                return
        if self.first is None:
            self.first = t
        slot = k % self.slots
        np.fmin.at(self.low[slot], row, v)
        np.fmax.at(self.high[slot], row, v)
        self.last[slot][row] = v

    def _advance(self, top: int) -> None:
        if self.head is None:
            self.head = top
            return
        if top <= self.head:
            return
        gone = np.arange(self.head + 1, top + 1)[-self.slots:] % self.slots
        for a in (self.low, self.high, self.last):
            a[gone] = np.nan
        self.head = top

    def start(self) -> float | None:
        """The earliest time the ring holds values for: the oldest bucket kept, or the first
        sample when that came later; None before any."""
        if self.head is None or self.first is None:
            return None
        return max((self.head - self.slots + 1) * self.resolution_s, self.first)

    def series(self, row: int, t0: float, t1: float) -> Series:
        """Series ``row``'s buckets that overlap ``[t0, t1]``, oldest first."""
        if self.head is None:
            return Series.concat([])
        k0 = max(math.floor(t0 / self.resolution_s), self.head - self.slots + 1)
        k1 = min(math.floor(t1 / self.resolution_s), self.head)
        k = np.arange(k0, k1 + 1, dtype=np.int64)
        s = k % self.slots
        low, high, last = self.low[s, row], self.high[s, row], self.last[s, row]
        has = ~np.isnan(last)
        return Series((k[has] + 0.5) * self.resolution_s, low[has], high[has], last[has])


def _one_time(ts: np.ndarray) -> bool:
    """Whether every sample has the same time: a broadcast scalar, or equal values (a driver's
    poll; the check costs ~2 µs against ~15 µs saved for a 62-sample batch)."""
    return ts.strides[0] == 0 or bool(ts[0] == ts[-1] and (ts == ts[0]).all())


def decimate(ts: np.ndarray, value: np.ndarray, t0: float, t1: float, width: float) -> Series:
    """Points (e.g. read from the history) over ``[t0, t1]`` as buckets of ``width`` seconds."""
    inside = (ts >= t0) & (ts <= t1)
    ring = Ring(1, math.ceil((t1 - t0) / width) + 2, width)
    ring.add(np.zeros(int(inside.sum()), dtype=np.int64), ts[inside], value[inside])
    return ring.series(0, t0, t1)
