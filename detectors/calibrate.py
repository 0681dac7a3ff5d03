"""Calibration of a multivariate model from normal operation alone (``plantwatch train``).

1. Split in time: the first ``1 - holdout`` of the rows fit, the rest is the hold-out.
2. Candidates: input sets (``input_candidates``: steady tags as levels or smoothed, slow tags as
   rates over two windows, with or without lag 1), numbers of
   components (by explained variance 0.8 / 0.9 / 0.95), on-delays and off-delays (multiples of
   the sample interval). Whatever the config fixes is not searched.
3. For each candidate: fit on the fit part; the T²/SPE limits are set on the hold-out for the
   target false-alarm rate *after* the on/off delays (``empirical_limits``); then synthetic faults
   are injected into copies of hold-out segments (a step of FAULT_SIGMAS fit-part standard
   deviations, up and down, in one tag at a time over the middle of the segment; the rows after
   it stay normal, so an alarm that lingers counts as false) and replayed through the same input
   stage. Score: point-wise F1 over the clean hold-out and the faulty segments; ties go to fewer
   false alarms.
4. The chosen candidate is fitted on all rows. Its limits come from out-of-sample statistics of
   both halves (fit on one, score the other, both ways), pooled, at ``target_far`` with the
   delays: no row judges a model it was fitted with.

Pure numpy and the detectors' own kernels: no files, no clock. The model kind is a parameter
(``Kind``): PCA by default, searched over its numbers of components; another kind passes its own
structures (CVA: its past windows, detectors.cva), whose model has ``score(X) -> (t2, spe)`` (two
statistics over their limits, for the rows from the ``len(X) - len(t2)``-th on: T² and SPE for
PCA), ``n_components`` and ``with_limits(t2_limit, spe_limit, on_delay_s, off_delay_s,
target_far)``, the model with what ``calibrate`` sets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from detectors import _pca
from detectors.inputs import InputSpec, table_rows
from detectors.pca_model import fit


@dataclass(frozen=True)
class Kind:
    """How ``calibrate`` searches and fits one model kind. ``options(tr, width)``: the structures
    searched, each a dict of keyword arguments of ``fit``; ``fit(X, tr, spec, **structure)``: a
    model (see above), ValueError when the rows cannot fit it; ``fixed(model)``: the structure
    that fits the same model again on other rows; ``describe(candidate)``: what was chosen."""

    options: Callable[[Training, int], list[dict[str, Any]]]
    fit: Callable[..., Any]
    fixed: Callable[[Any], dict[str, Any]]
    describe: Callable[[Candidate], str]

FAULT_SIGMAS = 3.0
VARIANCES = (0.8, 0.9, 0.95)
ON_DELAYS = (0, 3, 10)  # in sample intervals
OFF_DELAYS = (0, 10, 30)
#: the search runs on at most this many rows (the latest); the final fit and limits use all rows
SEARCH_ROWS = 20_000
SEGMENT_ROWS = 400  # a faulty hold-out segment: normal, fault over the middle 40 %, normal
MAX_SEGMENTS = 3
MAX_FAULT_TAGS = 8  # more tags: a fixed-seed sample of them gets faults
SLOW_RATIO = 3.0  # see slow_tags
RATE_WINDOWS = (30, 60)  # candidate windows of the slow tags' rates, in sample intervals
SMOOTH = 5  # candidate rolling mean of the steady tags, in sample intervals


@dataclass(frozen=True)
class Training:
    """What train calibrates from: raw columns (rows x names, NaN = no sample), their times, and
    what the config fixes (None / 0: chosen here)."""

    names: tuple[str, ...]
    columns: np.ndarray
    ts: np.ndarray
    spec: InputSpec | None = None
    components: int = 0
    on_delay_s: float | None = None
    off_delay_s: float | None = None
    target_far: float = 0.01
    holdout: float = 0.5
    auto: bool = True  # False: nothing searched; what the config leaves open takes its default
    confidence: float = 0.99
    variance: float = 0.9
    kind: Kind | None = None  # the model kind searched: None = PCA


@dataclass(frozen=True)
class Candidate:
    spec: InputSpec
    variance: float | None  # None: components fixed
    components: int
    on_delay_s: float
    off_delay_s: float
    f1: float = 0.0
    far: float = 0.0  # share of normal hold-out rows alarmed (clean and faulty segments)
    sensitivity: float = 0.0  # share of faulty rows alarmed
    structure: tuple[tuple[str, Any], ...] = ()  # the kind's structure searched (Kind.options)
    fixed: tuple[tuple[str, Any], ...] = ()  # the structure that fits the chosen model again


def interval(ts: np.ndarray) -> float:
    d = np.diff(ts[:10_000])
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def debounced(t2: np.ndarray, spe: np.ndarray, times: np.ndarray, t2_lim: float, spe_lim: float,
              on: float, off: float) -> np.ndarray:
    """Per row: alarm active after the on/off delays (the live SeriesDebounce kernel)."""
    raw = (t2 > t2_lim).astype(np.int8) + 2 * (spe > spe_lim).astype(np.int8)
    pos, _, new = _pca.SeriesDebounce(on, off).run(raw, np.ascontiguousarray(times, dtype=np.float64))
    level = np.zeros(len(raw), dtype=np.int8)
    if len(pos):
        marks = np.zeros(len(raw), dtype=np.int64)
        marks[pos] = np.arange(1, len(pos) + 1)
        level = np.concatenate([[0], new])[np.maximum.accumulate(marks)]
    return level != 0


def empirical_limits(series: list[tuple[np.ndarray, np.ndarray, np.ndarray]], on: float, off: float,
                     target: float) -> tuple[float, float, float]:
    """T² and SPE limits at one tail share a each (the (1 - a) quantiles of the pooled normal
    statistics), a the largest for which the share of rows alarmed after the delays is at most
    ``target``; with that share. ``series``: (t2, spe, times) per run of consecutive rows."""
    t2 = np.sort(np.concatenate([s[0] for s in series]))
    spe = np.sort(np.concatenate([s[1] for s in series]))
    n = len(t2)

    def quantile(x: np.ndarray, q: float) -> float:  # as np.quantile (linear), on sorted x
        pos = q * (n - 1)
        k = min(int(pos), n - 2) if n > 1 else 0
        return float(x[k] + (pos - k) * (x[min(k + 1, n - 1)] - x[k]))

    def rate(a: float) -> tuple[float, float, float]:
        lt, ls = quantile(t2, 1 - a), quantile(spe, 1 - a)
        alarmed = sum(int(debounced(s[0], s[1], s[2], lt, ls, on, off).sum()) for s in series)
        return lt, ls, alarmed / n

    lo, hi = 0.0, min(0.5, 50 * target)
    best = (float(t2.max()), float(spe.max()), 0.0)
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        got = rate(mid)
        if got[2] <= target:
            lo, best = mid, got
        else:
            hi = mid
    return best


def slow_tags(names: tuple[str, ...], fit_rows: np.ndarray) -> tuple[str, ...]:
    """Tags whose level wanders slowly beside their sample-to-sample noise: the variance of the
    level over SLOW_RATIO times half the variance of its differences (von Neumann's ratio, about 1
    for noise around a steady value, large for a trend or a random walk). A model fitted on a
    stretch of normal data cannot learn where such a level will be next; their rates it can."""
    var = np.nanvar(fit_rows, axis=0)
    diff = 0.5 * np.nanvar(np.diff(fit_rows, axis=0), axis=0)
    ratio = var / np.where(diff > 0, diff, np.inf)
    return tuple(t for t, r in zip(names, ratio, strict=True) if r > SLOW_RATIO)


def input_candidates(tr: Training, fit_rows: np.ndarray) -> list[InputSpec]:
    """The input sets searched: steady tags as levels (or smoothed), slow tags as rates, with or
    without lag 1; all tags as levels only when none is slow."""
    if tr.spec is not None or not tr.auto:
        return [tr.spec or InputSpec(tr.names)]
    tags = tr.names
    dt = interval(tr.ts)
    slow = slow_tags(tags, fit_rows)
    steady = tuple(t for t in tags if t not in slow)
    if not slow or not steady:
        base = InputSpec(tags)
        return [base, replace(base, lags=1), InputSpec(tags, levels=(), means=(SMOOTH * dt,))]
    out = []
    for w in RATE_WINDOWS:
        out.append(InputSpec(tags, levels=steady, rates=(w * dt,), rate_of=slow))
        out.append(InputSpec(tags, levels=(), rates=(w * dt,), rate_of=slow, means=(SMOOTH * dt,), mean_of=steady))
    out.append(replace(out[0], lags=1))
    return out


@dataclass
class _Data:
    X: np.ndarray  # input rows
    pos: np.ndarray  # each row's row number in the table
    times: np.ndarray


def _rows(spec: InputSpec, columns: np.ndarray, ts: np.ndarray) -> _Data:
    X, times = table_rows(spec, columns, ts)
    return _Data(X, np.searchsorted(ts, times), times)


def _segments(tr: Training, n_fit: int, n: int) -> list[tuple[int, int]]:
    length = min(SEGMENT_ROWS, n - n_fit)
    starts = np.linspace(n_fit, n - length, num=min(MAX_SEGMENTS, max(1, (n - n_fit) // length))).astype(int)
    return [(int(s), int(s) + length) for s in dict.fromkeys(starts.tolist())]


def _faults(tr: Training, n_fit: int) -> list[tuple[int, float]]:
    """(column, signed step) of every synthetic fault."""
    p = len(tr.names)
    cols = list(range(p))
    if p > MAX_FAULT_TAGS:
        cols = sorted(np.random.default_rng(0).choice(p, MAX_FAULT_TAGS, replace=False).tolist())
    sd = np.nanstd(tr.columns[:n_fit], axis=0, ddof=1)
    return [(c, sign * FAULT_SIGMAS * float(sd[c])) for c in cols for sign in (1.0, -1.0)]


def _faulty_stats(tr: Training, spec: InputSpec, models: list[Any], segs, faults, history: int):
    """Per model, per (segment, fault): (t2, spe, times, faulty row mask)."""
    out: list[list[tuple]] = [[] for _ in models]
    for a, b in segs:
        first = max(0, a - history)
        f0, f1 = a + (b - a) * 3 // 10, a + (b - a) * 7 // 10
        for col, step in faults:
            cols = tr.columns[first:b].copy()
            cols[f0 - first:f1 - first, col] += step
            d = _rows(spec, cols, tr.ts[first:b])
            pos = d.pos + first
            for i, m in enumerate(models):  # the statistics of the rows from the segment's start
                t2, spe, times = _stats(m, d.X, d.times)
                at = pos[len(pos) - len(t2):]
                keep = at >= a
                out[i].append((t2[keep], spe[keep], times[keep], (at[keep] >= f0) & (at[keep] < f1)))
    return out


def _stats(m: Any, X: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t2, spe, times) of the rows a model scores (a dynamic one: those with a full past)."""
    t2, spe = m.score(X)
    return t2, spe, times[len(times) - len(t2):]


