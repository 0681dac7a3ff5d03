"""Canonical variate analysis (CVA) of a dynamic process: fit from normal operation, save and
load as a versioned .npz file, and score sliding windows of ticks.

The past vector at tick t holds the autoscaled samples of the last ``lags`` ticks, newest first,
``p_t = [y_t, y_{t-1}, ..., y_{t-lags+1}]``; the future vector the next ``future`` ticks,
``f_t = [y_{t+1}, ..., y_{t+future}]``. The SVD of ``Spp^-1/2 Spf Sff^-1/2`` (Larimore 1990;
Russell, Chiang & Braatz 2000) gives the canonical directions ``U``; the first ``states``
canonical variates of the past are the states ``z = J p`` and the others the residual
``e = L p``. ``T2 = z'z`` (the state space moved beyond normal), ``Q = e'e`` (the past no longer
has the normal structure; Odiowei & Cao 2010). Both are whitened, so each has unit variance per
direction on the training data. Limits are set empirically on the training rows for a target
false-alarm rate of the alarm T2-or-Q (no distribution is assumed; Odiowei & Cao 2010 use a
kernel density estimate for the same reason).

Contributions by tag, over each tag's lagged entries: to Q reconstruction-based (Alcala & Qin
2009), the part of Q that goes away when the tag's past is replaced by its best estimate from
the other tags (the complete decomposition ``p_k (L'L p)_k`` splits Q of strongly related tags
into large opposite terms and can name the wrong one); to T2 the complete decomposition.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from detectors.base import ModelError
from detectors.modelfile import read_npz, save_npz

#: version of the .npz layout written by ``CvaModel.save``; 2 added the on/off delays
#: ``plantwatch train`` chose
FORMAT_VERSION = 2
#: canonical correlations at or above this are states when ``states`` is not fixed
STATE_CORRELATION = 0.5
#: relative ridge added to the covariance eigenvalues before whitening (perfectly collinear tags
#: would otherwise make the whitening infinite)
RIDGE = 1e-6


class CvaModelError(ModelError):
    """A CVA model file is missing, corrupt, of another version, or for other tags."""


@dataclass(frozen=True)
class CvaModel:
    """A CVA model of normal operation and its limits."""

    names: tuple[str, ...]
    mean: np.ndarray  # (m,)
    scale: np.ndarray  # (m,)
    projection: np.ndarray  # (m*lags, m*lags): rows [J; L], columns in past-vector order
    correlations: np.ndarray  # (min(m*lags, m*future),) canonical correlations, descending
    lags: int
    future: int
    states: int
    n_train: int
    target_far: float
    t2_limit: float
    q_limit: float
    on_delay_s: float = 0.0  # chosen by train; the config's on_delay_s/off_delay_s win when given
    off_delay_s: float = 0.0

    @property
    def width(self) -> int:
        return len(self.names) * self.lags

    @property
    def n_components(self) -> int:
        """The states (what ``plantwatch train`` reports as a model's components)."""
        return self.states

    def with_limits(self, t2_limit: float, q_limit: float, on_delay_s: float, off_delay_s: float,
                    target_far: float) -> CvaModel:
        """The model with the limits and delays ``plantwatch train`` calibrated."""
        return replace(self, t2_limit=t2_limit, q_limit=q_limit, on_delay_s=on_delay_s, off_delay_s=off_delay_s,
                       target_far=target_far)

    def past(self, Z: np.ndarray) -> np.ndarray:
        """Past vectors (n - lags + 1, m*lags) of autoscaled consecutive rows Z (n, m)."""
        n, m = Z.shape
        win = np.lib.stride_tricks.sliding_window_view(Z, self.lags, axis=0)  # (rows, m, lags), oldest first
        return np.ascontiguousarray(win[:, :, ::-1].transpose(0, 2, 1)).reshape(-1, m * self.lags)

    def statistics(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T2 and Q of past vectors P (n, m*lags): one matrix product for all rows, in the
        precision of P (the live path passes float32: twice the speed, and a relative error
        near 1e-6, far below the sampling error of the limits)."""
        S = P @ (self._projection32 if P.dtype == np.float32 else self.projection.T)
        SS = S * S
        return SS[:, : self.states].sum(axis=1, dtype=np.float64), SS[:, self.states:].sum(axis=1, dtype=np.float64)

    @cached_property
    def _projection32(self) -> np.ndarray:
        return np.ascontiguousarray(self.projection.T, dtype=np.float32)

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T2 and Q of consecutive raw rows X (n, m) in engineering units, for the rows from the
        ``lags``-th on (the first have no full past); the past vectors of CHUNK windows at a time."""
        X = np.asarray(X, dtype=np.float64)
        if len(X) < self.lags:
            return np.empty(0), np.empty(0)
        parts = [self.statistics(self.past((X[a:a + CHUNK + self.lags - 1] - self.mean) / self.scale))
                 for a in range(0, max(1, len(X) - self.lags + 1), CHUNK)]
        return np.concatenate([t for t, _ in parts]), np.concatenate([q for _, q in parts])

    def contributions(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-tag contributions of one past vector to T2 and to Q. T2: the complete
        decomposition ``p_k (J'J p)_k`` summed over the tag's lagged entries (it adds up to T2;
        the few states leave a reconstruction nothing to tell apart). Q: reconstruction-based,
        how much Q falls when the tag's lagged entries are replaced by their best estimate from
        the other tags (Alcala & Qin 2009), ``g_j' (M_jj)^+ g_j`` with ``M = L'L``, ``g = M p``."""
        m = len(self.names)
        c_t2 = (p * (self._quadratic[0] @ p)).reshape(self.lags, m).sum(axis=0)
        g = (self._quadratic[1] @ p).reshape(self.lags, m).T  # (m, lags): tag j's entries of g
        return c_t2, np.einsum("jk,jkl,jl->j", g, self._blocks, g)

    @cached_property
    def _quadratic(self) -> tuple[np.ndarray, np.ndarray]:
        """J'J and L'L, once per model."""
        J, L = self.projection[: self.states], self.projection[self.states:]
        return J.T @ J, L.T @ L

    @cached_property
    def _blocks(self) -> np.ndarray:
        """(m, lags, lags): the pseudo-inverse of each tag's block of L'L, once per model."""
        m = len(self.names)
        M = self._quadratic[1]
        out = np.empty((m, self.lags, self.lags))
        for j in range(m):
            ix = np.arange(self.lags) * m + j
            out[j] = np.linalg.pinv(M[np.ix_(ix, ix)], rcond=1e-10, hermitian=True)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically (a temp file renamed into place)."""
        save_npz(path, format="plantwatch.cva", version=FORMAT_VERSION,
                 names=np.array(self.names, dtype=np.str_), mean=self.mean, scale=self.scale,
                 projection=self.projection, correlations=self.correlations, lags=self.lags,
                 future=self.future, states=self.states, n_train=self.n_train,
                 target_far=self.target_far, t2_limit=self.t2_limit, q_limit=self.q_limit,
                 delays=np.array([self.on_delay_s, self.off_delay_s]))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CvaModel:
        """Read a model; every problem raises CvaModelError naming the file."""
        path = Path(path)

        def fail(problem: str) -> CvaModelError:
            return CvaModelError(f"{path}: {problem}")

        data = read_npz(path, "plantwatch.cva", FORMAT_VERSION, fail, "CVA", "CVA model format version")
        required = ("names", "mean", "scale", "projection", "correlations", "lags", "future", "states",
                    "n_train", "target_far", "t2_limit", "q_limit", "delays")
        missing = [k for k in required if k not in data]
        if missing:
            raise fail(f"missing arrays: {', '.join(missing)}")
        names = tuple(str(s) for s in data["names"].tolist())
        m, lags, states = len(names), int(data["lags"]), int(data["states"])
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "projection", "correlations")}
        want = {"mean": (m,), "scale": (m,), "projection": (m * lags, m * lags)}
        for key, shape in want.items():
            if arrays[key].shape != shape:
                raise fail(f"{key} has shape {arrays[key].shape}, expected {shape} for {m} tags and {lags} lags")
        if not 1 <= states < m * lags:
            raise fail(f"{states} states for a past of {m * lags}")
        if not all(np.isfinite(a).all() for a in arrays.values()) or not (arrays["scale"] > 0).all():
            raise fail("non-finite values or non-positive scale in the model")
        return cls(names=names, mean=arrays["mean"], scale=arrays["scale"], projection=arrays["projection"],
                   correlations=arrays["correlations"], lags=lags, future=int(data["future"]), states=states,
                   n_train=int(data["n_train"]), target_far=float(data["target_far"]),
                   t2_limit=float(data["t2_limit"]), q_limit=float(data["q_limit"]),
                   on_delay_s=float(data["delays"][0]), off_delay_s=float(data["delays"][1]))


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    d, V = np.linalg.eigh(S)
    d = np.maximum(d, 0.0) + RIDGE * max(float(d.mean()), 1e-300)
    return (V / np.sqrt(d)) @ V.T


def pairs(Z: np.ndarray, lags: int, future: int, segment: np.ndarray | None = None):
    """Past and future vectors of autoscaled rows Z, only from windows of ``lags + future``
    consecutive rows of one segment (rows of different segments are not consecutive in time)."""
    n, m = Z.shape
    span = lags + future
    win = np.lib.stride_tricks.sliding_window_view(Z, span, axis=0)  # (n - span + 1, m, span)
    if segment is not None:
        win = win[segment[: n - span + 1] == segment[span - 1:]]
    P = np.ascontiguousarray(win[:, :, lags - 1::-1].transpose(0, 2, 1)).reshape(-1, m * lags)
    F = np.ascontiguousarray(win[:, :, lags:].transpose(0, 2, 1)).reshape(-1, m * future)
    return P, F


def limits(t2: np.ndarray, q: np.ndarray, target_far: float) -> tuple[float, float]:
    """T2 and Q limits over which the rows (T2 > limit or Q > limit) are ``target_far`` of all:
    both at the same quantile of their own statistic, the quantile chosen for the union."""
    n = len(t2)
    rank = np.maximum(np.argsort(np.argsort(t2)), np.argsort(np.argsort(q))) / max(n - 1, 1)
    level = float(np.quantile(rank, 1.0 - target_far))
    return float(np.quantile(t2, level)), float(np.quantile(q, level))


def min_rows(m: int, lags: int, future: int) -> int:
    """The fewest rows that fit a model: twice as many windows as the past and future have entries."""
    return 2 * m * (lags + future) + lags + future - 1


#: windows per chunk when fitting: the past and future vectors of a chunk are built, used and dropped
CHUNK = 16384


def _chunks(Z: np.ndarray, lags: int, future: int, segment: np.ndarray | None):
    """(P, F) of consecutive chunks of windows: a long history never has all of them in memory."""
    span = lags + future
    for a in range(0, len(Z) - span + 1, CHUNK):
        rows = slice(a, a + CHUNK + span - 1)
        yield pairs(Z[rows], lags, future, None if segment is None else segment[rows])


def _covariances(Z: np.ndarray, lags: int, future: int, segment: np.ndarray | None):
    """Spp, Spf, Sff over every window, and the number of windows."""
    m = Z.shape[1]
    wp, wf = m * lags, m * future
    S = np.zeros((wp + wf, wp + wf))
    total = np.zeros(wp + wf)
    N = 0
    for P, F in _chunks(Z, lags, future, segment):
        PF = np.concatenate([P, F], axis=1)
        S += PF.T @ PF
        total += PF.sum(axis=0)
        N += len(PF)
    if N < 2:
        return None, None, None, N
    C = (S - np.outer(total, total) / N) / (N - 1)
    return C[:wp, :wp], C[:wp, wp:], C[wp:, wp:], N


# linear: validation, scaling, the canonical decomposition and the limits in the order of the method
def fit(X: np.ndarray, names: Sequence[str], lags: int = 3, future: int = 0, states: int = 0,
        target_far: float = 0.01, segment: np.ndarray | None = None) -> CvaModel:
    """Fit a CVA model from consecutive rows X (n samples, m tags) of normal operation, with a
    past of ``lags`` ticks (the family's option ``past``).

    ``future`` 0 is ``lags``; ``states`` 0 chooses the number of canonical correlations of at
    least STATE_CORRELATION (at least one). ``segment`` (n,) labels runs of consecutive rows: a
    window never spans two runs.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be (n, {len(names)}) for {len(names)} tags, got shape {X.shape}")
    n, m = X.shape
    future = int(future) or int(lags)
    if lags < 1:
        raise ValueError(f"past must be >= 1 for a CVA model, not {lags}")
    need = min_rows(m, lags, future)
    if n < need:
        raise ValueError(f"need at least {need} rows for {m} tags with past {lags} and future {future}, got {n}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; drop or fill those rows first")
    if not 0.0 < target_far < 0.5:
        raise ValueError(f"target_far must be in (0, 0.5), not {target_far}")
    mean = X.mean(axis=0)
    scale = X.std(axis=0, ddof=1)
    constant = [name for name, ok in zip(names, scale > 1e-12 * np.maximum(1.0, np.abs(mean)), strict=True) if not ok]
    if constant:
        raise ValueError(f"column {constant[0]!r} is constant over the {n} training rows: a CVA model cannot learn "
                         "how it moves (leave it out of the model, or train on rows where it varies)")
    Z = (X - mean) / scale
    Spp, Spf, Sff, N = _covariances(Z, lags, future, segment)
    if N < m * (lags + future):
        raise ValueError(f"only {N} windows of {lags + future} consecutive rows, need {m * (lags + future)}")
    Wp = _inv_sqrt(Spp)
    U, s, _ = np.linalg.svd(Wp @ Spf @ _inv_sqrt(Sff))
    width = m * lags
    k = int(states) if states else max(1, int((s >= STATE_CORRELATION).sum()))
    if not 1 <= k < width:
        raise ValueError(f"states must be in 1..{width - 1} for {m} tags with past {lags}, not {k}")
    projection = np.ascontiguousarray(U.T @ Wp)
    model = CvaModel(tuple(names), mean, scale, projection, s.copy(), int(lags), future, k, n,
                     float(target_far), np.inf, np.inf)
    stats = [model.statistics(P) for P, _ in _chunks(Z, lags, future, segment)]
    t2_lim, q_lim = limits(np.concatenate([t for t, _ in stats]), np.concatenate([q for _, q in stats]), target_far)
    return CvaModel(tuple(names), mean, scale, projection, s.copy(), int(lags), future, k, n, float(target_far),
                    t2_lim, q_lim)
