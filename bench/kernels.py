"""Detection kernel speed: nanoseconds per sample-update for every family at 10, 1,000 and
100,000 tags, beside a tight C loop doing the same state update (the floor) and river's
per-sample API (the usual Python way).

    .venv/bin/python bench/kernels.py [--samples N] [--repeat R]

Each measurement feeds one batch of whole ticks (every tag once per tick, GOOD quality,
values that rarely alarm) to ``Family.update``: one kernel call, Python wrapper included.
"1 tick/call" feeds a single tick per call, as a live device read does. Best of R runs.
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.families import (  # noqa: E402
    CusumFamily,
    EwmaFamily,
    FlatlineFamily,
    LimitFamily,
    RobustFamily,
    RocFamily,
    SensorFamily,
)

FAMILIES = {
    "limit": (LimitFamily, {"hh": 4.5, "h": 4.0, "l": -4.0, "ll": -4.5, "deadband": 0.1,
                            "on_delay_s": 2.0, "off_delay_s": 5.0}),
    "roc": (RocFamily, {"max_per_s": 100.0, "window_s": 0.0}),
    "ewma": (EwmaFamily, {"lambda_": 0.2, "L": 6.0, "mean": 0.0, "sigma": 1.0}),
    "cusum": (CusumFamily, {"k": 0.5, "h": 50.0, "mean": 0.0, "sigma": 1.0}),
    "robust": (RobustFamily, {"window": 31, "threshold": 50.0}),
    "flatline": (FlatlineFamily, {"eps": 0.0, "duration_s": 60.0}),
    "sensor": (SensorFamily, {"lo": -50.0, "hi": 50.0}),
}

# The floor: the same struct-of-arrays update as the kernels (slot map, quality and NaN skip,
# the statistic, the limit test, the debounce state), with nothing else around it. Its CUSUM
# takes max(x, 0) the way the kernel does (maxsd): fmax would be a libm call per sum on x86-64
# and make the floor, not the kernel, the slow one.
C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
static inline double max0(double x) { return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(x), _mm_setzero_pd())); }
#else
static inline double max0(double x) { return fmax(x, 0.0); }
#endif
static inline int debounce(signed char raw, double t, signed char *lvl, signed char *pend,
                           double *since, double on, double off) {
    if (raw == *lvl) { *pend = raw; return 0; }
    if (raw != *pend) { *pend = raw; *since = t; }
    int a = raw > 0 ? raw : -raw, b = *lvl > 0 ? *lvl : -*lvl;
    double d = (raw != 0 && (*lvl == 0 || (raw > 0) != (*lvl > 0) || a > b)) ? on : off;
    if (t - *since >= d) { *lvl = raw; return 1; }
    return 0;
}
long ewma(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
          long n_map, const int *slot, const double *lam, double *z, const double *ucl,
          const double *lcl, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int t = tag[i];
        if (t < 0 || t >= n_map) continue;
        int s = slot[t];
        if (s < 0 || q[i] >= 2 || isnan(v[i])) continue;
        double zz = lam[s] * v[i] + (1.0 - lam[s]) * z[s];
        z[s] = zz;
        signed char r = zz > ucl[s] ? 1 : (zz < lcl[s] ? -1 : 0);
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
long cusum(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
           long n_map, const int *slot, const double *mean, const double *isig, const double *k,
           const double *h, double *sp, double *sn, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int t = tag[i];
        if (t < 0 || t >= n_map) continue;
        int s = slot[t];
        if (s < 0 || q[i] >= 2 || isnan(v[i])) continue;
        double x = (v[i] - mean[s]) * isig[s];
        double p = sp[s] + x - k[s], m = sn[s] - x - k[s];
        p = max0(p); m = max0(m);
        signed char r = p > h[s] ? 1 : (m > h[s] ? -1 : 0);
        if (r) { p = 0; m = 0; }
        sp[s] = p; sn[s] = m;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 10.0);
    }
    return ev;
}
long limit(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
           long n_map, const int *slot, const double *hh, const double *h, const double *l,
           const double *ll, const double *db, signed char *raw, signed char *lvl,
           signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int t = tag[i];
        if (t < 0 || t >= n_map) continue;
        int s = slot[t];
        if (s < 0 || q[i] >= 2 || isnan(v[i])) continue;
        double x = v[i];
        signed char rr = raw[s], hi = 0, lo = 0;
        if (x >= hh[s] || (rr >= 2 && x > hh[s] - db[s])) hi = 2;
        else if (x >= h[s] || (rr >= 1 && x > h[s] - db[s])) hi = 1;
        if (x <= ll[s] || (rr <= -2 && x < ll[s] + db[s])) lo = -2;
        else if (x <= l[s] || (rr <= -1 && x < l[s] + db[s])) lo = -1;
        signed char r = (hi && lo) ? (rr > 0 ? lo : hi) : (hi ? hi : lo);
        raw[s] = r;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 2.0, 5.0);
    }
    return ev;
}
"""


