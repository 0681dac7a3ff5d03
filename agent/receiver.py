"""The reference platform receiver: subscribe, validate, de-duplicate, report gaps and presence.

``plantwatch receive`` is what a provincial platform must do with plantwatch messages, written
down as code: every message is checked against the published schema (json profile) or opened
with the province's envelope, cipher and key and read back through its field names and codes
(provincial profile), alarms are de-duplicated by (plant, epoch, seq), a jump in seq is reported
as a gap (and closed when the missing seq arrives), a new epoch (the gateway started a new
outbox, seq from 1 again) is reported as such, and the status messages tell whether each
plant's gateway is online. The MQTT subscriber here and the HTTP and TCP listeners
(``agent.platform``) all feed one Receiver.
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
from agent.provincial import Profile, ProvincialError


@dataclass
class PlantTrack:
    """What the receiver knows about one plant's alarm stream: ``seen`` and ``highest`` are of
    its current ``epoch``; ``earlier`` keeps those of the epochs before (late or repeated
    messages of an old epoch are still recognised)."""

    seen: set[int] = field(default_factory=set)
    highest: int = 0
    duplicates: int = 0
    online: bool | None = None
    epoch: str | None = None  # None: no alarm yet
    earlier: dict[str, tuple[set[int], int]] = field(default_factory=dict)

    def missing(self) -> list[int]:
        """The seqs of the current epoch not received."""
        return [s for s in range(1, self.highest + 1) if s not in self.seen]

    def missing_earlier(self) -> dict[str, list[int]]:
        """The seqs not received of each earlier epoch that has any missing."""
        out = {e: [s for s in range(1, top + 1) if s not in seen] for e, (seen, top) in self.earlier.items()}
        return {e: m for e, m in out.items() if m}

    def new_epoch(self, epoch: str) -> None:
        """The gateway numbers from 1 again under ``epoch``: the current epoch becomes an earlier one."""
        if self.epoch is not None:
            self.earlier[self.epoch] = (self.seen, self.highest)
        self.seen, self.highest, self.epoch = set(), 0, epoch


class Receiver:
    """Consumes messages (from MQTT or handed in by a test) and keeps the platform's view."""

    def __init__(self, emit: Callable[[str], None] = print, out=None, profile: Profile | None = None):
        """With ``profile``, messages are the provincial profile's (``feed_payload``); else the
        json profile's, checked against the schemas."""
        self.emit = emit
        self.out = out
        self.profile = profile
        self.plants: dict[str, PlantTrack] = {}
        self.alarms: list[dict[str, Any]] = []  # unique alarms in arrival order
        self.arrivals: list[int] = []  # every alarm seq as it arrived, duplicates included
        self.invalid: list[str] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.telemetry = 0
        self.late = 0  # data messages with the 补传 mark
        self.registries: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def track(self, plant: str) -> PlantTrack:
        return self.plants.setdefault(plant, PlantTrack())

    def feed(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind not in ("alarm", "status", "telemetry", "registry"):
            return
        if kind == "status" and not payload:
            return  # a cleared retained message
        if self.profile is not None:
            self.feed_payload(payload, topic)
            return
        if kind == "registry":
            return
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
        value = "" if doc["value"] is None else f" value={doc['value']:g}{doc['unit'] and ' ' + doc['unit']}"
        text = f"{doc['ts']} {doc['id']} {doc['state']} {doc['level']} p{doc['priority']}{value} | {doc['message']}"
        self._sequenced(doc["plant"], doc["epoch"], doc["seq"], doc, text)

    def _sequenced(self, plant: str, epoch: str, seq: int, doc: dict[str, Any], text: str) -> None:
        """The (plant, epoch, seq) bookkeeping of an alarm, whichever profile it came in."""
        t = self.track(plant)
        self.arrivals.append(seq)
        if epoch != t.epoch and epoch in t.earlier:  # a message of an epoch before the current one
            seen, highest = t.earlier[epoch]
            if seq in seen:
                t.duplicates += 1
                self.emit(f"duplicate {plant} epoch={epoch} seq={seq} (ignored)")
                return
            seen.add(seq)
            t.earlier[epoch] = (seen, max(highest, seq))
            self._accept(plant, seq, doc, f"(earlier epoch {epoch}) {text}")
            return
        if epoch != t.epoch:
            if t.epoch is not None:
                self.emit(f"EPOCH {plant}: new sequence epoch {epoch} (was {t.epoch}): the gateway started a new "
                          "outbox, seq starts again at 1")
            t.new_epoch(epoch)
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
        self._accept(plant, seq, doc, text)

    def _accept(self, plant: str, seq: int, doc: dict[str, Any], text: str) -> None:
        self.alarms.append(doc)
        self.emit(f"ALARM {plant} seq={seq} {text}")
        if self.out is not None:
            self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            self.out.flush()

    def _status(self, doc: dict[str, Any]) -> None:
        self._presence(doc["plant"], doc["online"], doc["ts"], doc)

    def _presence(self, plant: str, online: bool, ts: str, doc: dict[str, Any]) -> None:
        t = self.track(plant)
        self.status[plant] = doc
        if t.online != online:
            t.online = online
            self.emit(f"STATUS {plant} {'ONLINE' if online else 'OFFLINE'} at {ts}")

    # --- the provincial profile -------------------------------------------------------------------

    def feed_payload(self, payload: bytes, where: str) -> str | None:
        """One provincial-profile message as it came off the wire (envelope, cipher, encoding):
        opened with the profile, read back and booked. Returns None when it was taken, else why
        not (also counted in ``invalid``); never raises on what a sender put in it."""
        assert self.profile is not None
        with self.changed:
            try:
                doc = self.profile.decode(payload)
                why = self._provincial(doc)
            except ProvincialError as exc:
                why = str(exc)
            except (KeyError, TypeError, ValueError) as exc:
                why = f"unreadable message: {type(exc).__name__}: {exc}"
            if why is not None:
                self._invalid(where, why)
            self.changed.notify_all()
            return why

    def _provincial(self, doc: dict[str, Any]) -> str | None:
        """Book a decoded document by its message type; the reason when it cannot be read back."""
        p = self.profile
        assert p is not None
        f = p.fields
        kinds = {code: kind for kind, code in p.types.items()}
        kind = kinds.get(str(doc.get(f["type"])))
        plant = doc.get(f["enterprise"])
        if kind is None:
            return f"{f['type']}: not a message type of the profile: {doc.get(f['type'])!r}"
        if not isinstance(plant, str) or not plant:
            return f"{f['enterprise']}: missing"
        when = str(doc.get(f["time"], ""))
        if kind == "alarm":
            seq = doc.get(f["seq"])
            if isinstance(seq, str) and seq.isdigit():
                seq = int(seq)
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                return f"{f['seq']}: not a sequence number: {seq!r}"
            states = {}
            for name, code in reversed(p.states.items()):  # a code shared by two states reads as the first
                states[code] = name
            state = states.get(str(doc.get(f["state"])), f"state {doc.get(f['state'])!r}")
            unit = doc.get(f["unit"]) or ""
            # the epoch is in the province's fields only when `fields.epoch` names one
            epoch = str(doc.get(f["epoch"], "")) if f.get("epoch") else ""
            self._sequenced(plant, epoch, seq, doc, f"{when} {doc.get(f['point'])} {state} code={doc.get(f['alarm_code'])} "
                            f"value={doc.get(f['value'])}{unit and ' ' + unit} | {doc.get(f['message'])}")
        elif kind == "status":
            online = doc.get(f["online"])
            if online not in ("0", "1"):
                return f"{f['online']}: must be \"0\" or \"1\", not {online!r}"
            self._presence(plant, online == "1", when, doc)
        elif kind == "data":
            self.telemetry += 1
            self.late += doc.get(f["late"]) == "1"
        else:
            datas = doc.get(f["datas"])
            if not isinstance(datas, list):
                return f"{f['datas']}: the registry's points must be a list"
            self.registries.append(doc)
            self.emit(f"REGISTRY {plant} {len(datas)} points at {when}")
        return None

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
            epochs = f", epoch {t.epoch}" + (f" ({len(t.earlier)} earlier)" if t.earlier else "")
            epochs += "".join(f", MISSING {m[:20]} of epoch {e}" for e, m in t.missing_earlier().items())
            lines.append(f"plant {plant}: {len(t.seen)} alarms, seq 1..{t.highest}{gaps}, {t.duplicates} duplicates, "
                         f"{online}{epochs}")
        if self.invalid:
            lines.append(f"{len(self.invalid)} messages failed validation")
        return lines


def connect(receiver: Receiver, broker: str, plant: str | None, prefix: str = "plantwatch", group: str | None = None,
            client_id: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
            key_file: str | None = None, username: str | None = None, password: str | None = None) -> mqtt.Client:
    """Subscribe ``receiver`` to a broker URL (mqtt:// or mqtts://); returns the running client.

    With ``group``, alarm and telemetry subscriptions are shared (``$share/group/...``) so that
    several receivers behind a broker cluster split the load. ``username`` and ``password``
    (as the agent's ``[uplink]`` has them) win over any in the URL.
    """
    parts = urlsplit(broker)
    # a named client keeps a persistent session: the broker queues alarms while it is away
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id or "",
                         clean_session=not client_id)
    client.reconnect_delay_set(0.1, 5)
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
    if username or parts.username:
        client.username_pw_set(username or parts.username, password if username else parts.password)
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
        if receiver.profile is not None:
            subs.append((topic(prefix, who, "registry"), 1))
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
