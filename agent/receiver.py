"""The reference platform receiver: subscribe, validate, de-duplicate, report gaps and presence.

``plantwatch receive`` is what a provincial platform must do with plantwatch messages, written
down as code: every message is checked against the published schema (json profile) or opened
with the province's envelope, cipher and key and read back through its field names and codes
(provincial profile), alarms are de-duplicated by (plant, epoch, seq), a jump in seq is reported
as a gap (and closed when the missing seq arrives), a new epoch (the gateway started a new
outbox, seq from 1 again) is reported as such, an unnumbered alarm (sent from the gateway's
memory while its outbox could not store it) is shown at once but kept out of the sequence and
matched with its numbered record by (plant, alarm, state, time), and the status messages tell
whether each plant's gateway is online. The MQTT subscriber here and the HTTP and TCP listeners
(``agent.platform``) all feed one Receiver.

Whatever a sender puts in a message, the receiver goes on: a message that is too large, nested
too deeply, not JSON, off the schema, or that names another plant than its topic is refused with
one ``INVALID`` line and counted by reason (``refused``); an exception in the receiver's own
handling is counted (``errors``) and logged, and the next message is read as usual. Its memory is
bounded: per plant the highest seq and at most ``MAX_GAPS`` missing ranges (not a set of every
seq), at most ``max_plants`` plants, and the last ``KEEP`` alarms and refusals.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.payloads import topic, validator
from agent.provincial import Profile, ProvincialError
from agent.schemacheck import checker
from agent.seqtrack import PlantTrack

log = logging.getLogger(__name__)

MAX_PAYLOAD = 1024 * 1024  # bytes of one message as it arrives (the largest registry fits many times)
MAX_DEPTH = 32  # nesting of objects and arrays; plantwatch's own messages nest 4 deep at most
MAX_SEQ = 2**63 - 1  # the agent's seq is a signed 64-bit integer
MAX_PLANTS = 100_000  # plants tracked; a message of one more is refused
KEEP = 10_000  # alarms, arrivals, refusals and registries kept in memory (the --out file has every alarm)


class OutputError(Exception):
    """Writing the receiver's own output (its lines, the --out file) failed: an error of the
    receiver's, not of the message; the original exception is its ``__cause__``."""


class Refused(Exception):
    """A message the receiver will not take: ``reason`` is the count it goes into."""

    def __init__(self, reason: str, why: str):
        super().__init__(why)
        self.reason = reason


