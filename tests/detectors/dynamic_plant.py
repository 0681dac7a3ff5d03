"""A small dynamic process for the CVA tests: autocorrelated tags related with transport delays.

``a`` is an AR(1) (phi 0.9), ``b`` follows ``a`` two ticks later (a pipe between two sensors),
``c`` another AR(1) (phi 0.8), ``d`` mixes ``a`` and ``c`` one tick later; the sensors add
small white noise. A static model sees ``a`` and ``b`` only loosely correlated (the delay), so
a small bias on ``b`` hides in their normal spread; the delayed relation holds it to the noise.
"""

from __future__ import annotations

import numpy as np

NAMES = ["a", "b", "c", "d"]
OFFSETS = np.array([50.0, 10.0, 5.0, 0.0])


def plant(n: int, seed: int, bias_at: int | None = None, bias: float = 0.6, tag: int = 1,
          drift_per_tick: float = 0.0) -> np.ndarray:
    """n rows of the four tags; from ``bias_at`` on, ``bias`` is added to sensor ``tag``;
    ``drift_per_tick`` moves the level of ``a`` (and so of what follows it) slowly."""
    warm = 5
    rng = np.random.default_rng(seed)
    total = n + warm
    a, c = np.zeros(total), np.zeros(total)
    ea, ec = rng.normal(0, 1, total), rng.normal(0, 1, total)
    for t in range(1, total):
        a[t] = 0.9 * a[t - 1] + ea[t]
        c[t] = 0.8 * c[t - 1] + ec[t]
    a += drift_per_tick * np.arange(total)
    b = 0.8 * np.roll(a, 2) + rng.normal(0, 0.1, total)
    d = 0.5 * np.roll(a, 1) + 0.5 * np.roll(c, 1) + rng.normal(0, 0.1, total)
    X = np.column_stack([a, b, c, d])[warm:] + OFFSETS
    if bias_at is not None:
        X[bias_at:, tag] += bias
    return X


def batches(X: np.ndarray, tags: list[int], t0: float = 1_800_000_000.0, rows: int = 256):
    """The rows as engine batches of ``rows`` ticks each, one second apart: (tag, value, ts, quality)."""
    n, m = X.shape
    for start in range(0, n, rows):
        block = X[start: start + rows]
        k = len(block)
        yield (np.tile(np.asarray(tags, dtype=np.int32), k), block.ravel().copy(),
               np.repeat(t0 + np.arange(start, start + k, dtype=np.float64), m), np.zeros(k * m, dtype=np.uint8))
