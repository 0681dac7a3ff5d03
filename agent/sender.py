"""The uplink loop of request/answer transports (HTTP, TCP; another plugs in the same
way): one thread that sends the outbox to one platform, alarms first, in order, and marks a row
sent only on the platform's success answer.

The loop knows rows, order, backoff and the dead-letter table; a Transport knows the wire. Each
request carries the oldest rows this uplink has not delivered: one alarm, or up to the
transport's batch of telemetry. An answer that may succeed later (a 5xx, a timeout, a dropped
connection, a success status with the wrong body) sends the same rows again after a backoff,
so nothing behind them goes first. An answer that will never succeed (an HTTP 4xx, a TCP
answer code in ``refused_codes``) moves the rows to the dead-letter table and tells
``on_refused``, which raises the storage alarm: never dropped silently.

The platform also hears from the agent when there is nothing to send: the status message
(``heartbeat(online)``) once the alarm backlog is out after the start, then every
``heartbeat_s``, through the same transport and never ahead of a pending alarm; a clean stop
sends it with ``online: false`` when the platform is reachable.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.config import UplinkSection
from agent.encoding import RowEncoder
from agent.outbox import ALARM, STATUS, TELEMETRY, Outbox, Row
from agent.supervise import Report, run_supervised
from agent.unnumbered import Encode, Unnumbered
from drivers.base import backoff_delay

log = logging.getLogger("plantwatch.uplink")

SENT, RETRY, REFUSED = "sent", "retry", "refused"
_ALARM_CHUNK = 64  # alarm rows read at once; each is still its own request, in order


@dataclass(frozen=True)
class Answer:
    """The outcome of one request: SENT, RETRY (may succeed later) or REFUSED (never will)."""

    outcome: str
    reason: str = ""


def tls_context(cfg: UplinkSection) -> ssl.SSLContext:
    """The client TLS context of an https:// or tls:// uplink: the server verified against the
    system's CAs or ``ca_file``, and the client certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.cert_file and cfg.key_file:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return ctx


class Transport(Protocol):
    """The wire of one uplink. ``send`` is called with the encoded payloads of consecutive rows
    of one lane (one alarm, or up to ``batch(lane)`` telemetry rows) and answers for all of them;
    network errors are raised as OSError (retried). Called on the uplink's thread only."""

    def batch(self, lane: int) -> int: ...

    def send(self, lane: int, payloads: list[bytes]) -> Answer: ...

    def close(self) -> None: ...


