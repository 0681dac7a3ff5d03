"""Recursive re-centring of a PCA model for slowly drifting plants (``refit = "recursive"``).

A model fitted on a stretch of normal operation centres every input on that stretch's mean. A
plant that drifts slowly (a rig warming, fouling, wear) leaves that centre while still normal,
and T²/SPE then grow with the time since training: false alarms. Recursive PCA (Li, Yue,
Valle-Cervantes and Qin, *Recursive PCA for adaptive process monitoring*, J. Process Control 10,
2000) updates the model with exponential forgetting; Choi, Martin, Morris and Lee (*Adaptive
multivariate statistical process control for monitoring time-varying processes*, Ind. Eng. Chem.
Res. 45, 2006) update only with observations judged normal, so that a fault is not learnt. Here
the centre alone is updated (the correlation structure, scales and limits stay the model's):

    mean <- mean + (x - mean) / memory      after each *accepted* input row,

a row being accepted when both statistics are under their limits and the debounced alarm is
off after it: the centre never moves while the model is in alarm, nor towards a row over its
limit (an on-delay pending). ``memory`` (rows) defaults to the number of rows the model was
trained on: a new accepted row then weighs in the centre as a training row did, and the centre
forgets at the pace at which a window of the training's length would slide; a model trained on
a year of history hardly moves, one trained on minutes follows minutes of drift.

The result is that of a row-by-row loop (each row judged with the centre left by the rows before
it; equal up to rounding), however the rows are batched: runs of accepted rows are computed at once (the
centre's path by a first-order recursive filter), runs of rows not accepted with the centre
frozen.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from detectors import _pca
from detectors.cva import levels

Statistics = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: rows judged at once after a change of the centre's rule (doubling while none comes)
LOOK_AHEAD = 64


class Recentring:
    """The moving centre of one model and the judging of input rows against it."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, memory: float):
        self.mean = np.array(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.alpha = 1.0 / max(float(memory), 1.0)
        self.span = LOOK_AHEAD  # rows judged at once next (carried over from batch to batch)

    def _path(self, X: np.ndarray) -> np.ndarray:
        """The centre before each row of X and after the last (len(X) + 1 rows) when every row is
        accepted: c[i+1] = (1 - a) c[i] + a x[i]."""
        a = self.alpha
        from scipy.signal import lfilter  # scipy only where a model re-centres (its import is ~70 MB)

        after, _ = lfilter([a], [1.0, -(1.0 - a)], X, axis=0, zi=((1.0 - a) * self.mean)[None, :])
        return np.vstack([self.mean[None, :], after])

    def judge(self, stats: Statistics, X: np.ndarray, times: np.ndarray, debounce: _pca.SeriesDebounce,
              t2_limit: float, spe_limit: float):
        """Judge input rows X (times ``times``) as the live model does, moving the centre after
        each accepted row: (Z autoscaled rows, t2, spe, pos, prev, new) with the debounce's changes
        (positions into X) as ``SeriesDebounce.run`` gives them. Rows are looked at ``span`` at a
        time, the span doubling while the centre's rule holds over all of it and starting again at
        LOOK_AHEAD where it changes: rows past a change are judged again, so a stretch of frequent
        changes costs little more than one of none."""
        n = len(X)
        Z, t2, spe = np.empty_like(X), np.empty(n), np.empty(n)
        events: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        i, frozen, span = 0, False, self.span
        while i < n:
            end = min(n, i + span)
            path = np.broadcast_to(self.mean, (end - i + 1, X.shape[1])) if frozen else self._path(X[i:end])
            z = (X[i:end] - path[:-1]) / self.scale
            a, b = stats(z)
            raw = (a > t2_limit).astype(np.int8) + 2 * (b > spe_limit).astype(np.int8)
            saved = debounce.level, debounce.pending, debounce.since
            pos, prev, new = debounce.run(raw, times[i:end])
            accepted = (raw == 0) & (levels(saved[0], pos, new, end - i) == 0)
            stop = np.flatnonzero(accepted if frozen else ~accepted)
            k = end - i if not len(stop) else int(stop[0]) + (1 if frozen else 0)
            if k < end - i:  # judge again up to the row where the centre's rule changes
                debounce.level, debounce.pending, debounce.since = saved
                pos, prev, new = debounce.run(np.ascontiguousarray(raw[:k]), np.ascontiguousarray(times[i:i + k]))
            events.append((pos + i, prev, new))
            Z[i:i + k], t2[i:i + k], spe[i:i + k] = z[:k], a[:k], b[:k]
            if frozen and len(stop):  # the accepted row that ends the frozen run moves the centre
                self.mean += self.alpha * (X[i + k - 1] - self.mean)
            elif not frozen:
                self.mean = np.array(path[k])
            i, frozen = i + k, frozen != bool(len(stop))
            span = LOOK_AHEAD if len(stop) else min(2 * span, 1 << 20)
        self.span = span
        pos, prev, new = (np.concatenate(e) for e in zip(*events, strict=True)) if events else \
            (np.empty(0, np.intp), np.empty(0, np.int8), np.empty(0, np.int8))
        return Z, t2, spe, pos, prev, new
