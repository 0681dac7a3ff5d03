"""The console's trend ring: its cost per batch and per tick at 10,000 tags, its memory, and the
time to answer ``GET /trend`` for one tag over the hour.

1. record: 10,000 tags polled every 1 s as 80 devices x 125 tags (80 batches a tick), and as one
   device of 10,000 tags (one batch a tick), through ``Trends.record`` (what the agent calls on
   the event loop for every batch) for ``--ticks`` seconds of synthetic time, the config's
   ``[trend]`` at its defaults (the memory cap widens the buckets at 10,000 tags). CPU time
   (``time.process_time``) per batch, per tick, and as a share of one core at 1 s polling; the
   ticks that move the head into a new bucket (emptying one bucket of every tag) are included.
2. statistics: one model's T2 and SPE (one value per tick each) through ``record_statistics``.
3. query: ``Trends.get("/trend", "tag=...&seconds=3600")`` once the ring is full, the JSON
   built (what the API answers), median of ``--queries`` runs.

    .venv/bin/python bench/trend.py [--tags 10000] [--ticks 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from agent.config import parse
from agent.trends import Trends
from detectors.base import Statistic
from drivers.base import SampleBatch

T0 = 1764374400.0  # 2025-11-29T00:00:00Z


def config(n: int, devices: int):
    per = n // devices
    return parse({
        "agent": {"plant": "bench", "data_dir": "/tmp/plantwatch-bench-trend"},
        "history": {"enabled": False},
        "devices": [{"name": f"d{d}", "driver": "modbus", "url": "tcp://127.0.0.1:5020", "unit": d + 1,
                     "interval_s": 1.0}
                    for d in range(devices)],
        "tags": [{"name": f"T{i:05d}", "device": f"d{i // per}", "address": f"hr:{i % per}", "type": "int16"}
                 for i in range(n)],
    })


def batches(n: int, devices: int) -> list[SampleBatch]:
    per = n // devices
    return [SampleBatch(f"d{d}", np.arange(d * per, (d + 1) * per, dtype=np.int32), np.zeros(per),
                        np.zeros(per), np.zeros(per, dtype=np.uint8)) for d in range(devices)]


def run_record(n: int, devices: int, ticks: int) -> tuple[float, Trends]:
    """CPU seconds of ``ticks`` ticks of ``devices`` batches through Trends.record."""
    trends = Trends(config(n, devices))
    rng = np.random.default_rng(1)
    template = batches(n, devices)
    values = 50 + rng.normal(0, 1, (ticks, n))
    spent = 0.0
    for k in range(ticks):
        now = T0 + k
        for b in template:  # a fresh batch per device and tick, as a driver yields it
            batch = SampleBatch(b.device, b.tag, values[k, b.tag], np.full(len(b.tag), now + 0.001 * (b.tag[0] % 97)),
                                b.quality)
            c0 = time.process_time()
            trends.record(batch)
            spent += time.process_time() - c0
    return spent, trends


def run_statistics(ticks: int) -> float:
    trends = Trends(config(100, 1))
    spent = 0.0
    for k in range(ticks):
        ts = np.array([T0 + k])
        stats = [Statistic("m", "T2", ts, np.array([1.0 + k % 7]), 9.2), Statistic("m", "SPE", ts, np.array([0.1]), 0.8)]
        c0 = time.process_time()
        trends.record_statistics(stats)
        spent += time.process_time() - c0
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--ticks", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queries", type=int, default=21)
    args = ap.parse_args()
    n, ticks = args.tags, args.ticks
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    for devices in (n // 125, 1):
        for r in range(args.repeat):
            spent, trends = run_record(n, devices, ticks)
            ring = trends.tags
            print(f"record {n} tags as {devices} batch(es)/tick, run {r + 1}: {spent / (ticks * devices) * 1e6:.1f} µs a "
                  f"batch, {spent / ticks * 1e3:.3f} ms a tick, {spent / ticks * 100:.3f} % of a core at 1 s polling "
                  f"(ring: {ring.slots} buckets of {ring.resolution_s:.3f} s, {ring.nbytes / n:.0f} bytes a tag, "
                  f"{ring.nbytes / 2**20:.1f} MiB)")
    for r in range(args.repeat):
        print(f"statistics, run {r + 1}: {run_statistics(ticks) / ticks * 1e6:.1f} µs a tick (one model, T2 and SPE)")
    spent, trends = run_record(n, n // 125, max(ticks, int(trends.cfg.trend.window_s) + 60))
    now = T0 + max(ticks, int(trends.cfg.trend.window_s) + 60)
    times = []
    for _ in range(args.queries):
        c0 = time.perf_counter()
        status, _, body = trends.get("/trend", "tag=T04321&seconds=3600", now)
        times.append(time.perf_counter() - c0)
        assert status == 200, body
    print(f"query one tag over the hour: {len(body)} bytes, median {statistics.median(times) * 1e3:.2f} ms "
          f"(min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f}) over {args.queries} runs")


if __name__ == "__main__":
    main()
