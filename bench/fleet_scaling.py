"""Receiver workers draining one backlog: does a second worker store faster than one?

The fleet of bench/fleet.py (``--gateways`` real outboxes and uplinks, one mosquitto with
max_queued_messages 0, the OS's PostgreSQL) publishes first, while no worker runs: every
gateway publishes ``--backlog`` alarms and waits until the broker acknowledged each. The broker
holds them in the persistent sessions of two shared subscriptions made beforehand,
``$share/one/…`` (one session) and ``$share/two/…`` (two sessions, between which it divided the
messages as they came), so both groups have the same backlog. Then, one after the other, the
group's workers start and store it, each group into its own database: 1 worker, then 2
workers (``--order`` changes the order). No publisher runs while they drain.

Figures per group: messages/s stored (rows over the span from the first to the last batch's
``stored_at``, and over the wall time from the workers' start to the last row counted), CPU
seconds of the broker, of PostgreSQL (postmaster and backends) and of each worker over the
drain (each worker's from its subscription on, its start-up excluded), as cores used, the
cores the whole machine was busy (every process's, from /proc/stat), each worker's rows and
transactions, the load average before and after, and the check: every (plant, epoch, seq) a gateway numbered is
stored once, none missing.

    .venv/bin/python bench/fleet_scaling.py [--gateways 1000] [--per-process 100] [--backlog 50]
        [--order 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from fleet import Workers, cpu_s, finish_gateways, go, pg_pids, start_gateways, verify, wait_stored  # noqa: E402

from agent.store import Store  # noqa: E402

GROUPS = {1: "one", 2: "two"}


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every process's (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def transactions(workers: Workers) -> list[int]:
    """Each worker's transactions, from the summary it printed on stopping."""
    out = []
    for i in range(len(workers.procs)):
        lines = [x for x in workers._log(i).read_text().splitlines() if x.startswith("stored ")]
        out.append(int(lines[-1].split(" in ")[-1].split()[0]) if lines else -1)
    return out


def drain(n: int, workers: Workers, store: Store, broker, pg, expected: dict[str, list]) -> dict:
    """Start the group's workers on their backlog; the figures once every alarm is stored."""
    total = sum(v[1] for v in expected.values())
    before = load()
    broker0, db0, machine0 = cpu_s([broker.proc.pid]), cpu_s(pg_pids(pg)), machine()
    t0 = time.time()
    workers.start_all()
    started = {p.pid: cpu_s([p.pid]) for p in workers.procs}
    stored = wait_stored(store, total)
    wall = time.time() - t0
    used = {"broker": cpu_s([broker.proc.pid]) - broker0, "database": cpu_s(pg_pids(pg)) - db0}
    per_worker = [round(cpu_s([p.pid]) - started[p.pid], 2) for p in workers.procs]
    busy, whole = (b - a for a, b in zip(machine0, machine(), strict=True))
    after = load()
    workers.stop()
    first, last = store.query("SELECT MIN(stored_at), MAX(stored_at) FROM alarms")[0]
    shares = dict(store.query("SELECT worker, COUNT(*) FROM alarms GROUP BY worker ORDER BY worker"))
    span = max(1e-9, last - first)
    return {"workers": n, **verify(store, expected), "rate_stored_span": stored / span, "rate_wall": stored / wall,
            "span_s": span, "wall_s": wall, "cpu_s_broker": used["broker"], "cpu_s_database": used["database"],
            "cpu_s_per_worker": per_worker, "rows_per_worker": list(shares.values()),
            "cores_broker": used["broker"] / wall, "cores_database": used["database"] / wall,
            "cores_workers": sum(per_worker) / wall, "cores_machine_busy": busy / whole * (os.cpu_count() or 1),
            "transactions_per_worker": transactions(workers),
            "worker_cpu_ms_per_msg": 1000 * sum(per_worker) / max(1, stored), "load_before": before, "load_after": after}


def create_databases(url: str, names: list[str]) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")
    base = url.rsplit("/", 1)[0]
    return {name: f"{base}/{name}" for name in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--per-process", type=int, default=100)
    ap.add_argument("--backlog", type=int, default=50, help="alarms each gateway publishes before the workers start")
    ap.add_argument("--order", default="1,2", help="the groups in the order they drain")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds between the publishing and the first drain")
    args = ap.parse_args()
    order = [int(x) for x in args.order.split(",")]
    from agent.broker import Mosquitto
    from tests.postgres import Postgres

    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}; {args.gateways} gateways "
          f"({args.per_process} per process) x {args.backlog} alarms; drained by {' then '.join(map(str, order))} "
          f"worker(s); load {load()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="pw-scaling-", dir=os.environ.get("BENCH_DIR")) as tmp:
        directory = Path(tmp)
        pg = Postgres().start()
        try:
            urls = create_databases(pg.url, [GROUPS[n] for n in order])
            with Mosquitto(workdir=directory / "mosquitto", extra="max_connections -1") as broker:
                groups = {n: Workers(broker.url, urls[GROUPS[n]], n, directory, group=GROUPS[n]) for n in order}
                for workers in groups.values():  # their sessions stay: the broker queues the group's share
                    workers.stop()
                gw = argparse.Namespace(gateways=args.gateways, per_process=args.per_process, rate=1.0, seconds=0.0)
                t0 = time.time()
                procs = start_gateways(gw, broker.url, directory / "gateways", args.backlog)
                go(procs)
                expected = finish_gateways(procs)
                print(f"published {sum(v[1] for v in expected.values())} alarms in {time.time() - t0:.1f} s "
                      f"(every one acknowledged by the broker); load {load()}", flush=True)
                time.sleep(args.settle)
                for n in order:
                    store = Store.open(urls[GROUPS[n]])
                    try:
                        results.append(drain(n, groups[n], store, broker, pg, expected))
                    finally:
                        store.close()
                    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                      for k, v in results[-1].items()}), flush=True)
        finally:
            pg.close()
    for r in results:
        assert r["lost"] == 0 and r["gaps"] == 0 and r["duplicate_rows"] == 0 and r["stored"] == r["expected"], r


if __name__ == "__main__":
    main()
