"""``plantwatch history CONFIG TAG [--from T] [--to T] [--csv]``: one tag's recorded history.

Part of the shell. It reads the day files directly (read-only, beside a running agent). To
answer within a second on a gateway whose config holds thousands of tags, it does not read
the whole config: it takes the ``[agent]`` and ``[history]`` tables out of the file (their
``data_dir``, ``timezone`` and ``dir``, with the defaults of their declarations; tests check
both readings agree) and looks the tag up in the day files. Anything it cannot take that way (a
table it cannot read plainly, an odd value, a tag the files do not hold) falls back to the full
config load, which reports a broken config like every command does (exit 2).
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from agent.history_compress import Points
from agent.history_store import DAY_S, has, names, read

QUALITY_NAMES = ("good", "uncertain", "bad", "comm_fail")
# the declared defaults of [agent] data_dir and timezone (agent/config/sections.py)
DEFAULT_DATA_DIR = "/var/lib/plantwatch"
DEFAULT_TIMEZONE = "Asia/Shanghai"


class QueryError(Exception):
    """Bad arguments: exit 2."""


@dataclass(frozen=True)
class Where:
    """What the query needs from the config."""

    directory: Path
    timezone: str


_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*\]\]?\s*(#.*)?")


def _sections(text: str) -> dict[str, Any] | None:
    """The [agent] and [history] tables, read without parsing the (maybe 10,000) [[tags]]; None
    when the file may define them in a way this does not follow (keys before the first table,
    a table given twice, anything tomllib will not take)."""
    picked: list[str] = []
    keep, seen, started = False, set(), False
    for line in text.splitlines():
        m = _HEADER.fullmatch(line)
        if m:
            started = True
            name = m.group(2).replace(" ", "")
            keep = m.group(1) == "[" and name.split(".")[0] in ("agent", "history")
            if keep and name in seen:
                return None
            seen.add(name)
        elif not started and line.strip() and not line.lstrip().startswith("#"):
            return None  # top-level keys (e.g. dotted `agent.data_dir = …`): read the whole file
        if keep:
            picked.append(line)
    try:
        return tomllib.loads("\n".join(picked))
    except tomllib.TOMLDecodeError:
        return None


def locate(path: str | Path) -> Where | None:
    """The history directory and time zone from the config's [agent] and [history] tables
    alone; None when the file does not give them plainly (the caller then loads the config)."""
    path = Path(path)
    try:
        data = _sections(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    if data is None:
        return None
    agent, history = data.get("agent"), data.get("history", {})
    if not (isinstance(agent, dict) and isinstance(history, dict)):
        return None
    data_dir, tz, hdir = agent.get("data_dir", DEFAULT_DATA_DIR), agent.get("timezone", DEFAULT_TIMEZONE), \
        history.get("dir")
    if not (isinstance(data_dir, str) and data_dir.strip() and isinstance(tz, str)
            and (hdir is None or isinstance(hdir, str))):
        return None
    try:
        ZoneInfo(tz)
    except (ValueError, KeyError):
        return None
    base = path.parent
    return Where(base / hdir if hdir is not None else base / data_dir / "history", tz)


def parse_time(text: str, tz: ZoneInfo) -> float:
    """RFC 3339 (``2026-11-29T08:00:00Z``, ``…+08:00``), or ``YYYY-MM-DD[ HH:MM[:SS]]`` in the
    plant's time zone."""
    t = text.strip()
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{text!r} is not a time (RFC 3339, or YYYY-MM-DD HH:MM[:SS] in {tz.key})") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)).timestamp()


def window(start: str | None, to: str | None, tz: ZoneInfo, now: float) -> tuple[float, float]:
    """--from/--to: --to defaults to now, --from to 24 hours before --to."""
    t1 = parse_time(to, tz) if to else now
    t0 = parse_time(start, tz) if start else t1 - DAY_S
    if t0 >= t1:
        raise QueryError("--from must be before --to")
    return t0, t1


