"""The platform side at fleet scale: 1,000 gateways publishing alarms to one mosquitto, 1 or 2
``plantwatch receive --store`` workers sharing the subscription and storing into PostgreSQL.

Each simulated gateway is the real thing from the outbox on: alarm documents from the alarm
manager, numbered and committed by ``agent.outbox.Outbox`` (synchronous=NORMAL: the simulated
gateways share one disk here, a real one has its own), published by ``agent.uplink.Uplink``
(MQTT 5, QoS 1, its own connection and persistent session), ``--per-process`` gateways per
process. The bench starts its own mosquitto (max_queued_messages 0, max_inflight_messages 0)
and its own PostgreSQL (the OS's, fsync on, a temporary data directory).

1. steady: every gateway raises or clears an alarm every 1/``--rate`` s for ``--seconds``; with
   ``--kill`` worker 0 is SIGKILLed half-way through and started again 2 s later under its
   client id. Figures: messages/s stored over the run, end-to-end latency (the alarm's ``ts``,
   taken just before the gateway's outbox commit, to the worker's ``stored_at``, taken when the
   batch's transaction starts) p50/p99/max, and the check against the store: every
   (plant, epoch, seq) each gateway numbered is stored, once, with no gap.
2. drain (``--backlog N``): the workers are stopped, every gateway publishes N alarms (the
   broker keeps them in the workers' sessions), the workers start again: messages/s stored
   from the first to the last row stored, i.e. the workers' capacity.

What a second worker adds, with no publisher competing for the CPU: bench/fleet_scaling.py.

    .venv/bin/python bench/fleet.py [--gateways 1000] [--per-process 100] [--workers 1|2]
        [--rate 0.5] [--seconds 30] [--kill] [--backlog 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.payloads import STATUS_SCHEMA, parse_rfc3339, rfc3339, topic  # noqa: E402
from agent.store import Store  # noqa: E402


def plant_of(i: int) -> str:
    return f"65{i:010d}"


# --- a process of simulated gateways ---------------------------------------------------------------

def gateways(broker: str, first: int, count: int, directory: Path, rate: float, seconds: float, backlog: int) -> None:
    """``count`` gateways: wait for "go" on stdin, run the steady phase (or publish ``backlog``
    alarms each at once), wait until the broker acknowledged every message, print each
    gateway's (epoch, last seq) as JSON."""
    from agent.alarms import AlarmManager, TagInfo
    from agent.config import UplinkSection
    from agent.outbox import Outbox
    from agent.uplink import Uplink
    from detectors.base import ConditionChange

    fleet = []
    for i in range(first, first + count):
        plant = plant_of(i)
        path = directory / f"{plant}.db"
        status = (lambda p: lambda online: {"schema": STATUS_SCHEMA, "plant": p, "online": online,
                                            "ts": rfc3339(time.time()), "version": "bench"})(plant)
        up = Uplink(UplinkSection(url=broker, mqtt_version=5, session_expiry_s=3600, heartbeat_s=600.0,
                                  telemetry_interval_s=0.0), plant, path, status)
        ob = Outbox(path, durable=False)
        manager = AlarmManager(plant, [TagInfo("U1.TI01", "plc01", "°C", "1#温度", 2)])
        fleet.append([plant, ob, up, manager, False])
        up.start()
    while not all(f[2].connected.is_set() for f in fleet):
        time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.readline()

    def raise_or_clear(entry) -> None:
        plant, ob, up, manager, active = entry
        entry[4] = active = not active
        now = time.time()
        docs = manager.on_changes([ConditionChange(0, "limit", "H", active, 170.0 if active else 150.0, 160.0, now)])
        ob.append_alarms(topic("plantwatch", plant, "alarm"), docs)
        up.wake()

    if backlog:
        for _ in range(backlog):
            for entry in fleet:
                raise_or_clear(entry)
    else:
        period = 1.0 / rate
        start = time.monotonic()
        # each gateway at its own phase, so the fleet's load is even over time
        due = sorted((start + period * (n / len(fleet)), n) for n in range(len(fleet)))
        while due and due[0][0] < start + seconds:
            at, n = due.pop(0)
            time.sleep(max(0.0, at - time.monotonic()))
            raise_or_clear(fleet[n])
            due.append((at + period, n))
            due.sort()
    deadline = time.monotonic() + 300
    while any(f[1].depth()["alarm"] for f in fleet) and time.monotonic() < deadline:
        time.sleep(0.1)
    out = {}
    for plant, ob, up, _, _ in fleet:
        out[plant] = [ob.epoch, ob.last_seq(), ob.depth()["alarm"]]
        up.stop(1.0)
        ob.close()
    print(json.dumps(out), flush=True)


