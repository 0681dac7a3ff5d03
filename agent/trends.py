"""Trends for the console: ``GET /trend?tag=NAME`` and ``GET /trend?model=NAME`` (read-only JSON),
``GET /trend/models``.

Part of the shell. The rings (agent.trend_ring) are filled on the event loop from every batch the
agent handles, one vectorised write per batch, and from the model statistics the detector
families computed for it (``Engine.statistics``). A range older than the tags' ring is read from
the local history (agent.history_store) when ``[history] enabled``: by ``HistoryReader`` in a thread
of its own, one read at a time, while the event loop goes on (``Trends.route`` answers such a
request with an awaitable, which the API awaits); at most ``HISTORY_LINE`` requests wait for the
history, one more is answered 429 ``history_busy``. Every bad request is answered
4xx with ``{"ok": false, "code", "error"}``: ``code`` is what the page translates, ``error`` the
details in English.

Query: ``seconds=S`` (the last S seconds, default 3600) or ``from=T`` and ``to=T`` (RFC 3339 or
``YYYY-MM-DD HH:MM[:SS]`` in the plant's time zone, or seconds since the epoch; ``to`` defaults
to now).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import numpy as np

import detectors
from agent.config import Config
from agent.config.schema import did_you_mean
from agent.history_query import QueryError, parse_time
from agent.history_store import read
from agent.payloads import rfc3339
from agent.trend_ring import Ring, Series, decimate, ring_resolution, ring_slots
from detectors.base import Statistic
from drivers.base import BAD, SampleBatch

MB = 2**20
MAX_POINTS = 720  # a history range is read back in buckets of this fraction of it (+1: they are aligned)
EPOCH_RANGE = (0.0, 4102444800.0)  # 1970 .. 2100: what a request's times may be
MAX_SPAN_S = 7 * 86400.0  # the longest range
HISTORY_LINE = 4  # trend requests on the history at once: one reading, the others waiting their turn

STOPPING = "the agent is stopping: the history was not read"

Answer = tuple[int, str, bytes]
T = TypeVar("T")


class TrendError(Exception):
    """A request the trend cannot answer: its HTTP status, the page's code, the details."""

    def __init__(self, status: int, code: str, text: str):
        super().__init__(text)
        self.status, self.code = status, code


class HistoryReader:
    """The trends' reads of the history: in a thread of their own, off the event loop, one at a
    time (SQLite reads in series), at most ``line`` at once; one more is refused."""

    def __init__(self, line: int = HISTORY_LINE):
        self.line = line
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="trend-history")
        self.pending: list[Future[Any]] = []  # reading or waiting, oldest first
        self.waiters: set[asyncio.Future[Any]] = set()  # what the requests await
        self.busy = 0  # requests refused because the line was full
        self.closed = False

    @property
    def reading(self) -> int:
        """Requests reading the history or waiting to."""
        self.pending = [f for f in self.pending if not f.done()]
        return len(self.pending)

    async def read(self, fn: Callable[[], T]) -> T:
        """``fn()`` run in the reader's thread (on the event loop: only the wait)."""
        if self.closed:
            raise TrendError(503, "stopping", STOPPING)
        if self.reading >= self.line:
            self.busy += 1
            raise TrendError(429, "history_busy", f"{self.line} trend requests are on the history already (one reads, the "
                             "others wait their turn): try again in a moment")
        future = self.executor.submit(fn)
        self.pending.append(future)
        waiter = asyncio.wrap_future(future)
        self.waiters.add(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.closed or (task is not None and task.cancelling()):
                raise  # the request itself was cancelled
        finally:
            self.waiters.discard(waiter)
        raise TrendError(503, "stopping", STOPPING)

    def close(self) -> None:
        """The agent stops: the requests in line are answered 503 at once, the reads not begun
        are dropped; the one under way ends in its thread."""
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)
        for waiter in self.waiters:
            waiter.cancel()


