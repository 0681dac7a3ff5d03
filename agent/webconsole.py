"""The web console: static files shipped in the package (agent/console/) and the live updates
(``GET /events``, server-sent events) the page listens to.

Part of the shell. The broadcaster runs on the agent's event loop: once a second, while a page is
open, it builds one frame (alarms, devices, KPIs, uplinks, outbox, and the tags that changed since
the last frame) and offers it to every client's queue without waiting. A client whose queue is full
(it does not read fast enough) is dropped; it never holds the agent up. A new client's first frame
is a full snapshot of every tag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.api import Answer
from agent.operators import alarm_view
from agent.outbox import unsent_view
from agent.payloads import rfc3339
from agent.telemetry import QUALITY_NAMES

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("plantwatch.console")

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/index.html": ("index.html", "text/html; charset=utf-8"),
         "/console.js": ("console.js", "text/javascript; charset=utf-8"),
         "/trend.js": ("trend.js", "text/javascript; charset=utf-8"),
         "/console.css": ("console.css", "text/css; charset=utf-8")}
#: a read-only JSON route of the page: (path, query string, now) -> (status, content type, body), or an
#: awaitable of it (agent.api awaits it: a slow read runs off the event loop)
Route = Callable[[str, str, float], Answer | Awaitable[Answer]]
QUEUE = 4  # frames a client may be behind before it is dropped
SEND_TIMEOUT_S = 10.0


def static(path: str) -> tuple[int, str, bytes] | None:
    """The console's file at ``path``, or None when ``path`` is not one of them."""
    if path == "/session":  # the loopback page: reads for anyone, acts with a bearer token
        return 200, "application/json", b'{"mode": "token"}'
    if path not in FILES:
        return None
    name, ctype = FILES[path]
    return 200, ctype, resources.files("agent").joinpath("console", name).read_bytes()


class Console:
    """Frames for the open pages, at most one a second each."""

    def __init__(self, agent: Agent, interval_s: float = 1.0):
        self.agent = agent
        self.interval_s = interval_s
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.dropped = 0
        self.frames = 0  # built, one per tick while anyone listens (snapshots too)
        self.cpu_s = 0.0  # CPU of the loop's thread building and writing frames
        n = len(agent.cfg.tags)
        self.sent_value = np.full(n, np.nan)
        self.sent_quality = np.full(n, 255, dtype=np.uint16)
        self.changed_at = np.zeros(n)
        self.routes: dict[str, Route] = {}  # path -> the GET route another module registered

    def get(self, target: str) -> Answer | Awaitable[Answer] | None:
        """The answer to ``GET target`` when it is one of the console's files or routes, else None."""
        path, _, query = target.partition("?")
        route = self.routes.get(path)
        return route(path, query, time.time()) if route is not None else static(path)

    def tag_rows(self, idx: np.ndarray, full: bool = False) -> dict[str, list[Any]]:
        """The tags at ``idx`` as columns: index ``i``, value ``v`` (null when not finite), quality
        ``q`` (an index into the frame's ``qualities``); a full frame adds ``c``, when each last
        changed (epoch seconds, null: not yet). A delta frame's tags changed at its ``t``.
        Columns of plain numbers: cheap to build from the arrays, to encode and to parse."""
        tel = self.agent.telemetry
        value = tel.last_value[idx]
        values = value.tolist()
        for k in np.flatnonzero(~np.isfinite(value)).tolist():
            values[k] = None
        rows = {"i": idx.tolist(), "v": values, "q": tel.last_quality[idx].tolist()}
        if full:
            changed = np.round(self.changed_at[idx], 3)
            rows["c"] = [c if c > 0 else None for c in changed.tolist()]
        return rows

    def _changes(self, now: float) -> np.ndarray:
        """The tags whose value or quality changed since the last frame (their change time kept)."""
        tel = self.agent.telemetry
        value, quality = tel.last_value, tel.last_quality.astype(np.uint16)
        same = (value == self.sent_value) | (np.isnan(value) & np.isnan(self.sent_value))
        mask = ~same | (quality != self.sent_quality)
        self.changed_at[mask & (tel.last_ts > 0)] = now
        self.sent_value[mask] = value[mask]
        self.sent_quality[mask] = quality[mask]
        return np.flatnonzero(mask)

    def frame(self, tags: dict[str, list[Any]], full: bool, now: float | None = None) -> bytes:
        agent = self.agent
        now = time.time() if now is None else now
        kpis = agent.pipeline.manager.kpis(now)
        doc = {
            "ts": rfc3339(now), "t": round(now, 3), "full": full, "plant": agent.cfg.agent.plant, "name": agent.cfg.agent.name,
            "alarms": [self.alarm(a) for a in agent.pipeline.manager.alarms.values()],
            "devices": agent.device_stats.view(dict(agent.device_state)),
            "kpis": {k: (len(v) if isinstance(v, list | tuple | set | dict) else v) for k, v in kpis.items()},
            "uplinks": agent.uplink_view(),
            "outbox": {"depth": agent.outbox_depth, "last_seq": agent.outbox_seq,
                       "oldest_unsent": unsent_view(agent.outbox_oldest, time.time())},
            "tags": tags,
        }
        if full:
            doc["columns"] = [[t.name, t.device or "", t.unit] for t in agent.cfg.tags]
            doc["qualities"] = list(QUALITY_NAMES)
        return b"data: " + json.dumps(doc, ensure_ascii=False, default=str, separators=(",", ":")).encode() + b"\n\n"

    def alarm(self, a: Any) -> dict[str, Any]:
        priority, unit, text = self.agent.pipeline.manager.wording(a)
        return {**alarm_view(a), "priority": priority, "unit": unit, "text": text}

    async def run(self) -> None:
        """Once a second, while anyone listens: one delta frame for every client."""
        while True:
            await asyncio.sleep(self.interval_s)
            now, cpu = time.time(), time.thread_time()
            changed = self._changes(now)
            if self.clients:
                data = self.frame(self.tag_rows(changed), full=False, now=now)
                for queue in list(self.clients):
                    self.offer(queue, data)
                self.frames += 1
                self.cpu_s += time.thread_time() - cpu

    def offer(self, queue: asyncio.Queue[bytes | None], data: bytes) -> None:
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:  # a slow reader: it goes, the agent does not wait for it
            self.clients.discard(queue)
            self.dropped += 1
            log.warning("console: a client that fell %d frames behind was dropped", QUEUE)
            _end(queue)

    def close(self) -> None:
        """End every open stream (the agent is stopping): each closes its connection."""
        for queue in list(self.clients):
            self.clients.discard(queue)
            _end(queue)

    async def stream(self, writer: asyncio.StreamWriter) -> None:
        """Serve one ``GET /events`` until the client goes or is dropped."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n")
        cpu = time.thread_time()
        first = self.frame(self.tag_rows(np.arange(len(self.agent.cfg.tags)), full=True), full=True)
        self.frames += 1
        self.cpu_s += time.thread_time() - cpu
        try:
            writer.write(head + b"retry: 2000\n\n" + first)
            self.clients.add(queue)
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT_S)
            while (data := await queue.get()) is not None:
                cpu = time.thread_time()
                writer.write(data)
                self.cpu_s += time.thread_time() - cpu
                await asyncio.wait_for(writer.drain(), SEND_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.clients.discard(queue)
            writer.close()


def _end(queue: asyncio.Queue[bytes | None]) -> None:
    """Make the stream reading ``queue`` stop at its next read (frames not yet sent are dropped)."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)
