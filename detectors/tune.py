"""Per-tag calibration of the statistical detectors from a tag's normal history (numpy only).

``plantwatch train --detectors`` calls ``calibrate`` for every tag that lists ewma, cusum, robust or
flatline: it learns a daily or weekly cycle when one explains enough of the variance on held-out
data (``fit_cycle``), removes it, and chooses each detector's threshold so that the expected
number of alarm onsets on normal data is at most the target per week (``threshold_for``).

The engine removes the same cycle at run time (``Cycles``): a profile of 15-minute bins over the
day (or week) in the plant's local time, interpolated linearly between bin centres, subtracted
from the values the ewma, cusum and robust families see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY, WEEK = 86400.0, 604800.0
BIN_S = 900.0
#: a cycle is removed when, fitted on the first half, it explains this share of the variance of the second
MIN_EXPLAINED = 0.2
#: the statistics a threshold is chosen on: candidate thresholds per detector
GRID = 48
EWMA_LAMBDA = 0.2
CUSUM_KS = (0.5, 1.0, 1.5, 2.0, 3.0)  # allowances tried, in sigmas of the residual
CUSUM_SHIFT = 4.0  # the shift (sigmas) whose detection delay chooses among them
ROBUST_WINDOW = 121
MIN_FLAT_S = 300.0
TUNED = ("ewma", "cusum", "robust", "flatline")


@dataclass(frozen=True)
class Cycle:
    """A periodic profile: ``profile[i]`` is the mean of bin i of ``period_s`` (local time = UTC + offset_s)."""

    period_s: float
    offset_s: float
    profile: np.ndarray
    explained: float

    def at(self, ts: np.ndarray) -> np.ndarray:
        return profile_at(self.period_s, self.offset_s, self.profile, ts)

    def to_json(self) -> dict[str, Any]:
        return {"period_s": self.period_s, "offset_s": self.offset_s, "explained": round(self.explained, 4),
                "profile": [round(float(v), 9) for v in self.profile]}


def profile_at(period: float, offset: float, profile: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The profile at times ts, linear between bin centres (wrapping around the period)."""
    n = len(profile)
    pos = np.mod(np.asarray(ts, dtype=np.float64) + offset, period) * (n / period) - 0.5
    i0 = np.floor(pos)
    w = pos - i0
    i0 = i0.astype(np.int64) % n
    return profile[i0] * (1.0 - w) + profile[(i0 + 1) % n] * w


