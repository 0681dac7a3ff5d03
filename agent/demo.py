"""``plantwatch demo``: a simulated plant, a broker, the agent and a receiver, all on loopback.

The plant: reactor R101's PLC whose temperature drifts up through H and HH and back every cycle
while its cooling-water flow sags, a dust collector's PLC that drops off the network for a while
(a ``comm`` alarm, then its recovery), and the gas detection system whose combustible-gas detector
reaches the GB/T 50493 first-level alarm late in each cycle. This module holds only that model;
agent/demo.toml says how each device is reached, and each device is its driver's simulator
(``Driver.simulator``) serving the model's values. The receiver prints what the provincial
platform would get: over MQTT through a broker, or (``transport`` http or tcp) as the reference
platform itself, listening on loopback and answering the agent's requests.

``plantwatch demo --plant NAME`` runs an industry template (agent/plants/NAME.toml) instead,
its devices moved to loopback the same way, against the scenario agent/plants/scenarios.py
plays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import drivers
from agent.broker import free_port, local_broker
from agent.config import Config, parse
from agent.receiver import Receiver, connect

CYCLE_S = 30.0


def _phase(t0: float, now: float) -> float:
    return ((now - t0) % CYCLE_S) / CYCLE_S


class Reactor:
    """R101: temperature rises over a cycle into H (160) and HH (180) and falls back."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.rng = random.Random(7)

    def values(self, now: float) -> dict[str, float]:
        phase = _phase(self.t0, now)
        # flat for the first fifth of the cycle, then one smooth excursion to 190 degC
        bump = math.sin(math.pi * (phase - 0.2) / 0.8) if phase > 0.2 else 0.0
        return {
            "R101.TI01": 120.0 + 70.0 * bump + self.rng.gauss(0, 0.2),
            "R101.PI01": 0.8 + 0.7 * bump + self.rng.gauss(0, 0.005),
            "R101.FI01": 18.0 - 12.0 * bump + self.rng.gauss(0, 0.1),
            "R101.JT01": 60.0 + 20.0 * bump,
        }


class DustCollector:
    """DC1: steady differential pressure; its PLC is unreachable from 40 % to 65 % of a cycle."""

    def __init__(self, t0: float):
        self.t0 = t0

    def values(self, now: float) -> dict[str, float]:
        return {"DC1.PDI01": float(int(800 + 50 * math.sin(now / 5)))}

    def online(self, now: float) -> bool:
        return not 0.4 <= _phase(self.t0, now) < 0.65


class GasDetection:
    """Detector GD101 (%LEL): a small leak late in every cycle."""

    def __init__(self, t0: float):
        self.t0 = t0

    def values(self, now: float) -> dict[str, float]:
        phase = _phase(self.t0, now)
        leak = math.sin(math.pi * (phase - 0.55) / 0.4) if 0.55 < phase < 0.95 else 0.0
        return {"GD101.LEL": round(3.0 + 27.0 * leak, 2)}


#: which part of the plant each device of agent/demo.toml is, as the banner names it
ROLES = {"r1-plc": "reactor PLC", "dc-plc": "dust collector PLC", "gas-dcs": "gas detection system"}


def _models(t0: float) -> dict[str, Reactor | DustCollector | GasDetection]:
    return {"r1-plc": Reactor(t0), "dc-plc": DustCollector(t0), "gas-dcs": GasDetection(t0)}


def _source(model) -> Callable[[], Mapping[str, float]]:
    return lambda: model.values(time.time())


