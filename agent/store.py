"""The platform's store: every alarm, status and telemetry message ``plantwatch receive --store``
takes, in PostgreSQL (what N receiver workers share) or SQLite (one worker, nothing to install).

One schema and, where SQL allows, the same statements for both. Alarms are keyed on
(plant, epoch, seq): a message stored again (the broker redelivered it, the gateway sent it
twice) adds one to ``copies`` and changes nothing else, so the store holds each alarm once
whichever worker got it and how often. Gaps, sequence epochs and offline plants are questions
asked of the stored rows (window functions over the seqs of each (plant, epoch), the latest
status of each plant and when anything of it was last heard), so their answer does not depend
on which worker took which message.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alarms (
        plant TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL, ts TEXT NOT NULL,
        doc TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
        worker TEXT NOT NULL, copies INTEGER NOT NULL DEFAULT 1, alarm_id TEXT NOT NULL, state TEXT NOT NULL,
        PRIMARY KEY (plant, epoch, seq))""",
    # storage alarms the gateway sent from memory, before it could number them (docs/PAYLOADS.md)
    """CREATE TABLE IF NOT EXISTS unnumbered (
        plant TEXT NOT NULL, alarm_id TEXT NOT NULL, state TEXT NOT NULL, ts TEXT NOT NULL, epoch TEXT NOT NULL,
        doc TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
        copies INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (plant, alarm_id, state, ts))""",
    """CREATE TABLE IF NOT EXISTS statuses (
        plant TEXT NOT NULL, ts TEXT NOT NULL, online INTEGER NOT NULL, doc TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (plant, ts, online))""",
    """CREATE TABLE IF NOT EXISTS telemetry (
        plant TEXT NOT NULL, ts TEXT NOT NULL, digest TEXT NOT NULL, doc TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (plant, ts, digest))""",
    """CREATE TABLE IF NOT EXISTS plants (
        plant TEXT PRIMARY KEY, last_seen DOUBLE PRECISION NOT NULL)""",
)

INSERT_ALARM = (
    "INSERT INTO alarms (plant, epoch, seq, ts, doc, received_at, stored_at, worker, alarm_id, state) "
    "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (plant, epoch, seq) DO UPDATE SET copies = alarms.copies + 1"
)
INSERT_UNNUMBERED = (
    "INSERT INTO unnumbered (plant, alarm_id, state, ts, epoch, doc, received_at, stored_at) VALUES (?,?,?,?,?,?,?,?) "
    "ON CONFLICT (plant, alarm_id, state, ts) DO UPDATE SET copies = unnumbered.copies + 1"
)
INSERT_STATUS = (
    "INSERT INTO statuses (plant, ts, online, doc, received_at, stored_at) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT (plant, ts, online) DO NOTHING"
)
INSERT_TELEMETRY = (
    "INSERT INTO telemetry (plant, ts, digest, doc, received_at, stored_at) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT (plant, ts, digest) DO NOTHING"
)
# {greatest}: GREATEST in PostgreSQL, the two-argument max() in SQLite
SEEN = ("INSERT INTO plants (plant, last_seen) VALUES (?, ?) "
        "ON CONFLICT (plant) DO UPDATE SET last_seen = {greatest}(plants.last_seen, excluded.last_seen)")

# a jump in seq within one (plant, epoch): the seqs between the neighbours are missing; the
# first stored seq of an epoch above 1 leaves 1..seq-1 missing
GAPS = """SELECT plant, epoch, prev + 1 AS first, seq - 1 AS last FROM (
    SELECT plant, epoch, seq, LAG(seq, 1, 0) OVER (PARTITION BY plant, epoch ORDER BY seq) AS prev FROM alarms) s
    WHERE seq > prev + 1 ORDER BY plant, epoch, first"""
# one row per (plant, epoch), in the order the gateway used them (its first alarm's time)
EPOCHS = """SELECT plant, epoch, COUNT(*), MIN(seq), MAX(seq), SUM(copies) - COUNT(*), MIN(ts), MIN(received_at)
    FROM alarms GROUP BY plant, epoch ORDER BY plant, MIN(ts), MIN(received_at)"""