def _component_options(tr: Training, q: int) -> list[dict[str, Any]]:
    if tr.components:
        return [{"components": min(tr.components, q)}]
    if not tr.auto:
        return [{"variance": tr.variance}]
    return [{"variance": v} for v in VARIANCES]


def _fit_pca(X: np.ndarray, tr: Training, spec: InputSpec, variance: float | None = None, components: int = 0):
    return fit(X, spec.tags, tr.confidence, variance or tr.variance, components or None, spec)


def _describe_pca(c: Candidate) -> str:
    return f"components {c.components}" + (f" (explained variance {c.variance})" if c.variance else "")


PCA = Kind(_component_options, _fit_pca, lambda m: {"components": m.n_components}, _describe_pca)


def _delays(tr: Training, dt: float, n_hold: int) -> list[tuple[float, float]]:
    """The (on, off) delays searched. An off-delay of k intervals makes every false alarm at least
    1 + k rows long; it is searched only when the hold-out's false-alarm budget (``target_far`` of
    its rows) holds such an alarm: else the limits set on the hold-out sit above all its rows
    whatever the off-delay, its cost cannot show, and the search would take the longest."""
    auto_on, auto_off = (ON_DELAYS, OFF_DELAYS) if tr.auto else ((0,), (0,))
    auto_off = tuple(k for k in auto_off if 1 + k <= tr.target_far * n_hold) or (0,)
    ons = [tr.on_delay_s] if tr.on_delay_s is not None else [k * dt for k in auto_on]
    offs = [tr.off_delay_s] if tr.off_delay_s is not None else [k * dt for k in auto_off]
    return list(itertools.product(ons, offs))


