"""The telemetry publisher: the last value of every tag, sent as snapshots and on change.

Part of the shell: it keeps the latest sample per tag as batches arrive, and on its own
schedule writes telemetry messages into the outbox's telemetry lane for the uplink to send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.config import Config
from agent.loops import LoopHealth
from agent.outbox import TELEMETRY, Outbox
from agent.payloads import TELEMETRY_SCHEMA, dumps, rfc3339, topic
from drivers.base import SampleBatch

INF = float("inf")
QUALITY_NAMES = ("good", "uncertain", "bad", "comm_fail")
PART = 8192  # tags written out at a time by ``payload``


class Telemetry:
    """The last sample of every tag, and the loop that publishes them."""

    def __init__(self, cfg: Config, outbox: Outbox, wake: Callable[[], None], health: LoopHealth | None = None):
        """``wake`` tells the uplink there is something new in the outbox; ``health`` records
        the passes that fail (a message the outbox cannot take is dropped: the next snapshot
        carries the latest values)."""
        self.cfg = cfg
        self.health = health or LoopHealth()
        self.outbox = outbox
        self.wake = wake
        self.topic = topic(cfg.uplink.topic_prefix, cfg.agent.plant, "telemetry")
        n = len(cfg.tags)
        self.last_value = np.full(n, np.nan)
        self.last_quality = np.full(n, 3, dtype=np.uint8)
        self.last_ts = np.zeros(n)
        self.names = [t.name for t in cfg.tags]
        self._keys: list[str] | None = None  # each tag's JSON key, as ``payload`` writes it

    def record(self, batch: SampleBatch) -> None:
        """Keep the batch's samples as the tags' latest."""
        if len(batch):
            self.last_value[batch.tag] = batch.value
            self.last_quality[batch.tag] = batch.quality
            self.last_ts[batch.tag] = batch.ts

    def document(self, mask: np.ndarray | None = None, latest: tuple[np.ndarray, ...] | None = None,
                 now: float | None = None) -> dict[str, Any]:
        """A snapshot of every tag, or (``mask``) an on-change message with only those tags;
        from ``latest`` (copies of value, quality, time) when given, else the live arrays;
        stamped ``now`` (default: the time)."""
        value, quality, times = latest or (self.last_value, self.last_quality, self.last_ts)
        index = np.arange(len(self.names)) if mask is None else np.flatnonzero(mask)
        # built from arrays and memoised per distinct time (a device's tags share one): at
        # 100,000 tags, a snapshot costs a dict per tag and no more
        times = times[index]
        distinct, where = np.unique(times, return_inverse=True)
        shown = [rfc3339(x) if x > 0 else None for x in distinct.tolist()]
        names = self.names
        doc = {
            "schema": TELEMETRY_SCHEMA,
            "plant": self.cfg.agent.plant,
            "ts": rfc3339(time.time() if now is None else now),
            "tags": {
                names[i]: {"v": v if v == v and abs(v) != INF else None, "q": QUALITY_NAMES[q], "t": shown[w]}
                for i, v, q, w in zip(index.tolist(), value[index].tolist(), quality[index].tolist(),
                                      where.reshape(-1).tolist(), strict=True)
            },
        }
        if mask is not None:
            doc["change"] = True  # lets the outbox thin old history down to the snapshots
        return doc

    def encode(self, doc: dict[str, Any]) -> bytes:
        """The stored form: the json-profile document; each uplink encodes it in its own
        profile at send time (agent.encoding)."""
        return dumps(doc, safe=True)  # document() builds it JSON-safe: plain floats, no NaN

    def payload(self, mask: np.ndarray | None = None, latest: tuple[np.ndarray, ...] | None = None,
                now: float | None = None) -> bytes:
        """``encode(document(mask, latest, now))``, byte for byte, written out ``PART`` tags at a
        time instead of built as a document first: at 100,000 tags that document was 100,000
        dicts (~30 MB while a snapshot was encoded, in the encoding thread)."""
        value, quality, times = latest or (self.last_value, self.last_quality, self.last_ts)
        index = np.arange(len(self.names)) if mask is None else np.flatnonzero(mask)
        distinct, where = np.unique(times[index], return_inverse=True)
        shown = [json.dumps(rfc3339(x)) if x > 0 else "null" for x in distinct.tolist()]
        if self._keys is None:
            self._keys = [json.dumps(name, ensure_ascii=False) for name in self.names]
        keys, where = self._keys, where.reshape(-1)
        head = dumps({"schema": TELEMETRY_SCHEMA, "plant": self.cfg.agent.plant,
                      "ts": rfc3339(time.time() if now is None else now)}, safe=True)
        parts = [head[:-1], b',"tags":{']
        for start in range(0, len(index), PART):
            part = slice(start, start + PART)
            text = ",".join(
                f'{keys[i]}:{{"v":{repr(v) if v == v and abs(v) != INF else "null"},"q":"{QUALITY_NAMES[q]}",'
                f'"t":{shown[w]}}}'
                for i, v, q, w in zip(index[part].tolist(), value[index[part]].tolist(),
                                      quality[index[part]].tolist(), where[part].tolist(), strict=True))
            parts.append((b"," if start else b"") + text.encode())
        parts.append(b"}" if mask is None else b'},"change":true')
        parts.append(b"}")
        return b"".join(parts)

    async def run(self) -> None:
        """A snapshot of every tag each ``telemetry_interval_s``; between snapshots, every
        ``telemetry_change_s``, the tags that moved by more than the deadband or changed quality
        since they were last sent."""
        u = self.cfg.uplink
        interval, change_s = u.telemetry_interval_s, u.telemetry_change_s
        if interval <= 0 and change_s <= 0:
            return
        n = len(self.cfg.tags)
        deadband = np.array([u.telemetry_deadband if t.telemetry_deadband is None else t.telemetry_deadband
                             for t in self.cfg.tags], dtype=np.float64).reshape(n)
        sent_value = np.full(n, np.nan)
        sent_quality = np.full(n, 255, dtype=np.uint8)  # nothing sent yet: the first look sends all
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + interval if interval > 0 else float("inf")
        while True:
            wake = next_snapshot if change_s <= 0 else min(next_snapshot, loop.time() + change_s)
            await asyncio.sleep(max(0.0, wake - loop.time()))
            value, quality = self.last_value, self.last_quality
            if loop.time() >= next_snapshot:
                mask = None
                next_snapshot += interval * max(1, (loop.time() - next_snapshot) // interval + 1)
            else:
                mask = changed(value, quality, sent_value, sent_quality, deadband)
                if not mask.any():
                    continue
            with self.health.guard("telemetry"):
                # built and encoded off the loop (a snapshot of 100,000 tags is ~0.5 s of CPU that
                # would hold every device's batch back), from copies taken here
                latest = (value.copy(), quality.copy(), self.last_ts.copy())
                payload = await asyncio.to_thread(self.payload, mask, latest)
                self.outbox.append(self.topic, payload, lane=TELEMETRY)
                # a tag within its deadband keeps the value it was last sent with as the
                # reference, so a slow drift is still reported once it adds up to more than the
                # deadband
                sent = slice(None) if mask is None else mask
                sent_value[sent], sent_quality[sent] = latest[0][sent], latest[1][sent]
                self.wake()


def changed(value: np.ndarray, quality: np.ndarray, sent_value: np.ndarray, sent_quality: np.ndarray,
            deadband: np.ndarray) -> np.ndarray:
    """The tags to send on change: moved by more than their deadband since last sent, turned
    NaN or back, or changed quality."""
    was_nan, is_nan = np.isnan(sent_value), np.isnan(value)
    with np.errstate(invalid="ignore"):
        moved = np.abs(value - sent_value) > deadband
    return moved | (was_nan != is_nan) | (quality != sent_quality)
