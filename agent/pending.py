"""Alarm transitions the outbox could not take: kept in memory, in order, and retried.

Part of the shell. ``Committer`` stands between the pipeline and the outbox (it has the
outbox's ``append_alarms``). A commit that fails — disk full, an I/O error, a read-only or
locked file — leaves its messages *unnumbered* in an in-memory queue, in the order they were
made; every later commit joins the queue behind them. A retry loop writes the queue, oldest
first, with a fresh connection each attempt (a connection left broken by an I/O error, or a
file that was read-only when the old one opened, must not keep failing), backing off up to
``_RETRY_MAX_S``. A message gets its seq only in the transaction that stores it (the outbox
does that), so a seq that reaches the platform is always on disk: none is consumed twice,
none skipped, whatever fails and whenever the agent is killed.

The queue is bounded (``[uplink] max_pending_alarms`` messages). Beyond it the newest
transitions are not kept: they are counted, their alarms' latest state is saved with the last
message kept before them, and the ``outbox/storage`` alarm says how many were lost. While the queue is not
empty that alarm is active (it lands, numbered, in order behind the messages it is about; the
agent sends a copy at once from memory, unnumbered: agent.unnumbered) and the status message
carries ``outbox.storage`` from memory, which every uplink publishes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.outbox import Outbox
from agent.payloads import dumps, rfc3339

log = logging.getLogger("plantwatch.agent")

_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 5.0
_CHUNK = 500  # messages per transaction when the queue lands


@dataclass
class Entry:
    """One failed (or queued) commit: its messages and the alarm states saved with them."""

    topic: str
    docs: list[dict[str, Any]]
    states: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Committer:
    """The outbox's ``append_alarms`` that never loses a transition to a storage fault."""

    def __init__(self, outbox: Outbox, path: Path, limit: int):
        self.outbox = outbox
        self.path = path
        self.limit = limit
        self.queue: list[Entry] = []
        self.queued = 0  # messages in the queue
        self.lost = 0  # transitions not kept because the queue was full (since the fault began)
        self.error = ""
        self.since: float | None = None  # when the current fault began
        self.attempts = 0
        #: told of the fault's start (True) and end (False), on the event loop
        self.on_fault: Callable[[bool], None] = lambda failing: None
        #: told of messages the retry loop stored (numbered now), on the event loop
        self.on_committed: Callable[[list[dict[str, Any]]], None] = lambda docs: None
        self._wake = asyncio.Event()

    # --- the sink the pipeline commits to ---------------------------------------------------------

    def append_alarms(self, topic: str, docs: Sequence[dict[str, Any]], now: float | None = None,
                      encode: Callable[[dict[str, Any]], bytes] = dumps,
                      states: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[int]:
        """Store and number ``docs`` now, or queue them behind earlier ones (then [])."""
        if not docs:
            return []
        if not self.queue:
            try:
                return self.outbox.append_alarms(topic, docs, now, encode, states)
            except Exception as exc:
                # queued first: the storage alarm this fault raises goes in behind them
                self._enqueue(Entry(topic, list(docs), list(states)))
                self._failed(exc)
                return []
        self._enqueue(Entry(topic, list(docs), list(states)))
        return []

    def _enqueue(self, entry: Entry) -> None:
        if self.queued + len(entry.docs) > self.limit and self.queue:
            self.lost += len(entry.docs)
            # what the manager knows now is saved with the last message kept before them
            self.queue[-1].states.extend(entry.states)
            log.error("outbox: %d alarm transition(s) lost: %d are already waiting in memory (max_pending_alarms)",
                      len(entry.docs), self.queued)
            return
        self.queue.append(entry)
        self.queued += len(entry.docs)
        self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        starting = self.since is None
        if starting or text != self.error:
            log.error("outbox: cannot store alarm messages (%s); kept in memory and retried", text,
                      exc_info=starting)
        self.error = text
        if starting:
            self.since = time.time()
            self.on_fault(True)

    def view(self) -> dict[str, Any]:
        """``outbox.storage`` of the status message."""
        return {"ok": self.since is None, "pending_alarms": self.queued, "lost_alarms": self.lost,
                "error": self.error if self.since is not None else "",
                "since": rfc3339(self.since) if self.since is not None else None}

    # --- the retry loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Write the queue whenever there is one, backing off while it fails."""
        delay = _RETRY_FIRST_S
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                delay = _RETRY_FIRST_S
                continue
            entries = list(self.queue)
            job = asyncio.ensure_future(asyncio.to_thread(self._store, entries))
            try:
                stored = await asyncio.shield(job)
            except asyncio.CancelledError:
                # the thread goes on regardless: what it stores must leave the queue before the
                # stop's last attempt (flush_now), or it would be stored twice
                with contextlib.suppress(Exception):
                    self._landed(entries, await job)
                raise
            except Exception as exc:
                self.attempts += 1
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)
                continue
            if self._landed(entries, stored):  # the fault came back at once: not a busy loop
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)

    def _store(self, entries: list[Entry]) -> int:
        """In a worker thread, on a connection of its own: store the entries oldest first, a
        chunk per transaction. Returns how many entries were stored; raises if none was."""
        outbox = Outbox(self.path)
        done = 0
        try:
            while done < len(entries):
                # consecutive entries of one topic, up to _CHUNK messages: one transaction
                chunk, n = [entries[done]], len(entries[done].docs)
                while done + len(chunk) < len(entries):
                    nxt = entries[done + len(chunk)]
                    if nxt.topic != chunk[0].topic or n + len(nxt.docs) > _CHUNK:
                        break
                    chunk.append(nxt)
                    n += len(nxt.docs)
                states = dict(s for e in chunk for s in e.states)  # the latest of each alarm
                try:
                    outbox.append_alarms(chunk[0].topic, [d for e in chunk for d in e.docs],
                                         states=list(states.items()))
                except Exception:
                    if done:
                        return done
                    raise
                done += len(chunk)
            return done
        finally:
            outbox.close()

    def _landed(self, entries: list[Entry], stored: int) -> bool:
        """On the loop: the first ``stored`` entries are on disk, numbered. True when the queue
        was empty and the fault came straight back (the storage alarm's clear failed)."""
        if not stored:
            return False
        landed = entries[:stored]
        del self.queue[:stored]
        self.queued -= sum(len(e.docs) for e in landed)
        docs = [d for e in landed for d in e.docs]
        log.info("outbox: %d alarm message(s) kept in memory are stored now (seq %s..%s)",
                 len(docs), docs[0]["seq"], docs[-1]["seq"])
        self.on_committed(docs)
        if not self.queue:
            self.on_fault(False)  # may queue the storage alarm's clear: it goes through append_alarms
            if not self.queue:
                self.since, self.error, self.lost = None, "", 0
            else:  # the clear itself could not be stored: the fault is back, and so is its alarm
                self.on_fault(True)
                return True
        return False

    def flush_now(self) -> None:
        """At shutdown: one last attempt, on this thread; what still cannot be stored is lost."""
        if not self.queue:
            return
        entries = list(self.queue)
        try:
            self._landed(entries, self._store(entries))
        except Exception as exc:
            log.error("outbox: %d alarm message(s) could not be stored before the stop and are lost (%s)",
                      self.queued, exc)
        if self.queue:
            log.error("outbox: %d alarm message(s) could not be stored before the stop and are lost", self.queued)