# --- the bench ---------------------------------------------------------------------------------------

class Workers:
    """``plantwatch receive --store`` processes sharing $share/GROUP/…, each under its own client id."""

    def __init__(self, broker: str, store: str, n: int, log_dir: Path, group: str = "fleet", start: bool = True):
        self.broker, self.store, self.log_dir, self.group = broker, store, log_dir, group
        self.procs: list[subprocess.Popen | None] = [None] * n
        if start:
            self.start_all()

    def start_all(self) -> None:
        """Start every worker at once, then wait until each has subscribed."""
        for i, started in [(i, self._spawn(i)) for i in range(len(self.procs))]:
            self._subscribed(i, started)

    def start(self, i: int) -> None:
        self._subscribed(i, self._spawn(i))

    def _log(self, i: int) -> Path:
        return self.log_dir / f"{self.group}-worker{i}.log"

    def _spawn(self, i: int) -> int:
        path = self._log(i)
        started = path.read_text().count("receiving from") if path.exists() else 0
        log = open(path, "a")  # noqa: SIM115 - the process's stdout
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "receive", "--broker", self.broker, "--store", self.store,
             "--group", self.group, "--client-id", f"{self.group}-worker-{i}"], stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT)
        return started

    def _subscribed(self, i: int, started: int) -> None:
        path = self._log(i)
        deadline = time.monotonic() + 30
        while path.read_text().count("receiving from") <= started:
            assert time.monotonic() < deadline and self.procs[i].poll() is None, f"worker {i} did not start"
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                p.wait(60)


def start_gateways(args, broker: str, directory: Path, backlog: int) -> list[subprocess.Popen]:
    procs = []
    for first in range(0, args.gateways, args.per_process):
        count = min(args.per_process, args.gateways - first)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--gateway-proc", broker, "--first", str(first),
             "--count", str(count), "--dir", str(directory), "--rate", str(args.rate), "--seconds", str(args.seconds),
             "--backlog", str(backlog)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT))
    for p in procs:
        line = p.stdout.readline().strip()
        assert line == "ready", f"a gateway process did not start: {line!r}"
    return procs


def finish_gateways(procs: list[subprocess.Popen]) -> dict[str, list]:
    expected: dict[str, list] = {}
    for p in procs:
        expected.update(json.loads(p.stdout.readline()))
        p.wait(60)
    return expected


def go(procs: list[subprocess.Popen]) -> float:
    t0 = time.time()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return t0


