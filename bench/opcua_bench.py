"""OPC-UA driver cost: 10,000 monitored items changing at 1 Hz, the plantwatch driver against a bare
asyncua client subscribing to the same items.

    .venv/bin/python bench/opcua_bench.py [--nodes 10000] [--seconds 30] [--warmup 10]

Starts tests/opcua/counter_server.py (every node changes once a second), then runs each client in
its own process, one after the other, and measures that process only: CPU seconds (user + system)
over the measuring window after warm-up, and resident memory at its end. The bare client uses
asyncua's documented handler path (``datachange_notification``), the driver yields SampleBatches.
Prints one JSON line per client and the driver/bare ratios.

Each client's window is checked before any ratio is printed: every node's value is the server's
update number, so the values a client received tell how many changes the server made while it
watched and whether any was lost (holes in a node's counts, gaps in the notification sequence).
A client that received fewer than nodes x (seconds - 1) samples refuses the run (exit 1), naming
that client and whether the samples were lost or the server fell behind its rate.
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
RATE = 1  # updates of every node per second
sys.path.insert(0, str(ROOT))
from bench.expect import refuse_short  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Counts:
    """What a client received per node in the window. Every node's value is the server's update
    number, so a node's values must run k, k+1, ... with no hole and no repeat; the sum of the
    nodes' spans is what the server changed while the client watched."""

    def __init__(self, nodes: int):
        import numpy as np

        self.np = np
        self.n = np.zeros(nodes, dtype=np.int64)
        self.lo = np.full(nodes, np.inf)
        self.hi = np.full(nodes, -np.inf)

    def add(self, node, value) -> None:
        np = self.np
        np.add.at(self.n, node, 1)
        np.minimum.at(self.lo, node, value)
        np.maximum.at(self.hi, node, value)

    def summary(self) -> dict:
        np = self.np
        seen = self.n > 0
        span = (self.hi - self.lo + 1)[seen]
        got = self.n[seen]
        return {"server_changes": int(span.sum()), "holes": int(np.clip(span - got, 0, None).sum()),
                "repeats": int(np.clip(got - span, 0, None).sum()), "nodes_silent": int((~seen).sum())}


async def _run_driver(url: str, nodes: int, warmup: float, seconds: float) -> dict:
    import numpy as np

    from drivers.base import DeviceSpec, TagSpec
    from drivers.opcua import OpcUaDriver

    dev = DeviceSpec("bench", "opcua", url, interval_s=1.0, timeout_s=10.0,
                     options={"publishing_interval_ms": 1000, "sampling_interval_ms": 1000})
    tags = [TagSpec(i, f"C.{i}", "bench", f"ns=2;s=C.{i}") for i in range(nodes)]
    driver = OpcUaDriver(dev, tags)
    samples = 0
    start = time.monotonic()
    cpu0 = None
    seen = Counts(nodes)
    async for batch in driver.batches():
        now = time.monotonic()
        if cpu0 is None and now - start >= warmup:
            cpu0, t0, samples = _cpu_s(), now, 0
        if cpu0 is not None and now - t0 >= seconds:
            break
        ok = np.isfinite(batch.value)  # a COMM_FAIL batch (reconnecting) carries no sample
        samples += int(ok.sum())
        if cpu0 is not None:
            seen.add(batch.tag[ok], batch.value[ok])
    cpu = _cpu_s() - cpu0
    wall = time.monotonic() - t0
    stats = driver.stats
    await driver.close()
    return {"client": "plantwatch driver", "cpu_s": cpu, "wall_s": wall, "samples": samples, **seen.summary(),
            "missed_messages": stats.missed_messages, "server_overflows": stats.server_overflows,
            "client_overflows": stats.client_overflows}


async def _run_bare(url: str, nodes: int, warmup: float, seconds: float) -> dict:
    from asyncua import Client, ua

    class Handler:
        """Counts, and keeps (client handle, value) of the window's notifications for the
        hole check afterwards: two list appends, next to asyncua's own work per notification."""

        count = 0
        on = False
        handles: list[int] = []
        values: list[float] = []

        def datachange_notification(self, node, val, data):
            self.count += 1
            if self.on:
                self.handles.append(data.monitored_item.ClientHandle)
                self.values.append(val)

    handler = Handler()
    started = time.monotonic()
    client = Client(url, timeout=10)
    await client.connect()
    sub = await client.create_subscription(1000, handler)
    idx = 2
    for start in range(0, nodes, 1000):
        batch = [client.get_node(ua.NodeId(f"C.{i}", idx)) for i in range(start, min(start + 1000, nodes))]
        await sub.subscribe_data_change(batch, sampling_interval=1000, queuesize=2)
    subscribed = time.monotonic() - started
    await asyncio.sleep(warmup)
    cpu0, t0, c0 = _cpu_s(), time.monotonic(), handler.count
    handler.on = True
    await asyncio.sleep(seconds)
    cpu = _cpu_s() - cpu0
    wall = time.monotonic() - t0
    samples = handler.count - c0
    handler.on = False
    await client.disconnect()
    seen = Counts(nodes)
    if handler.handles:
        import numpy as np

        handles = np.array(handler.handles)
        _, node = np.unique(handles, return_inverse=True)  # handles are one per node
        seen.add(node, np.array(handler.values, dtype=float))
    return {"client": "bare asyncua", "cpu_s": cpu, "wall_s": wall, "samples": samples, "subscribe_s": subscribed,
            **seen.summary()}


def _child(args: argparse.Namespace) -> None:
    run = _run_driver if args.role == "driver" else _run_bare
    result = asyncio.run(run(args.url, args.nodes, args.warmup, args.seconds))
    result["rss_mb"] = _rss_mb()
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["cpu_per_s"] = result["cpu_s"] / result["wall_s"]
    print(json.dumps(result), flush=True)


def check_work(results: dict, nodes: int, seconds: float) -> None:
    """Refuse the run unless each client received every node's change of every second of its
    window (less one cycle for the window's edges), saying whose fault a shortfall is."""
    expected = nodes * (seconds * RATE - 1)
    why = {}
    for r in results.values():
        if r["holes"] or r.get("missed_messages") or r.get("server_overflows") or r.get("client_overflows"):
            why[r["client"]] = (f"samples lost: {r['holes']:,} holes in the nodes' counts, "
                                f"{r.get('missed_messages', 0)} notification messages missed")
        elif r["samples"] == 0:
            why[r["client"]] = "no notification arrived: the subscription never delivered"
        else:
            why[r["client"]] = (f"none lost: the server changed only {r['server_changes']:,} values while it watched, "
                                "so the server fell behind its rate")
    refuse_short({r["client"]: (r["samples"], expected) for r in results.values()}, "samples", why)


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
        [sys.executable, str(SERVER), "--port", str(args.port), "--nodes", str(args.nodes), "--rate", str(RATE)],
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
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                sys.stderr.write(out.stderr[-3000:])
                raise SystemExit(f"refused: the {role} client failed (exit {out.returncode}), no figure printed")
            results[role] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[role]))
        check_work(results, args.nodes, args.seconds)
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
