"""The durable outbox: the single source of truth for what must reach the platform.

SQLite in WAL mode. An alarm message gets its per-plant ``seq`` inside the same transaction
that stores it, and that transaction is fsynced before the message is published, so a seq
that exists is never lost and never reused. A row is marked sent only after the platform
acknowledged it (the broker's PUBACK, the HTTP success rule). Each thread opens its own Outbox on
the same file (SQLite connections are per thread).

Several uplinks read the one outbox, each with its own cursor: ``delivered`` records, per
uplink, the rows it has delivered, and a row becomes ``sent`` (for retention, depth and the size
cap) only once every uplink named in ``uplinks`` has it. With one uplink a row is marked sent at
once and ``delivered`` stays empty. A row a platform refuses for good is copied to
``dead_letter`` (kept until an operator deals with it) and counts as done for that uplink, so it
never holds the rows behind it.

Sequence identity: every outbox has an ``epoch`` made when its file is created (16 random hex
digits, never reused) and stored in the ``identity`` table. Every alarm message carries it beside
``seq``: a new outbox (disk replaced, data_dir wiped, a corrupt file moved aside) starts seq at 1
again under a new epoch, and platforms de-duplicate on (plant, epoch, seq).

Retention: sent rows are kept ``keep_s`` (30 days); sent telemetry older than a day is thinned
to one snapshot per bucket (15 min). A size cap is enforced by dropping telemetry only — sent,
then unsent, oldest first. An alarm that has not reached the platform is never deleted.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.payloads import dumps, rfc3339

ALARM, TELEMETRY, STATUS = 0, 1, 2
LANES = {ALARM: "alarm", TELEMETRY: "telemetry", STATUS: "status"}

SCHEMA_VERSION = 3  # 3: the identity table (the epoch)
DEFAULT_UPLINK = "default"  # the name of the single [uplink], and of every row sent before schema 2

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    lane    INTEGER NOT NULL,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL DEFAULT 1,
    retain  INTEGER NOT NULL DEFAULT 0,
    seq     INTEGER,
    created REAL    NOT NULL,
    sent    REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (lane, id) WHERE sent IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_seq ON outbox (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_lane_created ON outbox (lane, created);
CREATE TABLE IF NOT EXISTS identity (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_state (id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uplinks (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS delivered (
    uplink TEXT    NOT NULL,
    id     INTEGER NOT NULL,
    PRIMARY KEY (uplink, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    uplink  TEXT    NOT NULL,
    row_id  INTEGER NOT NULL,
    lane    INTEGER NOT NULL,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    seq     INTEGER,
    created REAL    NOT NULL,
    failed  REAL    NOT NULL,
    reason  TEXT    NOT NULL
);
"""

# the WAL is truncated back to this after a checkpoint, so it does not keep a burst's size
_WAL_LIMIT = 16 * 1024 * 1024
_WAL_CHECKPOINT_PAGES = 256
_BUSY_TIMEOUT_S = 10.0  # how long a statement waits for another connection's lock


@dataclass(frozen=True)
class Row:
    id: int
    lane: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    seq: int | None


class OutboxError(Exception):
    pass


class OutboxCorrupt(OutboxError):
    """The file is not a database, or a damaged one."""


CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)  # the primary result codes of damage


#: a payload from this size on is written into its row by ``Outbox.append`` a piece at a time
STREAMED = 256 * 1024


