"""OPC-UA driver cost: 10,000 monitored items changing at 1 Hz, the plantwatch driver against a bare
asyncua client subscribing to the same items.

    .venv/bin/python bench/opcua_bench.py [--nodes 10000] [--seconds 30] [--warmup 10]

Starts tests/opcua/counter_server.py (every node changes once a second), then runs each client in
its own process, one after the other, and measures that process only: CPU seconds (user + system)
over the measuring window after warm-up, and resident memory at its end. The bare client uses
asyncua's documented handler path (``datachange_notification``), the driver yields SampleBatches.
Prints one JSON line per client and the driver/bare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "opcua" / "counter_server.py"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run_driver(url: str, nodes: int, warmup: float, seconds: float) -> dict:
    from drivers.base import DeviceSpec, TagSpec
    from drivers.opcua import OpcUaDriver

    dev = DeviceSpec("bench", "opcua", url, interval_s=1.0, timeout_s=10.0,
                     options={"publishing_interval_ms": 1000, "sampling_interval_ms": 1000})
    tags = [TagSpec(i, f"C.{i}", "bench", f"ns=2;s=C.{i}") for i in range(nodes)]
    driver = OpcUaDriver(dev, tags)
    samples = 0
    start = time.monotonic()
    cpu0 = None
    async for batch in driver.batches():
        now = time.monotonic()
        if cpu0 is None and now - start >= warmup:
            cpu0, t0, samples = _cpu_s(), now, 0
        samples += len(batch)
        if cpu0 is not None and now - t0 >= seconds:
            break
    cpu = _cpu_s() - cpu0
    wall = time.monotonic() - t0
    await driver.close()
    return {"client": "plantwatch driver", "cpu_s": cpu, "wall_s": wall, "samples": samples}


async def _run_bare(url: str, nodes: int, warmup: float, seconds: float) -> dict:
    from asyncua import Client, ua

    class Handler:
        count = 0

        def datachange_notification(self, node, val, data):
            self.count += 1

    handler = Handler()
    client = Client(url, timeout=10)
    await client.connect()
    sub = await client.create_subscription(1000, handler)
    idx = 2
    for start in range(0, nodes, 1000):
        batch = [client.get_node(ua.NodeId(f"C.{i}", idx)) for i in range(start, min(start + 1000, nodes))]
        await sub.subscribe_data_change(batch, sampling_interval=1000, queuesize=2)
    await asyncio.sleep(warmup)
    cpu0, t0, c0 = _cpu_s(), time.monotonic(), handler.count
    await asyncio.sleep(seconds)
    cpu = _cpu_s() - cpu0
    wall = time.monotonic() - t0
    samples = handler.count - c0
    await client.disconnect()
    return {"client": "bare asyncua", "cpu_s": cpu, "wall_s": wall, "samples": samples}


def _child(args: argparse.Namespace) -> None:
    run = _run_driver if args.role == "driver" else _run_bare
    result = asyncio.run(run(args.url, args.nodes, args.warmup, args.seconds))
    result["rss_mb"] = _rss_mb()
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["cpu_per_s"] = result["cpu_s"] / result["wall_s"]
    print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=48400)
    ap.add_argument("--role", choices=("driver", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        _child(args)
        return
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(args.port), "--nodes", str(args.nodes), "--rate", "1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = server.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise SystemExit(f"counter server did not start: {ready}")
        url = ready[1]
        results = {}
        for role in ("bare", "driver"):
            out = subprocess.run(
                [sys.executable, __file__, "--role", role, "--url", url, "--nodes", str(args.nodes),
                 "--seconds", str(args.seconds), "--warmup", str(args.warmup)],
                check=True, capture_output=True, text=True,
            )
            results[role] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[role]))
        d, b = results["driver"], results["bare"]
        print(json.dumps({
            "cpu_ratio": round(d["cpu_per_s"] / b["cpu_per_s"], 3),
            "rss_ratio": round(d["rss_mb"] / b["rss_mb"], 3),
            "driver_samples_per_s": round(d["samples"] / d["wall_s"], 1),
            "bare_samples_per_s": round(b["samples"] / b["wall_s"], 1),
        }))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