def run(args: Any, load: Callable[[str], Any], out: Any = None) -> int:
    """0 with the points printed, 1 without any history recorded or files that cannot be read,
    2 for an unknown tag, bad times or a broken config. ``load`` is the full config load (None
    when it is broken)."""
    try:
        return _run(args, load, out or sys.stdout)
    except sqlite3.DatabaseError as exc:
        print(f"history: cannot read the history files: {exc}", file=sys.stderr)
        return 1


def _run(args: Any, load: Callable[[str], Any], out: Any) -> int:
    where = locate(args.config)
    if where is None or not has(where.directory, args.tag):
        # not plainly there: the whole config decides (a configured tag with no history yet,
        # a tag from a points list, an unknown tag, a broken config)
        cfg = load(args.config)
        if cfg is None:
            return 2
        where = Where(cfg.history.path(cfg.agent.data_dir), cfg.agent.timezone)
        configured = [t.name for t in cfg.tags]
        if args.tag not in configured and not has(where.directory, args.tag):
            from agent.config.schema import did_you_mean

            known = sorted(set(configured) | names(where.directory))
            print(f"history: unknown tag {args.tag!r}{did_you_mean(args.tag, known)}", file=sys.stderr)
            return 2
    tz = ZoneInfo(where.timezone)
    try:
        t0, t1 = window(args.start, args.to, tz, time.time())
    except QueryError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    if not where.directory.is_dir():
        print(f"history: nothing recorded yet in {where.directory}", file=sys.stderr)
        return 1
    pts = read(where.directory, args.tag, t0, t1)
    out.write(csv_text(args.tag, pts) if args.csv else text(args.tag, pts, tz, t0, t1))
    return 0


def _utc(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.rint(ts * 1000).astype(np.int64).astype("datetime64[ms]"), unit="ms")


def _values(pts: Points, empty: str) -> list[str]:
    return [empty if v != v else repr(v) for v in pts.value.tolist()]


def _qualities(pts: Points) -> list[str]:
    return [QUALITY_NAMES[q] if q < len(QUALITY_NAMES) else str(q) for q in pts.quality.tolist()]


def csv_text(tag: str, pts: Points) -> str:
    """``time,TAG,quality``: RFC 3339 UTC with milliseconds, the value (empty for none), the
    quality's name. ``plantwatch replay`` reads it back (the column is named like the tag)."""
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(["time", tag, "quality"])
    rows = [f"{t}Z,{v},{q}\n" for t, v, q in zip(_utc(pts.ts).tolist(), _values(pts, ""), _qualities(pts), strict=True)]
    return head.getvalue() + "".join(rows)


def text(tag: str, pts: Points, tz: ZoneInfo, t0: float, t1: float) -> str:
    """A header line, then ``time  value  quality`` with times in the plant's zone."""
    def local(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).isoformat(sep=" ", timespec="milliseconds")

    # the zone's offset per hour of the window (zones change offset on the hour)
    hours = np.floor(pts.ts / 3600).astype(np.int64)
    offsets = {h: datetime.fromtimestamp(h * 3600.0, tz).utcoffset() for h in np.unique(hours).tolist()}
    shift = np.array([offsets[h].total_seconds() for h in hours.tolist()]) if len(pts) else np.zeros(0)
    suffix = {s: f"{'+' if s >= 0 else '-'}{int(abs(s)) // 3600:02d}:{int(abs(s)) % 3600 // 60:02d}"
              for s in set(shift.tolist())}
    stamps = _utc(pts.ts + shift).tolist()
    rows = [f"{t.replace('T', ' ')}{suffix[s]}  {_short(v)}  {q}\n"
            for t, s, v, q in zip(stamps, shift.tolist(), pts.value.tolist(), _qualities(pts), strict=True)]
    return f"# {tag} {local(t0)} .. {local(t1)} ({tz.key}): {len(pts)} points\n" + "".join(rows)


def _short(v: float) -> str:
    return f"{v:.10g}"
