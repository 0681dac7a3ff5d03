"""History compression: which samples of a tag are archived so that the trace can be rebuilt
within an error bound. Functional core: arrays in, arrays out, no clock, no I/O.

One ``Compressor`` holds the state of every tag as arrays indexed by tag (the last archived
point, the held sample, the two door slopes) and takes whole batches: one numpy pass over the
batch's tags, not a Python call per sample.

Modes (``[history] compression``):

- ``swinging-door``: the rebuilt trace is the straight line between archived points, and every
  sample in between lies within ``deviation`` of it. From the last archived point A, each
  sample s bounds the slopes a line from A may take (the two "doors": upper
  ``(s.v + E - A.v) / (s.t - A.t)`` and lower ``(s.v - E - A.v) / (s.t - A.t)``). The newest
  sample is held, not written. When the line from A to a new sample would leave the corridor
  of the doors so far (or ``max_interval_s`` since A has passed), the held sample is archived
  and becomes A. Holding the line from A to the held sample inside the corridor is what makes
  the bound hold at every original sample (the textbook test, doors crossing, lets the error
  reach nearly 2 E).
- ``deadband``: a sample is archived when it differs from the last archived value by more than
  ``deviation``; the rebuilt trace holds the last archived value (a step), which is within
  ``deviation`` of every sample in between.
- ``none``: every sample is archived.

In every mode a change of quality, or between a number and NaN, archives the held sample (the
last one of the old state) and the new one, so the change is visible at its time; a time that
does not move forward starts the tag afresh the same way. ``flush`` hands out the held samples
not yet archived (at shutdown), so the end of every trace is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("swinging-door", "deadband", "none")


@dataclass(slots=True)
class Points:
    """Archived points: parallel arrays, in the order archived (per tag, in time)."""

    tag: np.ndarray  # int32 tag index
    ts: np.ndarray  # float64 UTC seconds
    value: np.ndarray  # float64
    quality: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @classmethod
    def empty(cls) -> Points:
        return cls(np.empty(0, np.int32), np.empty(0), np.empty(0), np.empty(0, np.uint8))

    @classmethod
    def concat(cls, parts: list[Points]) -> Points:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.tag for p in parts]), np.concatenate([p.ts for p in parts]),
                   np.concatenate([p.value for p in parts]), np.concatenate([p.quality for p in parts]))


class Compressor:
    """Per-tag compression state for ``n`` tags; ``deviation`` per tag (engineering units)."""

    def __init__(self, deviation: np.ndarray, mode: str = "swinging-door", max_interval_s: float = 600.0):
        if mode not in MODES:
            raise ValueError(f"unknown compression {mode!r}")
        n = len(deviation)
        self.mode = mode
        self.dev = np.asarray(deviation, dtype=np.float64).copy()
        self.max_interval = float(max_interval_s) if max_interval_s > 0 else np.inf
        self.seen = np.zeros(n, bool)  # any sample yet
        self.a_ts, self.a_v = np.zeros(n), np.zeros(n)  # last archived point
        self.h_ts, self.h_v = np.zeros(n), np.zeros(n)  # held (latest) sample
        self.h_q = np.zeros(n, np.uint8)
        self.h_archived = np.zeros(n, bool)  # the held sample is the archived one
        self.lo, self.hi = np.full(n, -np.inf), np.full(n, np.inf)  # the doors' slopes

    def add(self, tag: np.ndarray, ts: np.ndarray, value: np.ndarray, quality: np.ndarray) -> Points:
        """Take a batch of samples (in time order per tag); return the points to archive."""
        if len(tag) == 0:
            return Points.empty()
        tag = np.asarray(tag, dtype=np.intp)
        rank = _occurrence(tag)
        if rank is None:
            return self._step(tag, ts, value, quality)
        parts = []
        for r in range(int(rank.max()) + 1):  # the k-th sample of each tag together
            sel = rank == r
            parts.append(self._step(tag[sel], ts[sel], value[sel], quality[sel]))
        return Points.concat(parts)

    def flush(self) -> Points:
        """The held samples not archived yet; they are archived now (e.g. at shutdown)."""
        idx = np.flatnonzero(self.seen & ~self.h_archived)
        self.h_archived[idx] = True
        self.a_ts[idx], self.a_v[idx] = self.h_ts[idx], self.h_v[idx]
        self.lo[idx], self.hi[idx] = -np.inf, np.inf
        return Points(idx.astype(np.int32), self.h_ts[idx].copy(), self.h_v[idx].copy(), self.h_q[idx].copy())

    def _step(self, tag: np.ndarray, ts: np.ndarray, v: np.ndarray, q: np.ndarray) -> Points:
        """One sample per tag (the tags are unique)."""
        ts = np.asarray(ts, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        q = np.asarray(q, dtype=np.uint8)
        seen = self.seen[tag]
        h_ts, h_v, h_q = self.h_ts[tag], self.h_v[tag], self.h_q[tag]
        a_ts, a_v = self.a_ts[tag], self.a_v[tag]
        dev = self.dev[tag]
        nan, h_nan = np.isnan(v), np.isnan(h_v)
        # a fresh start: first sample, quality or NaN-ness changed, time not moving forward
        fresh = ~seen | (q != h_q) | (nan != h_nan) | (ts <= h_ts)
        dt = ts - a_ts
        # swinging-door archives the held sample (at most max_interval_s after A), deadband the new one
        late = dt > self.max_interval if self.mode == "swinging-door" else dt >= self.max_interval
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.mode == "swinging-door":
                slope = (v - a_v) / dt
                lo, hi = self.lo[tag], self.hi[tag]
                inside = (slope >= lo) & (slope <= hi)
            elif self.mode == "deadband":
                inside = np.abs(v - a_v) <= dev
            else:
                inside = np.zeros(len(tag), bool)
        inside |= nan & h_nan  # NaN after NaN of the same quality: nothing new but the time
        keep = ~fresh & inside & ~late  # the held sample need not be written yet
        # the held sample is archived when the new one cannot extend its segment
        arch_held = seen & ~keep & ~self.h_archived[tag]
        if self.mode == "swinging-door":
            # the new sample starts the next segment, from the held one; it is written only fresh
            arch_new = fresh
            new_a_ts = np.where(fresh, ts, np.where(keep, a_ts, h_ts))
            new_a_v = np.where(fresh, v, np.where(keep, a_v, h_v))
        else:
            # deadband / none: the new sample itself is the next archived point
            arch_new = ~keep
            arch_held &= fresh  # before a jump in quality or time, the last sample of the old run
            new_a_ts = np.where(keep, a_ts, ts)
            new_a_v = np.where(keep, a_v, v)
        self._doors(tag, ts, v, dev, keep, fresh, new_a_ts, new_a_v)
        self.seen[tag] = True
        self.a_ts[tag], self.a_v[tag] = new_a_ts, new_a_v
        self.h_ts[tag], self.h_v[tag], self.h_q[tag] = ts, v, q
        self.h_archived[tag] = arch_new
        out_held = Points(tag[arch_held].astype(np.int32), h_ts[arch_held], h_v[arch_held], h_q[arch_held])
        out_new = Points(tag[arch_new].astype(np.int32), ts[arch_new], v[arch_new], q[arch_new])
        return Points.concat([out_held, out_new])

    def _doors(self, tag, ts, v, dev, keep, fresh, a_ts, a_v) -> None:
        """The door slopes from the (new) archived point, narrowed by the new sample."""
        if self.mode != "swinging-door":
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            dt = ts - a_ts
            lo_new = (v - dev - a_v) / dt
            hi_new = (v + dev - a_v) / dt
        restart = fresh | np.isnan(v)
        self.lo[tag] = np.where(restart, -np.inf, np.where(keep, np.maximum(self.lo[tag], lo_new), lo_new))
        self.hi[tag] = np.where(restart, np.inf, np.where(keep, np.minimum(self.hi[tag], hi_new), hi_new))


def _occurrence(tag: np.ndarray) -> np.ndarray | None:
    """None when every tag appears once; else each sample's rank among its tag's samples."""
    order = np.argsort(tag, kind="stable")
    s = tag[order]
    dup = s[1:] == s[:-1]
    if not dup.any():
        return None
    start = np.r_[0, np.flatnonzero(~dup) + 1]
    run = np.zeros(len(tag), np.intp)
    run[start] = start
    run = np.maximum.accumulate(run)
    rank = np.empty(len(tag), np.intp)
    rank[order] = np.arange(len(tag)) - run
    return rank


def reconstruct(mode: str, at: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The trace rebuilt from one tag's archived points (``ts`` ascending) at times ``at``:
    linear between points for swinging-door, the last value held otherwise."""
    if mode == "swinging-door":
        return np.interp(at, ts, value)
    i = np.searchsorted(ts, at, side="right") - 1
    return value[np.clip(i, 0, None)]
