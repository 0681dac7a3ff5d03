"""The history's files: one SQLite file per UTC day, written by the agent, read by anyone.

Part of the shell. ``{dir}/YYYY-MM-DD.db`` holds the archived points of that UTC day:

- ``tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE)``: the file's own numbering of the tag
  names (a config edit that reorders the tags changes nothing already written);
- ``points (tag, ms, value, quality)``, ``PRIMARY KEY (tag, ms) WITHOUT ROWID``: ``ms`` is
  milliseconds since the file's midnight (UTC), so one tag's day is one range scan of the key.

WAL mode with ``synchronous=NORMAL``: a commit is not fsynced (a power cut may lose the last
commits; a crash of the process loses nothing committed), and readers (``plantwatch
history``) read while the agent writes. Retention deletes whole files: no vacuum, no rewrite.
A ``Store`` is used by one thread at a time (its lock enforces it).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.history_compress import Points

DAY_S = 86400
DAY_MS = DAY_S * 1000
_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.db")
_WAL_LIMIT = 8 * 1024 * 1024

_DDL = """
CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS points (
    tag     INTEGER NOT NULL,
    ms      INTEGER NOT NULL,
    value   REAL,
    quality INTEGER NOT NULL,
    PRIMARY KEY (tag, ms)
) WITHOUT ROWID;
"""


def day_of(ts: float) -> int:
    """The UTC day number (days since 1970-01-01) of a time in UTC seconds."""
    return int(round(ts * 1000)) // DAY_MS


def day_name(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).strftime("%Y-%m-%d")


def day_files(directory: Path) -> dict[int, Path]:
    """Day number -> file, for every day file in ``directory``."""
    out = {}
    if directory.is_dir():
        for p in directory.iterdir():
            m = _NAME.fullmatch(p.name)
            if m:
                out[int(datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) // DAY_S] = p
    return dict(sorted(out.items()))


def file_bytes(path: Path) -> int:
    """A day file with its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += (path.parent / (path.name + suffix)).stat().st_size
        except FileNotFoundError:
            pass
    return total


