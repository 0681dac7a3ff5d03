"""Modbus driver benchmark: 10,000 tags over 80 Modbus TCP devices polled every second.

Reports requests per poll (planner vs a one-pass merge vs one request per tag) and the CPU the
polling process spends, per 1,000 values delivered: raw pymodbus clients issuing the very same
requests and decoding nothing, the plantwatch driver on pymodbus (``tcp_client = "pymodbus"``),
and the driver on its lean TCP client (drivers/modbus/lean.py), one request in flight (the
benchmark's pymodbus server answers only the first of several requests arriving in one TCP
segment, so ``max_in_flight`` above 1 is not measured here). Each includes plan + reads + vectorised decoding + SampleBatch except the
raw run. The devices are a pymodbus server in a separate process, so its CPU is not counted.
A run in which any side completed fewer polls than the schedule asks (less one per device for
the window's edges) is refused (exit 1) instead of printing figures.

    .venv/bin/python bench/modbus_bench.py [--devices 80] [--tags 10000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
from pymodbus.client import AsyncModbusTcpClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.expect import refuse_short  # noqa: E402
from drivers.base import DeviceSpec, TagSpec, cancel_and_wait  # noqa: E402
from drivers.modbus import ModbusDriver  # noqa: E402
from drivers.modbus.address import make_point  # noqa: E402
from drivers.modbus.planner import Limits, plan_points  # noqa: E402


def device_tags(dev: int, n: int, first_index: int) -> list[TagSpec]:
    """A realistic map for one PLC: analog floats in holding registers (with spare slots left
    between process units), scaled int16 inputs, status bits packed in words, and coils."""
    rng = np.random.default_rng(dev)
    tags: list[TagSpec] = []
    name = f"plc{dev:02d}"

    def add(address: str, type_: str, scale: float = 1.0) -> None:
        i = first_index + len(tags)
        tags.append(TagSpec(i, f"{name}.T{len(tags)}", name, address, type_, "CDAB" if type_ == "float32" else "ABCD",
                            scale))

    addr = 0
    while len(tags) < n * 0.5:  # floats, in groups of 8 with 0..24 spare registers after each
        for _ in range(8):
            add(f"hr:{addr}", "float32")
            addr += 2
        addr += int(rng.integers(0, 25))
    addr = 0
    while len(tags) < n * 0.75:  # int16 inputs, mostly adjacent
        add(f"ir:{addr}", "int16", 0.1)
        addr += 1 + int(rng.random() < 0.1) * 20
    word = 1000
    while len(tags) < n * 0.9:  # status bits in words
        for bit in range(16):
            if len(tags) >= n * 0.9:
                break
            add(f"hr:{word}.{bit}", "bool")
        word += 1
    addr = 0
    while len(tags) < n:
        add(f"co:{addr}", "bool")
        addr += 1
    return tags


def one_pass_count(points, limits: Limits) -> int:
    count = 0
    for area in ("co", "di", "ir", "hr"):
        start = reach = None
        for s, e in sorted((p.address, p.end) for p in points if p.area == area):
            if start is None or s - reach > limits.gap(area) or max(reach, e) - start > limits.size(area):
                count, start, reach = count + 1, s, e
            else:
                reach = max(reach, e)
    return count


def serve(port: int) -> None:
    from tests.modbus.server import start_server

    srv = start_server(port)
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the parent closes the pipe
    finally:
        srv.stop()


async def run_driver(devices, tagsets, seconds: float, **options) -> tuple[float, int, int]:
    devices = [replace(d, options={**d.options, **options}) for d in devices]
    drivers = [ModbusDriver(d, t) for d, t in zip(devices, tagsets, strict=True)]
    polls = errors = 0
    took: list[float] = []  # each poll, from its first request to its batch

    async def consume(drv):
        nonlocal polls, errors
        async for batch in drv.batches():
            polls += 1
            errors += batch.error is not None
            took.append(time.time() - float(batch.ts[0]))

    tasks = [asyncio.create_task(consume(d)) for d in drivers]
    await asyncio.sleep(2.0)  # connect and warm up outside the measurement
    polls = errors = 0
    took.clear()
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    n = polls
    await cancel_and_wait(tasks)
    for d in drivers:
        await d.close()
    return cpu, n, errors, float(np.median(took)) * 1e3


async def run_raw(devices, tagsets, seconds: float, **_) -> tuple[float, int, int]:
    """The same requests with bare pymodbus clients on the same 1 s schedule, no decoding."""
    plans = [ModbusDriver(d, t).requests for d, t in zip(devices, tagsets, strict=True)]
    polls = errors = 0

    async def loop(dev: DeviceSpec, requests):
        nonlocal polls, errors
        host, port = dev.url.removeprefix("tcp://").split(":")
        client = AsyncModbusTcpClient(host, port=int(port), timeout=dev.timeout_s, retries=0, reconnect_delay=0)
        await client.connect()
        calls = {1: client.read_coils, 2: client.read_discrete_inputs, 3: client.read_holding_registers,
                 4: client.read_input_registers}
        next_tick = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if next_tick > now:
                    await asyncio.sleep(next_tick - now)
                next_tick += dev.interval_s
                for r in requests:
                    resp = await calls[r.fc](r.start, count=r.count, device_id=dev.unit)
                    errors += resp.isError()
                polls += 1
        finally:
            client.close()

    tasks = [asyncio.create_task(loop(d, p)) for d, p in zip(devices, plans, strict=True)]
    await asyncio.sleep(2.0)
    polls = errors = 0
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    n = polls
    await cancel_and_wait(tasks)
    return cpu, n, errors, float("nan")


def pipelining(args: argparse.Namespace) -> None:
    """The lean client with 1 and ``--in-flight`` requests outstanding, against one libmodbus
    server process per device (50 float32 tags in hr:0-99, max_registers 10: 10 requests a poll)."""
    from agent.broker import free_port

    src = os.path.join(ROOT, "tests", "modbus", "libmodbus_server.c")
    with tempfile.TemporaryDirectory(prefix="pw-libmodbus-") as tmp:
        binary = os.path.join(tmp, "libmodbus_server")
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmodbus"], check=True, capture_output=True,
                               text=True).stdout
        subprocess.run(["gcc", "-O2", "-o", binary, src, *shlex.split(flags)], check=True)
        ports = [free_port() for _ in range(args.libmodbus)]
        logs = [os.path.join(tmp, f"{p}.log") for p in ports]
        servers = [subprocess.Popen([binary, "tcp", str(p)], stdout=open(log, "w"))  # noqa: SIM115
                   for p, log in zip(ports, logs, strict=True)]
        try:
            while not all(os.path.exists(log) and os.path.getsize(log) for log in logs):
                time.sleep(0.05)
            devices = [DeviceSpec(f"plc{d:02d}", "modbus", f"tcp://127.0.0.1:{p}", interval_s=args.interval,
                                  timeout_s=2.0, options={"max_registers": 10}) for d, p in enumerate(ports)]
            tagsets = [[TagSpec(d * 50 + i, f"plc{d:02d}.T{i}", f"plc{d:02d}", f"hr:{2 * i}", "float32") for i in range(50)]
                       for d in range(len(ports))]
            runs = {}
            for n in (1, args.in_flight):
                print(f"measuring lean, {n} in flight ...", file=sys.stderr, flush=True)
                runs[f"lean, {n} in flight"] = asyncio.run(run_driver(devices, tagsets, args.seconds, max_in_flight=n))
        finally:
            for srv in servers:
                srv.terminate()
                srv.wait(5)
    report(runs, len(ports), args.seconds, args.interval, 50)
    print("requests per poll cycle: 10 per device")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # cancelled reads at the end log errors
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=80)
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--port", type=int, default=15020)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--libmodbus", type=int, default=0, metavar="N",
                    help="instead: N devices, each its own libmodbus server (which queues requests), read by the "
                         "lean client with 1 and --in-flight requests outstanding")
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()
    if args.serve:
        serve(args.port)
        return
    if args.libmodbus:
        pipelining(args)
        return

    per = args.tags // args.devices
    devices, tagsets = [], []
    for d in range(args.devices):
        devices.append(DeviceSpec(f"plc{d:02d}", "modbus", f"tcp://127.0.0.1:{args.port}", unit=1 + d % 247,
                                  interval_s=args.interval, timeout_s=2.0))
        tagsets.append(device_tags(d, per, d * per))
    limits = Limits()
    planned = [plan_points([make_point(t.address, t.type, t.order)[0] for t in ts], limits) for ts in tagsets]
    one_pass = sum(one_pass_count([make_point(t.address, t.type, t.order)[0] for t in ts], limits) for ts in tagsets)
    n_req = sum(len(p) for p in planned)
    n_tags = sum(len(t) for t in tagsets)

    # decoding alone: one poll of every device, from buffers already filled
    drivers = [ModbusDriver(d, t) for d, t in zip(devices, tagsets, strict=True)]
    t0 = time.perf_counter()
    reps = 200
    for _ in range(reps):
        for drv in drivers:
            drv.decoder.values(drv._regs, drv._bits)
    decode_us = (time.perf_counter() - t0) / reps * 1e6

    server = subprocess.Popen([sys.executable, "-m", "bench.modbus_bench", "--serve", "--port", str(args.port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    runs = {}
    sides = (("raw pymodbus", run_raw, {}), ("driver, pymodbus", run_driver, {"tcp_client": "pymodbus"}),
             ("driver, lean", run_driver, {}))
    try:
        assert server.stdout.readline().strip() == "ready"
        for label, run, options in sides:
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            runs[label] = asyncio.run(run(devices, tagsets, args.seconds, **options))
    finally:
        server.stdin.close()
        server.wait(10)
    report(runs, args.devices, args.seconds, args.interval, per)
    print(f"requests per poll cycle: planner {n_req}, one-pass merge {one_pass}, one per tag {n_tags}")
    print(f"decode all {n_tags} tags once: {decode_us:.0f} us")


def report(runs: dict, devices: int, seconds: float, interval: float, per: int) -> None:
    """Refuse the run if a side fell short, else print each side's CPU per 1,000 values."""
    expected = devices * (seconds / interval - 1)
    refuse_short({label: (r[1] - r[2], expected) for label, r in runs.items()}, "device polls")

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"devices {devices}, tags {devices * per}, interval {interval} s, measured {seconds} s each")
    for label, (cpu, polls, err, took_ms) in runs.items():
        values = polls * per
        print(f"{label:28s}: CPU {cpu:6.2f} s in {seconds:.0f} s = {100 * cpu / seconds:5.1f} % of a core; "
              f"{polls} device polls, {err} errors; {1e3 * cpu / polls:.2f} ms CPU per device poll, "
              f"{1e9 * cpu / values:.0f} us per 1,000 values" + (f"; median poll {took_ms:.1f} ms" if took_ms == took_ms else ""))


if __name__ == "__main__":
    main()