def wait_stored(store: Store, total: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while (n := store.query("SELECT COUNT(*) FROM alarms")[0][0]) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    return n


def verify(store: Store, expected: dict[str, list]) -> dict[str, int]:
    """Every (plant, epoch, seq) a gateway numbered is stored, and stored once."""
    got = {(p, e): n for p, e, n, *_ in store.report(3600).epochs}
    for plant, (_, _, unsent) in expected.items():
        assert unsent == 0, f"{plant}: {unsent} alarms still in its outbox"
    rows, again = store.query("SELECT COUNT(*), SUM(copies) - COUNT(*) FROM alarms")[0]
    distinct = store.query("SELECT COUNT(*) FROM (SELECT DISTINCT plant, epoch, seq FROM alarms) d")[0][0]
    return {"expected": sum(v[1] for v in expected.values()), "stored": rows,
            "lost": sum(max(0, last - got.get((plant, epoch), 0)) for plant, (epoch, last, _) in expected.items()),
            "gaps": len(store.report(3600).gaps), "duplicate_rows": rows - distinct, "copies_absorbed": int(again or 0)}


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pg_pids(pg) -> list[int]:
    """The postmaster and its backends."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    out = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


class Meter:
    """CPU of the broker, the database and the workers over a phase."""

    def __init__(self, broker, pg, workers: Workers):
        self.broker, self.pg, self.workers = broker, pg, workers
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        return {"broker": cpu_s([self.broker.proc.pid]), "database": cpu_s(pg_pids(self.pg)),
                "workers": cpu_s([p.pid for p in self.workers.procs if p is not None and p.poll() is None])}

    def used(self, workers_since_start: bool) -> dict[str, float]:
        now = self._now()
        return {f"cpu_s_{k}": now[k] - (0 if k == "workers" and workers_since_start else self.start[k]) for k in now}


def latencies(store: Store, since: float) -> dict[str, float]:
    rows = store.query(f"SELECT ts, stored_at FROM alarms WHERE stored_at >= {since!r}")
    lat = sorted(stored - parse_rfc3339(ts) for ts, stored in rows)
    first = min(r[1] for r in rows)
    last = max(r[1] for r in rows)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    return {"n": len(lat), "rate": len(lat) / max(1e-9, last - first), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000}


def steady(args, broker, pg, store: Store, workers: Workers, directory: Path) -> dict:
    procs = start_gateways(args, broker.url, directory / "steady", 0)
    meter = Meter(broker, pg, workers)
    t0 = go(procs)
    killer = None
    if args.kill:
        def kill_and_restart() -> None:
            time.sleep(args.seconds / 2)
            workers.kill(0)
            time.sleep(2.0)
            workers.start(0)
        killer = threading.Thread(target=kill_and_restart)
        killer.start()
    expected = finish_gateways(procs)
    if killer is not None:
        killer.join()
    wait_stored(store, sum(v[1] for v in expected.values()))
    cpu = meter.used(workers_since_start=False)  # the killed worker's share is not counted
    return {"phase": "steady", **verify(store, expected), **latencies(store, t0 - 1), **cpu}


def drain(args, broker, pg, store: Store, workers: Workers, directory: Path) -> dict:
    store.write([])  # the tables exist
    store.query("DELETE FROM alarms RETURNING 1")
    workers.stop()  # their sessions stay: the broker queues their share
    procs = start_gateways(args, broker.url, directory / "drain", args.backlog)
    go(procs)
    expected = finish_gateways(procs)
    t0 = time.time()
    meter = Meter(broker, pg, workers)
    for i in range(len(workers.procs)):
        workers.start(i)
    wait_stored(store, sum(v[1] for v in expected.values()))
    cpu = meter.used(workers_since_start=True)  # their start-up included
    return {"phase": "drain", **verify(store, expected), **latencies(store, t0 - 1), **cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--per-process", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.5, help="alarm messages per second per gateway")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--kill", action="store_true", help="SIGKILL worker 0 half-way through the steady phase")
    ap.add_argument("--backlog", type=int, default=0, help="then the drain phase: alarms per gateway")
    ap.add_argument("--gateway-proc", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gateway_proc:
        directory = Path(args.dir)
        directory.mkdir(parents=True, exist_ok=True)
        gateways(args.gateway_proc, args.first, args.count, directory, args.rate, args.seconds, args.backlog)
        return
    import tempfile

    from agent.broker import Mosquitto
    from tests.postgres import Postgres

    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}; {args.gateways} gateways "
          f"({args.per_process} per process), {args.workers} worker(s), {args.rate} alarms/s per gateway", flush=True)
    with tempfile.TemporaryDirectory(prefix="pw-fleet-", dir=os.environ.get("BENCH_DIR")) as tmp:
        directory = Path(tmp)
        pg = Postgres().start()
        try:
            with Mosquitto(workdir=directory / "mosquitto", extra="max_connections -1") as broker:
                store = Store.open(pg.url)
                workers = Workers(broker.url, pg.url, args.workers, directory)
                try:
                    results = [steady(args, broker, pg, store, workers, directory)]
                    if args.backlog:
                        results.append(drain(args, broker, pg, store, workers, directory))
                finally:
                    workers.stop()
                    store.close()
        finally:
            pg.close()
    for r in results:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        assert r["lost"] == 0 and r["gaps"] == 0 and r["duplicate_rows"] == 0 and r["stored"] == r["expected"], r


if __name__ == "__main__":
    main()
