"""Scale benchmark: one agent polling N float32 tags on simulated Modbus TCP PLCs every second.

The PLCs are ``ceil(N / 62)`` Modbus TCP devices (one port each, 62 float32 tags = 124 holding
registers, one read request per poll), served by ``--sim-procs`` simulator processes of their
own, so the agent's figures are its own. The agent is a real ``plantwatch run`` process with a
generated config (``[agent] points_file`` CSV, or ``--toml`` for [[tags]] tables): 1 s polling,
a range (0-500, so the history's swinging door has its default error bound of 0.2 % of it),
H/HH/L limits and the ewma, cusum and flatline detectors on every tag, publishing to a real
mosquitto. Every tag's value moves every second (a slow sine, so flatline never fires and the
limits are never reached); on a schedule known to the simulators, one tag at a time is held above
its H limit for ``--hold`` s. Alarm latency is from the scheduled crossing time (the simulator
answers every read after it with the high value) to the alarm's arrival at a subscriber on the
broker, and likewise for the clearing.

Measured: start-up (process start to every device read once = first full poll; and to the
agent's first status message), agent CPU in % of one core from /proc/PID/stat over the steady
window, agent RSS (VmRSS at the end, VmHWM), polls achieved (reads the simulators answered /
devices x window), alarm latency p50/p99. Simulator CPU is reported too: on a small machine the
simulators compete with the agent for the cores.

    .venv/bin/python -m bench.scale --tags 10000
    .venv/bin/python -m bench.scale --tags 100000 --sim-procs 6 --steps 100

Run as a module from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from agent.broker import Mosquitto
from bench.e2e_latency import cpu_model, cpu_seconds, percentile

ROOT = Path(__file__).resolve().parents[1]
PLANT = "640100000001"
PER_DEVICE = 62  # float32 tags per device: 124 registers, one FC3 request
H, HH, HIGH, BASE = 160.0, 180.0, 170.0, 100.0


def tag_name(g: int) -> str:
    return f"D{g // PER_DEVICE:04d}.TI{g % PER_DEVICE:02d}"


def crossing_tag(k: int, tags: int) -> int:
    """The tag held high at step ``k`` (the same in the simulators and the parent)."""
    return (k * 7919 + 13) % tags


# ---------------------------------------------------------------- simulator process


class _Sim:
    """Devices ``first .. first+count-1``: one listening port each, values from the wall clock."""

    def __init__(self, first: int, count: int, tags: int):
        self.first, self.count, self.tags = first, count, tags
        self.requests = np.zeros(count, np.int64)
        self.first_read = np.zeros(count)
        self.second = -1
        self.image = b""
        self.schedule: tuple[float, float, float, int] | None = None  # t0, step, hold, steps
        self.phase = (np.arange(count * PER_DEVICE) % 997) * 0.37

    def values(self, now: float) -> bytes:
        """Every tag's float32 words (big-endian, ABCD) for this second, crossings applied."""
        second = int(now * 4)  # four moves a second: a value read each second always differs
        if second != self.second:
            self.second = second
            vals = BASE + 5.0 * np.sin(self.phase + second * 0.05)
            self.image = vals.astype(">f4").tobytes()
        return self.image

    def high_tags(self, now: float) -> list[int]:
        if self.schedule is None:
            return []
        t0, step, hold, steps = self.schedule
        if now < t0:
            return []
        last = min(steps - 1, int((now - t0) / step))
        out = []
        for k in range(last, -1, -1):
            start = t0 + k * step
            if now - start >= hold:
                break
            out.append(crossing_tag(k, self.tags))
        return out

    def answer(self, dev: int, request: bytes) -> bytes:
        tid, _, _, unit, fc, addr, count = np_unpack(request)
        if fc not in (3, 4) or count < 1 or count > 125:
            return request[:4] + (3).to_bytes(2, "big") + bytes([unit, fc | 0x80, 1])
        now = time.time()
        if self.first_read[dev] == 0:
            self.first_read[dev] = now
        self.requests[dev] += 1
        base = dev * PER_DEVICE * 4
        words = bytearray(self.values(now)[base:base + PER_DEVICE * 4])
        g0 = (self.first + dev) * PER_DEVICE
        for g in self.high_tags(now):
            if g0 <= g < g0 + PER_DEVICE:
                words[(g - g0) * 4:(g - g0) * 4 + 4] = np.array([HIGH], ">f4").tobytes()
        data = bytes(words[addr * 2:(addr + count) * 2]).ljust(count * 2, b"\0")
        return (tid.to_bytes(2, "big") + b"\0\0" + (3 + len(data)).to_bytes(2, "big")
                + bytes([unit, fc, len(data)]) + data)


