"""Console benchmark: a running agent with 10,000 tags changing every second, the page in
headless Chromium (WebDriver, tests/webdriver.py).

Measures the page load (from the navigation until the 10,000-tag snapshot is in the table), the
cost of each live update in the page (parsing the frame, updating the views, style and layout:
``window.plantwatch.stats``), the frame size, and the agent's CPU (its process only, from
/proc) over windows with the page closed and open, alternating. The PLC (a pymodbus server) runs
in this process, the agent and mosquitto in their own.

    .venv/bin/python bench/console_bench.py [--tags 10000] [--changing 10000] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.broker import Mosquitto, free_port  # noqa: E402
from tests.conftest import config_dict, to_toml  # noqa: E402
from tests.modbus.server import start_server  # noqa: E402
from tests.test_operators import http, metric  # noqa: E402
from tests.webdriver import Browser  # noqa: E402


def agent_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """The agent's CPU over ``seconds`` of wall time, in % of one core."""
    c0, t0 = agent_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (agent_cpu_s(pid) - c0) / (time.monotonic() - t0) * 100


def console_cpu_s(port: int) -> float:
    """The agent's own count of the CPU its console frames took (building and writing them)."""
    return float(metric(port, "plantwatch_console_cpu_seconds_total").split()[-1])


class Changer:
    """Every second, ``changing`` of the PLC's registers 0..n-1 take new values."""

    def __init__(self, plc, n: int, changing: int):
        self.plc, self.n, self.changing = plc, n, changing
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        k = 0
        while not self.stop.wait(1.0):
            k += 1
            first = (k * self.changing) % self.n  # a window that moves on, so every tag takes its turn
            words = [(i + k) % 30000 for i in range(first, first + self.changing)]
            head = min(first + self.changing, self.n) - first
            self.plc.set_registers(first, words[:head])
            if head < len(words):
                self.plc.set_registers(0, words[head:])


def page_round(port: int, n: int, seconds: float, workdir: Path, pid: int) -> dict[str, float]:
    with Browser(workdir) as b:
        b.get(f"http://127.0.0.1:{port}/")
        b.wait(f"return window.plantwatch.columns.length === {n} && window.plantwatch.stats.loaded !== null", 120)
        loaded_ms = b.js("return window.plantwatch.stats.loaded")
        b.click('nav button[data-view="tags"]')
        time.sleep(2.0)
        b.js("Object.assign(window.plantwatch.stats, {frames: 0, ms: 0, max: 0, chars: 0})")
        loop0, t0 = console_cpu_s(port), time.monotonic()
        cpu = cpu_share(pid, seconds)
        loop = (console_cpu_s(port) - loop0) / (time.monotonic() - t0) * 100
        st = b.js("return window.plantwatch.stats")
        rows = b.js("return document.querySelectorAll('#tag-rows .tagrow').length")
    frames = max(1, st["frames"])
    return {"load_ms": loaded_ms, "cpu_open": cpu, "console_cpu": loop, "frames": st["frames"], "update_ms": st["ms"] / frames,
            "update_max_ms": st["max"], "frame_kb": st["chars"] / frames / 1024, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--changing", type=int, default=10_000, help="tags whose value changes every second")
    ap.add_argument("--seconds", type=float, default=20.0, help="each measuring window")
    ap.add_argument("--rounds", type=int, default=3, help="page closed / page open pairs")
    args = ap.parse_args()
    n = args.tags
    work = Path(tempfile.mkdtemp(prefix="pw-console-bench-"))
    broker = Mosquitto(workdir=work / "mosquitto").start()
    with start_server() as plc:
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=broker.url)
        data["devices"][0].update(url=plc.url, interval_s=1.0, timeout_s=2.0)
        data["tags"] = [{"name": f"T{i:05d}", "device": "r1-plc", "address": f"hr:{i}", "type": "int16", "unit": "kPa"}
                        for i in range(n)]
        (work / "plantwatch.toml").write_text(to_toml(data))
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", str(work / "plantwatch.toml")],
                                 stdout=open(work / "agent.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: SIM115
        changer = Changer(plc, n, args.changing)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if http(port, "GET", "/status")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline and agent.poll() is None, (work / "agent.log").read_text()
                time.sleep(0.5)
            changer.thread.start()
            time.sleep(5.0)  # history, telemetry and the detectors settle
            rounds = []
            for r in range(args.rounds):
                closed = cpu_share(agent.pid, args.seconds)
                opened = page_round(port, n, args.seconds, work / f"browser{r}", agent.pid)
                rounds.append({"cpu_closed": closed, **opened})
                print(json.dumps({k: round(v, 3) for k, v in rounds[-1].items()}), flush=True)
        finally:
            changer.stop.set()
            agent.terminate()
            agent.wait(30)
            broker.stop()
    report(args, rounds)


def report(args, rounds: list[dict[str, float]]) -> None:
    def span(key: str, fmt: str = "{:.1f}") -> str:
        values = [r[key] for r in rounds]
        return fmt.format(min(values)) + (" – " + fmt.format(max(values)) if len(values) > 1 else "")

    deltas = [r["cpu_open"] - r["cpu_closed"] for r in rounds]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{args.tags} tags, {args.changing} changing every second, {args.rounds} rounds of {args.seconds:g} s")
    print(f"page load (navigation to the {args.tags}-tag table filled): {span('load_ms', '{:.0f}')} ms")
    print(f"per update in the page (parse, views, style+layout): mean {span('update_ms')} ms, "
          f"max {span('update_max_ms')} ms; frame {span('frame_kb')} KiB; rows in the page {span('rows', '{:.0f}')}")
    print(f"agent CPU, page closed: {span('cpu_closed')} % of a core; open: {span('cpu_open')} %; "
          f"open - closed: {min(deltas):+.1f} – {max(deltas):+.1f} points")
    print(f"of which the console's frames (the agent's own count, building and writing): {span('console_cpu', '{:.2f}')} "
          "% of a core")


if __name__ == "__main__":
    main()