# each plant's latest status as received (a will carries the time its connection began, so the
# arrival orders statuses, not their ts) and when anything of it was last heard
# each unnumbered alarm with the seq of its numbered record (NULL: none stored yet)
UNNUMBERED = """SELECT u.plant, u.alarm_id, u.state, u.ts, MIN(a.seq) FROM unnumbered u LEFT JOIN alarms a
    ON a.plant = u.plant AND a.alarm_id = u.alarm_id AND a.state = u.state AND a.ts = u.ts
    GROUP BY u.plant, u.alarm_id, u.state, u.ts ORDER BY u.plant, u.ts"""
PRESENCE = """SELECT p.plant, p.last_seen, s.online, s.ts FROM plants p LEFT JOIN (
    SELECT plant, online, ts, ROW_NUMBER() OVER (PARTITION BY plant ORDER BY received_at DESC, ts DESC) AS n
    FROM statuses) s ON s.plant = p.plant AND s.n = 1 ORDER BY p.plant"""


class StoreError(Exception):
    """The database could not be reached or refused the write; nothing of the batch was stored."""


class StoreUrlError(ValueError):
    """A --store URL the receiver cannot use."""


@dataclass(frozen=True)
class Row:
    """One message as it goes into the store."""

    kind: str  # alarm | unnumbered | status | telemetry
    plant: str
    ts: str
    doc: str
    received_at: float
    retained: bool = False
    epoch: str = ""  # alarm, unnumbered
    seq: int = 0  # alarm
    alarm_id: str = ""  # alarm, unnumbered
    state: str = ""  # alarm, unnumbered
    online: bool = False  # status
    digest: str = ""  # telemetry: the payload's hash (a redelivered snapshot is the same row)


@dataclass
class Report:
    """What the stored messages say about the plants: gaps, duplicates, epochs, presence."""

    epochs: list[tuple]  # (plant, epoch, count, min seq, max seq, copies received again, first ts, first arrival)
    gaps: list[tuple]  # (plant, epoch, first missing, last missing)
    presence: list[tuple]  # (plant, last seen, online of the latest status or None, its ts)
    unnumbered: list[tuple]  # (plant, alarm id, state, ts, seq of its numbered record or None)
    now: float
    offline_after: float

    def offline(self) -> list[tuple[str, str]]:
        """(plant, why) of every plant whose latest status says offline or that fell silent."""
        out = []
        for plant, seen, online, ts in self.presence:
            if online is not None and not online:
                out.append((plant, f"status offline at {ts}"))
            elif not seen:
                out.append((plant, "never heard, only its retained status"))
            elif self.now - seen > self.offline_after:
                out.append((plant, f"nothing heard for {self.now - seen:.0f} s (over {self.offline_after:g} s)"))
        return out

    def lines(self) -> list[str]:
        out = []
        by_plant: dict[str, list[tuple]] = {}
        for row in self.epochs:
            by_plant.setdefault(row[0], []).append(row)
        for plant, rows in by_plant.items():
            for before, row in zip([None, *rows], rows, strict=False):
                _, epoch, count, low, high, again, first_ts, _ = row
                if before is not None:
                    out.append(f"EPOCH {plant}: new sequence epoch {epoch} (was {before[1]}) from {first_ts}: "
                               "the gateway started a new outbox, seq starts again at 1")
                out.append(f"plant {plant} epoch {epoch or '(none)'}: {count} alarms, seq {low}..{high}, "
                           f"{again} received again (stored once)")
        for plant, alarm_id, state, ts, seq in self.unnumbered:
            record = f"its numbered record is seq {seq}" if seq else "NO NUMBERED RECORD stored (yet)"
            out.append(f"UNNUMBERED {plant} {alarm_id} {state} at {ts}: sent from the gateway's memory; {record}")
        for plant, epoch, first, last in self.gaps:
            out.append(f"GAP {plant} epoch {epoch or '(none)'}: seq {first}..{last} missing ({last - first + 1})")
        offline = dict(self.offline())
        for plant, seen, online, _ in self.presence:
            state = f"OFFLINE ({offline[plant]})" if plant in offline else "online" if online else "no status yet"
            heard = f"last heard {self.now - seen:.0f} s ago" if seen else "never heard live"
            out.append(f"plant {plant}: {state}, {heard}")
        missing = sum(last - first + 1 for _, _, first, last in self.gaps)
        again = sum(row[5] for row in self.epochs)
        alone = sum(1 for row in self.unnumbered if row[4] is None)
        out.append(f"{sum(row[2] for row in self.epochs)} alarms stored, {missing} missing in {len(self.gaps)} gaps, "
                   f"{again} duplicates received, {len(self.unnumbered)} unnumbered ({alone} without a numbered record), "
                   f"{len(offline)} of {len(self.presence)} plants offline")
        return out


