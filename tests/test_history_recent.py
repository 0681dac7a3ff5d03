"""A day file's ``recent`` table: commits append there, ``Store.compact`` (once a minute, and when a
file is closed or opened again) moves it into ``points``, and every reader reads both — points not
yet moved, a point replaced across the two tables, what a killed agent left in ``recent``, a
read-only copy, and a file written before ``recent`` existed."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent.cli import main
from agent.history_compress import Points
from agent.history_store import DAY_S, Store, day_files, day_name, day_of, read
from tests.conftest import config_dict
from tests.test_history import T0, history_for

NAMES = ["R101.TI01", "R101.PI01"]
ROOT = Path(__file__).resolve().parents[1]


def minutes(start: float, n: int, tag: int = 0, value0: float = 100.0) -> Points:
    """``n`` points of one tag a minute apart from ``start``, values ``value0``, ``value0 + 1``, …"""
    ts = start + 60.0 * np.arange(n)
    return Points(
        np.full(n, tag, np.int32), ts, value0 + np.arange(n, dtype=np.float64), np.zeros(n, np.uint8)
    )


def one_point(t: float, value: float, tag: int = 0) -> Points:
    return Points(np.array([tag], np.int32), np.array([t]), np.array([value]), np.zeros(1, np.uint8))


def counts(path: Path) -> tuple[int, int]:
    """(rows in points, rows in recent) of a day file, read with plain SQL."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM points").fetchone()[0], db.execute(
            "SELECT count(*) FROM recent"
        ).fetchone()[0]
    finally:
        db.close()


def day_file(directory: Path, t: float) -> Path:
    return directory / f"{day_name(day_of(t))}.db"


def config_for(tmp_path: Path, write_config) -> Path:
    data = config_dict()
    data["agent"]["data_dir"] = str(tmp_path / "data")
    data["agent"]["timezone"] = "UTC"
    return write_config(data)


def csv_rows(capsys, config: Path, start: str, end: str) -> list[str]:
    assert main(["history", str(config), "R101.TI01", "--from", start, "--to", end, "--csv"]) == 0
    return capsys.readouterr().out.splitlines()[1:]


def test_points_not_moved_yet_are_read_then_moved_into_points(tmp_path, write_config, capsys):
    config = config_for(tmp_path, write_config)
    hist = tmp_path / "data" / "history"
    store = Store(hist, NAMES)
    try:
        pts = Points.concat([minutes(T0, 10), minutes(T0, 10, tag=1, value0=5.0)])
        pts.value[3] = np.nan
        assert store.write(pts) == 20
        path = day_file(hist, T0)
        assert counts(path) == (0, 20)  # appended to recent, not one row in points yet
        got = read(hist, "R101.TI01", T0 + 120, T0 + 300)
        assert list(got.ts - T0) == [60, 120, 180, 240, 300]  # the point before the window first
        assert list(got.value[[0, 1, 3, 4]]) == [101, 102, 104, 105] and np.isnan(got.value[2])
        # `plantwatch history` beside the writer: the same rows
        assert csv_rows(capsys, config, "2025-11-29T00:02:00Z", "2025-11-29T00:04:00Z") == [
            "2025-11-29T00:01:00.000Z,101.0,good",
            "2025-11-29T00:02:00.000Z,102.0,good",
            "2025-11-29T00:03:00.000Z,,good",
            "2025-11-29T00:04:00.000Z,104.0,good",
        ]
        assert store.compact() == 20
        assert counts(path) == (20, 0)
        again = read(hist, "R101.TI01", T0 + 120, T0 + 300)
        assert np.array_equal(again.ts, got.ts) and np.array_equal(again.value, got.value, equal_nan=True)
        assert list(read(hist, "R101.PI01", T0, T0 + 3600).value) == [5.0 + k for k in range(10)]
        assert store.compact() == 0
    finally:
        store.close()