async def _plant(cfg: Config, models: Mapping[str, Any], stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Each device of ``cfg`` served by its driver's simulator from ``models`` (device name ->
    model); a model that can go off the network takes its device with it, and one that tells a
    story prints it as it plays."""
    sims = {d.name: drivers.load(d.driver).simulator(d, [t.spec for t in cfg.device_tags(d.name)],
                                                     _source(models[d.name]))
            for d in cfg.devices}
    for sim in sims.values():
        await sim.start()
    ready.set()
    # a device whose model can go off the network is stopped and started again with it
    flaky = {name: m for name, m in models.items() if hasattr(m, "online")}
    up = dict.fromkeys(flaky, True)
    storytellers = list({id(m): m for m in models.values() if hasattr(m, "narrate")}.values())
    try:
        while not stop.is_set():
            for model in storytellers:
                for line in model.narrate(time.time()):
                    print(f"plant   | {line}", flush=True)
            for name, model in flaky.items():
                online = model.online(time.time())
                if online != up[name]:
                    await (sims[name].start() if online else sims[name].stop())
                    up[name] = online
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        for sim in sims.values():
            await sim.stop()


#: the provincial profile of ``plantwatch demo --profile provincial``: a 工贸 module's body, SM4-CBC
#: with an issued key and IV (made for the run), upper-case hex
DEMO_PROVINCIAL = {"gateway_code": "GW-DEMO-01", "cipher": "sm4-cbc", "key_file": "demo.key", "iv_file": "demo.iv",
                   "encoding": "HEX", "appid": "DEMO-0001", "envelope": '{"appid":"{appid}","data":"{payload}"}'}


#: over TCP: a provincial 危化 platform's envelope with the message id it answers with, AES-128-CBC
#: with a random IV in front, base64
DEMO_TCP = {"gateway_code": "GW-DEMO-01", "cipher": "aes-128-cbc", "key_file": "demo.key", "encoding": "base64",
            "appid": "DEMO-0001", "service_id": "realtime", "district_code": "640100",
            "envelope": '{"appId":"{appid}","serviceId":"{service}","dataId":"{uuid}","districtCode":"{district}",'
                        '"time":"{time14}","data":"{payload}"}'}
#: the reference platform's success answer, as the HTTP and TCP uplinks judge it
DEMO_SUCCESS = {"status": 200, "field": "code", "equals": "200"}


def demo_config(ports: Mapping[str, int], broker_url: str, data_dir: Path, profile: str = "json",
                plant: str | None = None) -> Config:
    """agent/demo.toml, or with ``plant`` that industry template (agent/plants/), with each device
    moved to its loopback port in ``ports`` (by name) and its uplink to ``broker_url``; with
    ``profile`` "provincial", ``DEMO_PROVINCIAL`` (over TCP, ``DEMO_TCP``) and its key and IV
    files in ``data_dir``."""
    if plant is None:
        text = resources.files("agent").joinpath("demo.toml").read_text(encoding="utf-8")
    else:
        from agent import plants

        text = plants.text(plant)
    data = tomllib.loads(text)
    data["agent"]["data_dir"] = str(data_dir)
    data["uplink"]["url"] = broker_url
    if profile == "provincial":
        for name in ("demo.key", "demo.iv"):
            _write_secret(data_dir / name, secrets.token_hex(16) + "\n")
        data["uplink"]["profile"] = "provincial"
        scheme = urlsplit(broker_url).scheme
        data["provincial"] = dict(DEMO_TCP if scheme == "tcp" else DEMO_PROVINCIAL)
        if scheme != "mqtt":
            data["provincial"]["success"] = dict(DEMO_SUCCESS)
    data["alarm_system"] = {"api_port": 0}  # several demos may run side by side
    for dev in data["devices"]:
        url = urlsplit(dev["url"])
        dev["url"] = url._replace(netloc=f"127.0.0.1:{ports[dev['name']]}").geturl()
    return parse(data, base=data_dir)


def run_demo(seconds: float = 60.0, broker: str | None = None, embedded: bool = False, profile: str = "json",
             transport: str = "mqtt", plant: str | None = None) -> int:
    """The demo; ``transport`` http or tcp speaks the provincial profile to the reference platform
    on loopback instead of going through a broker; ``plant`` runs that industry template against
    its scenario (agent/plants/scenarios.py) instead of the demo plant."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if transport != "mqtt":
        return _run_platform(seconds, transport, plant)
    started = None
    if broker is None:
        started = local_broker(prefer_mosquitto=not embedded)
        broker = started.url
        kind = type(started).__name__
        print(f"demo: broker {kind} at {broker}", flush=True)
    with tempfile.TemporaryDirectory(prefix="plantwatch-demo-") as tmp:
        ports: dict[str, int] = defaultdict(free_port)
        cfg = demo_config(ports, broker, Path(tmp), profile, plant)
        receiver = _receiver(cfg, seconds, ports, plant)
        client = connect(receiver, broker, cfg.agent.plant, cfg.uplink.topic_prefix)
        try:
            asyncio.run(_run(cfg, seconds, plant))
            receiver.wait(lambda r: cfg.agent.plant in r.plants and r.plants[cfg.agent.plant].online is False, 5)
        finally:
            client.loop_stop()
            client.disconnect()
            if started is not None:
                started.close()
    return _summary(receiver)


