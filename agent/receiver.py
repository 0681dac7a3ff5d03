"""The reference platform receiver: subscribe, validate, de-duplicate, report gaps and presence.

``plantwatch receive`` is what a provincial platform must do with plantwatch messages, written
down as code: every message is checked against the published schema, alarms are de-duplicated
by (plant, seq), a jump in seq is reported as a gap (and closed when the missing seq arrives),
and the retained status topic tells whether each plant's gateway is online.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.payloads import topic, validator


@dataclass
class PlantTrack:
    """What the receiver knows about one plant's alarm stream."""

    seen: set[int] = field(default_factory=set)
    highest: int = 0
    duplicates: int = 0
    online: bool | None = None

    def missing(self) -> list[int]:
        return [s for s in range(1, self.highest + 1) if s not in self.seen]


class Receiver:
    """Consumes messages (from MQTT or handed in by a test) and keeps the platform's view."""

    def __init__(self, emit: Callable[[str], None] = print, out=None):
        self.emit = emit
        self.out = out
        self.plants: dict[str, PlantTrack] = {}
        self.alarms: list[dict[str, Any]] = []  # unique alarms in arrival order
        self.arrivals: list[int] = []  # every alarm seq as it arrived, duplicates included
        self.invalid: list[str] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.telemetry = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def track(self, plant: str) -> PlantTrack:
        return self.plants.setdefault(plant, PlantTrack())

    def feed(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind not in ("alarm", "status", "telemetry"):
            return
        if kind == "status" and not payload:
            return  # a cleared retained message
        with self.changed:
            try:
                doc = json.loads(payload)
            except (ValueError, UnicodeDecodeError) as exc:
                self._invalid(topic, f"not JSON: {exc}")
                return
            errors = sorted(validator(kind).iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                where = "/".join(str(p) for p in e.path) or "(root)"
                self._invalid(topic, f"{where}: {e.message}")
                return
            getattr(self, f"_{kind}")(doc)
            self.changed.notify_all()

    def _invalid(self, topic: str, why: str) -> None:
        self.invalid.append(f"{topic}: {why}")
        self.emit(f"INVALID {topic}: {why}")

    def _alarm(self, doc: dict[str, Any]) -> None:
        plant, seq = doc["plant"], doc["seq"]
        t = self.track(plant)
        self.arrivals.append(seq)
        if seq in t.seen:
            t.duplicates += 1
            self.emit(f"duplicate {plant} seq={seq} (ignored)")
            return
        if seq > t.highest + 1:
            self.emit(f"GAP {plant}: seq {t.highest + 1}..{seq - 1} missing before seq={seq}")
        elif seq < t.highest:
            self.emit(f"late {plant} seq={seq} fills a gap")
        t.seen.add(seq)
        t.highest = max(t.highest, seq)
        self.alarms.append(doc)
        value = "" if doc["value"] is None else f" value={doc['value']:g}{doc['unit'] and ' ' + doc['unit']}"
        self.emit(f"ALARM {plant} seq={seq} {doc['ts']} {doc['id']} {doc['state']} {doc['level']} p{doc['priority']}{value} | {doc['message']}")
        if self.out is not None:
            self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            self.out.flush()

    def _status(self, doc: dict[str, Any]) -> None:
        t = self.track(doc["plant"])
        self.status[doc["plant"]] = doc
        if t.online != doc["online"]:
            t.online = doc["online"]
            self.emit(f"STATUS {doc['plant']} {'ONLINE' if doc['online'] else 'OFFLINE'} at {doc['ts']}")

    def _telemetry(self, doc: dict[str, Any]) -> None:
        self.telemetry += 1

    def wait(self, predicate: Callable[[Receiver], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True

    def summary(self) -> list[str]:
        lines = []
        for plant, t in sorted(self.plants.items()):
            missing = t.missing()
            gaps = f", MISSING {missing[:20]}{'...' if len(missing) > 20 else ''}" if missing else ", no gaps"
            online = {None: "unknown", True: "online", False: "offline"}[t.online]
            lines.append(f"plant {plant}: {len(t.seen)} alarms, seq 1..{t.highest}{gaps}, {t.duplicates} duplicates, {online}")
        if self.invalid:
            lines.append(f"{len(self.invalid)} messages failed validation")
        return lines


def connect(receiver: Receiver, broker: str, plant: str | None, prefix: str = "plantwatch", group: str | None = None,
            client_id: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
            key_file: str | None = None) -> mqtt.Client:
    """Subscribe ``receiver`` to a broker URL (mqtt:// or mqtts://); returns the running client.

    With ``group``, alarm and telemetry subscriptions are shared (``$share/group/...``) so that
    several receivers behind a broker cluster split the load.
    """
    parts = urlsplit(broker)
    # a named client keeps a persistent session: the broker queues alarms while it is away
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id or "",
                         clean_session=not client_id)
    client.reconnect_delay_set(0.1, 5)
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    who = plant or "+"
    subscribed = threading.Event()

    def on_connect(c, ud, flags, rc, props):
        if rc.is_failure:
            receiver.emit(f"receiver: broker refused: {rc}")
            return
        subs = []
        for kind in ("alarm", "telemetry"):
            t = topic(prefix, who, kind)
            subs.append((f"$share/{group}/{t}" if group else t, 1))
        subs.append((topic(prefix, who, "status"), 1))
        c.subscribe(subs)

    def on_subscribe(c, ud, mid, rcs, props):
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda c, ud, msg: receiver.feed(msg.topic, msg.payload)
    client.connect(parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883))
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise ConnectionError(f"could not subscribe at {broker}")
    return client