class RequestUplink:
    """An uplink over a request/answer Transport, on its own thread (the face the agent sees is
    the MQTT uplink's: start, wake, stop, connected, sent_count, last_error)."""

    def __init__(self, cfg: UplinkSection, outbox_path, transport: Transport, rows: RowEncoder,
                 on_refused: Callable[[str, str], None] | None = None,
                 heartbeat: Callable[[bool], bytes] | None = None, unnumbered: Encode | None = None):
        """``on_refused(uplink name, reason)`` is told, on this thread, of rows dead-lettered;
        ``heartbeat(online)`` is the encoded status message (None: no heartbeat); ``unnumbered``
        encodes an alarm sent from memory (agent.unnumbered; None: this uplink sends none)."""
        self.cfg = cfg
        self.name = cfg.name
        self.outbox_path = outbox_path
        self.transport = transport
        self.rows = rows
        self.on_refused = on_refused
        self.heartbeat = heartbeat
        self.heartbeats = 0  # status messages the platform took
        self.memory = Unnumbered(cfg.name, unnumbered)
        self.connected = threading.Event()  # set while the platform's last answer was a success
        self.sent_count = 0
        self.dead_letters = 0
        self.connect_failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flush_until = 0.0
        self._announce = False
        self._thread = threading.Thread(target=self._supervised, name=f"uplink:{cfg.name}", daemon=True)
        #: told (name, exception) when the thread fails and restarts, (name, None) when it recovered
        self.on_fault: Report = lambda name, exc: None

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def announce(self) -> None:
        """Send the status message now rather than at the next heartbeat (never ahead of a
        pending alarm)."""
        self._announce = True
        self._wake.set()

    def stop(self, flush_s: float = 5.0) -> None:
        """Send pending alarms for up to ``flush_s``, then stop."""
        self._flush_until = time.monotonic() + flush_s
        self._stop.set()
        self._wake.set()
        self._thread.join(flush_s + self.cfg.timeout_s + 5)

    def _supervised(self) -> None:
        run_supervised(f"uplink {self.name}", self._run, self._stop, self.on_fault)

    def _run(self) -> None:
        outbox = Outbox(self.outbox_path, durable=False)
        failures = 0
        next_beat = time.monotonic()  # the first once the alarm backlog is out
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and time.monotonic() > self._flush_until:
                    return
                memory_failed = self._send_memory() is False  # ahead of the outbox's rows
                rows = [] if memory_failed else self._next(outbox, stopping)
                if self._announce:
                    self._announce, next_beat = False, time.monotonic()
                beat_failed = memory_failed
                if self.heartbeat and not stopping and not memory_failed and time.monotonic() >= next_beat and \
                        not (rows and rows[0][0].lane == ALARM):  # never ahead of a pending alarm
                    if self._beat(True):
                        failures, next_beat = 0, time.monotonic() + self.cfg.heartbeat_s
                        rows = self._next(outbox, stopping)  # an alarm raised meanwhile goes first
                    else:
                        beat_failed, rows, failures = True, [], failures + 1
                if not rows and not beat_failed:
                    if stopping:
                        return
                    self._wake.wait(max(0.0, min(1.0, next_beat - time.monotonic())) if self.heartbeat else 1.0)
                    self._wake.clear()
                    continue
                if rows:
                    failures = 0 if self._deliver(outbox, rows) else failures + 1
                elif memory_failed:
                    failures += 1
                if failures:
                    delay = backoff_delay(failures, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
                    log.warning("uplink %s: %s; retry in %.1f s", self.name, self.last_error, delay)
                    if stopping:  # flushing: the deadline, not the backoff, bounds the retries
                        time.sleep(min(delay, 0.2))
                    else:
                        self._stop.wait(delay)
        finally:
            if self.heartbeat and self.connected.is_set() and self._stop.is_set():
                self._beat(False)
            self.connected.clear()
            self.transport.close()
            outbox.close()

    def _ask(self, lane: int, payloads: list[bytes]) -> Answer:
        """One request; a network error is an answer to retry."""
        try:
            return self.transport.send(lane, payloads)
        except OSError as exc:
            return Answer(RETRY, f"{type(exc).__name__}: {exc}")

    def _send_memory(self) -> bool | None:
        """Send the unnumbered alarms (agent.unnumbered), each its own request: None when there
        was none, False when one must be tried again after a backoff."""
        docs = self.memory.pending()
        for doc in docs:
            try:
                payload = self.memory.encode(doc)
            except Exception as exc:  # a message that cannot be encoded must not stop the uplink
                answer = Answer(REFUSED, f"cannot encode: {type(exc).__name__}: {exc}")
            else:
                answer = self._ask(ALARM, [payload])
            if answer.outcome == RETRY:
                self.last_error = f"unnumbered alarm: {answer.reason}"
                self.connected.clear()
                self.connect_failures += 1
                return False
            self.connected.set()
            self.memory.done(doc, refused=answer.reason if answer.outcome == REFUSED else "")
        return True if docs else None

    def _beat(self, online: bool) -> bool:
        """Send the status message; False when it must be tried again after a backoff."""
        try:
            answer = self.transport.send(STATUS, [self.heartbeat(online)])
        except OSError as exc:
            answer = Answer(RETRY, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a status that cannot be encoded must not stop the uplink
            log.error("uplink %s: cannot send the status message: %s: %s", self.name, type(exc).__name__, exc)
            return True
        if answer.outcome == SENT:
            self.heartbeats += 1
            self.connected.set()
            return True
        self.last_error = f"status message: {answer.reason}"
        if answer.outcome == REFUSED:  # nothing to keep: the next heartbeat is the next try
            log.warning("uplink %s: the platform refused the status message (%s)", self.name, answer.reason)
            return True
        self.connected.clear()
        self.connect_failures += 1
        return False

    def _next(self, outbox: Outbox, stopping: bool) -> list[tuple[Row, bytes]]:
        """The oldest undelivered rows with their payloads: alarms first; telemetry (not while
        stopping) up to a batch. Rows this uplink's profile does not send are marked delivered."""
        while True:
            rows = outbox.pending(ALARM, 0, _ALARM_CHUNK, self.name)
            if not rows and not stopping:
                rows = outbox.pending(TELEMETRY, 0, self.transport.batch(TELEMETRY), self.name)
            encoded = []
            for r in rows:
                try:
                    encoded.append((r, self.rows(r.lane, r.seq, r.payload, time.time())))
                except Exception as exc:  # a row that cannot be encoded must not stop the uplink
                    self._refuse(outbox, [r], f"cannot encode: {type(exc).__name__}: {exc}")
                    break
            else:
                skip = [r.id for r, payload in encoded if payload is None]
                if not skip:
                    return [(r, payload) for r, payload in encoded if payload is not None]
                outbox.mark_sent(skip, uplink=self.name)

    def _deliver(self, outbox: Outbox, rows: list[tuple[Row, bytes]]) -> bool:
        """Send ``rows`` (alarms one per request, telemetry as one batch); False when a request
        must be retried after a backoff. What succeeded is marked sent even then."""
        groups = [[r] for r in rows] if rows[0][0].lane == ALARM else [rows]
        done: list[int] = []
        try:
            for pairs in groups:
                group = [r for r, _ in pairs]
                payloads = [payload for _, payload in pairs]
                answer = self._ask(group[0].lane, payloads)
                if answer.outcome == SENT:
                    done += [r.id for r in group]
                    self.connected.set()
                    continue
                self.last_error = answer.reason
                if answer.outcome == REFUSED:
                    self.connected.set()  # the platform answered; it will never take these rows
                    self._refuse(outbox, group, answer.reason)
                    continue
                self.connected.clear()
                self.connect_failures += 1
                return False
            return True
        finally:
            self.sent_count += len(done)
            self._mark(outbox, done)

    def _mark(self, outbox: Outbox, ids: list[int]) -> None:
        """Mark delivered rows sent. While the outbox cannot be written (disk full, locked,
        read-only) they are sent again (a duplicate, never a loss) until the mark lands."""
        try:
            outbox.mark_sent(ids, uplink=self.name)
        except sqlite3.Error as exc:
            log.error("uplink %s: cannot mark %d row(s) sent (%s); they will be sent again", self.name, len(ids), exc)
            self._stop.wait(1.0)  # not a tight loop of duplicates while the disk is full

    def _refuse(self, outbox: Outbox, rows: list[Row], reason: str) -> None:
        outbox.dead_letter(rows, reason, uplink=self.name)
        self.dead_letters += len(rows)
        log.error("uplink %s: the platform refused %d row(s) for good (%s); kept in the dead-letter table",
                  self.name, len(rows), reason)
        if self.on_refused is not None:
            self.on_refused(self.name, reason)