def _profile(ts: np.ndarray, x: np.ndarray, period: float, offset: float) -> np.ndarray | None:
    n = int(round(period / BIN_S))
    b = (np.mod(ts + offset, period) // BIN_S).astype(np.int64)
    counts = np.bincount(b, minlength=n)
    if (counts == 0).any():
        return None
    return np.bincount(b, weights=x, minlength=n) / counts


def fit_cycle(ts: np.ndarray, x: np.ndarray, offset: float) -> Cycle | None:
    """The daily or weekly cycle of x, or None: a period is tried when the data cover two of it;
    a profile fitted on the first half must explain ``MIN_EXPLAINED`` of the second half's
    variance. The weekly cycle is taken only when it explains clearly more than the daily one."""
    best: Cycle | None = None
    span = ts[-1] - ts[0] if len(ts) > 1 else 0.0
    for period in (DAY, WEEK):
        if span < 2 * period:
            continue
        half = ts < ts[0] + span / 2
        first = _profile(ts[half], x[half], period, offset)
        rest = x[~half]
        if first is None or np.var(rest) <= 0:
            continue
        held = 1.0 - np.var(rest - profile_at(period, offset, first, ts[~half])) / np.var(rest)
        whole = _profile(ts, x, period, offset)
        if whole is None or held < MIN_EXPLAINED:
            continue
        if best is None or held > best.explained + 0.05:
            best = Cycle(period, offset, whole, float(held))
    return best


def onsets(stat: np.ndarray, ts: np.ndarray, w: float, gap_s: float) -> int:
    """Alarm onsets of ``stat > w``: exceedances closer than ``gap_s`` (the off-delay) are one."""
    idx = np.flatnonzero(stat > w)
    if idx.size == 0:
        return 0
    return 1 + int(np.count_nonzero(np.diff(ts[idx]) > gap_s))


def threshold_for(stat: np.ndarray, ts: np.ndarray, gap_s: float, per_week: float) -> tuple[float, float]:
    """The least threshold whose expected onsets per week on this normal stretch is <= ``per_week``,
    and that expected rate. The onset count over thresholds is measured; above the largest
    excursion of the data it is extrapolated by the exponential tail fitted to the top of that
    count (peaks over threshold with an exponential tail)."""
    weeks = max((ts[-1] - ts[0]) / WEEK, 1e-9)
    s = stat[np.isfinite(stat)]
    lo, hi = float(np.quantile(s, 0.9)), float(s.max())
    if not hi > lo:
        return hi * 1.5 + 1e-9, 0.0
    grid = np.linspace(lo, hi, GRID)
    counts = np.array([onsets(stat, ts, w, gap_s) for w in grid], dtype=np.float64)
    rate = counts / weeks
    # below the busiest threshold exceedances merge into fewer, longer alarms: only the tail
    # above it, where onsets thin out as the threshold rises, is fitted
    ok = (counts >= 1) & (np.arange(GRID) >= int(np.argmax(counts)))
    a, b = (np.polyfit(grid[ok], np.log(rate[ok]), 1)[::-1] if ok.sum() >= 3 else (math.nan, math.nan))
    if not (np.isfinite(b) and b < 0):  # no usable tail: well above what was seen
        return hi * 1.5, 0.0
    w_fit = min((math.log(per_week) - a) / b, 2.0 * hi)
    seen = grid[rate <= per_week]
    w = max(w_fit, float(seen[0]) if seen.size else hi)
    expected = max(math.exp(a + b * w), onsets(stat, ts, w, gap_s) / weeks)
    return float(w), float(expected)


# --- the statistics each detector alarms on, over a residual standardised by its mean and sigma --


def ewma_stat(z: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    from scipy.signal import lfilter

    e, _ = lfilter([lam], [1.0, -(1.0 - lam)], z, zi=[0.0])
    return np.abs(e)


def cusum_stat(z: np.ndarray, k: float) -> np.ndarray:
    """max(S+, S-) of the two-sided CUSUM without restarts: S_t = C_t - min(0, min_{j<=t} C_j)."""
    out = np.zeros_like(z)
    for y in (z - k, -z - k):
        c = np.cumsum(y)
        out = np.maximum(out, c - np.minimum(np.minimum.accumulate(c), 0.0))
    return out


def robust_stat(x: np.ndarray, window: int = ROBUST_WINDOW, chunk: int = 65536) -> np.ndarray:
    """|robust z| of each sample against the previous ``window`` ones, as the robust kernel computes it."""
    out = np.zeros(len(x))
    if len(x) <= window:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    for start in range(window, len(x), chunk):
        stop = min(len(x), start + chunk)
        win = np.sort(sliding_window_view(x[start - window:stop - 1], window), axis=1)
        med = np.median(win, axis=1)
        mad = np.median(np.abs(win - med[:, None]), axis=1)
        gaps = np.diff(win, axis=1)
        res = np.where(gaps > 0, gaps, np.inf).min(axis=1)
        scale = np.where(mad > 0, 1.4826 * mad, np.where(np.isfinite(res), res, 0.0))
        dev = np.abs(x[start:stop] - med)
        out[start:stop] = np.where(scale > 0, dev / np.where(scale > 0, scale, 1.0), np.where(dev > 0, np.inf, 0.0))
    return out


def flat_stat(ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Seconds since the value last changed at all (eps 0)."""
    change = np.r_[True, np.diff(x) != 0]
    starts = ts[np.flatnonzero(change)]
    return ts - starts[np.cumsum(change) - 1]


def _cusum(z: np.ndarray, ts: np.ndarray, gap_s: float, per_week: float) -> tuple[float, float, float]:
    """(k, h, expected per week): of the allowances in ``CUSUM_KS`` the one whose calibrated h
    finds a shift of ``CUSUM_SHIFT`` sigmas soonest (about h / (shift - k) samples). On a
    wandering signal a small k needs a huge h; a larger k then detects sooner."""
    best = None
    for k in CUSUM_KS:
        h, rate = threshold_for(cusum_stat(z, k), ts, gap_s, per_week)
        delay = max(h, 1.0) / (CUSUM_SHIFT - k)
        if best is None or delay < best[0]:
            best = (delay, k, h, rate)
    return best[1], best[2], best[3]


# linear: one detector after the other, each the same three steps
def calibrate(ts: np.ndarray, x: np.ndarray, detectors: Sequence[str], params: Mapping[str, Mapping[str, Any]],
              per_week: float, offset: float) -> dict[str, Any]:
    """One tag: {"cycle": Cycle | None, "params": {detector: params}, "expected": {detector: per week}}.
    ``params`` are the tag's resolved parameters (their delays set the clustering of onsets)."""
    ok = np.isfinite(x)
    ts, x = ts[ok], x[ok]
    if len(x) < 2 * ROBUST_WINDOW or np.ptp(x) == 0:
        raise ValueError(f"{len(x)} usable samples{', all equal' if len(x) and np.ptp(x) == 0 else ''}: "
                         f"at least {2 * ROBUST_WINDOW} that vary are needed")
    cycle = fit_cycle(ts, x, offset)
    r = x - cycle.at(ts) if cycle is not None else x
    steps = np.abs(np.diff(x))
    resolution = float(steps[steps > 0].min()) if (steps > 0).any() else 0.0
    # a residual below the signal's resolution is rounding, not noise: sigma is at least that
    mu, sd = float(np.mean(r)), max(float(np.std(r)), resolution, 1e-12)
    z = (r - mu) / sd
    out: dict[str, dict[str, float]] = {}
    expected: dict[str, float] = {}
    if "ewma" in detectors:
        w, expected["ewma"] = threshold_for(ewma_stat(z), ts, params["ewma"]["off_delay_s"], per_week)
        out["ewma"] = {"lambda_": EWMA_LAMBDA, "mean": mu, "sigma": sd,
                       "L": w / math.sqrt(EWMA_LAMBDA / (2 - EWMA_LAMBDA))}
    if "cusum" in detectors:
        k, w, expected["cusum"] = _cusum(z, ts, params["cusum"]["off_delay_s"], per_week)
        out["cusum"] = {"k": k, "h": max(w, 1.0), "mean": mu, "sigma": sd}
    if "robust" in detectors:
        w, expected["robust"] = threshold_for(robust_stat(r), ts, params["robust"]["off_delay_s"], per_week)
        out["robust"] = {"window": ROBUST_WINDOW, "threshold": w}
    if "flatline" in detectors:
        w, expected["flatline"] = threshold_for(flat_stat(ts, x), ts, params["flatline"]["off_delay_s"], per_week)
        out["flatline"] = {"eps": 0.0, "duration_s": max(w, MIN_FLAT_S)}
    return {"cycle": cycle, "params": out, "expected": expected}


class Cycles:
    """The engine's cycle removal: every tag's profile in one flat array, applied to a batch in
    a few vectorised numpy operations."""

    def __init__(self, n_tags: int, cycles: Mapping[int, Cycle]):
        self.has = np.zeros(n_tags, dtype=bool)
        self.start = np.zeros(n_tags, dtype=np.int64)
        self.bins = np.ones(n_tags, dtype=np.int64)
        self.period = np.ones(n_tags)
        self.offset = np.zeros(n_tags)
        flat = []
        at = 0
        for tag, c in sorted(cycles.items()):
            self.has[tag], self.start[tag], self.bins[tag] = True, at, len(c.profile)
            self.period[tag], self.offset[tag] = c.period_s, c.offset_s
            flat.append(np.asarray(c.profile, dtype=np.float64))
            at += len(c.profile)
        self.flat = np.concatenate(flat) if flat else np.zeros(0)

    def __bool__(self) -> bool:
        return bool(self.has.any())

    def residual(self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The values less their tag's profile at their time (unchanged for tags without a cycle)."""
        sel = np.flatnonzero(self.has[tag])
        if sel.size == 0:
            return value
        t = tag[sel]
        n = self.bins[t]
        pos = np.mod(ts[sel] + self.offset[t], self.period[t]) * (n / self.period[t]) - 0.5
        i0 = np.floor(pos)
        w = pos - i0
        i0 = i0.astype(np.int64) % n
        base = self.start[t]
        out = value.copy()
        out[sel] -= self.flat[base + i0] * (1.0 - w) + self.flat[base + (i0 + 1) % n] * w
        return out