def _score(normal, faulty, on: float, off: float, target: float) -> tuple[float, float, float]:
    """(F1, FAR, sensitivity) of one model with one pair of delays, limits set on ``normal``."""
    lt, ls, _ = empirical_limits([normal], on, off, target)
    clean = debounced(*normal, lt, ls, on, off)
    normal_rows, false_rows, fault_rows, hits = len(clean), int(clean.sum()), 0, 0
    for t2, spe, times, mask in faulty:
        alarm = debounced(t2, spe, times, lt, ls, on, off)
        normal_rows += int((~mask).sum())
        false_rows += int(alarm[~mask].sum())
        fault_rows += int(mask.sum())
        hits += int(alarm[mask].sum())
    missed = fault_rows - hits
    f1 = hits / (hits + (missed + false_rows) / 2) if hits + missed + false_rows else 0.0
    return f1, false_rows / max(normal_rows, 1), hits / max(fault_rows, 1)


def search(tr: Training) -> list[Candidate]:  # linear: one loop nest over the candidates, scored alike
    """Every candidate scored on the hold-out with synthetic faults, best first."""
    n = len(tr.ts)
    lo = max(0, n - SEARCH_ROWS)
    part = replace(tr, columns=tr.columns[lo:], ts=tr.ts[lo:])
    n = len(part.ts)
    n_fit = int(round(n * (1 - tr.holdout)))
    dt = interval(part.ts)
    segs, faults = _segments(part, n_fit, n), _faults(part, n_fit)
    kind = tr.kind or PCA
    out: list[Candidate] = []
    for spec in input_candidates(part, part.columns[:n_fit]):
        d = _rows(spec, part.columns, part.ts)
        fit_mask = d.pos < n_fit
        hold = ~fit_mask
        if fit_mask.sum() < d.X.shape[1] + 2 or hold.sum() < 10:
            continue
        models, options = [], []
        for option in kind.options(tr, d.X.shape[1]):
            try:
                models.append(kind.fit(d.X[fit_mask], tr, spec, **option))
                options.append(option)
            except ValueError:
                continue
        history = int(np.ceil(spec.warmup_s / dt)) + spec.lags + 2 + max((o.get("lags", 0) for o in options), default=0)
        faulty = _faulty_stats(part, spec, models, segs, faults, history)
        for m, f, option in zip(models, faulty, options, strict=True):
            normal = _stats(m, d.X[hold], d.times[hold])
            for on, off in _delays(tr, dt, int(hold.sum())):
                f1, far, sens = _score(normal, f, on, off, tr.target_far)
                out.append(Candidate(spec, option.get("variance"), m.n_components, on, off, f1, far, sens,
                                     tuple(option.items()), tuple(kind.fixed(m).items())))
    return sorted(out, key=lambda c: (-c.f1, c.far))


