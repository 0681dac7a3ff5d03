"""End-to-end alarm latency: a value crosses its limit in the PLC -> the platform has the alarm.

The plant: ``--devices`` Modbus TCP devices (unit ids 1..N of one pymodbus server in a child
process, each device with its own register block) with ``--tags`` float32 tags in all, every
tag with H/HH limits, polled every ``--interval`` s by a real ``plantwatch run`` subprocess,
which publishes to a local mosquitto; the reference Receiver (validating every message) is the
platform. One tag at a time, at a random moment, is moved across its H limit and back; the
latency of each transition is from the write into the PLC's registers to the receiver's
callback. Agent CPU is read from /proc.

    .venv/bin/python -m bench.e2e_latency [--devices 80] [--tags 10000] [--interval 1.0] [--samples 100]

Run as a module from the repository root: the PLC and the config writer are the test suite's
(tests/ is not part of the installed package).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.broker import Mosquitto, free_port
from agent.receiver import Receiver, connect
from tests.conftest import to_toml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLANT = "640100000001"
BLOCK = 256  # registers per device


def serve(port: int) -> None:
    """The PLC side: one pymodbus server; stdin lines ``ADDR VALUE`` set a float32 and answer
    with the wall-clock time right after the registers changed."""
    from tests.modbus.server import start_server

    srv = start_server(port)
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            addr, value = line.split()
            srv.set_value(int(addr), float(value), type="float32")
            print(repr(time.time()), flush=True)
    finally:
        srv.stop()


def plant(devices: int, tags: int, port: int, broker_url: str, interval: float, data_dir: str) -> dict:
    per = tags // devices
    devs = [{"name": f"plc{d:02d}", "driver": "modbus", "url": f"tcp://127.0.0.1:{port}", "unit": 1 + d,
             "interval_s": interval, "timeout_s": 2.0} for d in range(devices)]
    tag_list = [{"name": f"plc{d:02d}.TI{i:03d}", "device": f"plc{d:02d}", "address": f"hr:{d * BLOCK + 2 * i}",
                 "type": "float32", "unit": "°C", "alarms": {"hh": 180.0, "h": 160.0, "deadband": 1.0}}
                for d in range(devices) for i in range(per)]
    return {
        "agent": {"plant": PLANT, "name": "bench", "data_dir": data_dir, "log_level": "WARNING"},
        "uplink": {"url": broker_url, "heartbeat_s": 30.0, "telemetry_interval_s": 60.0},
        "devices": devs,
        "tags": tag_list,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")), platform.processor())


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def _measure(args: argparse.Namespace, per: int, set_value, arrivals: dict, lock: threading.Condition,
             pid: int) -> tuple[dict[str, list[float]], float]:
    """Raise and clear ``args.samples`` random tags' alarms at the PLC; the latency of each
    transition to the platform, and the agent's CPU share meanwhile."""
    rng = random.Random(1)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    latencies: dict[str, list[float]] = {"active": [], "cleared": []}
    for _ in range(args.samples):
        d, i = rng.randrange(args.devices), rng.randrange(per)
        tag, addr = f"plc{d:02d}.TI{i:03d}", d * BLOCK + 2 * i
        for value, state in ((170.0, "active"), (120.0, "cleared")):
            time.sleep(rng.uniform(0, args.interval))  # a random phase against the polling
            t0 = set_value(addr, value)
            with lock:
                assert lock.wait_for(lambda k=(tag, state): k in arrivals, 30), f"no {state} alarm for {tag}"
                latencies[state].append(arrivals.pop((tag, state)) - t0)
    return latencies, (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)


def _report(args: argparse.Namespace, per: int, latencies: dict[str, list[float]], cpu: float, receiver) -> None:
    all_ms = [x * 1000 for v in latencies.values() for x in v]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.devices} devices, {per * args.devices} tags, polled every {args.interval:g} s; "
          f"{len(all_ms)} transitions ({args.samples} raised, {args.samples} cleared)")
    print(f"latency PLC -> platform: p50 {percentile(all_ms, 50):.0f} ms, p90 {percentile(all_ms, 90):.0f} ms, "
          f"p99 {percentile(all_ms, 99):.0f} ms, max {max(all_ms):.0f} ms, mean {statistics.mean(all_ms):.0f} ms")
    print(f"agent CPU while measuring: {cpu * 100:.1f} % of one core")
    print(f"invalid messages: {len(receiver.invalid)}; alarms received: {len(receiver.alarms)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=80)
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    assert args.tags // args.devices * 2 <= BLOCK
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.e2e_latency", "--serve", str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert server.stdout.readline().strip() == "ready"

    def set_value(addr: int, value: float) -> float:
        server.stdin.write(f"{addr} {value}\n")
        server.stdin.flush()
        return float(server.stdout.readline())

    per = args.tags // args.devices
    for d in range(args.devices):
        for i in range(per):
            set_value(d * BLOCK + 2 * i, 120.0)

    arrivals: dict[tuple[str, str], float] = {}
    lock = threading.Condition()

    class TimedReceiver(Receiver):
        def _alarm(self, doc):
            super()._alarm(doc)
            with lock:
                arrivals[(doc["tag"], doc["state"])] = time.time()
                lock.notify_all()

    with tempfile.TemporaryDirectory(prefix="pw-e2e-") as tmp, Mosquitto(workdir=Path(tmp) / "mosquitto") as broker:
        config = Path(tmp) / "plant.toml"
        config.write_text(to_toml(plant(args.devices, args.tags, port, broker.url, args.interval, str(Path(tmp) / "data"))))
        receiver = TimedReceiver(emit=lambda line: None)
        sub = connect(receiver, broker.url, PLANT)
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", str(config)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "agent.log", "wb"))  # noqa: SIM115
        try:
            assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 120), "agent did not come online"
            time.sleep(3 * args.interval)  # every device polled a few times: the engine is warm
            latencies, cpu = _measure(args, per, set_value, arrivals, lock, agent.pid)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            sub.loop_stop()
            server.stdin.close()
            server.wait(10)
    _report(args, per, latencies, cpu, receiver)


if __name__ == "__main__":
    main()
