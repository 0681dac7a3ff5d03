"""Computed tags: the cost of evaluating them, per computed tag per tick.

    .venv/bin/python bench/computed.py [--computed 1000] [--ticks 2000] [--repeat 5] [--kinds]

N computed tags over 2N read tags, a mix as a plant config has them: 50 % differences and
sums of two tags, 20 % comparisons and and/or (bool), 10 % mean/min/max of four tags, and 20 %
window functions over 60 s (rate, rolling_mean, rolling_max, rolling_median, 5 % each), read
tags sampled every second. Measured:

* **kernel**: ``Evaluator.evaluate`` on one batch holding every read tag once (one tick, as
  one device read delivers it) — the kernel call and its Python wrapper;
* **pipeline**: ``Pipeline.judge`` on the same batch with the computed tags under a limit
  alarm each: evaluation, merging the computed samples into the batch, and the engine's
  families over both (sensor over every tag, limit over the computed ones), minus the same
  batch judged without computed tags (the read tags' own detection);
* **replay**: ``Evaluator.evaluate`` on one batch of many ticks (``--ticks`` rows of every
  read tag, time-major, as replay feeds a CSV).

Best of ``--repeat`` runs, in ns per computed tag per tick.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from agent.config import parse
from agent.pipeline import Pipeline
from detectors.expr import Evaluator
from drivers.base import frozen_tags

T0 = 1_800_000_000.0


def expressions(n: int) -> list[str]:
    """n expressions over read tags R0 … R(2n-1), in the documented mix."""
    out = []
    for i in range(n):
        a, b, c, d = (f"R{(2 * i + k) % (2 * n)}" for k in range(4))
        kind = i % 20
        if kind < 10:
            out.append(f"{a} - {b}" if kind % 2 else f"{a} + {b} * 0.5")
        elif kind < 14:
            out.append(f"{a} > {b}" if kind < 12 else f"{a} > 1 and not {b} < -1")
        elif kind < 16:
            out.append(f"{('mean', 'max')[kind - 14]}({a}, {b}, {c}, {d})")
        else:
            out.append(f"{('rate', 'rolling_mean', 'rolling_max', 'rolling_median')[kind - 16]}({a}, 60)")
    return out


def config(n: int, computed: bool):
    tags = [{"name": f"R{i}", "device": "plc", "address": f"hr:{2 * i}"} for i in range(2 * n)]
    if computed:
        tags += [{"name": f"C{i}", "expr": e, "type": "float64", "alarms": {"h": 1e9}}
                 for i, e in enumerate(expressions(n))]
    return parse({"agent": {"plant": "640100000001", "data_dir": "/tmp/plantwatch-bench"},
                  "uplink": {"url": "mqtt://127.0.0.1:1883"},
                  "devices": [{"name": "plc", "driver": "modbus", "url": "tcp://127.0.0.1:5020"}],
                  "tags": tags})


KINDS = {"a - b": "{a} - {b}", "a > 1 and not b < -1": "{a} > 1 and not {b} < -1",
         "mean(a, b, c, d)": "mean({a}, {b}, {c}, {d})", "rate(a, 60)": "rate({a}, 60)",
         "rolling_mean(a, 60)": "rolling_mean({a}, 60)", "rolling_max(a, 60)": "rolling_max({a}, 60)",
         "rolling_median(a, 60)": "rolling_median({a}, 60)", "rolling_median(a, 600)": "rolling_median({a}, 600)"}


def by_kind(n: int, ticks: int, repeat: int) -> None:
    """The kernel on n computed tags all of one kind, each kind in turn."""
    from agent.expressions import compile_expr
    from agent.expressions import parse as parse_expr

    index = {f"R{i}": i for i in range(2 * n)}
    tag = frozen_tags(np.arange(2 * n))
    q = np.zeros(2 * n, dtype=np.uint8)
    values = np.random.default_rng(1).normal(size=(ticks, 2 * n))
    stamps = [np.full(2 * n, T0 + k) for k in range(ticks)]
    for kind, text in KINDS.items():
        exprs = [text.format(**{k: f"R{(2 * i + j) % (2 * n)}" for j, k in enumerate("abcd")}) for i in range(n)]
        programs = [compile_expr(parse_expr(e), index, 2 * n + i) for i, e in enumerate(exprs)]

        def run(programs=programs):
            ev = Evaluator(3 * n, programs)
            for k in range(ticks):
                ev.evaluate(tag, values[k], stamps[k], q)

        print(f"  {kind:24} {best(run, repeat) * 1e9 / (ticks * n):8.1f} ns per computed tag per tick")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--computed", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--kinds", action="store_true", help="also each kind of expression on its own")
    args = ap.parse_args()
    n, ticks = args.computed, args.ticks
    rng = np.random.default_rng(1)
    cfg, plain = config(n, True), config(n, False)
    tag = frozen_tags(np.arange(2 * n))  # a device's read plan
    q = np.zeros(2 * n, dtype=np.uint8)
    values = rng.normal(size=(ticks, 2 * n))

    stamps = [np.full(2 * n, T0 + k) for k in range(ticks)]

    def live(judge):
        def run():
            for k in range(ticks):
                judge(tag, values[k], stamps[k], q)
        return run

    per = 1e9 / (ticks * n)
    ev = Evaluator(len(cfg.tags), cfg.computed.programs, cfg.computed.intervals)
    kernel = best(live(ev.evaluate), args.repeat) * per
    with_computed = best(live(Pipeline(cfg, None).judge), args.repeat) * per
    without = best(live(Pipeline(plain, None).judge), args.repeat) * per
    rows_tag = np.tile(tag, ticks)
    rows_ts = np.repeat(T0 + np.arange(ticks, dtype=float), 2 * n)
    rows_q = np.zeros(rows_tag.shape[0], dtype=np.uint8)

    def replay():
        Evaluator(len(cfg.tags), cfg.computed.programs, cfg.computed.intervals).evaluate(
            rows_tag, values.ravel(), rows_ts, rows_q)

    batch = best(replay, args.repeat) * per
    print(f"{n} computed tags over {2 * n} read tags, {ticks} ticks, best of {args.repeat}; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"kernel, one tick per call:   {kernel:8.1f} ns per computed tag per tick ({kernel * n / 1e3:.1f} µs per tick)")
    print(f"pipeline, one tick per call: {with_computed - without:8.1f} ns per computed tag per tick "
          f"(judge {with_computed * n / 1e3:.1f} µs per tick with, {without * n / 1e3:.1f} µs without)")
    print(f"kernel, {ticks} ticks per call: {batch:8.1f} ns per computed tag per tick")
    if args.kinds:
        print(f"kernel, one tick per call, {n} computed tags of one kind (inputs sampled every second):")
        by_kind(n, min(ticks, 1000), args.repeat)


if __name__ == "__main__":
    main()