def final_limits(tr: Training, spec: InputSpec, c: Candidate, d: _Data) -> tuple[float, float, float]:
    """Limits for the model fitted on all rows ``d``: out-of-sample statistics of each half under
    a model fitted on the other half, pooled, at the target rate after the delays."""
    half = int(round(len(tr.ts) * (1 - tr.holdout)))
    cut = int(np.searchsorted(d.pos, half))  # the rows are in time: each half is a slice, not a copy
    a, b = slice(0, cut), slice(cut, len(d.pos))
    series = []
    for fit_on, judge in ((a, b), (b, a)):
        m = (tr.kind or PCA).fit(d.X[fit_on], tr, spec, **dict(c.fixed))
        series.append(_stats(m, d.X[judge], d.times[judge]))
    return empirical_limits(series, c.on_delay_s, c.off_delay_s, tr.target_far)


def calibrate(tr: Training) -> tuple[Any, Candidate | None, list[str]]:
    """The model to write, the candidate chosen (None: nothing searched) and lines saying so."""
    lines: list[str] = []
    candidates = search(tr)
    if not candidates:
        raise ValueError("too few rows to calibrate on: no candidate could be fitted and held out")
    c = candidates[0]
    lines.append(f"  inputs: {c.spec.describe()} ({len(c.spec.columns())} columns)")
    lines.append(f"  {(tr.kind or PCA).describe(c)}")
    lines.append(f"  on-delay {c.on_delay_s:g} s, off-delay {c.off_delay_s:g} s")
    lines.append(f"  hold-out with synthetic faults ({len(candidates)} candidates): F1 {c.f1:.3f}, "
                 f"false alarms {100 * c.far:.2f} % of normal rows, faulty rows detected {100 * c.sensitivity:.1f} %")
    d = _rows(c.spec, tr.columns, tr.ts)
    model = (tr.kind or PCA).fit(d.X, tr, c.spec, **dict(c.fixed))
    lt, ls, far = final_limits(tr, c.spec, c, d)
    lines.append(f"  limits at target false-alarm rate {100 * tr.target_far:g} % (out-of-sample, after the delays): "
                 f"T² {lt:.4g}, SPE {ls:.4g}; {100 * far:.2f} % of normal rows alarmed")
    return model.with_limits(lt, ls, c.on_delay_s, c.off_delay_s, tr.target_far), c, lines