def checked(kind: str, payload: bytes, topic_plant: str | None, max_payload: int) -> dict[str, Any]:
    """The document of one json-profile message, within the size limit, valid against its schema
    and for the plant of its topic; Refused otherwise."""
    if len(payload) > max_payload:
        raise Refused("too large", f"{len(payload)} bytes, over the maximum of {max_payload}")
    doc = parse_json(payload)
    fast = checker(kind)  # jsonschema is asked about every document the compiled check does not take
    errors = [] if fast is not None and fast(doc) else sorted(validator(kind).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise Refused("schema", f"{where}: {errors[0].message[:200]}")
    Receiver._topic_plant(topic_plant, doc["plant"])
    return doc


def _keep(items: list) -> None:
    """Trim a kept list to its newest KEEP // 2 once it passed KEEP (amortized: one trim per KEEP // 2)."""
    if len(items) > KEEP:
        del items[:len(items) - KEEP // 2]


def too_deep(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than ``limit`` deep (walked without recursion)."""
    stack = [(doc, 1)] if isinstance(doc, dict | list) else []  # objects and arrays only
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)
                     if isinstance(v, dict | list))
    return False


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(payload: bytes) -> Any:
    """JSON as the receiver takes it: finite numbers only, at most MAX_DEPTH deep; Refused else."""
    try:
        doc = json.loads(payload, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise Refused("too deep", f"nested more than {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused("not JSON", f"not JSON: {exc}") from None
    if too_deep(doc):
        raise Refused("too deep", f"nested more than {MAX_DEPTH} deep")
    return doc


class Receiver:
    """Consumes messages (from MQTT or handed in by a test) and keeps the platform's view."""

    def __init__(self, emit: Callable[[str], None] = print, out=None, profile: Profile | None = None,
                 max_payload: int = MAX_PAYLOAD, max_plants: int = MAX_PLANTS, plant: str | None = None):
        """With ``profile``, messages are the provincial profile's (``feed_payload``); else the
        json profile's, checked against the schemas. ``plant`` is the plant (topic) of the gateway
        that speaks for the profile's enterprise code, when the two differ."""
        self.emit = emit
        self.out = out
        self.profile = profile
        # a provincial message names its enterprise code; the gateway publishes under its plant
        self.topic_of = {profile.enterprise_code: plant} if profile is not None and plant else {}
        self.max_payload = max_payload
        self.max_plants = max_plants
        self.plants: dict[str, PlantTrack] = {}
        self.alarms: list[dict[str, Any]] = []  # the last KEEP unique alarms in arrival order
        self.unnumbered: list[dict[str, Any]] = []  # the last KEEP unnumbered alarms (sent from memory)
        # (plant, alarm, state, time) of recent alarms -> seq (None: only the unnumbered one so far)
        self.numbered_as: dict[tuple, int | None] = {}
        self.accepted = 0  # unique alarms taken, all told
        self.arrivals: list[int] = []  # the last KEEP alarm seqs as they arrived, duplicates included
        self.invalid: list[str] = []  # the last KEEP refusals, "where: why"
        self.refused: Counter[str] = Counter()  # every refusal, by reason
        self.errors = 0  # exceptions in the receiver's own handling (each logged)
        self.handled = 0  # MQTT messages fed, whatever became of them
        self.status: dict[str, dict[str, Any]] = {}
        self.telemetry = 0
        self.late = 0  # data messages with the 补传 mark
        self.registries: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def track(self, plant: str) -> PlantTrack:
        t = self.plants.get(plant)
        if t is None:
            if len(self.plants) >= self.max_plants:
                raise Refused("too many plants", f"plant {plant[:40]!r} would be plant {len(self.plants) + 1}, "
                                                 f"over the {self.max_plants} tracked")
            t = self.plants[plant] = PlantTrack()
        return t

    def feed(self, topic: str, payload: bytes) -> None:
        """One MQTT message; never raises (a refusal or an error of ours is counted and reported)."""
        try:
            self._feed(topic, payload)
        except Exception as exc:  # a handler that fails must not stop the subscriber's thread
            self._failed(topic, exc)
        finally:
            with self.changed:
                self.handled += 1
                self.changed.notify_all()

    def _feed(self, topic: str, payload: bytes) -> None:
        parts = topic.rsplit("/", 2)
        kind = parts[-1]
        if kind not in ("alarm", "status", "telemetry", "registry"):
            return
        if kind == "status" and not payload:
            return  # a cleared retained message
        plant = parts[-2] if len(parts) == 3 else None
        if self.profile is not None:
            self.feed_payload(payload, topic, plant)
            return
        if kind == "registry":
            return
        with self.changed:
            try:
                getattr(self, f"_{kind}")(checked(kind, payload, plant, self.max_payload))
            except Refused as exc:
                self._invalid(topic, str(exc), exc.reason)
            self.changed.notify_all()

    def _size(self, payload: bytes) -> None:
        if len(payload) > self.max_payload:
            raise Refused("too large", f"{len(payload)} bytes, over the maximum of {self.max_payload}")

    @staticmethod
    def _topic_plant(topic_plant: str | None, plant: Any) -> None:
        """A gateway speaks for the plant of its topic only (the broker's ACL binds it to that topic);
        ``plant`` is the message's plant, or the plant whose topic its enterprise code belongs to."""
        if topic_plant is not None and plant != topic_plant:
            raise Refused("plant mismatch", f"the message is for plant {str(plant)[:40]!r}, its topic for {topic_plant!r}")

    def _invalid(self, where: str, why: str, reason: str = "invalid") -> None:
        self.invalid.append(f"{where}: {why}")
        _keep(self.invalid)
        self.refused[reason] += 1
        self._say(f"INVALID {where}: {why}")

    def _say(self, line: str) -> None:
        try:
            self.emit(line)
        except Exception as exc:
            raise OutputError(str(exc)) from exc

    def _failed(self, where: str, exc: Exception) -> None:
        if isinstance(exc, OutputError) and isinstance(exc.__cause__, Exception):
            exc = exc.__cause__
        with self.changed:
            self._error(where, exc)
            self.changed.notify_all()

    def _error(self, where: str, exc: Exception) -> None:
        """An exception in the receiver's own handling (the lock held): counted, logged with its
        traceback, one ERROR line; the message is dropped and the next one read as usual."""
        self.errors += 1
        self.refused["receiver error"] += 1
        log.error("receiver: %s: message dropped: %s: %s", where, type(exc).__name__, exc, exc_info=exc)
        try:
            self.emit(f"ERROR {where}: {type(exc).__name__}: {exc} (message dropped; the receiver goes on)")
        except Exception:  # the emitter itself failing must not escape either
            pass

    def _alarm(self, doc: dict[str, Any]) -> None:
        value = "" if doc["value"] is None else f" value={doc['value']:g}{doc['unit'] and ' ' + doc['unit']}"
        text = f"{doc['ts']} {doc['id']} {doc['state']} {doc['level']} p{doc['priority']}{value} | {doc['message']}"
        key = (doc["plant"], doc["id"], doc["state"], doc["ts"])
        if doc.get("unnumbered"):
            self._unnumbered(key, doc, text)
        else:
            self._sequenced(doc["plant"], doc["epoch"], doc["seq"], doc, text, key)

    def _unnumbered(self, key: tuple, doc: dict[str, Any], text: str) -> None:
        """An alarm the gateway sent from memory while its outbox could not store it: shown at
        once, kept apart, never booked in the sequence (no gap, no duplicate, not in ``alarms``
        or --out); its numbered record follows once stored. ``key`` (plant, alarm, state, time)
        de-duplicates it, against itself sent again and against the numbered record."""
        plant = key[0]
        self.track(plant)
        if key in self.numbered_as:
            seq = self.numbered_as[key]
            self._say(f"duplicate unnumbered {plant} {text} ({f'numbered seq={seq}' if seq else 'seen'}; ignored)")
            return
        self._remember(key, None)
        self.plants[plant].unnumbered += 1
        self.unnumbered.append(doc)
        _keep(self.unnumbered)
        self._say(f"UNNUMBERED {plant} {text} (sent from the gateway's memory; the numbered record follows)")

    def _remember(self, key: tuple, seq: int | None) -> None:
        """(plant, alarm, state, time) of the last KEEP alarms -> their seq (None: unnumbered)."""
        self.numbered_as[key] = seq
        if len(self.numbered_as) > KEEP:
            for old in list(self.numbered_as)[:KEEP // 2]:
                del self.numbered_as[old]

    def _sequenced(self, plant: str, epoch: str, seq: int, doc: dict[str, Any], text: str, key: tuple) -> None:
        """The (plant, epoch, seq) bookkeeping of an alarm, whichever profile it came in; ``key``
        matches it with an unnumbered alarm received before (``_unnumbered``)."""
        if seq > MAX_SEQ:
            raise Refused("seq out of range", f"seq {str(seq)[:30]} is over {MAX_SEQ}")
        t = self.track(plant)
        seqs, where = t, ""
        if epoch != t.epoch and epoch in t.earlier:  # a message of an epoch before the current one
            seqs, where = t.earlier[epoch], f" epoch={epoch}"
        elif epoch != t.epoch:
            if t.epoch is not None:
                self._say(f"EPOCH {plant}: new sequence epoch {epoch} (was {t.epoch}): the gateway started a new "
                          "outbox, seq starts again at 1")
            t.new_epoch(epoch)
        before = seqs.highest
        outcome = seqs.take(seq)
        if seqs is not t:  # the plant's counts are of every epoch
            t.duplicates, t.received = t.duplicates + (outcome == "duplicate"), t.received + (outcome != "duplicate")
        self.arrivals.append(seq)
        _keep(self.arrivals)
        if outcome == "duplicate":
            self._say(f"duplicate {plant}{where} seq={seq} (ignored)")
            return
        if outcome == "gap":
            self._say(f"GAP {plant}{where}: seq {before + 1}..{seq - 1} missing before seq={seq}")
        elif outcome == "late":
            self._say(f"late {plant}{where} seq={seq} fills a gap")
        self.alarms.append(doc)
        _keep(self.alarms)
        self.accepted += 1
        self._say(f"ALARM {plant} seq={seq} {text}")
        if key in self.numbered_as and self.numbered_as[key] is None:
            self._say(f"numbered {plant} seq={seq}: the record of the unnumbered alarm received before")
        self._remember(key, seq)
        if self.out is not None:
            try:
                self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                self.out.flush()
            except Exception as exc:
                raise OutputError(f"--out: {exc}") from exc

    def _status(self, doc: dict[str, Any]) -> None:
        self._presence(doc["plant"], doc["online"], doc["ts"], doc)

    def _presence(self, plant: str, online: bool, ts: str, doc: dict[str, Any]) -> None:
        t = self.track(plant)
        self.status[plant] = doc
        if t.online != online:
            t.online = online
            self._say(f"STATUS {plant} {'ONLINE' if online else 'OFFLINE'} at {ts}")

    # --- the provincial profile -------------------------------------------------------------------

    def feed_payload(self, payload: bytes, where: str, plant: str | None = None) -> str | None:
        """One provincial-profile message as it came off the wire (envelope, cipher, encoding):
        opened with the profile, read back and booked. ``plant``: the plant its MQTT topic names
        (None from the HTTP and TCP listeners). Returns None when it was taken, else why not (also
        counted in ``invalid`` and ``refused``); never raises on what a sender put in it."""
        assert self.profile is not None
        with self.changed:
            why, reason = None, "unreadable"
            try:
                self._size(payload)
                doc = self.profile.decode(payload)
                if too_deep(doc):
                    raise Refused("too deep", f"nested more than {MAX_DEPTH} deep")
                why = self._provincial(doc, plant)
            except Refused as exc:
                why, reason = str(exc), exc.reason
            except OutputError as exc:
                self._error(where, exc.__cause__ if isinstance(exc.__cause__, Exception) else exc)
                self.changed.notify_all()
                return f"receiver error: {type(exc.__cause__).__name__}"
            except ProvincialError as exc:
                why = str(exc)
            except RecursionError:
                why, reason = f"nested more than {MAX_DEPTH} deep", "too deep"
            except (KeyError, TypeError, ValueError) as exc:
                why = f"unreadable message: {type(exc).__name__}: {str(exc)[:200]}"
            except Exception as exc:  # an error of ours: the listener or subscriber goes on
                self._error(where, exc)
                self.changed.notify_all()
                return f"receiver error: {type(exc).__name__}"
            if why is not None:
                self._invalid(where, why, reason)
            self.changed.notify_all()
            return why

    def _provincial(self, doc: dict[str, Any], topic_plant: str | None = None) -> str | None:
        """Book a decoded document by its message type; the reason when it cannot be read back."""
        p = self.profile
        assert p is not None
        f = p.fields
        if not isinstance(doc, dict):
            return f"not a JSON object but {type(doc).__name__}"
        kinds = {code: kind for kind, code in p.types.items()}
        kind = kinds.get(str(doc.get(f["type"])))
        plant = doc.get(f["enterprise"])
        if kind is None:
            return f"{f['type']}: not a message type of the profile: {str(doc.get(f['type']))[:40]!r}"
        if not isinstance(plant, str) or not plant:
            return f"{f['enterprise']}: missing"
        self._topic_plant(topic_plant, self.topic_of.get(plant, plant))
        when = str(doc.get(f["time"], ""))
        if kind == "alarm":
            return self._provincial_alarm(doc, plant, when)
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
            self._say(f"REGISTRY {plant} {len(datas)} points at {when}")
        return None

    def _provincial_alarm(self, doc: dict[str, Any], plant: str, when: str) -> str | None:
        """Book a provincial alarm: by (enterprise, epoch, seq), or apart when the profile names an
        ``unnumbered`` field and the message has it "1" (sent from the gateway's memory)."""
        p = self.profile
        assert p is not None
        f = p.fields
        states = {}
        for name, code in reversed(p.states.items()):  # a code shared by two states reads as the first
            states[code] = name
        state = states.get(str(doc.get(f["state"])), f"state {doc.get(f['state'])!r}")
        unit = doc.get(f["unit"]) or ""
        text = (f"{when} {doc.get(f['point'])} {state} code={doc.get(f['alarm_code'])} "
                f"value={doc.get(f['value'])}{unit and ' ' + unit} | {doc.get(f['message'])}")
        key = (plant, doc.get(f["point"]), doc.get(f["state"]), doc.get(f["time"]))
        if f.get("unnumbered") and doc.get(f["unnumbered"]) == "1":
            self._unnumbered(key, doc, text)
            return None
        seq = doc.get(f["seq"])
        if isinstance(seq, str) and seq.isdigit():
            seq = int(seq)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return f"{f['seq']}: not a sequence number: {seq!r}"
        # the epoch is in the province's fields only when `fields.epoch` names one
        epoch = str(doc.get(f["epoch"], ""))[:64] if f.get("epoch") else ""
        self._sequenced(plant, epoch, seq, doc, text, key)
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
            count = t.missing_count()
            missing = t.missing(20)
            gaps = f", MISSING {missing}{'...' if count > len(missing) else ''} ({count})" if count else ", no gaps"
            forgot = f", {t.forgotten} missing seqs forgotten" if t.forgotten else ""
            online = {None: "unknown", True: "online", False: "offline"}[t.online]
            epochs = f", epoch {t.epoch}" + (f" ({len(t.earlier)} earlier)" if t.earlier else "")
            epochs += "".join(f", MISSING {m} of epoch {e}" for e, m in t.missing_earlier().items())
            unnumbered = f", {t.unnumbered} unnumbered (sent from memory)" if t.unnumbered else ""
            lines.append(f"plant {plant}: {t.received} alarms, seq 1..{t.highest}{gaps}{forgot}, "
                         f"{t.duplicates} duplicates{unnumbered}, {online}{epochs}")
        if self.refused:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.refused.items()))
            lines.append(f"{sum(self.refused.values())} messages refused ({reasons})")
        return lines


def connect(receiver: Receiver, broker: str, plant: str | None, prefix: str = "plantwatch", group: str | None = None,
            client_id: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
            key_file: str | None = None, username: str | None = None, password: str | None = None) -> mqtt.Client:
    """Subscribe ``receiver`` to a broker URL (mqtt:// or mqtts://); returns the running client.

    With ``group``, alarm and telemetry subscriptions are shared (``$share/group/...``) so that
    several receivers behind a broker cluster split the load. ``username`` and ``password``
    (as the agent's ``[uplink]`` has them) win over any in the URL.
    """
    parts = urlsplit(broker)  # a named client keeps a persistent session: the broker queues alarms while it is away
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id or "",
                         clean_session=not client_id)
    client.reconnect_delay_set(0.1, 5)
    login(client, parts, ca_file, cert_file, key_file, username, password)
    subscribed = threading.Event()

    def on_connect(c, ud, flags, rc, props):
        if rc.is_failure:
            receiver.emit(f"receiver: broker refused: {rc}")
            return
        c.subscribe(subscriptions(prefix, plant, group, registry=receiver.profile is not None))

    def on_subscribe(c, ud, mid, rcs, props):
        subscribed.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = lambda c, ud, msg: receiver.feed(msg.topic, msg.payload)  # feed never raises
    client.connect(parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883))
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise ConnectionError(f"could not subscribe at {broker}")
    return client


def login(client: mqtt.Client, parts, ca_file=None, cert_file=None, key_file=None, username=None, password=None) -> None:
    """TLS for mqtts://, and the user name and password (``username`` wins over the URL's)."""
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
    if username or parts.username:
        client.username_pw_set(username or parts.username, password if username else parts.password)


def subscriptions(prefix: str, plant: str | None, group: str | None, registry: bool = False) -> list[tuple[str, int]]:
    """Alarms and telemetry (shared under ``group``), status (every receiver: retained) at QoS 1."""
    who = plant or "+"
    subs = [(f"$share/{group}/{t}" if group else t, 1) for t in (topic(prefix, who, k) for k in ("alarm", "telemetry"))]
    return subs + [(topic(prefix, who, k), 1) for k in ("status", "registry")[:1 + registry]]