def build_floor() -> ctypes.CDLL:
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    (tmp / "floor.c").write_text(C_SOURCE)
    subprocess.run(["gcc", "-O3", "-shared", "-fPIC", "-o", str(tmp / "floor.so"), str(tmp / "floor.c")], check=True)
    return ctypes.CDLL(str(tmp / "floor.so"))


def batch(n_tags: int, ticks: int, rng: np.random.Generator):
    tag = np.tile(np.arange(n_tags, dtype=np.int32), ticks)
    value = rng.normal(0.0, 1.0, n_tags * ticks)
    ts = np.repeat(np.arange(ticks, dtype=np.float64), n_tags)
    return tag, value, ts, np.zeros(tag.size, dtype=np.uint8)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def floor_ns(lib, name: str, n_tags: int, b, repeat: int) -> float:
    tag, value, ts, q = b
    n = len(tag)
    slot = np.arange(n_tags, dtype=np.int32)
    f = np.zeros
    lvl, pend, since = f(n_tags, np.int8), f(n_tags, np.int8), f(n_tags)
    common = [ctypes.c_long(n), ptr(tag), ptr(value), ptr(ts), ptr(q), ctypes.c_long(n_tags), ptr(slot)]
    if name == "ewma":
        lam, z = np.full(n_tags, 0.2), f(n_tags)
        ucl, lcl = np.full(n_tags, 6.0 * np.sqrt(0.2 / 1.8)), np.full(n_tags, -6.0 * np.sqrt(0.2 / 1.8))
        args = [*common, ptr(lam), ptr(z), ptr(ucl), ptr(lcl), ptr(lvl), ptr(pend), ptr(since)]
    elif name == "cusum":
        mean, isig, k, h = f(n_tags), np.ones(n_tags), np.full(n_tags, 0.5), np.full(n_tags, 50.0)
        sp, sn = f(n_tags), f(n_tags)
        args = [*common, ptr(mean), ptr(isig), ptr(k), ptr(h), ptr(sp), ptr(sn), ptr(lvl), ptr(pend), ptr(since)]
    else:
        hh, h, l, ll = (np.full(n_tags, x) for x in (4.5, 4.0, -4.0, -4.5))  # noqa: E741
        db, raw = np.full(n_tags, 0.1), f(n_tags, np.int8)
        args = [*common, ptr(hh), ptr(h), ptr(l), ptr(ll), ptr(db), ptr(raw), ptr(lvl), ptr(pend), ptr(since)]
    fn = getattr(lib, name)
    fn.restype = ctypes.c_long
    return best(lambda: fn(*args), repeat) / n * 1e9


