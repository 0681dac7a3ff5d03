"""``plantwatch demo``: a simulated plant, a broker, the agent and a receiver, all on loopback.

The plant: reactor R101's PLC (Modbus TCP) whose temperature drifts up through H and HH and
back every cycle while its cooling-water flow sags, a dust collector's PLC that drops off the
network for a while (a ``comm`` alarm, then its recovery), and the gas detection system's
OPC-UA server whose combustible-gas detector reaches the GB/T 50493 first-level alarm late in
each cycle. The receiver prints what the provincial platform would get.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import struct
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

from agent.broker import free_port, local_broker
from agent.config import parse
from agent.receiver import Receiver, connect

CYCLE_S = 30.0


def float32_regs(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


class Reactor:
    """R101: temperature rises over a cycle into H (160) and HH (180) and falls back."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.rng = random.Random(7)

    def state(self, now: float) -> dict[str, float]:
        phase = ((now - self.t0) % CYCLE_S) / CYCLE_S
        # flat for the first fifth of the cycle, then one smooth excursion to 190 degC
        bump = math.sin(math.pi * (phase - 0.2) / 0.8) if phase > 0.2 else 0.0
        temp = 120.0 + 70.0 * bump + self.rng.gauss(0, 0.2)
        pressure = 0.8 + 0.7 * bump + self.rng.gauss(0, 0.005)
        flow = 18.0 - 12.0 * bump + self.rng.gauss(0, 0.1)
        jacket = 60.0 + 20.0 * bump
        return {"temp": temp, "pressure": pressure, "flow": flow, "jacket": jacket}


class DustCollector:
    """DC1: steady differential pressure; its PLC is unreachable from 40 % to 65 % of a cycle."""

    def __init__(self, t0: float):
        self.t0 = t0

    def online(self, now: float) -> bool:
        phase = ((now - self.t0) % CYCLE_S) / CYCLE_S
        return not 0.4 <= phase < 0.65


class GasDcs:
    """An asyncua server with detector GD101 (%LEL): a small leak late in every cycle."""

    def __init__(self, port: int, t0: float):
        self.port = port
        self.t0 = t0
        self.url = f"opc.tcp://127.0.0.1:{port}/plantwatch-demo"
        self.server = None
        self.node = None

    def lel(self, now: float) -> float:
        phase = ((now - self.t0) % CYCLE_S) / CYCLE_S
        leak = math.sin(math.pi * (phase - 0.55) / 0.4) if 0.55 < phase < 0.95 else 0.0
        return round(3.0 + 27.0 * leak, 2)

    async def start(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:plantwatch:demo")
        folder = await server.nodes.objects.add_folder(idx, "GasDetection")
        self.node = await folder.add_variable(ua.NodeId("GD101.LEL", idx), "GD101.LEL", 3.0,
                                              varianttype=ua.VariantType.Double)
        await server.start()
        self.server = server

    async def update(self, now: float) -> None:
        await self.node.write_value(self.lel(now))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


class SimPlc:
    """A pymodbus TCP server whose registers are refreshed from a model on every request."""

    def __init__(self, port: int, refresh):
        self.port = port
        self.refresh = refresh
        self.function_codes: set[int] = set()
        self.server = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        async def action(fc, start, address, count, registers, values):
            self.function_codes.add(fc)
            self.refresh(fc, registers)
            return None

        def bits() -> list:
            return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

        def regs() -> list:
            return [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)]

        # separate blocks per area, as real PLCs have them: hr:0 and ir:0 are different registers
        device = SimDevice(1, simdata=(bits(), bits(), regs(), regs()), action=action)
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        self.task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"simulated PLC did not start on port {self.port}")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None


