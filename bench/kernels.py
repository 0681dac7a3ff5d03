"""Detection kernel speed: nanoseconds per sample-update for every family at 10, 1,000 and
100,000 tags, beside tight C loops doing the same work (the floors) and river's per-sample API
(the usual Python way).

    .venv/bin/python bench/kernels.py [--samples N] [--repeat R]

Each measurement feeds one batch of whole ticks (every tag once per tick, GOOD quality,
values that rarely alarm) to ``Family.update``: one kernel call, Python wrapper included.
Its tags are one frozen array, as a driver passes its device's read plan at every read;
"checked" is the same with a fresh writeable tag array, whose ticks the kernel checks at every
batch. "1 tick/call" feeds a single tick per call, as a live device read does. "per-sample" is
the same batch with the kernel's whole-tick path switched off (what any other batch gets). Best
of R runs.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from detectors.families import (
    CusumFamily,
    EwmaFamily,
    FlatlineFamily,
    LimitFamily,
    RobustFamily,
    RocFamily,
    SensorFamily,
)
from drivers.base import frozen_tags

ROOT = Path(__file__).resolve().parent.parent

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



def build_floor() -> ctypes.CDLL:
    """Both floors in one library, built the way setup.py builds the kernels."""
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    subprocess.run(["gcc", "-O3", "-ffp-contract=off", "-shared", "-fPIC", "-I", str(ROOT / "ext"),
                    "-o", str(tmp / "floor.so"), str(ROOT / "bench" / "floors.c")], check=True)
    return ctypes.CDLL(str(tmp / "floor.so"))


ROUNDS = 5  # the kernel, per-sample and floor columns are timed in turns, this many times

_clock = [0.0]
_plans: dict[tuple[int, int], np.ndarray] = {}


def batch(n_tags: int, ticks: int, rng: np.random.Generator, frozen: bool = True):
    """``ticks`` whole ticks, one second apart, later than every batch made before: batches are
    fed in the order they are made, so time moves forward as in a plant (time going back
    would hold pending on/off-delays open and send their tags through the per-sample logic).

    The tags are one frozen array per shape, as a driver passes its device's read plan at
    every read (a family has such an array's ticks checked once); ``frozen=False`` gives a
    fresh writeable array, which the kernels check at every batch."""
    if not frozen:
        tag = np.tile(np.arange(n_tags, dtype=np.int32), ticks)
    elif (n_tags, ticks) in _plans:
        tag = _plans[n_tags, ticks]
    else:
        tag = _plans[n_tags, ticks] = frozen_tags(np.tile(np.arange(n_tags, dtype=np.int32), ticks))
    # written in the order SampleBatch.build writes them (np.zeros would leave the qualities'
    # pages unmapped until the kernel's first read, a cost no decoded read has)
    value = rng.normal(0.0, 1.0, n_tags * ticks)
    ts = np.repeat(_clock[0] + np.arange(ticks, dtype=np.float64), n_tags)
    _clock[0] += ticks
    return tag, value, ts, np.full(tag.size, 0, dtype=np.uint8)


def batches(make, repeat: int, cold: bool):
    """``repeat`` batches from ``make``, each made just before it is used, as a device read is
    decoded just before the engine judges it (its arrays come from the caches as far as they
    fit); with ``cold`` all made in advance, so that each is read from memory."""
    if cold:
        made = [make() for _ in range(repeat)]
        return lambda: made.pop(0)
    return make


def best(fn, repeat: int, prepare=None) -> float:
    """The fastest of ``repeat`` calls ``fn(prepare())`` (``fn()`` without ``prepare``), only
    ``fn`` timed, with the garbage collector collected first and off while timing (the river
    baselines leave ~10^5 objects behind; a collection pass over them inside a timed call
    measures the collector, not the call)."""
    gc.collect()
    gc.disable()
    try:
        times = []
        for _ in range(repeat):
            if prepare is None:
                t0 = time.perf_counter()
                fn()
            else:
                arg = prepare()
                t0 = time.perf_counter()
                fn(arg)
            times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return min(times)


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def batch_args(batch, n_tags: int, table) -> tuple:
    """A batch and the leading arguments of a floor function for it (the batch is kept with
    them: the arrays must outlive the call)."""
    tag, value, ts, q = batch
    return batch, [ctypes.c_long(len(tag)), ptr(tag), ptr(value), ptr(ts), ptr(q), ctypes.c_long(n_tags), table]


def ewma_half_width() -> float:
    """The benchmark ewma's control limits about its mean 0 (sigma 1): L * sqrt(lambda / (2 - lambda))."""
    params = FAMILIES["ewma"][1]
    return params["L"] * (params["lambda_"] / (2.0 - params["lambda_"])) ** 0.5


def floor_ns(lib, name: str, n_tags: int, make, repeat: int, whole_ticks: bool = False) -> float:
    """A floor on the benchmark's batches and parameters, best of ``repeat`` runs over fresh
    batches from ``make`` (a floor that re-read one cached batch would not be a fair floor):
    the per-sample C loop, or with ``whole_ticks`` the whole-tick floor (both in floors.c)."""
    table = np.arange(n_tags, dtype=np.int32)  # slot of each tag, or tag of each slot: the same here
    f = np.zeros
    given = FAMILIES[name][1]  # the family's parameters (mean 0 and sigma 1 for the charts)
    lvl, pend, since, gate = f(n_tags, np.int8), f(n_tags, np.int8), f(n_tags), f(n_tags)
    debounce = [ptr(lvl), ptr(pend), ptr(since)]
    ticks = [ptr(gate)] if whole_ticks else []
    if name == "ewma":
        lam, z = np.full(n_tags, given["lambda_"]), f(n_tags)
        ucl, lcl = np.full(n_tags, ewma_half_width()), np.full(n_tags, -ewma_half_width())
        if whole_ticks:  # one lambda for every tag, and the quiet bands of gate 0, as the kernel
            qlo, qhi = np.nextafter(lcl, -np.inf), np.nextafter(ucl, np.inf)
            state = [ptr(lam), ctypes.c_long(1), ptr(z), ptr(ucl), ptr(lcl), ptr(qlo), ptr(qhi), *ticks, *debounce]
        else:
            state = [ptr(lam), ptr(z), ptr(ucl), ptr(lcl), *debounce]
    elif name == "cusum":
        mean, isig, k, h = f(n_tags), np.ones(n_tags), np.full(n_tags, given["k"]), np.full(n_tags, given["h"])
        sp, sn = f(n_tags), f(n_tags)
        state = [ptr(mean), ptr(isig), ptr(k), ptr(h), ptr(sp), ptr(sn), *ticks, *debounce]
    elif name == "limit":
        hh, h, l, ll = (np.full(n_tags, given[x]) for x in ("hh", "h", "l", "ll"))  # noqa: E741
        db, raw = np.full(n_tags, given["deadband"]), f(n_tags, np.int8)
        hi, lo = h, l  # the limits entered first
        enter = [ptr(hi), ptr(lo)] if whole_ticks else []
        state = [ptr(hh), ptr(h), ptr(l), ptr(ll), ptr(db), *enter, *ticks, ptr(raw), *debounce]
    elif name == "roc":
        mx, win = np.full(n_tags, given["max_per_s"]), np.full(n_tags, given["window_s"])
        av, at = np.full(n_tags, np.nan), f(n_tags)
        raw = f(n_tags, np.int8)
        state = [ptr(mx), ptr(win), ptr(av), ptr(at), ptr(raw), *debounce]
    elif name == "robust":
        w = given["window"]
        thr, minmad, pos = np.full(n_tags, given["threshold"]), f(n_tags), f(n_tags, np.int64)
        # windows already full, as the family's after its warm-up (filling them is cheaper)
        ring = np.random.default_rng(3).normal(0.0, 1.0, (n_tags, w))
        srt, count = np.sort(ring, axis=1), np.full(n_tags, w, dtype=np.int64)
        state = [ctypes.c_long(w), ptr(thr), ptr(minmad), ptr(ring), ptr(srt), ptr(count), ptr(pos), *debounce]
    elif name == "flatline":
        eps, dur = np.full(n_tags, given["eps"]), np.full(n_tags, given["duration_s"])
        rv, rt = np.full(n_tags, np.nan), f(n_tags)
        state = [ptr(eps), ptr(dur), ptr(rv), ptr(rt), *debounce]
    else:
        lo, hi = np.full(n_tags, given["lo"]), np.full(n_tags, given["hi"])
        state = [ptr(lo), ptr(hi), *debounce]
    fn = getattr(lib, f"{name}_ticks" if whole_ticks else name)
    fn.restype = ctypes.c_long
    first = make()
    n = len(first[0])
    if whole_ticks and fn(*batch_args(first, n_tags, ptr(table))[1], *state) < 0:
        raise SystemExit(f"{name}: the benchmark batch is not whole ticks")
    # the whole-tick floor is given the read plan as checked, as a family keeps its kernel's
    # plan for a frozen tag array
    table_arg = None if whole_ticks else ptr(table)
    return best(lambda made: fn(*made[1], *state), repeat,
                prepare=lambda: batch_args(make(), n_tags, table_arg)) / n * 1e9


def river_ns(name: str, n_tags: int, samples: int, repeat: int) -> tuple[float, float]:
    """river's per-sample API, one object per tag: the update call alone, and the update with
    the alarm decision read back (ewma: ``get()`` against the same limits as ours; cusum:
    ``drift_detected``), which is the job our kernels do. Best of ``repeat`` runs, as the
    kernels' figures are: noise on a shared machine only ever adds time."""
    from river import drift, stats

    lam = FAMILIES["ewma"][1]["lambda_"]
    make = {"ewma": lambda: stats.EWMean(fading_factor=lam), "cusum": lambda: drift.PageHinkley()}[name]
    rng = np.random.default_rng(1)
    ticks = max(1, samples // n_tags)
    values = rng.normal(0.0, 1.0, (ticks, n_tags)).tolist()
    ucl = ewma_half_width()
    lcl = -ucl

    def update_only() -> float:
        detectors = [make() for _ in range(n_tags)]
        gc.collect()
        t0 = time.perf_counter()
        for row in values:
            for d, v in zip(detectors, row, strict=True):
                d.update(v)
        return time.perf_counter() - t0

    def job() -> float:
        detectors = [make() for _ in range(n_tags)]
        alarms = 0
        gc.collect()
        t0 = time.perf_counter()
        if name == "ewma":
            for row in values:
                for d, v in zip(detectors, row, strict=True):
                    d.update(v)
                    z = d.get()
                    if z > ucl or z < lcl:
                        alarms += 1
        else:
            for row in values:
                for d, v in zip(detectors, row, strict=True):
                    d.update(v)
                    if d.drift_detected:
                        alarms += 1
        return time.perf_counter() - t0

    n = ticks * n_tags
    return (min(update_only() for _ in range(repeat)) / n * 1e9,
            min(job() for _ in range(repeat)) / n * 1e9)


def pca_ticks_per_s(p: int, ticks: int, confidence: float, repeat: int) -> tuple[float, float]:
    """PcaFamily throughput over ``p`` variables: ticks per second, and condition changes per
    1,000 ticks (each change costs its contributions and a ConditionChange)."""
    from detectors.pca import PcaFamily
    from detectors.pca_model import fit

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


def measure(name: str, n_tags: int, args: argparse.Namespace, rng: np.random.Generator, lib, per_round: int) -> str:
    """One row of the table: the family ``name`` watching ``n_tags`` tags, every column."""
    cls, params = FAMILIES[name]
    ticks = max(1, args.samples // n_tags)
    fam = cls(n_tags, dict.fromkeys(range(n_tags), params))
    # warm-up on fresh values (repeating one batch would fill the robust windows with
    # copies, MAD 0, and time alarm handling instead of the kernel)
    for _ in range(32 // ticks + 1):
        fam.update(*batch(n_tags, ticks, rng))

    def make(frozen=True):
        return batch(n_tags, ticks, rng, frozen)

    def timed(repeat, frozen=True):
        # fresh values for every timed run: re-feeding one batch would fill the robust
        # windows with copies, whose median and MAD searches branch predictably
        fresh = batches(lambda: make(frozen), repeat, args.cold)
        return best(lambda b: fam.update(*b), repeat, prepare=fresh) / (n_tags * ticks) * 1e9

    kernel = fam.kernel
    has_ticks = hasattr(kernel, "fast_ticks")
    # the columns take turns, ROUNDS times: on a shared machine slow spells last
    # seconds, and a column timed all at once could fall into one where its floor did not
    ns = checked = per_sample = c_ticks = c_loop = float("inf")
    for _ in range(ROUNDS):
        taken = kernel.fast_ticks if has_ticks else 0
        ns = min(ns, timed(per_round))
        if has_ticks and kernel.fast_ticks - taken != ticks * per_round:
            raise SystemExit(f"{name}: the benchmark batches did not take the whole-tick path")
        if has_ticks:
            checked = min(checked, timed(per_round, frozen=False))
            kernel.fast = False
            per_sample = min(per_sample, timed(per_round))
            kernel.fast = True
            fresh = batches(make, per_round + 1, args.cold)  # one more for the check
            c_ticks = min(c_ticks, floor_ns(lib, name, n_tags, fresh, per_round, whole_ticks=True))
        fresh = batches(make, per_round + 1, args.cold)
        c_loop = min(c_loop, floor_ns(lib, name, n_tags, fresh, per_round))
    calls = max(1, min(20_000, args.samples // n_tags // 10))
    one, plan = batch(n_tags, calls, rng), batch(n_tags, 1, rng)[0]
    ticks_one = [(plan, *(a[k * n_tags:(k + 1) * n_tags] for a in one[1:])) for k in range(calls)]
    per_call = best(lambda: [fam.update(*x) for x in ticks_one], 1)
    ns_tick = per_call / (calls * n_tags) * 1e9
    cells = [f"{name:<10}{n_tags:>8,}{ns:>8.2f}",
             f"{checked:>8.2f}{per_sample:>11.2f}" if has_ticks else f"{'':>19}",
             f"{ns_tick:>12.1f}"]
    if has_ticks:
        cells.append(f"{c_ticks:>8.2f}{c_loop:>8.2f}{ns / c_ticks:>7.2f}{per_sample / c_loop:>7.2f}")
    else:  # a family without a whole-tick path: the batch is its per-sample loop
        cells.append(f"{'':>8}{c_loop:>8.2f}{'':>7}{ns / c_loop:>7.2f}")
    if name in ("ewma", "cusum"):
        r, job = river_ns(name, n_tags, args.river_samples, args.river_repeat)
        cells.append(f"{r:>7.0f}{r / ns:>6.0f}{job:>10.0f}{job / ns:>6.0f}")
    return "".join(cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200_000, help="samples per batch measurement")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--river-samples", type=int, default=100_000)
    ap.add_argument("--river-repeat", type=int, default=5)
    ap.add_argument("--cold", action="store_true",
                    help="make each round's batches in advance, so that every batch is read from memory")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lib = build_floor()
    per_round = max(1, args.repeat // ROUNDS)
    print(machine())
    made = "all made before each round (read from memory)" if args.cold else "each made just before it is judged"
    print(f"ns per sample-update; batch = {args.samples:,} samples of whole ticks, {made}; best of "
          f"{per_round * ROUNDS} ({ROUNDS} rounds of {per_round}, the columns taking turns)\n")
    print(f"{'family':<10}{'tags':>8}{'batch':>8}{'checked':>8}{'per-sample':>11}{'1 tick/call':>12}{'C ticks':>8}"
          f"{'C loop':>8}{'/ticks':>7}{'/loop':>7}{'river':>7}{'x':>6}{'river job':>10}{'x':>6}")
    for name in FAMILIES:
        for n_tags in (10, 1_000, 100_000):
            print(measure(name, n_tags, args, rng, lib, per_round), flush=True)
    print("\npca, 50 variables, 5 latent causes, batches of 20,000 ticks (one kernel call each):")
    for confidence in (0.9999, 0.99):
        rate, per_k = pca_ticks_per_s(50, 20_000, confidence, 7)
        print(f"  limits at {confidence}: {rate:>12,.0f} ticks/s   ({per_k:.1f} condition changes per 1,000 ticks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
