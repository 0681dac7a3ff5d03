"""Alarm messages kept in memory while the outbox failed: how fast a full queue lands once it
works again, and how much memory it holds.

``--pending`` messages (default 10000, the default ``max_pending_alarms``) are queued the way
the agent queues them (one entry per pipeline commit of ``--batch`` messages, with their alarm
states); then the Committer's store step writes the queue (fsync, 500 messages per
transaction) on a fresh connection, as its retry loop does once the outbox works again.

    .venv/bin/python bench/pending_bench.py [--pending 10000] [--batch 8]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

from agent.alarms import AlarmManager, TagInfo
from agent.outbox import Outbox
from agent.pending import Committer, Entry
from detectors.base import ConditionChange


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pending", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.db"
        outbox = Outbox(path)
        committer = Committer(outbox, path, limit=args.pending)
        manager = AlarmManager("640100000001", [TagInfo(f"T{i}", "plc", "°C", f"{i}#温度", 2) for i in range(args.batch)])
        tracemalloc.start()
        active = False
        while committer.queued < args.pending:
            active = not active
            msgs = manager.on_changes([ConditionChange(i, "limit", "H", active, 170.0 if active else 150.0, 160.0,
                                                       time.time()) for i in range(args.batch)])
            committer._enqueue(Entry("plantwatch/640100000001/alarm", msgs,
                                     [(m["id"], manager.snapshot(m["id"])) for m in msgs]))
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        t0 = time.perf_counter()
        stored = committer._store(list(committer.queue))
        dt = time.perf_counter() - t0
        committer._landed(list(committer.queue), stored)
        assert outbox.last_seq() == args.pending and not committer.queue
        print(f"{platform.node()} {platform.processor() or platform.machine()} python {platform.python_version()}")
        print(f"{args.pending} pending alarm messages held {held / 2**20:.1f} MB of Python memory")
        print(f"landed in {dt:.3f} s: {args.pending / dt:,.0f} msgs/s (fsync, 500 per transaction)")
        outbox.close()


if __name__ == "__main__":
    main()
