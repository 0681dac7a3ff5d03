"""Resident memory of the agent's start-up, stage by stage, in one process: the imports, the
config loaded (`agent.config.load`), the agent built (`Agent(cfg)`: engine, alarm manager,
history, trends, telemetry) and the driver objects (not connected). The config is bench/scale.py's:
``--tags`` float32 tags on Modbus TCP devices of 62 tags each, from a points file (``--toml``:
[[tags]] tables), each with a range, H/HH/L limits and the ewma, cusum and flatline detectors.
RSS is VmRSS after a full collection at each stage. ``--apart``: the config loaded as `plantwatch run`
loads it, in a child process (`agent.config_apart.load_apart`), the Config pickled back.

    .venv/bin/python -m bench.startup_memory --tags 10000
    .venv/bin/python -m bench.startup_memory --tags 100000 --toml --apart

Run as a module from the repository root.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import drivers
from agent.config import load
from agent.config_apart import load_apart
from agent.runtime import Agent
from bench.scale import PER_DEVICE, rss_kb, write_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--toml", action="store_true", help="[[tags]] tables instead of a points file")
    ap.add_argument("--apart", action="store_true", help="load the config in a child process, as `run` does")
    args = ap.parse_args()
    devices = math.ceil(args.tags / PER_DEVICE)
    folder = Path(tempfile.mkdtemp(prefix="plantwatch-mem-"))
    path = write_config(
        folder, list(range(1024, 1024 + devices)), devices * PER_DEVICE, "mqtt://127.0.0.1:1", args.toml
    )
    stages = [("imports", _rss())]
    started = time.perf_counter()
    cfg = (load_apart if args.apart else load)(path)
    took = time.perf_counter() - started
    stages.append(("config", _rss()))
    agent = Agent(cfg)
    stages.append(("agent", _rss()))
    objs = [drivers.load(d.driver)(d, [t.spec for t in cfg.device_tags(d.name)]) for d in cfg.devices]
    stages.append(("drivers", _rss()))
    how = "in a child process" if args.apart else "in the process"
    print(
        f"{len(cfg.tags)} tags on {len(cfg.devices)} devices ({'[[tags]]' if args.toml else 'points file'}), "
        f"loaded {how} in {took:.1f} s, Python {platform.python_version()}: RSS "
        + ", ".join(f"{name} {mb} MB" for name, mb in stages)
    )
    del agent, objs


def _rss() -> int:
    gc.collect()
    return rss_kb(os.getpid())[0] // 1024


if __name__ == "__main__":
    sys.exit(main())
