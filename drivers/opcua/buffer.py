"""Samples between two SampleBatches: the bounded client-side buffer, its loss accounting, and
the step that turns decoded columns into a SampleBatch (quality, scale and offset)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.base import BAD, GOOD, UNCERTAIN, SampleBatch, TagSpec
from drivers.opcua.decode import quality_of

log = logging.getLogger(__name__)

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # positions, raw values, times, status


@dataclass
class Stats:
    """Counters a supervisor (or a test) can read; none of them is ever reset."""

    samples: int = 0
    batches: int = 0
    server_overflows: int = 0  # notifications that carried the Overflow info bit
    client_overflows: int = 0  # samples dropped because the client-side buffer was full
    missed_messages: int = 0  # notification messages never received (sequence-number gaps)
    bad_items: int = 0  # monitored items the server refused
    filters_refused: int = 0  # deadbands the server refused; those items run without one
    connects: int = 0
    reconnects: int = 0


class SampleBuffer:
    """Notifications accumulated as arrays until the driver yields the next SampleBatch.

    Positions (the monitored items' client handles) are indices into the driver's tag list.
    The buffer is bounded: when full, the oldest chunk is dropped, counted, and the tags it held
    get UNCERTAIN quality on their next sample. ``lost`` marks the tags whose next sample must be
    UNCERTAIN (samples lost, or the item runs without the deadband the config asked for).
    """

    def __init__(self, device: str, tags: Sequence[TagSpec], tag_indices: np.ndarray, max_pending: int,
                 stats: Stats):
        self.device = device
        self.tag_indices = tag_indices
        self.scale = np.array([t.scale for t in tags], dtype=np.float64)
        self.offset = np.array([t.offset for t in tags], dtype=np.float64)
        self.max_pending = max_pending
        self.stats = stats
        self.chunks: list[Columns] = []
        self.pending = 0
        self.lost = np.zeros(len(tags), dtype=bool)
        self.ready = asyncio.Event()

    def add(self, pos: np.ndarray, values: np.ndarray, ts: np.ndarray, status: np.ndarray) -> None:
        if len(pos) == 0:
            return
        self.chunks.append((pos, values, ts, status))
        self.pending += len(pos)
        while self.pending > self.max_pending and len(self.chunks) > 1:
            old = self.chunks.pop(0)
            self.pending -= len(old[0])
            self.stats.client_overflows += len(old[0])
            self.lost[old[0]] = True
            log.warning("opcua: client buffer full (%d samples); dropped %d oldest", self.max_pending, len(old[0]))
        self.ready.set()

    def add_bad(self, pos: Sequence[int], status: int, now: float) -> None:
        n = len(pos)
        self.add(np.asarray(pos, dtype=np.int64), np.full(n, np.nan), np.full(n, now),
                 np.full(n, status, dtype=np.uint32))

    def mark_all_lost(self) -> None:
        self.lost[:] = True

    def drain(self) -> Columns | None:
        self.ready.clear()
        if not self.chunks:
            return None
        if len(self.chunks) == 1:
            pos, values, ts, status = self.chunks[0]
        else:
            pos, values, ts, status = (np.concatenate(c) for c in zip(*self.chunks, strict=True))
        self.chunks = []
        self.pending = 0
        return pos, values, ts, status

    def batch(self, drained: Columns) -> SampleBatch:
        """The SampleBatch of drained (or freshly read) columns: quality from the status codes,
        UNCERTAIN where samples were lost before, NaN where BAD, scale and offset applied."""
        pos, raw, ts, status = drained
        quality, overflow = quality_of(status)
        n_over = int(np.count_nonzero(overflow))
        if n_over:
            self.stats.server_overflows += n_over
            log.warning("opcua %s: server queue overflow on %d notification(s); samples were lost",
                        self.device, n_over)
        lost = self.lost
        if lost.any():
            hit = lost[pos]
            quality[hit & (quality == GOOD)] = UNCERTAIN
            lost[pos] = False
        value = raw * self.scale[pos] + self.offset[pos]
        value[quality >= BAD] = np.nan
        self.stats.batches += 1
        return SampleBatch(
            device=self.device,
            tag=self.tag_indices[pos],
            value=value,
            ts=ts,
            quality=quality,
            error=None,
        )
