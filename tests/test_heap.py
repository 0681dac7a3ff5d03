"""The C heap gives freed memory back: blocks freed between blocks still in use leave resident
holes that ``heap.trim`` returns to the system, and the outbox housekeeping trims once a pass."""

from __future__ import annotations

import os
import subprocess
import sys

from agent import heap

MB = 2**20

# 48 MB of 1 KiB blocks (malloc'd by CPython: over its 512-byte small-object limit), every 16th
# kept: the kept ones pin the heap's top, the freed ones between them stay resident until trimmed
_HOLES = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
from agent import heap

def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

heap.configure()
blocks = [bytes([i % 251]) * 1024 for i in range(48 * 1024)]
kept = blocks[::16]
del blocks
before = rss()
{action}
print(json.dumps({{"before": before, "after": rss(), "kept": len(kept), "done": done}}))
"""


def _holes(action: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", _HOLES.format(action=action)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout)


def test_trim_gives_the_holes_between_live_blocks_back():
    r = _holes("done = heap.trim()")
    if heap.available():  # glibc (the gateways' Linux)
        assert r["done"] is True
        assert r["before"] - r["after"] > 30 * MB, r  # of the ~45 MB freed
    else:  # another C library: left alone
        assert r["done"] is False and r["after"] >= r["before"] - MB


def test_the_holes_stay_resident_without_a_trim():
    # what the trim is for: freeing alone does not shrink the process
    r = _holes("done = None")
    assert r["after"] > r["before"] - 5 * MB, r


def test_outbox_housekeeping_trims_the_heap(tmp_path):
    r = _holes(f"""
from agent.housekeeping import Housekeeping
from agent.alarms import AlarmManager
from agent.outbox import Outbox
Outbox(Path({str(tmp_path / 'outbox.db')!r})).close()
hk = Housekeeping(Path({str(tmp_path / 'outbox.db')!r}), 64, AlarmManager("P1", []), lambda m: None)
before = rss()
done = hk.maintain(64 * 2**20)["heap_trimmed"]""")
    if heap.available():
        assert r["done"] is True
        assert r["before"] - r["after"] > 30 * MB, r
    else:
        assert r["done"] is False