async def _plant(reactor_port: int, dc_port: int, opcua_port: int, stop: asyncio.Event, ready: asyncio.Event) -> None:
    t0 = time.time()
    reactor, dc = Reactor(t0), DustCollector(t0)
    gas = GasDcs(opcua_port, t0)

    def reactor_regs(fc: int, registers: list[int]) -> None:
        s = reactor.state(time.time())
        if fc == 3:
            registers[0:6] = float32_regs(s["temp"]) + float32_regs(s["pressure"]) + float32_regs(s["flow"])
        elif fc == 4:
            registers[0] = int(round(s["jacket"] * 10)) & 0xFFFF  # int16, 0.1 degC

    def dc_regs(fc: int, registers: list[int]) -> None:
        if fc == 3:
            registers[0] = int(800 + 50 * math.sin(time.time() / 5))

    r = SimPlc(reactor_port, reactor_regs)
    d = SimPlc(dc_port, dc_regs)
    await r.start()
    await d.start()
    await gas.start()
    ready.set()
    try:
        while not stop.is_set():
            await gas.update(time.time())
            online = dc.online(time.time())
            if online and d.server is None:
                await d.start()
            elif not online and d.server is not None:
                await d.stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await r.stop()
        await d.stop()
        await gas.stop()


def demo_config(reactor_port: int, dc_port: int, opcua_port: int, broker_url: str, data_dir: Path):
    text = resources.files("agent").joinpath("demo.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    data["agent"]["data_dir"] = str(data_dir)
    data["uplink"]["url"] = broker_url
    data["alarm_system"] = {"api_port": 0}  # several demos may run side by side
    for dev in data["devices"]:
        if dev["driver"] == "opcua":
            dev["url"] = f"opc.tcp://127.0.0.1:{opcua_port}/plantwatch-demo"
        else:
            port = reactor_port if dev["name"] == "r1-plc" else dc_port
            dev["url"] = f"tcp://127.0.0.1:{port}"
    return parse(data, base=data_dir)


def run_demo(seconds: float = 60.0, broker: str | None = None, embedded: bool = False) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "pymodbus", "asyncua"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    started = None
    if broker is None:
        started = local_broker(prefer_mosquitto=not embedded)
        broker = started.url
        kind = type(started).__name__
        print(f"demo: broker {kind} at {broker}", flush=True)
    with tempfile.TemporaryDirectory(prefix="plantwatch-demo-") as tmp:
        reactor_port, dc_port, opcua_port = free_port(), free_port(), free_port()
        cfg = demo_config(reactor_port, dc_port, opcua_port, broker, Path(tmp))
        receiver = Receiver(emit=lambda line: print(f"platform| {line}", flush=True))
        client = connect(receiver, broker, cfg.agent.plant, cfg.uplink.topic_prefix)
        print(f"demo: plant {cfg.agent.plant}, reactor PLC :{reactor_port}, dust collector PLC :{dc_port}, "
              f"gas detection OPC-UA :{opcua_port}, "
              f"{seconds:g} s (temperature cycle {CYCLE_S:g} s)", flush=True)
        try:
            asyncio.run(_run(cfg, reactor_port, dc_port, opcua_port, seconds))
            receiver.wait(lambda r: r.status.get(cfg.agent.plant, {}).get("online") is False, 5)
        finally:
            client.loop_stop()
            client.disconnect()
            if started is not None:
                started.close()
    print("demo: what the platform received:")
    for line in receiver.summary():
        print(f"  {line}")
    ok = bool(receiver.alarms) and not receiver.invalid and not any(t.missing() for t in receiver.plants.values())
    return 0 if ok else 1


async def _run(cfg, reactor_port: int, dc_port: int, opcua_port: int, seconds: float) -> None:
    from agent.runtime import Agent

    stop, ready = asyncio.Event(), asyncio.Event()
    plant = asyncio.create_task(_plant(reactor_port, dc_port, opcua_port, stop, ready))
    await asyncio.wait_for(ready.wait(), 20)
    agent_stop = asyncio.Event()
    agent = asyncio.create_task(Agent(cfg).run(agent_stop))
    try:
        await asyncio.sleep(seconds)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        agent_stop.set()
        await agent
        stop.set()
        await plant


if __name__ == "__main__":
    sys.exit(run_demo(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))
