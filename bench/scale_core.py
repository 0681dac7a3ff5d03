"""The agent's own per-second work at scale, without the network: what `plantwatch run` does with
each device's batch (engine, alarm manager, telemetry, history) and each telemetry snapshot,
for the config bench/scale.py generates (62 float32 tags per device, limits plus ewma, cusum
and flatline on every tag), fed with batches as the Modbus driver yields them.

Start-up is timed as `run` does it (config load, the Agent with its engine, outbox and uplink
objects, one driver object per device, not connected); then ``--seconds`` simulated seconds of
one batch per device each, on CPU time of this process (the machine's other load does not
count), and one telemetry snapshot (the message as `run` writes it). RSS at the end.

    .venv/bin/python -m bench.scale_core --tags 100000 [--seconds 20] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import drivers
from agent.config import load
from agent.runtime import Agent
from bench.e2e_latency import cpu_model
from bench.scale import BASE, PER_DEVICE, rss_kb, write_config
from drivers.base import SampleBatch, frozen_tags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=100_000, help="rounded up to whole devices of 62 tags")
    ap.add_argument("--seconds", type=int, default=20, help="simulated seconds of polling")
    ap.add_argument("--toml", action="store_true", help="the tags as [[tags]] tables instead of a points file")
    ap.add_argument("--profile", help="write a cProfile of the steady part here")
    args = ap.parse_args()
    devices = math.ceil(args.tags / PER_DEVICE)
    with tempfile.TemporaryDirectory(prefix="pw-scale-core-") as tmp:
        path = write_config(Path(tmp), list(range(1024, 1024 + devices)), devices * PER_DEVICE, "mqtt://127.0.0.1:1", args.toml)
        w0, c0 = time.perf_counter(), time.process_time()
        cfg = load(path)
        w1, c1 = time.perf_counter(), time.process_time()
        agent = Agent(cfg)
        objs = [drivers.load(d.driver)(d, [t.spec for t in cfg.device_tags(d.name)]) for d in cfg.devices]
        w2, c2 = time.perf_counter(), time.process_time()
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores (shared), load average {os.getloadavg()[0]:.1f}")
        print(f"{len(cfg.tags)} tags on {devices} devices ({'[[tags]] tables' if args.toml else 'points.csv'})")
        print(f"start-up: config {c1 - c0:.1f} s CPU ({w1 - w0:.1f} s wall), Agent + {len(objs)} drivers "
              f"{c2 - c1:.1f} s CPU ({w2 - w1:.1f} s wall)")
        tags = [frozen_tags(d.tag_indices) for d in objs]
        now = time.time()
        phase = [(np.arange(len(t)) + i * PER_DEVICE) % 997 * 0.37 for i, t in enumerate(tags)]
        profile = cProfile.Profile() if args.profile else None
        cpu = history = 0.0
        for s in range(args.seconds):
            # the values bench/scale.py's simulated PLCs answer
            batches = [SampleBatch.build(d.device.name, t, BASE + 5.0 * np.sin(ph + (now + s) * 4 * 0.05), now + s, 0)
                       for d, t, ph in zip(objs, tags, phase, strict=True)]
            c = time.process_time()
            if profile:
                profile.enable()
            for b, t in zip(batches, tags, strict=True):
                agent.handle(SampleBatch(b.device, t, b.value, b.ts, b.quality))  # the plan's frozen array
            if profile:
                profile.disable()
            cpu += time.process_time() - c
            if agent.history is not None:  # the history thread's commit of the second's points
                c = time.process_time()
                agent.history.write(agent.history.take(), now + s, False)
                history += time.process_time() - c
        c = time.process_time()
        size = len(agent.telemetry.payload())  # what run writes into the outbox
        snapshot = time.process_time() - c
        rss, hwm = rss_kb(os.getpid())
        print(f"batches: {cpu / args.seconds * 1000:.0f} ms CPU per second of polling "
              f"({100 * cpu / args.seconds:.1f} % of one core), {devices} batches a second")
        print(f"telemetry snapshot: {snapshot * 1000:.0f} ms CPU, {size / 1e6:.1f} MB "
              f"(every telemetry_interval_s, 60 s by default: {100 * snapshot / 60:.2f} % of one core)")
        print(f"history commits (a worker thread in `run`): {history / args.seconds * 1000:.0f} ms CPU per second")
        print(f"RSS {rss / 1024:.0f} MB (peak {hwm / 1024:.0f} MB)")
        if profile:
            profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