def test_the_newest_of_a_point_written_twice_wins_across_recent_and_points(tmp_path):
    hist = tmp_path / "history"
    store = Store(hist, NAMES)
    try:
        store.write(minutes(T0, 5))  # 100..104 at 0..4 min
        store.compact()
        store.write(one_point(T0 + 120, 7.0))  # replaces 102 (in points) from recent
        store.write(one_point(T0 + 150, 8.0))  # a new ms between two points of points
        assert list(read(hist, "R101.TI01", T0, T0 + 240).value) == [100, 101, 7, 8, 103, 104]
        store.write(Points.concat([one_point(T0 + 120, 9.0), one_point(T0 + 120, 10.0)]))  # one commit, twice
        store.write(one_point(T0 + 240, 11.0))
        got = read(hist, "R101.TI01", T0, T0 + 240)
        assert list(got.ts - T0) == [0, 60, 120, 150, 180, 240] and list(got.value) == [
            100,
            101,
            10,
            8,
            103,
            11,
        ]
        # the last point before a window: from recent when it is newer, or replaces the one in points
        assert list(read(hist, "R101.TI01", T0 + 160, T0 + 170).value) == [8]
        assert list(read(hist, "R101.TI01", T0 + 130, T0 + 140).value) == [10]
        assert list(read(hist, "R101.TI01", T0 + 200, T0 + 230).value) == [
            103
        ]  # from points, older than recent's
        assert counts(day_file(hist, T0)) == (5, 5)
        assert store.compact() == 5
        assert counts(day_file(hist, T0)) == (6, 0)
        assert list(read(hist, "R101.TI01", T0, T0 + 240).value) == [100, 101, 10, 8, 103, 11]
    finally:
        store.close()


WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from agent.history_compress import Points
from agent.history_store import Store
store = Store(Path(sys.argv[1]), ["R101.TI01", "R101.PI01"])
n = 30
ts = float(sys.argv[2]) + 60.0 * np.arange(n)
store.write(Points(np.zeros(n, np.int32), ts, 100.0 + np.arange(n), np.zeros(n, np.uint8)))
print("written", flush=True)
time.sleep(60)
"""


def test_what_a_killed_writer_left_in_recent_is_read_and_moved_at_the_next_open(tmp_path):
    hist = tmp_path / "history"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(hist), str(T0)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    path = day_file(hist, T0)
    assert counts(path) == (0, 30)
    got = read(hist, "R101.TI01", T0 + 600, T0 + 900)
    assert list(got.ts - T0) == [540, 600, 660, 720, 780, 840, 900] and list(got.value) == [
        109,
        110,
        111,
        112,
        113,
        114,
        115,
    ]
    store = Store(hist, NAMES)
    try:
        store.write(one_point(T0 + 600, -1.0, tag=1))  # opens the file: the leftovers go first
        assert counts(path) == (30, 1)
        assert list(read(hist, "R101.TI01", T0 + 600, T0 + 900).value) == list(got.value)
    finally:
        store.close()
    assert counts(path) == (31, 0)


def test_a_file_with_rows_in_recent_reads_from_a_read_only_directory(tmp_path, write_config, capsys):
    """Rows left in recent, the agent stopped, the operator unable to write the directory: the
    file is opened immutable and recent is read all the same."""
    config = config_for(tmp_path, write_config)
    hist = tmp_path / "data" / "history"
    store = Store(hist, NAMES)
    store.write(minutes(T0, 3))
    store.compact()
    store.close()
    db = sqlite3.connect(day_file(hist, T0))  # as a killed writer leaves it: a point replaced, one added
    db.executemany(
        "INSERT INTO recent (tag, ms, value, quality) VALUES (1, ?, ?, 0)", [(60_000, 50.0), (180_000, 51.0)]
    )
    db.commit()
    db.close()
    assert not Path(f"{day_file(hist, T0)}-wal").exists()
    subprocess.run(["mount", "--bind", "-o", "ro", str(hist), str(hist)], check=True)
    try:
        assert csv_rows(capsys, config, "2025-11-29T00:00:00Z", "2025-11-29T00:05:00Z") == [
            "2025-11-29T00:00:00.000Z,100.0,good",
            "2025-11-29T00:01:00.000Z,50.0,good",
            "2025-11-29T00:02:00.000Z,102.0,good",
            "2025-11-29T00:03:00.000Z,51.0,good",
        ]
    finally:
        subprocess.run(["umount", str(hist)], check=True)


OLD_DDL = """
CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE points (tag INTEGER NOT NULL, ms INTEGER NOT NULL, value REAL, quality INTEGER NOT NULL,
                     PRIMARY KEY (tag, ms)) WITHOUT ROWID;