class Store:
    """The writer: appends archived points to their day files; drops whole days."""

    def __init__(self, directory: Path, names: list[str]):
        self.dir = Path(directory)
        self.names = list(names)
        self.open: dict[int, tuple[sqlite3.Connection, np.ndarray]] = {}  # day -> (connection, index -> id)
        self.lock = threading.Lock()

    def _day(self, day: int) -> tuple[sqlite3.Connection, np.ndarray]:
        if day in self.open:
            return self.open[day]
        self.dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.dir / f"{day_name(day)}.db", isolation_level=None, check_same_thread=False,
                             timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        # 4 MB: the b-tree's inner pages and, up to ~1,000 tags, each tag's rightmost leaf. More
        # tags than fit take their leaves from the OS page cache whatever the size (a flush walks
        # the tags in order): at 100,000 tags, a flush of one point per tag took 273-291 ms of CPU
        # with 4 MB, 257-287 ms with 16 MB, which held 12 MB more
        db.execute("PRAGMA cache_size=-4096")
        db.executescript(_DDL)
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO tags (name) VALUES (?)", [(n,) for n in self.names])
        db.execute("COMMIT")
        ids = dict(db.execute("SELECT name, id FROM tags"))
        self.open[day] = (db, np.array([ids[n] for n in self.names], dtype=np.int64))
        for old in [d for d in self.open if d < day - 1]:  # keep today and yesterday open (late samples)
            self._close(old)
        return self.open[day]

    def write(self, pts: Points) -> int:
        """Commit the points (one transaction per day file touched); the number written."""
        if not len(pts):
            return 0
        with self.lock:
            ms = np.rint(pts.ts * 1000).astype(np.int64)
            days = ms // DAY_MS
            for day in np.unique(days).tolist():
                sel = days == day
                db, ids = self._day(int(day))
                value = pts.value[sel]
                rows = zip(ids[pts.tag[sel]].tolist(), (ms[sel] - day * DAY_MS).tolist(),
                           np.where(np.isnan(value), None, value).tolist(), pts.quality[sel].tolist(), strict=True)
                try:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO points (tag, ms, value, quality) VALUES (?, ?, ?, ?)", rows)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    self._close(int(day))  # the next commit opens the day's file afresh
                    raise
            return len(pts)

    def days(self) -> dict[int, int]:
        """Day number -> bytes on disk, oldest first."""
        return {d: file_bytes(p) for d, p in day_files(self.dir).items()}

    def drop(self, day: int) -> None:
        """Delete a whole day."""
        with self.lock:
            self._close(day)
            path = self.dir / f"{day_name(day)}.db"
            for suffix in ("-wal", "-shm", ""):
                (path.parent / (path.name + suffix)).unlink(missing_ok=True)

    def _close(self, day: int) -> None:
        entry = self.open.pop(day, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        with self.lock:
            for day in list(self.open):
                self._close(day)


# --- reading ----------------------------------------------------------------------------------


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Read-only. Beside a running agent the WAL's files exist and are shared; with the agent
    stopped they are gone, and a reader that may not create them (no write access to the
    directory) opens the file as immutable instead — nothing writes it then."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=10.0)
    try:
        db.execute("SELECT 1 FROM tags LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        db.close()
        if (path.parent / (path.name + "-wal")).exists():
            raise
        db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    db.execute("PRAGMA query_only=1")
    return db


def _tag_id(db: sqlite3.Connection, name: str) -> int | None:
    row = db.execute("SELECT id FROM tags WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def names(directory: Path) -> set[str]:
    """Every tag name the history holds."""
    out: set[str] = set()
    for path in day_files(directory).values():
        db = _connect_ro(path)
        try:
            out.update(n for (n,) in db.execute("SELECT name FROM tags"))
        finally:
            db.close()
    return out


def has(directory: Path, name: str) -> bool:
    """Whether any day file holds the tag."""
    for path in reversed(day_files(Path(directory)).values()):
        db = _connect_ro(path)
        try:
            if _tag_id(db, name) is not None:
                return True
        finally:
            db.close()
    return False


def read(directory: Path, name: str, t0: float, t1: float) -> Points:
    """The archived points of tag ``name`` with ``t0 <= ts <= t1``, preceded by the last point
    before ``t0`` (so a plot of the window starts at the right value), oldest first."""
    files = day_files(Path(directory))
    ms0, ms1 = int(round(t0 * 1000)), int(round(t1 * 1000))
    parts = []
    for day, path in files.items():
        if ms0 // DAY_MS <= day <= ms1 // DAY_MS:
            parts.append(_rows(path, name, day, "ms >= ? AND ms <= ? ORDER BY ms",
                               (ms0 - day * DAY_MS, ms1 - day * DAY_MS)))
    for day in sorted((d for d in files if d <= ms0 // DAY_MS), reverse=True):
        before = _rows(files[day], name, day, "ms < ? ORDER BY ms DESC LIMIT 1", (ms0 - day * DAY_MS,))
        if len(before):
            parts.insert(0, before)
            break
    rows = np.concatenate(parts) if parts else np.zeros((0, 3))
    return Points(np.zeros(len(rows), np.int32), rows[:, 0] / 1000.0, rows[:, 1], rows[:, 2].astype(np.uint8))


def _rows(path: Path, name: str, day: int, where: str, args: tuple) -> np.ndarray:
    """(ms since the epoch, value or NaN, quality) rows of one file."""
    db = _connect_ro(path)
    try:
        tag = _tag_id(db, name)
        if tag is None:
            return np.zeros((0, 3))
        rows = db.execute(f"SELECT ms, value, quality FROM points WHERE tag = ? AND {where}", (tag, *args)).fetchall()
    finally:
        db.close()
    out = np.array(rows, dtype=np.float64).reshape(-1, 3)  # NULL values become NaN
    out[:, 0] += day * DAY_MS
    return out
