"""Pure-Python twins of the detection kernels, written for clarity, one sample at a time.

The property tests feed the same streams to a twin and to the kernel and require identical
events; the twins are the readable statement of what each kernel means.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

BAD = 2


def more_severe(raw: int, lvl: int) -> bool:
    if raw == 0:
        return False
    if lvl == 0 or (raw > 0) != (lvl > 0):
        return True
    return abs(raw) > abs(lvl)


@dataclass
class Debounce:
    """On-delay towards more severe levels, off-delay back; timers restart on raw changes."""

    on_delay: float
    off_delay: float
    level: int = 0
    pending: int = 0
    since: float = 0.0

    def step(self, raw: int, t: float) -> bool:
        if raw == self.level:
            self.pending = raw
            return False
        if raw != self.pending:
            self.pending = raw
            self.since = t
        delay = self.on_delay if more_severe(raw, self.level) else self.off_delay
        if t - self.since >= delay:
            self.level = raw
            return True
        return False


def usable(value: float, quality: int) -> bool:
    return quality < BAD and not math.isnan(value)


class LimitTwin:
    """One tag's limit alarm: limits-with-deadband to a raw level, then on/off delays."""

    def __init__(self, hh=None, h=None, l=None, ll=None, deadband=0.0, on_delay_s=0.0, off_delay_s=0.0):  # noqa: E741
        self.lim = {2: hh, 1: h, -1: l, -2: ll}
        self.db = deadband
        self.raw = 0
        self.deb = Debounce(on_delay_s, off_delay_s)

    def _high(self, v: float, level: int) -> bool:
        lim = self.lim[level]
        if lim is None:
            return False
        return v >= lim or (self.raw >= level and v > lim - self.db)

    def _low(self, v: float, level: int) -> bool:
        lim = self.lim[level]
        if lim is None:
            return False
        return v <= lim or (self.raw <= level and v < lim + self.db)

    def raw_level(self, v: float) -> int:
        hi = 2 if self._high(v, 2) else 1 if self._high(v, 1) else 0
        lo = -2 if self._low(v, -2) else -1 if self._low(v, -1) else 0
        if hi and lo:
            return lo if self.raw > 0 else hi
        return hi or lo

    def step(self, value: float, t: float, quality: int) -> tuple[int, int] | None:
        """(previous level, new level) when the reported level changes, else None."""
        if not usable(value, quality):
            return None
        self.raw = self.raw_level(value)
        prev = self.deb.level
        if self.deb.step(self.raw, t):
            return prev, self.deb.level
        return None


def run_twins(twins: dict[int, object], tag, value, ts, quality) -> list[tuple]:
    """Events (sample index, previous level, new level[, detail]) for a batch, in sample order."""
    events = []
    for i, (t, v, s, q) in enumerate(zip(tag, value, ts, quality, strict=True)):
        twin = twins.get(int(t))
        if twin is None:
            continue
        ev = twin.step(float(v), float(s), int(q))
        if ev is not None:
            events.append((i, *ev))
    return events


class _Twin:
    """One tag's detector: ``raw(value, t)`` gives the raw level and detail of a usable sample."""

    def __init__(self, on_delay_s: float = 0.0, off_delay_s: float = 0.0):
        self.deb = Debounce(on_delay_s, off_delay_s)

    def usable(self, value: float, quality: int) -> bool:
        return usable(value, quality)

    def step(self, value: float, t: float, quality: int):
        if not self.usable(value, quality):
            return None
        got = self.raw(value, t, quality)
        if got is None:
            return None
        raw, detail = got
        prev = self.deb.level
        if self.deb.step(raw, t):
            return prev, self.deb.level, detail
        return None


class RocTwin(_Twin):
    def __init__(self, max_per_s, window_s=1.0, on_delay_s=0.0, off_delay_s=0.0):
        super().__init__(on_delay_s, off_delay_s)
        self.max, self.window = max_per_s, window_s
        self.anchor = None
        self.level_raw = 0

    def raw(self, v, t, q):
        if self.anchor is None:
            self.anchor = (v, t)
            return None
        av, at = self.anchor
        dt = t - at
        if dt <= 0 or dt < self.window:
            return self.level_raw, math.nan
        rate = (v - av) / dt
        self.level_raw = 1 if rate > self.max else -1 if rate < -self.max else 0
        self.anchor = (v, t)
        return self.level_raw, rate