def river_ns(name: str, n_tags: int, samples: int) -> float:
    from river import drift, stats

    make = {"ewma": lambda: stats.EWMean(fading_factor=0.2), "cusum": lambda: drift.PageHinkley()}[name]
    detectors = [make() for _ in range(n_tags)]
    rng = np.random.default_rng(1)
    ticks = max(1, samples // n_tags)
    values = rng.normal(0.0, 1.0, (ticks, n_tags)).tolist()
    t0 = time.perf_counter()
    for row in values:
        for d, v in zip(detectors, row, strict=True):
            d.update(v)
    return (time.perf_counter() - t0) / (ticks * n_tags) * 1e9


def pca_ticks_per_s(p: int, ticks: int, confidence: float, repeat: int) -> tuple[float, float]:
    """PcaFamily throughput over ``p`` variables: ticks per second, and condition changes per
    1,000 ticks (each change costs its contributions and a ConditionChange)."""
    from detectors.pca import PcaFamily, fit

    rng = np.random.default_rng(2)
    loadings = rng.normal(size=(5, p))

    def rows(n):
        return rng.normal(size=(n, 5)) @ loadings + 0.3 * rng.normal(size=(n, p))

    model = fit(rows(4000), [f"v{i}" for i in range(p)], confidence=confidence)
    fam = PcaFamily.for_model(p, model, list(range(p)))
    tag = np.tile(np.arange(p, dtype=np.int32), ticks)
    quality = np.zeros(tag.size, dtype=np.uint8)
    runs = iter([(rows(ticks).ravel(), np.repeat(np.arange(k * ticks, (k + 1) * ticks, dtype=np.float64), p))
                 for k in range(repeat)])
    changes: list[int] = []

    def one():
        value, ts = next(runs)
        changes.append(len(fam.update(tag, value, ts, quality)))

    t = best(one, repeat)
    return ticks / t, 1000.0 * float(np.mean(changes)) / ticks


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown"
    import os

    return f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200_000, help="samples per batch measurement")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--river-samples", type=int, default=100_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lib = build_floor()
    print(machine())
    print(f"ns per sample-update; batch = {args.samples:,} samples of whole ticks; best of {args.repeat}\n")
    print(f"{'family':<10}{'tags':>8}{'batch':>9}{'1 tick/call':>13}{'C floor':>9}{'x floor':>9}{'river':>9}{'x faster':>10}")
    for name, (cls, params) in FAMILIES.items():
        for n_tags in (10, 1_000, 100_000):
            ticks = max(1, args.samples // n_tags)
            b = batch(n_tags, ticks, rng)
            fam = cls(n_tags, dict.fromkeys(range(n_tags), params))
            # warm-up on fresh values (repeating one batch would fill the robust windows with
            # copies, MAD 0, and time alarm handling instead of the kernel)
            for _ in range(32 // ticks + 1):
                fam.update(*batch(n_tags, ticks, rng))
            # fresh values for every timed run: re-feeding one batch would fill the robust
            # windows with copies, whose median and MAD searches branch predictably
            runs = iter([batch(n_tags, ticks, rng) for _ in range(args.repeat)])
            ns = best(lambda fam=fam, runs=runs: fam.update(*next(runs)), args.repeat) / len(b[0]) * 1e9
            calls = max(1, min(20_000, args.samples // n_tags // 10))
            one = batch(n_tags, calls, rng)
            ticks_one = [tuple(a[k * n_tags:(k + 1) * n_tags] for a in one) for k in range(calls)]
            per_call = best(lambda fam=fam, t=ticks_one: [fam.update(*x) for x in t], 1)
            ns_tick = per_call / (calls * n_tags) * 1e9
            c = floor_ns(lib, name, n_tags, b, args.repeat) if name in ("limit", "ewma", "cusum") else None
            r = river_ns(name, n_tags, args.river_samples) if name in ("ewma", "cusum") else None
            cells = [f"{name:<10}{n_tags:>8,}{ns:>9.2f}{ns_tick:>13.1f}"]
            cells.append(f"{c:>9.2f}{ns / c:>9.2f}" if c else f"{'':>18}")
            cells.append(f"{r:>9.0f}{r / ns:>10.0f}" if r else "")
            print("".join(cells), flush=True)
    print("\npca, 50 variables, 5 latent causes, batches of 20,000 ticks (one kernel call each):")
    for confidence in (0.9999, 0.99):
        rate, per_k = pca_ticks_per_s(50, 20_000, confidence, 7)
        print(f"  limits at {confidence}: {rate:>12,.0f} ticks/s   ({per_k:.1f} condition changes per 1,000 ticks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
