"""The history's files: one SQLite file per UTC day, written by the agent, read by anyone.

Part of the shell. ``{dir}/YYYY-MM-DD.db`` holds the archived points of that UTC day:

- ``tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE)``: the file's own numbering of the tag
  names (a config edit that reorders the tags changes nothing already written);
- ``points (tag, ms, value, quality)``, ``PRIMARY KEY (tag, ms) WITHOUT ROWID``: ``ms`` is
  milliseconds since the file's midnight (UTC), so one tag's day is one range scan of the key;
- ``recent (tag, ms, value, quality)``: a rowid table, the same columns, appended to. Each
  commit (``Store.write``) appends its points here, at the end of one b-tree, instead of into
  ``points``, where at 100,000 tags every point lands on its own tag's page and a commit
  dirtied thousands of pages. Once a minute ``Store.compact`` moves ``recent`` into ``points``
  in one transaction, sorted by (tag, ms, rowid): one pass along the key, the last written of
  equal (tag, ms) wins. So ``recent`` holds about a minute of points; a day file is compacted
  too when the agent closes it, and when it opens a file that a crash left with rows in
  ``recent``. Readers read both tables, a ``recent`` row winning over a ``points`` row of the
  same (tag, ms) (``_query``; docs/HISTORY.md gives the SQL). A file written before ``recent``
  existed has no such table and is read from ``points`` alone.

WAL mode with ``synchronous=NORMAL``: a commit is not fsynced (a power cut may lose the last
commits; a crash of the process loses nothing committed), and readers (``plantwatch
history``) read while the agent writes. Retention deletes whole files: no vacuum, no rewrite.
A ``Store`` is used by one thread at a time (its lock enforces it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.history_compress import Points

log = logging.getLogger("plantwatch.history")
DAY_S = 86400
DAY_MS = DAY_S * 1000
_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.db")
_WAL_LIMIT = 8 * 1024 * 1024
# rows handed to SQLite at a time: their Python numbers exist only while written (a 5 s commit of
# 100,000 tags made ~240,000 of them at once, and the small-object arenas they took stayed)
ROWS_AT_ONCE = 4096

_DDL = """
CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS points (
    tag     INTEGER NOT NULL,
    ms      INTEGER NOT NULL,
    value   REAL,
    quality INTEGER NOT NULL,
    PRIMARY KEY (tag, ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (
    tag     INTEGER NOT NULL,
    ms      INTEGER NOT NULL,
    value   REAL,
    quality INTEGER NOT NULL
);
"""
# recent into points: sorted along the key, and of equal (tag, ms) the last appended replaces the others
_COMPACT = ("INSERT OR REPLACE INTO points (tag, ms, value, quality) "
            "SELECT tag, ms, value, quality FROM recent ORDER BY tag, ms, rowid")


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
        try:
            _move(db)  # what a crash left in recent
        except sqlite3.Error as exc:  # the rows stay in recent, read from there; the next open tries again
            log.warning("history: moving %s's recent points into points failed: %s", day_name(day), exc)
        self.open[day] = (db, np.array([ids[n] for n in self.names], dtype=np.int64))
        for old in [d for d in self.open if d < day - 1]:  # keep today and yesterday open (late samples)
            self._close(old)
        return self.open[day]

    def write(self, pts: Points) -> int:
        """Commit the points (one transaction per day file touched, appended to ``recent``); the
        number written."""
        if not len(pts):
            return 0
        with self.lock:
            ms = np.rint(pts.ts * 1000).astype(np.int64)
            days = ms // DAY_MS
            for day in np.unique(days).tolist():
                sel = days == day
                db, ids = self._day(int(day))
                tag, at, value, quality = ids[pts.tag[sel]], ms[sel] - day * DAY_MS, pts.value[sel], pts.quality[sel]
                try:
                    db.execute("BEGIN")
                    for i in range(0, len(tag), ROWS_AT_ONCE):
                        part = slice(i, i + ROWS_AT_ONCE)
                        v = value[part]
                        db.executemany("INSERT INTO recent (tag, ms, value, quality) VALUES (?, ?, ?, ?)",
                                       zip(tag[part].tolist(), at[part].tolist(), np.where(np.isnan(v), None, v).tolist(),
                                           quality[part].tolist(), strict=True))
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    self._close(int(day), compact=False)  # the next commit opens the day's file afresh
                    raise
            return len(pts)

    def compact(self) -> int:
        """Move ``recent`` into ``points`` in every open day file (one transaction each); the
        number of rows moved. A file whose move fails is rolled back and closed (its rows stay
        in ``recent``, read from there, and are moved when the file is opened again)."""
        with self.lock:
            moved = 0
            for day in list(self.open):
                try:
                    moved += _move(self.open[day][0])
                except BaseException:
                    self._close(day, compact=False)
                    raise
            return moved

    def days(self) -> dict[int, int]:
        """Day number -> bytes on disk, oldest first."""
        return {d: file_bytes(p) for d, p in day_files(self.dir).items()}

    def drop(self, day: int) -> None:
        """Delete a whole day."""
        with self.lock:
            self._close(day, compact=False)
            path = self.dir / f"{day_name(day)}.db"
            for suffix in ("-wal", "-shm", ""):
                (path.parent / (path.name + suffix)).unlink(missing_ok=True)

    def _close(self, day: int, compact: bool = True) -> None:
        """Close a day's file, moving its ``recent`` into ``points`` first (``compact``): a file
        not written any more is left compacted. A move that fails leaves the rows in ``recent``."""
        entry = self.open.pop(day, None)
        if entry is None:
            return
        try:
            if compact:
                _move(entry[0])
        except sqlite3.Error as exc:
            log.warning("history: moving %s's recent points into points failed: %s", day_name(day), exc)
        finally:
            entry[0].close()

    def close(self) -> None:
        """Close every day file, each compacted first."""
        with self.lock:
            for day in list(self.open):
                self._close(day)


def _move(db: sqlite3.Connection) -> int:
    """``recent`` into ``points`` and emptied, in one transaction; the rows moved."""
    if db.execute("SELECT 1 FROM recent LIMIT 1").fetchone() is None:
        return 0
    try:
        db.execute("BEGIN")
        moved = db.execute(_COMPACT).rowcount
        db.execute("DELETE FROM recent")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return moved


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
            parts.append(_rows(path, name, day, _WINDOW, "", lo=ms0 - day * DAY_MS, hi=ms1 - day * DAY_MS))
    for day in sorted((d for d in files if d <= ms0 // DAY_MS), reverse=True):
        before = _rows(files[day], name, day, _BEFORE, "DESC LIMIT 1", lo=ms0 - day * DAY_MS)
        if len(before):
            parts.insert(0, before)
            break
    rows = np.concatenate(parts) if parts else np.zeros((0, 3))
    return Points(np.zeros(len(rows), np.int32), rows[:, 0] / 1000.0, rows[:, 1], rows[:, 2].astype(np.uint8))


_WINDOW = "ms >= :lo AND ms <= :hi"
_BEFORE = "ms < :lo"


def _query(where: str, tail: str, recent: bool) -> str:
    """One tag's rows of one file, ordered by ms (``tail``: "DESC LIMIT 1" for the last one):
    those of ``points`` and, in a file that has the table, of ``recent``, whose row of an ms
    replaces the ``points`` row of that ms (of several in ``recent``, the last appended: SQLite
    takes a bare column's value from the row of the ``max()``)."""
    if not recent:
        return f"SELECT ms, value, quality FROM points WHERE tag = :tag AND {where} ORDER BY ms {tail}"
    return (f"WITH r AS (SELECT ms, value, quality, max(rowid) FROM recent WHERE tag = :tag AND {where} GROUP BY ms) "
            f"SELECT ms, value, quality FROM points WHERE tag = :tag AND {where} AND ms NOT IN (SELECT ms FROM r) "
            f"UNION ALL SELECT ms, value, quality FROM r ORDER BY ms {tail}")


def _rows(path: Path, name: str, day: int, where: str, tail: str, **args: int) -> np.ndarray:
    """(ms since the epoch, value or NaN, quality) rows of one file."""
    db = _connect_ro(path)
    try:
        tag = _tag_id(db, name)
        if tag is None:
            return np.zeros((0, 3))
        recent = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recent'").fetchone()
        rows = db.execute(_query(where, tail, recent is not None), {"tag": tag, **args}).fetchall()
    finally:
        db.close()
    out = np.array(rows, dtype=np.float64).reshape(-1, 3)  # NULL values become NaN
    out[:, 0] += day * DAY_MS
    return out
