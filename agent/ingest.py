"""``plantwatch receive --store``: a receiver worker that stores every message before the broker
may forget it.

N workers share one MQTT 5 subscription (``$share/GROUP/…``); each is a persistent session
(clean start off, a session expiry) with manual acknowledgement: a message is acknowledged to
the broker (PUBACK) only after the transaction that stored it committed. A worker whose database
is down holds what it has unacknowledged and says so; the broker sends it no more than its
receive maximum and keeps every unacknowledged message in its session, so a worker killed at
any point loses nothing: on its restart under the same client id the broker sends them again,
and the store takes a message it already has as a copy of it (``agent.store``).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.receiver import MAX_PAYLOAD, MAX_SEQ, Refused, checked, login, subscriptions
from agent.store import Row, Store, StoreError

log = logging.getLogger(__name__)


def _property_ids() -> None:
    """paho (2.x) reads each MQTT 5 property of a received PUBLISH by looking its id up by name:
    a scan of all 27 names with a string replace each, three times a property; about half of the
    ~70 us it spends on the four properties of a plantwatch message. The same answers from a table
    of the same names, installed only when it gives the scan's answer for every name."""
    scan = Properties.getIdentFromName
    probe = Properties(PacketTypes.PUBLISH)
    table: dict[str, int] = {}
    for name, ident in probe.names.items():
        table.setdefault(name.replace(" ", ""), ident)  # the first name wins, as in the scan
    if any(scan(probe, name) != ident for name, ident in table.items()) or scan(probe, "NoSuchName") != -1:
        return

    def ident_of(self, compressed_name: str) -> int:
        return table.get(compressed_name, -1)

    Properties.getIdentFromName = ident_of


_property_ids()

RECEIVE_MAX = 1000  # unacknowledged messages the broker may send one worker (MQTT 5 Receive Maximum)
BATCH = 500  # messages stored per transaction at most
RETRY_S = (0.2, 5.0)  # first and longest wait between attempts while the database is down
REMIND_S = 30.0  # while the database stays down, say so again this often


@dataclass
class Incoming:
    connection: int  # which connection it came on: only that connection can acknowledge it
    mid: int
    qos: int
    topic: str
    payload: bytes
    retained: bool
    received_at: float


def read(msg: Incoming, max_payload: int = MAX_PAYLOAD) -> Row | None:
    """The store's row of one message; None for a topic that is not stored; Refused when invalid."""
    parts = msg.topic.rsplit("/", 2)
    kind = parts[-1]
    if kind not in ("alarm", "status", "telemetry") or len(parts) < 3 or (kind == "status" and not msg.payload):
        return None
    doc = checked(kind, msg.payload, parts[-2], max_payload)
    text = msg.payload.decode("utf-8")
    common = {"kind": kind, "plant": doc["plant"], "ts": doc["ts"], "doc": text,
              "received_at": msg.received_at, "retained": msg.retained}
    if kind == "alarm" and doc.get("unnumbered"):  # sent from memory: kept out of the sequence
        return Row(**{**common, "kind": "unnumbered"}, epoch=doc["epoch"], alarm_id=doc["id"], state=doc["state"])
    if kind == "alarm":
        if doc["seq"] > MAX_SEQ:
            raise Refused("seq out of range", f"seq {str(doc['seq'])[:30]} is over {MAX_SEQ}")
        return Row(**common, epoch=doc["epoch"], seq=doc["seq"], alarm_id=doc["id"], state=doc["state"])
    if kind == "status":
        return Row(**common, online=bool(doc["online"]))
    return Row(**common, digest=hashlib.sha1(msg.payload).hexdigest())