class _Warmup:
    """Welford mean/variance over the first ``warmup`` samples, unless mean and sigma are given."""

    def __init__(self, warmup, mean, sigma, min_sigma):
        self.warmup, self.min_sigma = warmup, min_sigma
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.sigma = None
        if mean is not None:
            self.n, self.mean = warmup, mean
            self.sigma = sigma if sigma > min_sigma else min_sigma

    def learn(self, v) -> bool:
        """Feed a warm-up sample; True once the statistics are ready (and this sample used)."""
        self.n += 1
        d = v - self.mean
        self.mean += d / self.n
        self.m2 += d * (v - self.mean)
        if self.n == self.warmup:
            s = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
            self.sigma = s if s > self.min_sigma else self.min_sigma
        return True

    @property
    def ready(self):
        return self.n >= self.warmup


class EwmaTwin(_Twin):
    def __init__(self, lambda_=0.2, L=13.5, warmup=3600, mean=None, sigma=None, min_sigma=0.0,  # noqa: N803
                 on_delay_s=60.0, off_delay_s=1800.0):
        super().__init__(on_delay_s, off_delay_s)
        self.lam, self.L = lambda_, L
        self.stats = _Warmup(warmup, mean, sigma, min_sigma)
        self.z = None
        if self.stats.ready:
            self._limits()

    def _limits(self):
        w = self.L * self.stats.sigma * math.sqrt(self.lam / (2.0 - self.lam))
        self.z = self.stats.mean
        self.ucl, self.lcl = self.stats.mean + w, self.stats.mean - w

    def raw(self, v, t, q):
        if not self.stats.ready:
            self.stats.learn(v)
            if self.stats.ready:
                self._limits()
            return None
        self.z = self.lam * v + (1.0 - self.lam) * self.z
        return (1 if self.z > self.ucl else -1 if self.z < self.lcl else 0), self.z


class CusumTwin(_Twin):
    def __init__(self, k=3.0, h=30.0, warmup=3600, mean=None, sigma=None, min_sigma=0.0, off_delay_s=1800.0):
        super().__init__(0.0, off_delay_s)
        self.k, self.h = k, h
        self.stats = _Warmup(warmup, mean, sigma, min_sigma)
        self.sp = self.sn = 0.0

    def raw(self, v, t, q):
        if not self.stats.ready:
            self.stats.learn(v)
            return None
        sigma = self.stats.sigma
        x = (v - self.stats.mean) * (1.0 / sigma if sigma > 0.0 else sys.float_info.max)
        self.sp = max(0.0, self.sp + x - self.k)
        self.sn = max(0.0, self.sn - x - self.k)
        if self.sp > self.h:
            r, stat = 1, self.sp
        elif self.sn > self.h:
            r, stat = -1, -self.sn
        else:
            return 0, 0.0
        self.sp = self.sn = 0.0
        return r, stat


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class RobustTwin(_Twin):
    def __init__(self, window=121, threshold=6.0, min_mad=0.0, on_delay_s=60.0, off_delay_s=1800.0):
        super().__init__(on_delay_s, off_delay_s)
        self.window, self.threshold, self.min_mad = window, threshold, min_mad
        self.buf: list[float] = []

    def raw(self, v, t, q):
        r, z = 0, 0.0
        if len(self.buf) == self.window:
            med = median(self.buf)
            mad = median([abs(x - med) for x in self.buf])
            gaps = [b - a for a, b in zip(sorted(self.buf), sorted(self.buf)[1:], strict=False) if b > a]
            scale = max(1.4826 * mad if mad > 0 else min(gaps, default=0.0), self.min_mad)
            if scale > 0:
                z = (v - med) / scale
            elif v != med:
                z = math.inf if v > med else -math.inf
            r = 1 if z > self.threshold else -1 if z < -self.threshold else 0
            self.buf.pop(0)
        self.buf.append(v)
        return r, z


class FlatlineTwin(_Twin):
    def __init__(self, eps=0.0, duration_s=3600.0, off_delay_s=0.0):
        super().__init__(0.0, off_delay_s)
        self.eps, self.duration = eps, duration_s
        self.ref = None

    def raw(self, v, t, q):
        if self.ref is None or abs(v - self.ref[0]) > self.eps:
            self.ref = (v, t)
            return 0, 0.0
        return (1 if t - self.ref[1] >= self.duration else 0), t - self.ref[1]


class SensorTwin(_Twin):
    def __init__(self, lo=None, hi=None, on_delay_s=0.0, off_delay_s=0.0):
        super().__init__(on_delay_s, off_delay_s)
        self.lo = -math.inf if lo is None else lo
        self.hi = math.inf if hi is None else hi

    def usable(self, value, quality):
        return quality != 3  # COMM_FAIL is the agent's comm alarm

    def raw(self, v, t, q):
        if math.isnan(v):
            return 2, v
        if v > self.hi:
            return 1, v
        if v < self.lo:
            return -1, v
        return (2 if q == BAD else 0), v