def new_epoch() -> str:
    """A new outbox's epoch: 64 random bits as 16 hex digits (a collision is not a concern)."""
    return secrets.token_hex(8)


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction. SQLite may have rolled it back itself
    (disk full, I/O error): a ROLLBACK then would raise and hide the error that matters."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class Outbox:
    def __init__(self, path: str | Path, *, durable: bool = True):
        """``durable`` = fsync every commit (the writer of alarms); readers marking rows sent
        may pass False: a lost 'sent' mark only causes a duplicate, never a loss."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_S,
                                      check_same_thread=False)
            # only takes effect on a new file (before the first table): deleted pages can then be
            # handed back to the file system, which is what a size cap on a small gateway needs
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._wal()
            self.db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            # every commit writes whole pages to the WAL (a handful per alarm batch): checkpoint
            # every 1 MB rather than SQLite's 4 MB, so the WAL stays small on a small disk
            self.db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.db.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            self.db.executescript(_DDL)
            self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
            if version in (1, 2):
                # schema 1 had one uplink and the `sent` column only; its sent rows stay sent (the
                # default uplink had them). Schema 2 had no epoch. The new tables were made above.
                self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
                version = SCHEMA_VERSION
            if version != SCHEMA_VERSION:
                raise OutboxError(f"{self.path}: outbox schema {version}, this version reads {SCHEMA_VERSION}")
            # made with the file (or on the upgrade of an older one); the first of two connections
            # opening a new file at once wins, the other reads its epoch
            self.db.execute("INSERT OR IGNORE INTO identity (key, value) VALUES ('epoch', ?)", (new_epoch(),))
            self.epoch: str = self.db.execute("SELECT value FROM identity WHERE key='epoch'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "db"):
                self.db.close()
            error = OutboxCorrupt if exc.sqlite_errorcode & 0xFF in CORRUPT else OutboxError
            raise error(f"{self.path}: cannot open the outbox: {exc}") from None

    def _wal(self) -> None:
        """Switch the file to WAL. While another connection holds a write lock on a file not yet
        in WAL (two processes opening a new outbox at once), SQLite answers this at once with
        SQLITE_BUSY instead of waiting through the busy timeout, so wait here instead."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def close(self) -> None:
        self.db.close()

    def wait_for_locks(self, seconds: float) -> None:
        """How long a write on this connection waits for another's write lock before it fails
        (SQLite's busy timeout; 10 s unless set here)."""
        self.db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def running(self) -> None:
        """The agent runs on this file: until ``closed_cleanly``, a start reads it through."""
        self.db.execute("INSERT INTO meta (key, value) VALUES ('clean', 0) ON CONFLICT(key) DO UPDATE SET value=0")

    def closed_cleanly(self) -> None:
        """The agent stopped cleanly: the next start need not read the whole file through."""
        self.db.execute("INSERT INTO meta (key, value) VALUES ('clean', 1) ON CONFLICT(key) DO UPDATE SET value=1")

    # --- writing ----------------------------------------------------------------------------

    def append_alarms(self, topic: str, docs: Sequence[dict[str, Any]], now: float | None = None,
                      encode: Callable[[dict[str, Any]], bytes] = dumps,
                      states: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[int]:
        """Give each alarm document the next seq, store them all and fsync, in one transaction.
        Returns the seqs; the documents are updated with their seq too. ``encode`` makes the
        payload (the profile's format) once the seq is known. ``states`` (alarm id, state) are
        saved in the same transaction, so the alarm state on disk always matches the messages.
        Each document gets the outbox's ``epoch`` beside its seq."""
        if not docs:
            return []
        now = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
            seq = row[0] if row else 0
            seqs = []
            rows = []
            for doc in docs:
                seq += 1
                doc["epoch"], doc["seq"] = self.epoch, seq
                seqs.append(seq)
                rows.append((ALARM, topic, encode(doc), 1, 0, seq, now))
            db.executemany(
                "INSERT INTO outbox (lane, topic, payload, qos, retain, seq, created) VALUES (?,?,?,?,?,?,?)", rows
            )
            db.execute("INSERT INTO meta (key, value) VALUES ('seq', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (seq,))
            if states:
                db.executemany("INSERT INTO alarm_state (id, state) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET state=excluded.state",
                               [(i, json.dumps(st, ensure_ascii=False)) for i, st in states])
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            for doc in docs:  # not stored: the seqs were not taken
                doc.pop("seq", None)
                doc.pop("epoch", None)
            raise
        return seqs

    def append(self, topic: str, payload: bytes, lane: int = TELEMETRY, qos: int = 1, now: float | None = None) -> int:
        now = time.time() if now is None else now
        if len(payload) >= STREAMED:
            return self._append_streamed(topic, payload, lane, qos, now)
        cur = self.db.execute(
            "INSERT INTO outbox (lane, topic, payload, qos, retain, created) VALUES (?,?,?,?,0,?)",
            (lane, topic, payload, qos, now),
        )
        return int(cur.lastrowid)

    def _append_streamed(self, topic: str, payload: bytes, lane: int, qos: int, now: float) -> int:
        """``append`` of a large payload: the row made with a zero blob of the payload's size,
        the payload written into it through SQLite's incremental blob I/O, in one transaction.
        Bound as a parameter, SQLite builds the row in a buffer of the payload's size that the
        cached INSERT statement keeps for good: ~8 MB held by the agent after the first telemetry
        snapshot of 100,000 tags."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "INSERT INTO outbox (lane, topic, payload, qos, retain, created) VALUES (?,?,zeroblob(?),?,0,?)",
                (lane, topic, len(payload), qos, now),
            )
            row = int(cur.lastrowid)
            with db.blobopen("outbox", "payload", row) as blob:
                blob.write(payload)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return row

    # --- reading ----------------------------------------------------------------------------

    def alarm_states(self) -> list[dict[str, Any]]:
        """The alarm states saved with the last message of each alarm."""
        return [json.loads(r[0]) for r in self.db.execute("SELECT state FROM alarm_state ORDER BY id")]

    def last_seqs(self) -> dict[str, int]:
        """Alarm id -> the seq of its last stored message (the rows retention has kept)."""
        cur = self.db.execute(
            "SELECT json_extract(CAST(payload AS TEXT), '$.id'), max(seq) FROM outbox"
            " WHERE lane=? AND seq IS NOT NULL AND json_valid(CAST(payload AS TEXT)) GROUP BY 1", (ALARM,))
        return {i: int(s) for i, s in cur if i is not None}

    def last_seq(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        return int(row[0]) if row else 0

    def pending(self, lane: int, after: int = 0, limit: int = 100, uplink: str = DEFAULT_UPLINK) -> list[Row]:
        """Rows of a lane with id > after that ``uplink`` has not delivered, oldest first."""
        cur = self.db.execute(
            "SELECT id, lane, topic, payload, qos, retain, seq FROM outbox"
            " WHERE sent IS NULL AND lane=? AND id>?"
            " AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uplink=? AND d.id=outbox.id) ORDER BY id LIMIT ?",
            (lane, after, uplink, limit),
        )
        return [Row(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5]), r[6]) for r in cur]

    def rows(self, ids: Sequence[int]) -> list[Row]:
        """The rows of ``ids`` still stored, in id order (sent or not)."""
        out: list[Row] = []
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = list(ids[start:start + 500])
            cur = self.db.execute("SELECT id, lane, topic, payload, qos, retain, seq FROM outbox WHERE id IN"
                                  f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk)
            out += [Row(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5]), r[6]) for r in cur]
        return out

    # --- uplinks and their cursors ---------------------------------------------------------------

    def uplinks(self) -> list[str]:
        """The uplinks every row must reach before it counts as sent."""
        return [r[0] for r in self.db.execute("SELECT name FROM uplinks ORDER BY name")] or [DEFAULT_UPLINK]

    def set_uplinks(self, names: Sequence[str], now: float | None = None) -> None:
        """The configured uplinks. An uplink no longer configured stops holding rows back (what
        only it lacked becomes sent); a new one starts with the rows not yet sent everywhere."""
        now = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM uplinks")
            db.executemany("INSERT INTO uplinks (name) VALUES (?)", [(n,) for n in names])
            db.execute("DELETE FROM delivered WHERE uplink NOT IN (SELECT name FROM uplinks)")
            self._complete(now, None)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _complete(self, now: float, ids: Sequence[int] | None) -> None:
        """Mark sent the rows (of ``ids``, or all) that every uplink has delivered, inside the
        caller's transaction; their cursor entries are no longer needed."""
        n = len(self.uplinks())
        where = "" if ids is None else f" AND id IN ({','.join('?' * len(ids))})"
        args = [] if ids is None else list(ids)
        self.db.execute(
            "UPDATE outbox SET sent=? WHERE sent IS NULL" + where
            + " AND (SELECT count(*) FROM delivered d JOIN uplinks u ON u.name=d.uplink WHERE d.id=outbox.id) >= ?",
            [now, *args, n])
        self.db.execute("DELETE FROM delivered WHERE id IN (SELECT id FROM outbox WHERE sent IS NOT NULL" + where + ")",
                        args)

    def mark_sent(self, ids: Iterable[int], now: float | None = None, uplink: str = DEFAULT_UPLINK) -> None:
        """``uplink`` delivered these rows; each is sent once every uplink has it."""
        ids = list(ids)
        if not ids:
            return
        now = time.time() if now is None else now
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._delivered(ids, now, uplink)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _delivered(self, ids: list[int], now: float, uplink: str) -> None:
        if self.uplinks() == [uplink]:
            self.db.executemany("UPDATE outbox SET sent=? WHERE id=?", [(now, i) for i in ids])
            return
        self.db.executemany("INSERT OR IGNORE INTO delivered (uplink, id) VALUES (?, ?)", [(uplink, i) for i in ids])
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            self._complete(now, ids[start:start + 500])

    def dead_letter(self, rows: Sequence[Row], reason: str, uplink: str = DEFAULT_UPLINK,
                    now: float | None = None) -> None:
        """``uplink``'s platform refused these rows for good: keep a copy in ``dead_letter`` and
        let the rows behind them go. In one transaction, so a row is never neither."""
        if not rows:
            return
        now = time.time() if now is None else now
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO dead_letter (uplink, row_id, lane, topic, payload, seq, created, failed, reason)"
                " SELECT ?, id, lane, topic, payload, seq, created, ?, ? FROM outbox WHERE id=?",
                [(uplink, now, reason, r.id) for r in rows])
            self._delivered([r.id for r in rows], now, uplink)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def dead_letters(self, uplink: str | None = None) -> list[dict[str, Any]]:
        """What the platforms refused, oldest first: uplink, row id, lane, seq, reason, payload."""
        cur = self.db.execute(
            "SELECT uplink, row_id, lane, seq, reason, failed, payload FROM dead_letter"
            " WHERE ? IS NULL OR uplink=? ORDER BY id", (uplink, uplink))
        keys = ("uplink", "row_id", "lane", "seq", "reason", "failed", "payload")
        return [dict(zip(keys, (*r[:6], bytes(r[6])), strict=True)) for r in cur]

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT uplink, count(*) FROM dead_letter GROUP BY uplink").fetchall())

    def depth(self, uplink: str | None = None) -> dict[str, int]:
        """Unsent messages per lane: not yet delivered by every uplink, or (``uplink``) by that one."""
        out = {name: 0 for name in LANES.values()}
        cur = self.db.execute(
            "SELECT lane, count(*) FROM outbox WHERE sent IS NULL AND (? IS NULL OR NOT EXISTS"
            " (SELECT 1 FROM delivered d WHERE d.uplink=? AND d.id=outbox.id)) GROUP BY lane", (uplink, uplink))
        for lane, n in cur:
            out[LANES.get(lane, str(lane))] = n
        return out

    def oldest_unsent(self, uplink: str | None = None) -> dict[str, Any] | None:
        """The oldest row not yet delivered by every uplink (or by ``uplink``): id, lane, seq (alarms
        only) and creation time; None when everything went out. One short index walk per lane."""
        best = None
        for lane in LANES:
            row = self.db.execute(
                "SELECT id, seq, created FROM outbox WHERE sent IS NULL AND lane=? AND (? IS NULL OR NOT EXISTS"
                " (SELECT 1 FROM delivered d WHERE d.uplink=? AND d.id=outbox.id)) ORDER BY id LIMIT 1",
                (lane, uplink, uplink)).fetchone()
            if row is not None and (best is None or row[0] < best[0]):
                best = (*row, lane)
        if best is None:
            return None
        return {"id": best[0], "lane": LANES[best[3]], "seq": best[1], "created": best[2]}

    def alarms(self, since_seq: int = 0) -> list[dict[str, Any]]:
        """Stored alarm documents with seq > since_seq, in seq order (for tests and tools)."""
        cur = self.db.execute("SELECT payload FROM outbox WHERE seq>? ORDER BY seq", (since_seq,))
        return [json.loads(r[0]) for r in cur]

    def prune(self, now: float | None = None, keep_s: float = 30 * 86400) -> int:
        """Delete sent rows older than ``keep_s``. Unsent rows are never deleted here."""
        now = time.time() if now is None else now
        cur = self.db.execute("DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ?", (now - keep_s,))
        return cur.rowcount

    def downsample_telemetry(self, now: float | None = None, older_than_s: float = 86400, bucket_s: float = 900) -> int:
        """Thin sent telemetry created before ``now - older_than_s``: keep the first periodic
        snapshot of every ``bucket_s`` window, drop on-change messages (``"change": true``) and
        the other snapshots. Returns the number of rows deleted."""
        now = time.time() if now is None else now
        cutoff = now - older_than_s
        cur = self.db.execute(
            "DELETE FROM outbox WHERE lane=? AND sent IS NOT NULL AND created < ? AND id NOT IN ("
            " SELECT min(id) FROM outbox WHERE lane=? AND created < ?"
            # payloads in an encrypted profile are not JSON: they count as snapshots
            " AND NOT (json_valid(CAST(payload AS TEXT)) AND json_extract(CAST(payload AS TEXT), '$.change') IS 1)"
            " GROUP BY CAST(created / ? AS INTEGER))",
            (TELEMETRY, cutoff, TELEMETRY, cutoff, bucket_s),
        )
        return cur.rowcount

    def used_bytes(self) -> int:
        """Bytes the stored rows occupy (pages in use; free pages are reused before the file grows)."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        count = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page

    def enforce_cap(self, max_bytes: int) -> dict[str, Any]:
        """Bring the outbox under ``max_bytes`` by dropping the oldest telemetry: sent first,
        then unsent. Alarms are never dropped. Returns what was dropped and whether the outbox
        is still over the cap (then only alarms are left to blame: the storage alarm says so)."""
        used = self.used_bytes()
        dropped = {"sent_telemetry": 0, "unsent_telemetry": 0}
        for key, which in (("sent_telemetry", "sent IS NOT NULL"), ("unsent_telemetry", "sent IS NULL")):
            while used > max_bytes:
                rows, total = self.db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
                # rows needed to free the excess, judged by the average row; re-measured after
                per_row = max(64, used // max(1, rows), total // max(1, rows))
                n = max(64, (used - max_bytes) // per_row + 1)
                cur = self.db.execute(
                    f"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE lane=? AND {which} ORDER BY id LIMIT ?)",
                    (TELEMETRY, n),
                )
                if cur.rowcount <= 0:
                    break
                dropped[key] += cur.rowcount
                used = self.used_bytes()
        if dropped["sent_telemetry"] or dropped["unsent_telemetry"]:
            self.db.execute("PRAGMA incremental_vacuum").fetchall()
        return {"used_bytes": used, "max_bytes": max_bytes, "dropped": dropped, "over": used > max_bytes}

    def maintain(self, max_bytes: int, now: float | None = None, keep_s: float = 30 * 86400,
                 downsample_after_s: float = 86400, bucket_s: float = 900) -> dict[str, Any]:
        """The periodic housekeeping: retention, telemetry thinning, then the size cap.
        Returns ``enforce_cap``'s report plus what retention removed."""
        now = time.time() if now is None else now
        pruned = self.prune(now, keep_s)
        thinned = self.downsample_telemetry(now, downsample_after_s, bucket_s)
        report = self.enforce_cap(max_bytes)
        report["pruned"], report["thinned"] = pruned, thinned
        # cursor entries of rows the cap dropped
        self.db.execute("DELETE FROM delivered WHERE id NOT IN (SELECT id FROM outbox WHERE sent IS NULL)")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report


def unsent_view(row: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The oldest unsent row as the status document and the console show it."""
    if row is None:
        return None
    return {"id": row["id"], "lane": row["lane"], "seq": row["seq"], "created": rfc3339(row["created"]),
            "age_s": round(max(0.0, now - row["created"]), 1)}