def _run_platform(seconds: float, transport: str, plant: str | None) -> int:
    from agent.platform import Platform

    url = f"http://127.0.0.1:{free_port()}/api/push" if transport == "http" else f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="plantwatch-demo-") as tmp:
        ports: dict[str, int] = defaultdict(free_port)
        cfg = demo_config(ports, url, Path(tmp), "provincial", plant)
        receiver = _receiver(cfg, seconds, ports, plant)
        with Platform(receiver, url) as platform:
            print(f"demo: the reference platform listens at {platform.url}", flush=True)
            asyncio.run(_run(cfg, seconds, plant))
            receiver.wait(lambda r: cfg.agent.plant in r.plants and r.plants[cfg.agent.plant].online is False, 5)
            print(f"demo: the platform answered {platform.requests} requests, took {platform.taken} messages",
                  flush=True)
    return _summary(receiver)


def _receiver(cfg: Config, seconds: float, ports: Mapping[str, int], plant: str | None) -> Receiver:
    """The platform's side, and the banner."""
    for name in {d.driver for d in cfg.devices}:  # the simulators' libraries too
        for logger in drivers.load(name).loggers:
            logging.getLogger(logger).setLevel(logging.CRITICAL)
    receiver = Receiver(emit=lambda line: print(f"platform| {line}", flush=True), profile=cfg.provincial,
                        plant=cfg.agent.plant)
    if cfg.provincial is not None:
        print(f"demo: {cfg.provincial.describe()}; the platform decrypts with the same key", flush=True)
    where = ", ".join(f"{ROLES.get(d.name, d.name) if plant is None else d.name} :{ports[d.name]}" for d in cfg.devices)
    if plant is None:
        cycle = f"temperature cycle {CYCLE_S:g} s"
    else:
        from agent.plants.scenarios import SCENARIOS

        cycle = f"template {plant}, scenario cycle {SCENARIOS[plant]().cycle_s:g} s"
    print(f"demo: plant {cfg.agent.plant}, {where}, {seconds:g} s ({cycle})", flush=True)
    return receiver


def _summary(receiver: Receiver) -> int:
    print("demo: what the platform received:")
    for line in receiver.summary():
        print(f"  {line}")
    ok = bool(receiver.alarms) and not receiver.invalid and not any(t.missing() for t in receiver.plants.values())
    return 0 if ok else 1


async def _run(cfg: Config, seconds: float, plant: str | None = None) -> None:
    from agent.runtime import Agent

    stop, ready = asyncio.Event(), asyncio.Event()
    if plant is None:
        models: Mapping[str, Any] = _models(time.time())
    else:
        from agent.plants.scenarios import SCENARIOS, Player

        player = Player(SCENARIOS[plant]())
        models = {d.name: player for d in cfg.devices}
    simulated = asyncio.create_task(_plant(cfg, models, stop, ready))
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
        await simulated


if __name__ == "__main__":
    sys.exit(run_demo(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))


def _write_secret(path: Path, text: str) -> None:
    """A key file only its owner reads (mode 0600 whatever the umask; a link there is not followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