class Trends:
    """The rings of one agent and the answers to the console's trend requests."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        t = cfg.trend
        n = len(cfg.tags)
        slots = ring_slots(t.window_s, t.resolution_s, n, t.max_mb * MB)
        self.tags = Ring(n, slots, ring_resolution(t.window_s, t.resolution_s, slots))
        # the model statistics: a few series, at the configured resolution
        full = max(2, math.ceil(t.window_s / t.resolution_s))
        self.stats, self.limits = Ring(0, full, t.resolution_s), Ring(0, full, t.resolution_s)
        self.series: dict[tuple[str, str], int] = {}  # (model, statistic) -> row of self.stats
        self.index = cfg.tag_positions
        self.models = {m.name: m for m in cfg.models}
        self.history = cfg.history.path(cfg.agent.data_dir) if cfg.history.enabled else None
        self.tz = ZoneInfo(cfg.agent.timezone)
        self.reader = HistoryReader()

    # --- filling (the event loop, every batch) ----------------------------------------------------

    def record(self, batch: SampleBatch) -> None:
        """A batch's samples of good or uncertain quality (BAD and COMM_FAIL values are not shown)."""
        if len(batch) == 0:
            return
        ok = batch.quality < BAD
        if ok.all():
            self.tags.add(batch.tag, batch.ts, batch.value)
        else:
            self.tags.add(batch.tag[ok], batch.ts[ok], batch.value[ok])

    def record_statistics(self, stats: list[Statistic]) -> None:
        """The model statistics of a batch (``Engine.statistics``), each with its limit."""
        if not stats:
            return
        rows = [self._row(s) for s in stats]
        row = np.concatenate([np.full(len(s.ts), r, dtype=np.int64) for r, s in zip(rows, stats, strict=True)])
        ts = np.concatenate([s.ts for s in stats])
        self.stats.add(row, ts, np.concatenate([s.value for s in stats]))
        self.limits.add(row, ts, np.concatenate([np.full(len(s.ts), s.limit) for s in stats]))

    def _row(self, s: Statistic) -> int:
        key = (s.source, s.name)
        if key not in self.series:
            self.series[key] = len(self.series)
            self.stats.grow(len(self.series))
            self.limits.grow(len(self.series))
        return self.series[key]

    # --- answering ------------------------------------------------------------------------------

    def get(self, path: str, query: str, now: float) -> Answer:
        """The answer to ``GET /trend`` or ``/trend/models`` with query string ``query``, a range
        older than the ring read from the history in this thread."""
        return self._answer(path, query, now, None)  # type: ignore[return-value]

    def route(self, path: str, query: str, now: float) -> Answer | Awaitable[Answer]:
        """The console's route: the same answer as ``get``, at once when the ring has it; when some
        of the range is read from the history, an awaitable of it, the read done by ``reader`` in
        its thread while the event loop goes on (or 429 ``history_busy`` when its line is full)."""
        return self._answer(path, query, now, self.reader)

    def close(self) -> None:
        self.reader.close()

    def _answer(self, path: str, query: str, now: float, reader: HistoryReader | None) -> Answer | Awaitable[Answer]:
        try:
            if path == "/trend/models":
                return _ok({"ok": True, "models": self.model_list()})
            q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
            t0, t1 = self.window(q, now)
            if "tag" in q:
                doc, older = self.tag_trend(q["tag"], t0, t1, now)
                if older is None:
                    return _ok(_points(doc, []))
                if reader is None:
                    return _ok(_points(doc, [older()]))
                return self._later(doc, older, reader)
            if "model" in q:
                return _ok(self.model_trend(q["model"], t0, t1))
            raise TrendError(400, "no_series", "name a tag (?tag=NAME) or a model (?model=NAME)")
        except TrendError as exc:
            return _error(exc)

    @staticmethod
    async def _later(doc: dict[str, Any], older: Callable[[], Series], reader: HistoryReader) -> Answer:
        try:
            return _ok(_points(doc, [await reader.read(older)]))
        except TrendError as exc:
            return _error(exc)

    def window(self, q: dict[str, str], now: float) -> tuple[float, float]:
        try:
            if "from" in q:
                t1 = _time(q["to"], self.tz) if q.get("to") else now
                t0 = _time(q["from"], self.tz)
            else:
                t1, t0 = now, now - float(q.get("seconds") or 3600)
        except (QueryError, ValueError) as exc:
            raise TrendError(400, "bad_range", f"bad time range: {exc}") from None
        if not (EPOCH_RANGE[0] <= t0 <= EPOCH_RANGE[1] and EPOCH_RANGE[0] <= t1 <= EPOCH_RANGE[1]):
            raise TrendError(400, "bad_range", "times must lie between 1970 and 2100")
        if t0 >= t1:
            raise TrendError(400, "bad_range", "the range must start before it ends (from < to, seconds > 0)")
        if t1 - t0 > MAX_SPAN_S:
            raise TrendError(400, "bad_range", f"a trend spans at most {MAX_SPAN_S / 86400:g} days")
        return t0, t1

    def tag_trend(self, name: str, t0: float, t1: float, now: float) -> tuple[dict[str, Any], Callable[[], Series] | None]:
        """The answer to a tag's trend with the ring's part in ``points`` (a Series, read here, on
        the loop that fills the ring), and what reads the older part from the history (or None):
        ``_points`` puts the two together."""
        if name not in self.index:
            raise TrendError(404, "unknown_tag", f"unknown tag {name!r}{did_you_mean(name, self.index)}")
        tag = self.cfg.tags[self.index[name]]
        start = self.tags.start()
        held = start if start is not None else now  # the ring holds [held, now]
        sources, read = [], None
        older = min(t1, held)
        if t0 < older:  # some of the range is older than the ring
            if self.history is not None:
                width = max(self.tags.resolution_s, (older - t0) / MAX_POINTS)
                read = partial(self._from_history, name, t0, older, width)
                sources.append({"source": "history", "from": rfc3339(t0), "to": rfc3339(older)})
            elif t1 < held:
                raise TrendError(400, "beyond_ring", self._beyond(t1, start))
        ring = Series.concat([])
        if start is not None and t1 >= start:
            ring = self.tags.series(tag.index, max(t0, start), t1)
            sources.append({"source": "ring", "from": rfc3339(max(t0, start)), "to": rfc3339(t1)})
        limits: dict[str, float] = {}
        for family, params in tag.families.items():
            limits.update(detectors.load(family).value_limits(params))
        return {"ok": True, "tag": name, "unit": tag.unit, "device": tag.device or "", "desc": tag.desc,
                "from": t0, "to": t1, "resolution_s": self.tags.resolution_s, "ring_from": start,
                "history": self.history is not None, "sources": sources, "limits": limits, "points": ring}, read

    def _beyond(self, t1: float, start: float | None) -> str:
        held = f"since {rfc3339(start)}" if start is not None else "nothing yet"
        return (f"the range ends at {rfc3339(t1)}, before what the in-memory trend holds ({held}, at most the last "
                f"{self.cfg.trend.window_s:g} s), and [history] is disabled: nothing older is kept")

    def _from_history(self, name: str, t0: float, t1: float, width: float) -> Series:
        assert self.history is not None
        try:
            pts = read(self.history, name, t0, t1) if self.history.is_dir() else None
        except sqlite3.DatabaseError as exc:
            raise TrendError(503, "history_unreadable", f"the history files cannot be read: {exc}") from None
        if pts is None or len(pts) == 0:
            return Series.concat([])
        ok = pts.quality < BAD
        return decimate(pts.ts[ok], pts.value[ok], t0, t1, width)

    def model_trend(self, name: str, t0: float, t1: float) -> dict[str, Any]:
        if name not in self.models:
            raise TrendError(404, "unknown_model", f"unknown model {name!r}{did_you_mean(name, self.models)}"
                             + (f" (models: {', '.join(self.models)})" if self.models else " (no [[models]] configured)"))
        start = self.stats.start()
        if start is not None and t1 < start:
            raise TrendError(400, "beyond_ring", f"a model's statistics are kept in memory only (the last "
                             f"{self.cfg.trend.window_s:g} s, since {rfc3339(start)}); the range ends at {rfc3339(t1)}")
        out = {}
        for (model, stat), row in self.series.items():
            if model == name:
                values, limits = self.stats.series(row, t0, t1), self.limits.series(row, t0, t1)
                out[stat] = {"points": values.rows(), "limit": [[t, c] for t, _, _, c in limits.rows()]}
        return {"ok": True, "model": name, "kind": self.models[name].kind, "from": t0, "to": t1,
                "resolution_s": self.stats.resolution_s, "ring_from": start, "statistics": out}

    def model_list(self) -> list[dict[str, Any]]:
        return [{"name": m.name, "kind": m.kind, "tags": list(m.tags)} for m in self.models.values()]


def _time(text: str, tz: ZoneInfo) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_time(text, tz)


def _points(doc: dict[str, Any], older: list[Series]) -> dict[str, Any]:
    """A tag's answer with its points: those read from the history, then the ring's."""
    return {**doc, "points": Series.concat([*older, doc["points"]]).rows()}


def _error(exc: TrendError) -> Answer:
    return exc.status, "application/json", _json({"ok": False, "code": exc.code, "error": str(exc)})


def _ok(doc: dict[str, Any]) -> Answer:
    return 200, "application/json", _json(doc)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()
