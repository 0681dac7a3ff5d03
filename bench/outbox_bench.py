"""Outbox and uplink throughput: durable alarm commits per second, and the replay of a backlog.

1. commit: alarm messages committed (fsync, synchronous=FULL) per second, in batches of
   ``--batch`` per transaction as the pipeline commits them, and one per transaction.
2. replay: a backlog of ``--backlog`` alarms published through the Uplink (QoS 1, window
   ``--inflight``) to a local mosquitto and received by the reference Receiver (validating
   every message) in a process of its own, as the platform is; messages per second from the
   uplink's start to the last one received, and to the last one acknowledged and marked sent.

    .venv/bin/python bench/outbox_bench.py [--alarms 20000] [--batch 100] [--backlog 100000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.alarms import AlarmManager, TagInfo  # noqa: E402
from agent.broker import Mosquitto  # noqa: E402
from agent.config import UplinkSection  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.payloads import STATUS_SCHEMA, topic  # noqa: E402
from agent.receiver import Receiver, connect  # noqa: E402
from bench.expect import refuse_short  # noqa: E402
from detectors.base import ConditionChange  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLANT = "640100000001"
TOPIC = topic("plantwatch", PLANT, "alarm")


def alarm_batches(total: int, batch: int):
    """Real alarm documents from the alarm manager, ``batch`` per yield."""
    manager = AlarmManager(PLANT, [TagInfo(f"U{i // 100}.TI{i % 100:02d}", "plc01", "°C", f"{i}#温度", 2) for i in range(batch)])
    active, made = False, 0
    while made < total:
        active = not active
        n = min(batch, total - made)
        changes = [ConditionChange(i, "limit", "H", active, 170.0 if active else 150.0, 160.0, 1.8e9 + made) for i in range(n)]
        made += n
        yield manager.on_changes(changes)


def bench_commit(directory: Path, total: int, batch: int) -> float:
    ob = Outbox(directory / f"commit-{batch}.db")
    docs = list(alarm_batches(total, batch))
    t0 = time.perf_counter()
    for d in docs:
        ob.append_alarms(TOPIC, d)
    elapsed = time.perf_counter() - t0
    assert ob.last_seq() == total
    ob.close()
    return total / elapsed


def receive(url: str, backlog: int) -> None:
    """The platform, in its own process: prints the time the whole backlog had arrived."""
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, url, PLANT)
    print("ready", flush=True)
    ok = receiver.wait(lambda r: len(r.alarms) >= backlog, 600)
    done = time.time()
    sub.loop_stop()
    in_order = [a["seq"] for a in receiver.alarms] == list(range(1, backlog + 1))
    print(f"{done!r} {ok and in_order} {len(receiver.invalid)}", flush=True)


def bench_replay(directory: Path, backlog: int, inflight: int, mqtt_version: int) -> tuple[float, float]:
    from agent.uplink import Uplink

    path = directory / f"replay-{mqtt_version}.db"
    ob = Outbox(path)
    for d in alarm_batches(backlog, 1000):
        ob.append_alarms(TOPIC, d)
    ob.close()
    status = lambda online: {"schema": STATUS_SCHEMA, "plant": PLANT, "online": online, "ts": "2026-01-01T00:00:00.000Z",  # noqa: E731
                             "version": "bench"}
    with Mosquitto(workdir=directory / f"mosquitto-{mqtt_version}") as broker:
        platform_proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--receive", broker.url,
                                          "--backlog", str(backlog)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert platform_proc.stdout.readline().strip() == "ready"
        up = Uplink(UplinkSection(url=broker.url, inflight=inflight, mqtt_version=mqtt_version, heartbeat_s=60.0), PLANT, path, status)
        t0 = time.time()
        up.start()
        while up.sent_count < backlog and time.time() - t0 < 600:
            time.sleep(0.005)
        acked = time.time() - t0
        refuse_short({"the uplink (acknowledged and marked sent)": (up.sent_count, backlog)}, "messages")
        done, ok, invalid = platform_proc.stdout.readline().split()
        platform_proc.wait(30)
        up.stop(2.0)
        assert ok == "True" and invalid == "0", "the platform did not get the backlog complete and in order"
    return backlog / (float(done) - t0), backlog / acked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alarms", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--receive", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receive:
        receive(args.receive, args.backlog)
        return
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="pw-outbox-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        d = Path(tmp)
        rate = bench_commit(d, args.alarms, args.batch)
        print(f"commit, {args.batch} alarms per fsynced transaction: {rate:,.0f} alarms/s")
        rate1 = bench_commit(d, min(args.alarms, 2000), 1)
        print(f"commit, 1 alarm per fsynced transaction:   {rate1:,.0f} alarms/s")
        for v in (3, 5):
            recv, acked = bench_replay(d, args.backlog, args.inflight, v)
            print(f"replay of {args.backlog:,} alarms, MQTT {v}, window {args.inflight}: "
                  f"{recv:,.0f} msgs/s received (validated) by the platform, {acked:,.0f} msgs/s acknowledged and marked sent")


if __name__ == "__main__":
    main()