class Worker:
    """Takes messages off the MQTT thread, stores them in batches, acknowledges what is stored."""

    def __init__(self, store: Store, emit: Callable[[str], None] = print, max_payload: int = MAX_PAYLOAD,
                 batch: int = BATCH):
        self.store = store
        self.emit = emit
        self.max_payload = max_payload
        self.batch = batch
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.client: mqtt.Client | None = None
        self.connection = 0
        self.stored: Counter[str] = Counter()  # rows stored by kind (a copy of a stored alarm counts too)
        self.refused: Counter[str] = Counter()
        self.batches = 0
        self.down_since: float | None = None  # the database is unreachable since then
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish the batch at hand (stored and acknowledged, or left to the broker), then stop."""
        self.stop.set()
        self._thread.join(timeout)

    def on_message(self, client, userdata, msg) -> None:
        self.inbox.put(Incoming(self.connection, msg.mid, msg.qos, msg.topic, msg.payload, bool(msg.retain), time.time()))

    def _take(self) -> list[Incoming]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        taken = [first]
        while len(taken) < self.batch:
            try:
                taken.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return taken

    def _run(self) -> None:
        while not self.stop.is_set():
            taken = self._take()
            if not taken:
                continue
            rows, keep = [], []
            for msg in taken:
                try:
                    row = read(msg, self.max_payload)
                except Refused as exc:
                    self.refused[exc.reason] += 1
                    self._say(f"INVALID {msg.topic}: {exc} (acknowledged, not stored)")
                    continue
                except Exception as exc:  # an error of ours: the message stays the broker's
                    self.refused["receiver error"] += 1
                    keep.append(msg)
                    log.error("store: %s: %s: %s", msg.topic, type(exc).__name__, exc, exc_info=exc)
                    self._say(f"ERROR {msg.topic}: {type(exc).__name__}: {exc} (not stored, kept unacknowledged)")
                    continue
                if row is not None:
                    rows.append(row)
            if self._commit(rows):
                self._ack([m for m in taken if m not in keep])

    def _commit(self, rows: list[Row]) -> bool:
        """Store the batch, retrying while the database is down; False when told to stop first."""
        wait = RETRY_S[0]
        said = 0.0
        while True:
            try:
                self.store.write(rows)
                break
            except StoreError as exc:
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                if now - said >= REMIND_S:
                    said = now
                    self._say(f"STORE DOWN {self.store.safe_url}: {exc}: {len(rows)} messages held unacknowledged "
                              f"(+{self.inbox.qsize()} waiting), the broker keeps them; retrying")
            if self.stop.wait(wait):
                return False
            wait = min(wait * 2, RETRY_S[1])
        if self.down_since is not None:
            self._say(f"STORE BACK {self.store.safe_url} after {time.monotonic() - self.down_since:.1f} s: "
                      "the held messages are stored and acknowledged now")
            self.down_since = None
        with self.changed:
            self.stored.update(r.kind for r in rows)
            self.batches += 1
            self.changed.notify_all()
        return True

    def _ack(self, taken: list[Incoming]) -> None:
        client = self.client
        for msg in taken:
            # a message of an earlier connection is the broker's to send again on this one: its
            # packet id may already name another message here
            if client is not None and msg.qos > 0 and msg.connection == self.connection:
                client.ack(msg.mid, msg.qos)

    def _say(self, line: str) -> None:
        try:
            self.emit(line)
        except Exception:  # the worker's own output failing must not stop storing
            log.exception("store: cannot write the log line %r", line)

    def wait(self, predicate: Callable[[Worker], bool], timeout: float) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(lambda: predicate(self), timeout))

    def summary(self) -> list[str]:
        kinds = ", ".join(f"{self.stored[k]} {k}" for k in ("alarm", "unnumbered", "status", "telemetry"))
        lines = [f"stored {kinds} messages in {self.batches} transactions"]
        if self.refused:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.refused.items()))
            lines.append(f"{sum(self.refused.values())} messages refused ({reasons})")
        return lines


# linear: the MQTT 5 client of a storing worker, from its options to its first subscription
def connect(worker: Worker, broker: str, client_id: str, plant: str | None = None, prefix: str = "plantwatch",
            group: str | None = None, session_expiry_s: int = 7 * 86400, ca_file: str | None = None,
            cert_file: str | None = None, key_file: str | None = None, username: str | None = None,
            password: str | None = None, timeout: float = 10.0) -> mqtt.Client:
    """Subscribe ``worker`` as a persistent MQTT 5 session with manual acknowledgement."""
    parts = urlsplit(broker)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=True)
    client.reconnect_delay_set(0.1, 5)
    login(client, parts, ca_file, cert_file, key_file, username, password)
    subscribed = threading.Event()

    def on_connect(c, ud, flags, rc, props):
        if rc.is_failure:
            worker._say(f"receiver: broker refused: {rc}")
            return
        worker.connection += 1
        c.subscribe(subscriptions(prefix, plant, group))

    def on_disconnect(c, ud, flags, rc, props):
        if rc.is_failure:
            worker._say(f"receiver: broker connection lost ({rc}); what is not acknowledged stays with the broker")

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.on_subscribe = lambda c, ud, mid, rcs, props: subscribed.set()
    client.on_message = worker.on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = RECEIVE_MAX
    worker.client = client
    client.connect(parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                   clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(timeout):
        client.loop_stop()
        raise ConnectionError(f"could not subscribe at {broker}")
    return client