"""


def test_a_file_from_before_recent_reads_and_takes_new_points(tmp_path, write_config, capsys):
    config = config_for(tmp_path, write_config)
    hist = tmp_path / "data" / "history"
    hist.mkdir(parents=True)
    path = day_file(hist, T0)
    db = sqlite3.connect(path)
    db.executescript(OLD_DDL)
    db.execute("INSERT INTO tags (id, name) VALUES (7, 'R101.TI01')")
    db.executemany(
        "INSERT INTO points VALUES (7, ?, ?, ?)", [(0, 1.5, 0), (60_000, None, 3), (120_000, 2.5, 0)]
    )
    db.commit()
    db.close()
    assert csv_rows(capsys, config, "2025-11-29T00:00:30Z", "2025-11-29T00:02:00Z") == [
        "2025-11-29T00:00:00.000Z,1.5,good",
        "2025-11-29T00:01:00.000Z,,comm_fail",
        "2025-11-29T00:02:00.000Z,2.5,good",
    ]
    with sqlite3.connect(path) as db:  # the reader added nothing
        assert [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == [
            "tags",
            "points",
        ]
    store = Store(hist, NAMES)
    try:
        store.write(one_point(T0 + 60, 4.0))
        assert counts(path) == (3, 1)
        assert list(read(hist, "R101.TI01", T0, T0 + 120).value) == [1.5, 4.0, 2.5]
    finally:
        store.close()
    assert counts(path) == (3, 0)


def test_history_moves_recent_once_a_minute_on_rotation_and_at_close(tmp_path):
    cfg, h, _ = history_for(tmp_path)
    first = day_file(h.dir, T0)
    assert h.write(minutes(T0, 10), T0 + 600, maintain=False)["error"] is None
    assert counts(first) == (0, 10)
    report = h.write(minutes(T0 + 600, 5), T0 + 900, maintain=True)  # the minute's maintenance pass
    assert report["error"] is None and "compact_error" not in report
    assert counts(first) == (15, 0)
    h.write(minutes(T0 + 900, 2), T0 + 1000, maintain=False)
    h.write(minutes(T0 + DAY_S, 2), T0 + DAY_S, maintain=False)  # tomorrow: today stays open, uncompacted
    assert counts(first) == (15, 2)
    h.write(minutes(T0 + 2 * DAY_S, 2), T0 + 2 * DAY_S, maintain=False)  # the first day is closed: moved
    assert counts(first) == (17, 0)
    asyncio.run(h.close())
    assert [counts(p) for p in day_files(h.dir).values()] == [(17, 0), (2, 0), (2, 0)]


def test_a_commit_larger_than_the_rows_written_at_once_keeps_every_point(tmp_path):
    from agent.history_store import ROWS_AT_ONCE

    n = 2 * ROWS_AT_ONCE + 5  # three parts, the last a short one
    store = Store(tmp_path / "h", NAMES)
    tag = np.arange(n, dtype=np.int32) % 2
    ts = T0 + np.arange(n) * 0.5
    value = np.arange(n, dtype=np.float64)
    value[[ROWS_AT_ONCE - 1, ROWS_AT_ONCE, n - 1]] = np.nan  # at the parts' edges
    assert store.write(Points(tag, ts, value, (np.arange(n) % 3).astype(np.uint8))) == n
    store.close()
    for i, name in enumerate(NAMES):
        got = read(tmp_path / "h", name, T0, T0 + n)
        want = tag == i
        assert np.array_equal(got.ts, ts[want]) and np.array_equal(got.value, value[want], equal_nan=True)
        assert np.array_equal(got.quality, (np.arange(n) % 3)[want])
