"""CVA model speed: ticks per second judged by the family, per tick at one tick per call, and
the time to fit (`plantwatch train`'s work and one moving-window re-fit).

    .venv/bin/python bench/cva.py [--tags 50] [--past 5] [--train-rows 1000000] [--repeat 5]

The tags follow a few latent AR(1) causes (phi 0.95) with sensor noise: a dynamic process with
the correlations CVA models. Batches are whole ticks, every tag once per tick, GOOD quality,
the tags one frozen array (as a driver passes its read plan). Best of ``repeat`` runs.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from detectors.cva import CvaFamily
from detectors.cva_model import fit
from drivers.base import frozen_tags

T0 = 1_800_000_000.0


def process(n: int, m: int, seed: int, causes: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 1, (n, causes))
    latent = np.empty((n, causes))
    latent[0] = e[0]
    for t in range(1, n):
        latent[t] = 0.95 * latent[t - 1] + e[t]
    mix = rng.normal(0, 1, (causes, m))
    return latent @ mix + rng.normal(0, 0.3, (n, m)) + 100.0


def batch(X: np.ndarray, start: int):
    n, m = X.shape
    tags = frozen_tags(np.tile(np.arange(m, dtype=np.int32), n))
    ts = np.repeat(T0 + start + np.arange(n, dtype=np.float64), m)
    return tags, np.ascontiguousarray(X.ravel()), ts, np.zeros(n * m, dtype=np.uint8)


def ticks_per_s(model, X: np.ndarray, rows: int, repeat: int, **params) -> tuple[float, int]:
    """Best rate over ``repeat`` passes, feeding ``rows`` ticks per call; changes per pass."""
    best, changes = 0.0, 0
    for _ in range(repeat):
        fam = CvaFamily.for_model(X.shape[1], model, list(range(X.shape[1])), **params)
        batches = [batch(X[a: a + rows], a) for a in range(0, len(X), rows)]
        t = time.perf_counter()
        changes = sum(len(fam.update(*b)) for b in batches)
        best = max(best, len(X) / (time.perf_counter() - t))
    return best, changes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--past", type=int, default=5)
    ap.add_argument("--train-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    m, past = args.tags, args.past
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}, python {platform.python_version()}")
    X = process(args.train_rows, m, 1)
    t = time.perf_counter()
    model = fit(X, [f"T{i}" for i in range(m)], lags=past)
    print(f"fit {len(X):,} rows x {m} tags, past {past}: {time.perf_counter() - t:.1f} s "
          f"({model.states} states)")
    W = X[:5000]
    t = time.perf_counter()
    fit(W, model.names, lags=past, states=model.states)
    print(f"one moving-window re-fit (5,000 rows): {1e3 * (time.perf_counter() - t):.0f} ms")
    V = process(100_000, m, 2)
    rate, changes = ticks_per_s(model, V, 20_000, args.repeat)
    print(f"batches of 20,000 ticks: {rate:,.0f} ticks/s ({1e6 / rate:.2f} us/tick; {changes} changes)")
    rate, _ = ticks_per_s(model, V[:20_000], 1, max(1, args.repeat // 2))
    print(f"1 tick per call: {rate:,.0f} ticks/s ({1e6 / rate:.1f} us/tick)")
    rate, _ = ticks_per_s(model, V, 20_000, args.repeat, refit="moving-window", refit_window=5000,
                          refit_every=1000, on_delay_s=3.0)
    print(f"batches of 20,000 ticks, moving window 5,000 re-fitted every 1,000: {rate:,.0f} ticks/s")


if __name__ == "__main__":
    main()