class Store:
    """A connection to the store; ``write`` stores one batch in one transaction."""

    greatest = "max"
    placeholder = "?"

    def __init__(self, url: str, worker: str = ""):
        self.url = url
        self.worker = worker
        self.conn = None

    @staticmethod
    def open(url: str, worker: str = "") -> Store:
        """The store a --store URL names (not connected yet); StoreUrlError when it names none."""
        scheme = urlsplit(url).scheme
        if scheme in ("postgresql", "postgres"):
            return PostgresStore(url, worker)
        if scheme == "sqlite":
            path = url[len("sqlite://"):]
            if not path.startswith("/") or path == "/":
                raise StoreUrlError(f"--store {url}: give sqlite:///PATH (three slashes, then the file's path)")
            return SqliteStore(url, worker)
        raise StoreUrlError(f"--store {url}: the scheme must be postgresql:// or sqlite:///")

    @property
    def safe_url(self) -> str:
        """The URL without its password, for the log."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()

    def sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder).replace("{greatest}", self.greatest)

    def connect(self) -> None:
        """Connect (if not connected) and create the tables; StoreError when that fails."""
        raise NotImplementedError

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # a connection that is already broken
                pass
            self.conn = None

    def _rows(self, rows: Sequence[Row], now: float) -> dict[str, list[tuple]]:
        """The parameters of each statement, sorted by key so that concurrent workers lock rows in
        one order (no deadlock between two batches touching the same plants)."""
        alarms = sorted((r.plant, r.epoch, r.seq, r.ts, r.doc, r.received_at, now, self.worker, r.alarm_id, r.state)
                        for r in rows if r.kind == "alarm")
        unnumbered = sorted((r.plant, r.alarm_id, r.state, r.ts, r.epoch, r.doc, r.received_at, now)
                            for r in rows if r.kind == "unnumbered")
        statuses = sorted((r.plant, r.ts, int(r.online), r.doc, r.received_at, now) for r in rows if r.kind == "status")
        telemetry = sorted((r.plant, r.ts, r.digest, r.doc, r.received_at, now) for r in rows if r.kind == "telemetry")
        seen: dict[str, float] = {}
        for r in rows:  # a retained status is the broker's memory, not a sign of life: the plant, never heard
            seen[r.plant] = max(seen.get(r.plant, 0.0), 0.0 if r.retained else r.received_at)
        return {INSERT_ALARM: alarms, INSERT_UNNUMBERED: unnumbered, INSERT_STATUS: statuses, INSERT_TELEMETRY: telemetry,
                SEEN: sorted(seen.items())}

    def write(self, rows: Sequence[Row]) -> None:
        """Store a batch in one transaction; StoreError (nothing stored) when it fails."""
        params = self._rows(rows, time.time())
        try:
            self.connect()
            self._write(params)
        except StoreError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise StoreError(f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc

    def _write(self, params: dict[str, list[tuple]]) -> None:
        raise NotImplementedError

    def query(self, statement: str) -> list[tuple]:
        try:
            self.connect()
            cur = self.conn.cursor()
            cur.execute(self.sql(statement))
            return [tuple(r) for r in cur.fetchall()]
        except StoreError:
            raise
        except Exception as exc:
            self.close()
            raise StoreError(f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc

    def report(self, offline_after: float, now: float | None = None) -> Report:
        return Report(self.query(EPOCHS), self.query(GAPS), self.query(PRESENCE), self.query(UNNUMBERED),
                      time.time() if now is None else now, offline_after)


class SqliteStore(Store):
    """The embedded store for one worker: a file, WAL, each batch fsynced before it is acknowledged."""

    def connect(self) -> None:
        if self.conn is not None:
            return
        path = Path(self.url[len("sqlite://"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            for statement in SCHEMA:
                conn.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: {exc}") from exc
        self.conn = conn

    def _write(self, params: dict[str, list[tuple]]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement, values in params.items():
                if values:
                    conn.executemany(self.sql(statement), values)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class PostgresStore(Store):
    """PostgreSQL through psycopg 3: what several workers share; batches sent pipelined."""

    greatest = "GREATEST"
    placeholder = "%s"

    def connect(self) -> None:
        if self.conn is not None:
            return
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError('psycopg is not installed (pip install "plantwatch[platform]")') from exc
        try:
            conn = psycopg.connect(self.url, connect_timeout=5, autocommit=True)
            with conn.transaction():
                # workers starting together: one creates the tables, the others wait for it
                conn.execute("SELECT pg_advisory_xact_lock(7036142)")
                for statement in SCHEMA:
                    conn.execute(statement)
        except psycopg.Error as exc:
            raise StoreError(str(exc).strip()[:300]) from exc
        self.conn = conn

    def _write(self, params: dict[str, list[tuple]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            for statement, values in params.items():
                if values:
                    sql, key = BULK[statement]
                    cur.execute(sql, [list(column) for column in zip(*_counted(values, key), strict=True)])


# PostgreSQL: each statement once per batch, its rows as one array per column (sent binary:
# no text escaping); the alarms and
# unnumbered statements take a row once with the number of its copies in the batch (one INSERT
# cannot update a row twice), so ``copies`` counts as the row-by-row statements count
BULK = {
    INSERT_ALARM: (
        "INSERT INTO alarms (plant, epoch, seq, ts, doc, received_at, stored_at, worker, alarm_id, state, copies) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::float8[], "
        "%b::float8[], %b::text[], %b::text[], %b::text[], %b::int[]) "
        "ON CONFLICT (plant, epoch, seq) DO UPDATE SET copies = alarms.copies + excluded.copies", 3),
    INSERT_UNNUMBERED: (
        "INSERT INTO unnumbered (plant, alarm_id, state, ts, epoch, doc, received_at, stored_at, copies) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
        "%b::float8[], %b::float8[], %b::int[]) "
        "ON CONFLICT (plant, alarm_id, state, ts) DO UPDATE SET copies = unnumbered.copies + excluded.copies", 4),
    INSERT_STATUS: (
        "INSERT INTO statuses (plant, ts, online, doc, received_at, stored_at) SELECT * FROM unnest("
        "%b::text[], %b::text[], %b::int[], %b::text[], %b::float8[], %b::float8[]) "
        "ON CONFLICT (plant, ts, online) DO NOTHING", 0),
    INSERT_TELEMETRY: (
        "INSERT INTO telemetry (plant, ts, digest, doc, received_at, stored_at) SELECT * FROM unnest("
        "%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[]) "
        "ON CONFLICT (plant, ts, digest) DO NOTHING", 0),
    SEEN: (
        "INSERT INTO plants (plant, last_seen) SELECT * FROM unnest(%b::text[], %b::float8[]) "
        "ON CONFLICT (plant) DO UPDATE SET last_seen = GREATEST(plants.last_seen, excluded.last_seen)", 0),
}


def _counted(rows: list[tuple], key: int) -> list[tuple]:
    """``rows`` (sorted) as they are; with ``key``, each row once per key (its first, as the
    row-by-row insert keeps the first), the number of rows of that key appended."""
    if not key:
        return rows
    out: list[tuple] = []
    for row in rows:
        if out and out[-1][:key] == row[:key]:
            out[-1] = (*out[-1][:-1], out[-1][-1] + 1)
        else:
            out.append((*row, 1))
    return out
