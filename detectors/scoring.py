"""Scoring alarms against labels: point-wise precision, recall, F1, FAR and MAR, detection
delay and false alarms per day (for ``plantwatch replay --labels``), and the SKAB changepoint
scores (NAB with a window to the right of each changepoint, profiles Standard, LowFP, LowFN).

The SKAB rules follow its published protocol: predicted changepoints are |diff(alarm)| with
the first sample equal to alarm[0]; each true changepoint opens a window [cp, cp + width]
(overlaps cut from the right window); the first predicted changepoint in a window is a true
positive scored on a tanh curve (earlier scores higher), predicted changepoints outside every
window are false positives, empty windows are misses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: NAB application profiles: (A_tp, A_fp, A_fn)
NAB_PROFILES = {"Standard": (1.0, -0.11, -1.0), "LowFP": (1.0, -0.22, -1.0), "LowFN": (1.0, -0.11, -2.0)}

SECONDS_PER_DAY = 86400.0


def _binary(x: Sequence | np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(bool)


@dataclass
class PointScores:
    """Pooled point-wise confusion counts; add scores of several files with ``+``."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    @classmethod
    def of(cls, labels, alarms) -> PointScores:
        y, p = _binary(labels), _binary(alarms)
        if y.shape != p.shape:
            raise ValueError(f"labels {y.shape} and alarms {p.shape} differ in shape")
        return cls(int((y & p).sum()), int((~y & ~p).sum()), int((~y & p).sum()), int((y & ~p).sum()))

    def __add__(self, other: PointScores) -> PointScores:
        return PointScores(self.tp + other.tp, self.tn + other.tn, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """TP / (TP + (FN + FP) / 2), the form SKAB uses (equal to 2PR / (P + R))."""
        d = self.tp + (self.fn + self.fp) / 2
        return self.tp / d if d else 0.0

    @property
    def far(self) -> float:
        """False alarm rate in percent of the normal samples."""
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate in percent of the anomalous samples."""
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0


def segments(x) -> list[tuple[int, int]]:
    """(start, stop) index ranges of the runs of true values."""
    b = np.concatenate([[False], _binary(x), [False]])
    edges = np.flatnonzero(b[1:] != b[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass
class EventScores:
    """Event view of alarms against labelled anomaly segments."""

    delays: list[float] = field(default_factory=list)  # first alarm in a segment - its start
    missed: int = 0  # labelled segments with no alarm inside
    false_alarms: int = 0  # alarm onsets outside every labelled segment
    seconds: float = 0.0  # time covered

    @classmethod
    def of(cls, labels, alarms, ts) -> EventScores:
        y, p = _binary(labels), _binary(alarms)
        ts = np.asarray(ts, dtype=np.float64)
        out = cls(seconds=float(ts[-1] - ts[0]) if len(ts) > 1 else 0.0)
        for start, stop in segments(y):
            hit = np.flatnonzero(p[start:stop])
            if hit.size:
                out.delays.append(float(ts[start + hit[0]] - ts[start]))
            else:
                out.missed += 1
        onsets = [s for s, _ in segments(p)]
        out.false_alarms = sum(1 for s in onsets if not y[s])
        return out

    def __add__(self, other: EventScores) -> EventScores:
        return EventScores(self.delays + other.delays, self.missed + other.missed,
                           self.false_alarms + other.false_alarms, self.seconds + other.seconds)

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else math.nan

    @property
    def false_alarms_per_day(self) -> float:
        return self.false_alarms * SECONDS_PER_DAY / self.seconds if self.seconds > 0 else math.nan


def summary(labels, alarms, ts) -> dict[str, float]:
    """The figures ``plantwatch replay --labels`` prints."""
    p, e = PointScores.of(labels, alarms), EventScores.of(labels, alarms, ts)
    return {
        "precision": p.precision,
        "recall": p.recall,
        "f1": p.f1,
        "far_pct": p.far,
        "mar_pct": p.mar,
        "mean_detection_delay_s": e.mean_delay,
        "false_alarms_per_day": e.false_alarms_per_day,
    }


# --- SKAB changepoint (NAB) scoring ------------------------------------------------------------


def changepoints(alarms) -> np.ndarray:
    """Predicted changepoints: |diff(alarm)|, the first sample being alarm[0]."""
    a = _binary(alarms).astype(np.int8)
    if a.size == 0:
        return a.astype(bool)
    return np.concatenate([a[:1], np.abs(np.diff(a))]).astype(bool)


def nab_windows(cp_times: Sequence[float], width: float) -> list[tuple[float, float]]:
    """[cp, cp + width] per true changepoint; an overlap is cut from the right window."""
    windows = [[float(t), float(t) + width] for t in cp_times]
    for i in range(len(windows) - 1):
        if windows[i][1] >= windows[i + 1][0]:
            windows[i + 1][0] = windows[i][1]
    return [(a, b) for a, b in windows]


def nab_curve(position: float, a_tp: float, a_fp: float) -> float:
    """Score of a detection at ``position`` in [0, 1] of its window: A_tp at the start falling
    along a tanh to A_fp at the end, sampled on 1000 points as SKAB does."""
    x = np.linspace(-np.pi / 2, np.pi / 2, 1000)
    event = min(int(position * 1000), 999)
    return float((a_tp - a_fp) / 2 * -np.tanh(x[event]) / np.tanh(np.pi / 2) + (a_tp - a_fp) / 2 + a_fp)


@dataclass
class NabCounts:
    """Per-profile raw, null and perfect NAB scores plus counts; add files with ``+``."""

    score: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    null: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    perfect: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    missed: int = 0
    fps: int = 0
    true_cps: int = 0
    delays: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, true_cp_times: Sequence[float], alarms, ts, width: float = 60.0) -> NabCounts:
        """Score one file: true changepoint times, the binary alarm series and its times."""
        ts = np.asarray(ts, dtype=np.float64)
        pred = ts[changepoints(alarms)]
        windows = nab_windows(true_cp_times, width)
        out = cls(true_cps=len(windows))
        if not windows:
            out.fps = int(pred.size)
        else:
            fp = int((pred < windows[0][0]).sum())
            hits: list[tuple[float, float, float]] = []
            for i, (a, b) in enumerate(windows):
                inside = pred[(pred >= a) & (pred <= b)]
                if inside.size:
                    hits.append((a, float(inside[0]), b))
                else:
                    out.missed += 1
                if i + 1 < len(windows):
                    fp += int(((pred > b) & (pred < windows[i + 1][0])).sum())
            fp += int((pred > windows[-1][1]).sum())
            out.fps = fp
            out.delays = [t - a for a, t, _ in hits]
            for name, (a_tp, a_fp, a_fn) in NAB_PROFILES.items():
                s = a_fp * fp + a_fn * out.missed
                s += sum(nab_curve((t - a) / (b - a), a_tp, a_fp) for a, t, b in hits)
                out.score[name] = s
                out.null[name] = len(windows) * a_fn
                out.perfect[name] = len(windows) * a_tp
        if not windows:
            for name, (_, a_fp, _) in NAB_PROFILES.items():
                out.score[name] = a_fp * out.fps
        return out

    def __add__(self, other: NabCounts) -> NabCounts:
        def add(a, b):
            return {k: a[k] + b[k] for k in a}

        return NabCounts(add(self.score, other.score), add(self.null, other.null),
                         add(self.perfect, other.perfect), self.missed + other.missed,
                         self.fps + other.fps, self.true_cps + other.true_cps, self.delays + other.delays)

    def nab(self) -> dict[str, float]:
        """100 * (S - S_null) / (S_perfect - S_null) per profile."""
        return {
            k: 100.0 * (self.score[k] - self.null[k]) / (self.perfect[k] - self.null[k])
            if self.perfect[k] != self.null[k] else math.nan
            for k in NAB_PROFILES
        }

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else math.nan
