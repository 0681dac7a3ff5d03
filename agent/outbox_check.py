"""The outbox at start: read through after an unclean stop, and a corrupt one moved aside.

Part of the shell. ``open_checked`` gives the agent its outbox; a file SQLite finds damaged is
renamed, with its -wal and -shm, to ``outbox.corrupt-STAMP.db`` in the same directory (kept,
never deleted) and a new outbox, with a new epoch, is started (agent.outbox).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from agent.outbox import CORRUPT, Outbox

BUSY_TIMEOUT_S = 10.0


def damage(path: Path, always: bool = True) -> str | None:
    """What SQLite's quick check (every page read) finds wrong with the outbox at ``path``, None
    if it is sound or does not exist. Without ``always``, a file the agent closed cleanly (the
    ``clean`` mark, ``Outbox.closed_cleanly``) is not read through. On a read-only connection:
    unlike a read-write one, its close never removes the -wal and -shm files, which must be kept
    with a corrupt file."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.DatabaseError:
        return None  # cannot even be opened: Outbox says why
    try:
        if not always and db.execute("SELECT value FROM meta WHERE key='clean'").fetchone() == (1,):
            return None
        rows = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode & 0xFF not in CORRUPT:
            return None  # locked, unreadable...: not damage; Outbox reports it
        return str(exc)
    finally:
        db.close()
    return None if rows == ["ok"] else "; ".join(rows)


def open_checked(path: Path) -> tuple[Outbox, tuple[Path, str] | None]:
    """The agent's own outbox at start. A corrupt one (not a database, or damaged pages: read
    through unless the agent closed it cleanly) is moved aside, with its -wal and -shm, as
    ``outbox.corrupt-STAMP.db`` in the same directory (kept, never deleted) and a new outbox,
    with a new epoch, is started. Returns the outbox and (where the old file went, what was
    wrong) when that happened."""
    problem = damage(path, always=False)
    if problem is None:
        outbox = Outbox(path)
        outbox.running()
        return outbox, None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}")
    for suffix in ("-wal", "-shm", ""):  # the main file last: no new outbox may pick up the old WAL
        old = path.with_name(path.name + suffix)
        if old.exists():
            old.rename(aside.with_name(aside.name + suffix))
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames are durable before the new file is
    finally:
        os.close(fd)
    outbox = Outbox(path)
    outbox.running()
    return outbox, (aside, problem)


def set_aside(directory: Path, name: str = "outbox.db") -> list[Path]:
    """The corrupt outboxes ``open_checked`` moved aside in ``directory`` that are still there."""
    stem, suffix = name.rsplit(".", 1)
    return sorted(directory.glob(f"{stem}.corrupt-*.{suffix}"))
