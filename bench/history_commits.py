"""History commits at many tags: CPU per archived point of the day file's commits, the points
inserted straight into ``points`` (the layout before ``recent``) against ``Store.write`` (appended
to ``recent``) with ``Store.compact`` every ``--every`` flushes (once a minute at 5 s flushes).

Each flush is ``--points`` points of distinct tags out of ``--tags`` (drawn at random, in tag
order, each at a random time within the flush's 5 s), committed as the agent's worker thread
commits them. Both ways run on the real ``Store`` (same file, pragmas and tag numbering); the
direct way inlines the former statement, ``INSERT OR REPLACE INTO points``. CPU time
(``time.process_time``) is summed over the flushes after the first ``--warm`` (a warm file: the
b-tree holds every tag), and divided by the points committed in them; the file's pages in use
and free once all the points are in ``points``. Then, for the second way,
what a reader pays for ``recent``: one tag's day read (``history_store.read``, best of 5) with
``--every`` − 1 more flushes in ``recent`` (just before a compaction, its fullest), then with
``recent`` empty.

    .venv/bin/python bench/history_commits.py [--tags 100000] [--points 30000] [--flushes 96] [--every 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.history_compress import Points  # noqa: E402
from agent.history_store import DAY_MS, Store, read  # noqa: E402

T0 = 1764374400.0  # 2025-11-29T00:00:00Z
FLUSH_S = 5.0
DIRECT = "INSERT OR REPLACE INTO points (tag, ms, value, quality) VALUES (?, ?, ?, ?)"


def direct_write(store: Store, pts: Points) -> int:
    """``Store.write`` as it was: each point into ``points``, one transaction per day file."""
    ms = np.rint(pts.ts * 1000).astype(np.int64)
    days = ms // DAY_MS
    for day in np.unique(days).tolist():
        sel = days == day
        db, ids = store._day(int(day))
        value = pts.value[sel]
        rows = zip(
            ids[pts.tag[sel]].tolist(),
            (ms[sel] - day * DAY_MS).tolist(),
            np.where(np.isnan(value), None, value).tolist(),
            pts.quality[sel].tolist(),
            strict=True,
        )
        db.execute("BEGIN")
        db.executemany(DIRECT, rows)
        db.execute("COMMIT")
    return len(pts)


def flushes(tags: int, points: int, n: int):
    """The same points for each way: ``n`` flushes of ``points`` distinct tags."""
    rng = np.random.default_rng(1)
    for k in range(n):
        tag = np.sort(rng.choice(tags, points, replace=False)).astype(np.int32)
        ts = T0 + k * FLUSH_S + rng.integers(0, 5000, points) / 1000.0
        yield Points(tag, ts, rng.normal(50.0, 5.0, points), np.zeros(points, np.uint8))


def run(directory: Path, staged: bool, args: argparse.Namespace) -> dict[str, float]:
    store = Store(directory, [f"U{i // 1000:03d}.TI{i % 1000:03d}" for i in range(args.tags)])
    write_s = compact_s = 0.0
    counted = 0
    try:
        for k, pts in enumerate(flushes(args.tags, args.points, args.flushes)):
            c0 = time.process_time()
            if staged:
                store.write(pts)
            else:
                direct_write(store, pts)
            c1 = time.process_time()
            if staged and k % args.every == args.every - 1:
                store.compact()
            c2 = time.process_time()
            if k >= args.warm:
                write_s += c1 - c0
                compact_s += c2 - c1
                counted += len(pts)
        store.compact()  # what the file takes once everything is in points (the direct way: nothing to move)
        db = next(iter(store.open.values()))[0]
        page, pages, free = (
            db.execute(f"PRAGMA {x}").fetchone()[0] for x in ("page_size", "page_count", "freelist_count")
        )
        if staged:  # one tag's read with a whole compaction interval in recent, then without
            extra = flushes(args.tags, args.points, args.flushes + args.every - 1)
            for pts in list(extra)[args.flushes :]:
                store.write(pts)
            full = read_ms(directory, store.names[args.tags // 2])
            store.compact()
            empty = read_ms(directory, store.names[args.tags // 2])
    finally:
        store.close()
    reads = {"read_full_ms": full, "read_empty_ms": empty} if staged else {}
    return reads | {
        "write_us": write_s / counted * 1e6,
        "compact_us": compact_s / counted * 1e6,
        "total_us": (write_s + compact_s) / counted * 1e6,
        "points": counted,
        "mb": (pages - free) * page / 1e6,
        "free_mb": free * page / 1e6,
    }


def read_ms(directory: Path, name: str, repeat: int = 5) -> float:
    """The fastest of ``repeat`` reads of one tag's whole day (ms of wall time)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        read(directory, name, T0, T0 + 86400.0)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, nproc {os.cpu_count()}, load average {load}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=30_000, help="points per 5 s flush")
    ap.add_argument("--flushes", type=int, default=96)
    ap.add_argument("--every", type=int, default=12, help="flushes between compactions (12: once a minute)")
    ap.add_argument("--warm", type=int, default=None, help="flushes not counted (default: half)")
    args = ap.parse_args()
    args.warm = args.flushes // 2 if args.warm is None else args.warm
    print(f"# {machine()}")
    print(
        f"# {args.tags} tags, {args.points} points per flush, {args.flushes} flushes "
        f"({args.warm} not counted), compaction every {args.every}"
    )
    for name, staged in (("direct into points", False), (f"recent + compact every {args.every}", True)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            r = run(Path(tmp), staged, args)
            wall = time.perf_counter() - t0
        print(
            f"{name:28s} {r['total_us']:6.2f} us/point CPU (commits {r['write_us']:.2f}, compaction "
            f"{r['compact_us']:.2f}); {r['points']} points counted; file {r['mb']:.1f} MB + {r['free_mb']:.1f} MB free pages; run {wall:.1f} s"
        )
        if staged:
            print(
                f"{'':28s} one tag's day read: {r['read_full_ms']:.1f} ms with {args.every - 1} flushes in recent, "
                f"{r['read_empty_ms']:.1f} ms with recent empty"
            )
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
