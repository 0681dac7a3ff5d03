"""Large payloads (a telemetry snapshot of many tags, a point registry) in the outbox: written into
their row a piece at a time, read back byte for byte, all or nothing when the disk is full, and
without SQLite keeping a buffer of the payload's size after the write."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.outbox import ALARM, STREAMED, TELEMETRY, Outbox


def payload(size: int, seed: int) -> bytes:
    return bytes((seed * 7 + i * 13) % 251 for i in range(256)) * (size // 256) + b"end"


def test_large_and_small_payloads_read_back_byte_for_byte_in_their_order(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    big, other = payload(3 * STREAMED, 1), payload(STREAMED, 2)
    ids = [box.append("pw/p/telemetry", big, lane=TELEMETRY, now=1.0),
           box.append("pw/p/telemetry", b'{"small":1}', lane=TELEMETRY, now=2.0),
           box.append("pw/p/registry", other, lane=ALARM, qos=1, now=3.0)]
    assert ids == sorted(ids)
    rows = box.pending(TELEMETRY, 0, 10)
    assert [r.payload for r in rows] == [big, b'{"small":1}'] and rows[0].topic == "pw/p/telemetry"
    (registry,) = box.pending(ALARM, 0, 10)
    assert registry.payload == other and registry.qos == 1 and registry.seq is None
    assert [r.payload for r in box.rows(ids)] == [big, b'{"small":1}', other]
    assert not box.db.in_transaction
    box.db.close()
    again = Outbox(tmp_path / "outbox.db")  # committed: another connection reads it
    assert again.rows([ids[0]])[0].payload == big


RSS_AFTER_LARGE_APPENDS = textwrap.dedent("""
    import gc, json, sys
    from agent import heap
    from agent.outbox import Outbox
    heap.configure()
    def rss():
        gc.collect(); heap.trim()
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
    box = Outbox(sys.argv[1])
    box.append("t", b"x")
    before = rss()
    for i in range(3):
        box.append("t", bytes([i]) * 12_000_000)
    print(json.dumps({"grew_mb": rss() - before}))
""")


def test_the_writer_keeps_no_buffer_the_size_of_a_large_payload(tmp_path):
    # bound as a parameter, a 12 MB payload left a 12 MB buffer in the cached INSERT statement for
    # the life of the connection (the agent's RSS grew by ~19 MB at its first snapshot of 100,000
    # tags and stayed there); streamed into a zero blob, the connection keeps its page cache only
    out = subprocess.run([sys.executable, "-c", RSS_AFTER_LARGE_APPENDS, str(tmp_path / "outbox.db")],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    grew = json.loads(out.stdout)["grew_mb"]
    assert grew < 6, f"RSS grew by {grew} MB after three 12 MB appends"


def test_a_large_payload_that_does_not_fit_on_the_disk_leaves_no_row(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True, capture_output=True)
    try:
        box = Outbox(disk / "outbox.db")
        first = box.append("t", b'{"before":1}')
        with pytest.raises(sqlite3.OperationalError, match="full"):
            box.append("t", payload(3 * 1024 * 1024, 3))
        assert not box.db.in_transaction
        assert [r.id for r in box.pending(TELEMETRY, 0, 10)] == [first]
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True, capture_output=True)
        after = box.append("t", payload(STREAMED, 4))  # the outbox goes on once there is room
        assert [r.id for r in box.pending(TELEMETRY, 0, 10)] == [first, after]
        box.db.close()
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