def np_unpack(req: bytes) -> tuple[int, int, int, int, int, int, int]:
    return (int.from_bytes(req[0:2], "big"), 0, 0, req[6], req[7],
            int.from_bytes(req[8:10], "big"), int.from_bytes(req[10:12], "big"))


class _Device(asyncio.Protocol):
    def __init__(self, sim: _Sim, dev: int):
        self.sim, self.dev, self.buf = sim, dev, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 7:
            size = 6 + int.from_bytes(self.buf[4:6], "big")
            if len(self.buf) < size:
                return
            frame, self.buf = self.buf[:size], self.buf[size:]
            if size >= 12:
                self.transport.write(self.sim.answer(self.dev, frame))


async def _simulate(first: int, count: int, tags: int) -> None:
    sim = _Sim(first, count, tags)
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda d=d: _Device(sim, d), "127.0.0.1", 0, backlog=64) for d in range(count)]
    print("ports", " ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending = asyncio.ensure_future(reader.readline())
    while True:
        done, _ = await asyncio.wait([pending], timeout=1.0)
        if done:
            line = pending.result().split()
            if not line:
                return  # the parent closed the pipe
            sim.schedule = (float(line[1]), float(line[2]), float(line[3]), int(line[4]))
            pending = asyncio.ensure_future(reader.readline())
        seen = sim.first_read[sim.first_read > 0]
        print(json.dumps({"requests": int(sim.requests.sum()), "seen": len(seen),
                          "all_read_at": float(seen.max()) if len(seen) == count else None,
                          "cpu": time.process_time(), "t": time.time(), "devices": count}), flush=True)


# ---------------------------------------------------------------- the parent


def write_config(folder: Path, ports: list[int], tags: int, broker_url: str, toml: bool) -> Path:
    head = [f'[agent]\nplant = "{PLANT}"\nname = "scale"\ndata_dir = "data"\nlog_level = "WARNING"\n']
    if not toml:
        head.append('points_file = "points.csv"\n')
    head.append(f'\n[uplink]\nurl = "{broker_url}"\n')
    for d, port in enumerate(ports):
        head.append(f'\n[[devices]]\nname = "D{d:04d}"\ndriver = "modbus"\nurl = "tcp://127.0.0.1:{port}"\n'
                    'interval_s = 1.0\ntimeout_s = 2.0\n')
    rows = [{"name": tag_name(g), "device": f"D{g // PER_DEVICE:04d}", "address": f"hr:{(g % PER_DEVICE) * 2}",
             "type": "float32", "unit": "°C", "range": "0;500", "hh": HH, "h": H, "l": 20.0, "alarms.deadband": 1.0,
             "detectors": "ewma;cusum;flatline"} for g in range(tags)]
    if toml:
        head.extend(f'\n[[tags]]\nname = "{r["name"]}"\ndevice = "{r["device"]}"\naddress = "{r["address"]}"\n'
                    f'type = "float32"\nunit = "°C"\nrange = [0, 500]\nalarms = {{ hh = {HH}, h = {H}, l = 20.0, deadband = 1.0 }}\n'
                    'detectors = ["ewma", "cusum", "flatline"]\n' for r in rows)
    else:
        with open(folder / "points.csv", "w", encoding="utf-8", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(rows[0]))
            out.writeheader()
            out.writerows(rows)
    path = folder / "plant.toml"
    path.write_text("".join(head), encoding="utf-8")
    return path


class _Sims:
    """The simulator processes and their latest statistics."""

    def __init__(self, devices: int, procs: int, tags: int):
        per = math.ceil(devices / procs)
        self.procs, self.ports, self.stats = [], [], {}
        for first in range(0, devices, per):
            p = subprocess.Popen([sys.executable, "-m", "bench.scale", "--serve", f"{first},{min(per, devices - first)}",
                                  "--tags", str(tags)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
        for p in self.procs:
            words = p.stdout.readline().split()
            assert words[0] == "ports", words
            self.ports.extend(int(w) for w in words[1:])
        self.lock = threading.Lock()
        for i, p in enumerate(self.procs):
            threading.Thread(target=self._read, args=(i, p), daemon=True).start()

    def _read(self, i: int, p: subprocess.Popen) -> None:
        for line in p.stdout:
            with self.lock:
                self.stats[i] = json.loads(line)

    def start(self, t0: float, step: float, hold: float, steps: int) -> None:
        for p in self.procs:
            p.stdin.write(f"schedule {t0} {step} {hold} {steps}\n")
            p.stdin.flush()

    def total(self) -> tuple[list[dict], float | None, float]:
        """Each process's latest statistics, when every device was read once, their CPU seconds."""
        with self.lock:
            if len(self.stats) < len(self.procs):
                return [], None, 0.0
            s = [dict(x) for x in self.stats.values()]
        done = [x["all_read_at"] for x in s]
        return s, (max(done) if all(done) else None), sum(x["cpu"] for x in s)

    def stop(self) -> None:
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            p.wait(10)


def subscribe(url: str, arrivals: dict, cond: threading.Condition):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

    def on_message(c, ud, msg):
        now = time.time()
        doc = json.loads(msg.payload)
        if doc.get("kind") == "limit" and doc.get("level") == "H":
            with cond:
                arrivals.setdefault((doc["tag"], doc["state"]), []).append(now)
                cond.notify_all()

    client.on_message = on_message
    client.on_connect = lambda c, ud, fl, rc, pr: c.subscribe(f"plantwatch/{PLANT}/alarm", 1)
    port = int(url.rsplit(":", 1)[1])
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def rss_kb(pid: int) -> tuple[int, int]:
    status = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def latencies(arrivals: dict, t0: float, step: float, hold: float, steps: int, tags: int) -> tuple[list, int]:
    """ms from each scheduled crossing to its alarm; the number of transitions never seen."""
    out, missing = [], 0
    for k in range(steps):
        tag = tag_name(crossing_tag(k, tags))
        for state, at in (("active", t0 + k * step), ("cleared", t0 + k * step + hold)):
            seen = [t for t in arrivals.get((tag, state), []) if t >= at]
            if seen:
                out.append((min(seen) - at) * 1000)
            else:
                missing += 1
    return out, missing


def polls_achieved(before: list[dict], after: list[dict]) -> float:
    """Reads answered / reads due (each device once a second), on the simulators' own clocks."""
    done = sum(b["requests"] - a["requests"] for a, b in zip(before, after, strict=True))
    return done / sum(b["devices"] * (b["t"] - a["t"]) for a, b in zip(before, after, strict=True))


def run(args: argparse.Namespace) -> dict:
    devices = math.ceil(args.tags / PER_DEVICE)
    tags = devices * PER_DEVICE
    arrivals: dict = {}
    cond = threading.Condition()
    with tempfile.TemporaryDirectory(prefix="pw-scale-") as tmp, Mosquitto(workdir=Path(tmp) / "mosquitto") as broker:
        sims = _Sims(devices, args.sim_procs, tags)
        config = write_config(Path(tmp), sims.ports, tags, broker.url, args.toml)
        sub = subscribe(broker.url, arrivals, cond)
        log = open(Path(tmp) / "agent.log", "wb")  # noqa: SIM115
        started = time.time()
        tree = Path(args.tree or ROOT).resolve()  # whose agent runs: this tree, or another checkout to compare
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", str(config)], cwd=tree,
                                 env={**os.environ, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL, stderr=log)
        try:
            while (full := sims.total()[1]) is None:
                if agent.poll() is not None or time.time() - started > args.startup_limit:
                    seen = sum(x["seen"] for x in sims.total()[0])
                    sys.exit(f"REFUSED: {seen} of {devices} devices read in {time.time() - started:.0f} s "
                             f"(agent CPU {cpu_seconds(agent.pid) if agent.poll() is None else 0:.1f} s); the agent's "
                             f"log ends:\n{Path(tmp, 'agent.log').read_text()[-1500:]}")
                time.sleep(0.2)
            startup, startup_cpu = full - started, cpu_seconds(agent.pid)
            time.sleep(args.settle)
            t0 = time.time() + 1.0
            sims.start(t0, args.step, args.hold, args.steps)
            req0, _, sim0 = sims.total()
            cpu0, wall0 = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(1.0 + args.steps * args.step + args.hold + 1.0)
            req1, _, sim1 = sims.total()
            cpu1, wall1 = cpu_seconds(agent.pid), time.monotonic()
            rss, hwm = rss_kb(agent.pid)
            time.sleep(3.0)  # the last alarms on their way
            log_tail = Path(tmp, "agent.log").read_text(errors="replace")[-2000:]
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                agent.kill()
            sub.loop_stop()
            sims.stop()
    window = wall1 - wall0
    lat, missing = latencies(arrivals, t0, args.step, args.hold, args.steps, tags)
    return {"tags": tags, "devices": devices, "startup_s": startup, "startup_cpu_s": startup_cpu, "cpu_pct": 100 * (cpu1 - cpu0) / window,
            "rss_mb": rss / 1024, "hwm_mb": hwm / 1024, "polls_pct": 100 * polls_achieved(req0, req1),
            "sim_cpu_pct": 100 * (sim1 - sim0) / window, "window_s": window, "transitions": len(lat),
            "missing": missing, "p50_ms": percentile(lat, 50) if lat else float("nan"),
            "p99_ms": percentile(lat, 99) if lat else float("nan"), "max_ms": max(lat, default=float("nan")),
            "load": os.getloadavg()[0], "log_tail": log_tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10_000, help="rounded up to whole devices of 62 tags")
    ap.add_argument("--sim-procs", type=int, default=0, help="simulator processes (default: one per 300 devices)")
    ap.add_argument("--steps", type=int, default=100, help="scheduled crossings of an H limit (each raised and cleared)")
    ap.add_argument("--step", type=float, default=1.37, help="s between crossings")
    ap.add_argument("--hold", type=float, default=2.5, help="s a crossing tag stays above H")
    ap.add_argument("--settle", type=float, default=10.0, help="s after the first full poll before measuring")
    ap.add_argument("--startup-limit", type=float, default=900.0)
    ap.add_argument("--toml", action="store_true", help="the tags as [[tags]] tables instead of a points file")
    ap.add_argument("--tree", help="run the agent of this checkout (e.g. a `git worktree` of an older commit)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        first, count = map(int, args.serve.split(","))
        asyncio.run(_simulate(first, count, args.tags))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it
    args.sim_procs = args.sim_procs or max(1, math.ceil(args.tags / PER_DEVICE / 300))
    r = run(args)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores (shared), load average at the end {r['load']:.1f}")
    print(f"{r['tags']} tags on {r['devices']} devices ({args.sim_procs} simulator processes), "
          f"{'[[tags]] tables' if args.toml else 'points.csv'}, 1 s polling, limits + ewma, cusum, flatline on every tag")
    print(f"start-up to first full poll: {r['startup_s']:.1f} s (agent CPU by then {r['startup_cpu_s']:.1f} s)")
    print(f"agent CPU {r['cpu_pct']:.1f} % of one core over {r['window_s']:.0f} s; RSS {r['rss_mb']:.0f} MB "
          f"(peak {r['hwm_mb']:.0f} MB); polls achieved {r['polls_pct']:.1f} %; simulators' CPU {r['sim_cpu_pct']:.1f} %")
    print(f"alarm latency (H limit, raise and clear, {r['transitions']} transitions of {2 * args.steps}): "
          f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms")
    if r["missing"] or r["polls_pct"] < 99.0:
        sys.exit(f"REFUSED: {r['missing']} transitions never arrived, polls achieved {r['polls_pct']:.1f} % "
                 f"(the figures above are not a valid measurement); the agent's log ends:\n{r['log_tail']}")


if __name__ == "__main__":
    main()
