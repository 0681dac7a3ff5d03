"""The reference platform receiver: subscribe, validate, de-duplicate, report gaps and presence.

``plantwatch receive`` is what a provincial platform must do with plantwatch messages, written
down as code: every message is checked against the published schema (json profile) or opened
with the province's envelope, cipher and key and read back through its field names and codes
(provincial profile), alarms are de-duplicated by (plant, epoch, seq), a jump in seq is reported
as a gap (and closed when the missing seq arrives), a new epoch (the gateway started a new
outbox, seq from 1 again) is reported as such, and the status messages tell whether each
plant's gateway is online. The MQTT subscriber here and the HTTP and TCP listeners
(``agent.platform``) all feed one Receiver.

Whatever a sender puts in a message, the receiver goes on: a message that is too large, nested
too deeply, not JSON, off the schema, or that names another plant than its topic is refused with
one ``INVALID`` line and counted by reason (``refused``); an exception in the receiver's own
handling is counted (``errors``) and logged, and the next message is read as usual. Its memory is
bounded: per plant the highest seq and at most ``MAX_GAPS`` missing ranges (not a set of every
seq), at most ``max_plants`` plants, and the last ``KEEP`` alarms and refusals.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.payloads import topic, validator
from agent.provincial import Profile, ProvincialError

log = logging.getLogger(__name__)

MAX_PAYLOAD = 1024 * 1024  # bytes of one message as it arrives (the largest registry fits many times)
MAX_DEPTH = 32  # nesting of objects and arrays; plantwatch's own messages nest 4 deep at most
MAX_SEQ = 2**63 - 1  # the agent's seq is a signed 64-bit integer
MAX_GAPS = 10_000  # missing seq ranges remembered per plant; past it the oldest are forgotten
MAX_EPOCHS = 16  # earlier sequence epochs remembered per plant (late messages of an old outbox)
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


@dataclass
class PlantTrack:
    """What the receiver knows about one plant's alarm stream, in bounded memory: the highest seq
    and the ranges below it still missing; every other seq up to the highest has arrived. A jump
    to seq 10**18 costs one range. At most MAX_GAPS ranges are kept: past that the oldest range is
    forgotten (``forgotten`` counts its seqs) and a seq in it arriving later reads as a duplicate."""

    highest: int = 0
    gaps: list[list[int]] = field(default_factory=list)  # [first, last] missing, ascending
    received: int = 0  # unique alarms taken
    duplicates: int = 0
    forgotten: int = 0
    online: bool | None = None
    epoch: str | None = None  # of highest and gaps; None: no alarm yet
    earlier: dict[str, PlantTrack] = field(default_factory=dict)  # epochs before, oldest first

    def new_epoch(self, epoch: str) -> None:
        """The gateway numbers from 1 again under ``epoch``: the current sequence becomes an earlier one."""
        if self.epoch is not None:
            self.earlier[self.epoch] = PlantTrack(highest=self.highest, gaps=self.gaps)
            while len(self.earlier) > MAX_EPOCHS:
                del self.earlier[next(iter(self.earlier))]
        self.epoch, self.highest, self.gaps = epoch, 0, []

    def missing_earlier(self, limit: int = 20) -> dict[str, list[int]]:
        """The first missing seqs of each earlier epoch that has any."""
        return {e: t.missing(limit) for e, t in self.earlier.items() if t.gaps}

    def take(self, seq: int) -> str:
        """Book one seq: "new", "gap" (new, after missing ones), "late" (fills a gap) or "duplicate"."""
        if seq > self.highest:
            outcome = "gap" if seq > self.highest + 1 else "new"
            if outcome == "gap":
                self.gaps.append([self.highest + 1, seq - 1])
                if len(self.gaps) > MAX_GAPS:
                    first, last = self.gaps.pop(0)
                    self.forgotten += last - first + 1
            self.highest = seq
        else:
            i = bisect.bisect_right(self.gaps, seq, key=lambda g: g[0]) - 1
            if i < 0 or self.gaps[i][1] < seq:
                self.duplicates += 1
                return "duplicate"
            first, last = self.gaps[i]
            self.gaps[i:i + 1] = [g for g in ([first, seq - 1], [seq + 1, last]) if g[0] <= g[1]]
            outcome = "late"
        self.received += 1
        return outcome

    def missing(self, limit: int = 1000) -> list[int]:
        """The first ``limit`` missing seqs."""
        out: list[int] = []
        for first, last in self.gaps:
            out.extend(range(first, min(last, first + limit - len(out) - 1) + 1))
            if len(out) >= limit:
                break
        return out

    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.gaps)


def _keep(items: list) -> None:
    """Trim a kept list to its newest KEEP // 2 once it passed KEEP (amortized: one trim per KEEP // 2)."""
    if len(items) > KEEP:
        del items[:len(items) - KEEP // 2]


def too_deep(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than ``limit`` deep (walked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
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
                self._size(payload)
                doc = parse_json(payload)
                errors = sorted(validator(kind).iter_errors(doc), key=lambda e: list(e.path))
                if errors:
                    e = errors[0]
                    where = "/".join(str(p) for p in e.path) or "(root)"
                    raise Refused("schema", f"{where}: {e.message[:200]}")
                self._topic_plant(plant, doc["plant"])
                getattr(self, f"_{kind}")(doc)
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
        self._sequenced(doc["plant"], doc["epoch"], doc["seq"], doc, text)

    def _sequenced(self, plant: str, epoch: str, seq: int, doc: dict[str, Any], text: str) -> None:
        """The (plant, epoch, seq) bookkeeping of an alarm, whichever profile it came in."""
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
            epoch = str(doc.get(f["epoch"], ""))[:64] if f.get("epoch") else ""
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
            self._say(f"REGISTRY {plant} {len(datas)} points at {when}")
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
            lines.append(f"plant {plant}: {t.received} alarms, seq 1..{t.highest}{gaps}{forgot}, "
                         f"{t.duplicates} duplicates, {online}{epochs}")
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
