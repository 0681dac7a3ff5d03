"""The alarm manager: condition changes in, alarm messages out, with the ISA-18.2 lifecycle.

A pure state machine driven by (changes, commands, time): no clock, no I/O. Each alarm is one
(tag or device, kind) pair with separate flags — active, acked, shelved, suppressed,
out_of_service, latched — as OPC UA Part 9 (AlarmConditionType) models them. H -> HH
escalation is the same alarm changing level.

Messages carry no ``seq``: the outbox assigns it in the commit that makes the message durable,
so a seq exists only for a message that will reach the platform. Transitions of a shelved,
suppressed or out-of-service alarm are still sent, with those flags set: the regulator sees
what the operators chose not to be disturbed by, and decides for itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config import AlarmSystemSection
from agent.payloads import ALARM_SCHEMA, number, rfc3339
from agent.presets import PRESETS
from detectors.base import ConditionChange

LEVEL_TEXT = {
    "HH": "高高报警 high-high",
    "H": "高报警 high",
    "L": "低报警 low",
    "LL": "低低报警 low-low",
}

#: a family's words for its alarm text: (level, active, value, limit, context) -> text, or None
#: for the generic text (see detectors.base.Family.describe)
Describe = Callable[[str, bool, float, float, Mapping[str, Any]], "str | None"]


class CommandError(ValueError):
    """An operator command that cannot be applied (unknown alarm, wrong state, bad duration)."""


@dataclass
class Alarm:
    """One alarm's state. ``id`` is stable: ``{tag or device}/{kind}``."""

    id: str
    kind: str
    tag: str | None
    device: str
    level: str = ""
    active: bool = False
    acked: bool = True
    shelved: bool = False
    shelve_until: float | None = None  # None with shelved = one-shot: until the alarm clears
    suppressed: bool = False
    suppress_until: float | None = None  # a suppression ends by itself (max_suppress_s at most)
    out_of_service: bool = False
    out_of_service_until: float | None = None  # as does out-of-service (max_out_of_service_s)
    latched: bool = False
    value: float = float("nan")
    limit: float = float("nan")
    ts: float = 0.0
    active_since: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    activations: deque = field(default_factory=deque)  # recent activation times (chattering)
    chattering: bool = False
    unconfirmed_until: float | None = None  # restored active: cleared unless a detector confirms it
    confirm_grace: float = 0.0


# what survives a restart (the rest is rebuilt from the samples)
PERSISTED = ("id", "kind", "tag", "device", "level", "active", "acked", "shelved", "shelve_until", "suppressed",
             "suppress_until", "out_of_service", "out_of_service_until", "latched", "value", "limit", "ts", "active_since", "context")


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What the manager needs to know about a tag to write an alarm message."""

    name: str
    device: str
    unit: str = ""
    desc: str = ""
    priority: int | Mapping[str, int] = 2
    latch: bool = False
    preset: str = ""
    gas: str = ""  # a toxic gas preset's gas and explicit OEL (mg/m³), for the alarm context
    oel: float | None = None


def level_priority(base: int | Mapping[str, int], level: str, kind: str = "limit") -> int:
    """1 = highest. A table maps levels or kinds to priorities; a number is the tag's priority,
    with HH and LL one step more urgent."""
    if isinstance(base, Mapping):
        return int(base.get(level, base.get(kind, 2)))
    return max(1, base - 1) if level in ("HH", "LL") else base


class AlarmManager:
    def __init__(self, plant: str, tags: Iterable[TagInfo], rules: AlarmSystemSection | None = None,
                 describe: Mapping[str, Describe] | None = None, positions: Mapping[str, int] | None = None):
        """``tags``: by index, each a TagInfo or anything with its attributes (the config's
        TagConfig). ``rules``: the [alarm_system] health thresholds (its defaults when None).
        ``describe``: alarm kind -> the family's words for its alarm text. ``positions``: tag
        name -> index, when the caller has it already."""
        self.plant = plant
        self.tags: Sequence[TagInfo] = tags if isinstance(tags, (list, tuple)) else list(tags)
        self._position = positions if positions is not None else {t.name: i for i, t in enumerate(self.tags)}
        self.rules = rules or AlarmSystemSection()
        self.describe = dict(describe or {})
        self.alarms: dict[str, Alarm] = {}
        self.new_alarms: deque[float] = deque()  # activation times, for flood detection
        self.flood = False
        self.floods = 0
        self.commands_applied = 0
        self.commands_rejected = 0

    # --- lookup ---------------------------------------------------------------------------------

    def _named(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Detector context with tag indices replaced by tag names (what the platform reads)."""
        out = dict(context)
        tags = self.tags
        for k in ("top_tags", "model_tags"):
            if k in out:
                out[k] = [tags[i].name for i in out[k]]
        if "contributions" in out:
            out["contributions"] = {tags[int(i)].name: v for i, v in out["contributions"].items()}
        return out

    def _alarm(self, kind: str, tag: str | None, device: str, key: str | None = None) -> Alarm:
        key = key or f"{tag if tag is not None else device}/{kind}"
        alarm = self.alarms.get(key)
        if alarm is None:
            alarm = self.alarms[key] = Alarm(id=key, kind=kind, tag=tag, device=device)
        return alarm

    def snapshot(self, alarm_id: str) -> dict[str, Any]:
        """An alarm's state to save with its message (see ``restore``)."""
        a = self.alarms[alarm_id]
        return {k: (number(getattr(a, k)) if k in ("value", "limit") else getattr(a, k)) for k in PERSISTED}

    def restore(self, states: Iterable[Mapping[str, Any]], now: float, grace: Callable[[Alarm], float]) -> None:
        """Alarm states saved before a restart. An alarm that was active on a tag stays active
        only if its detector confirms it within ``grace(alarm)`` seconds (the detectors start
        from normal, so a condition that ended while the agent was down must be cleared)."""
        for st in states:
            alarm = Alarm(**{k: st[k] for k in PERSISTED if k in st})
            alarm.value = float("nan") if alarm.value is None else alarm.value
            alarm.limit = float("nan") if alarm.limit is None else alarm.limit
            # saved before suppressions were timed: they end after the longest one allowed now
            if alarm.suppressed and alarm.suppress_until is None:
                alarm.suppress_until = now + self.rules.max_suppress_s
            if alarm.out_of_service and alarm.out_of_service_until is None:
                alarm.out_of_service_until = now + self.rules.max_out_of_service_s
            if alarm.active and alarm.kind not in ("comm",) and alarm.tag is not None:
                alarm.confirm_grace = grace(alarm)
                alarm.unconfirmed_until = now + alarm.confirm_grace
            self.alarms[alarm.id] = alarm

    def active(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if a.active]

    def _latching(self, alarm: Alarm) -> bool:
        info = self._info(alarm)
        return bool(info and info.latch)

    def _info(self, alarm: Alarm) -> TagInfo | None:
        i = None if alarm.tag is None else self._position.get(alarm.tag)
        return None if i is None else self.tags[i]

    # --- conditions -----------------------------------------------------------------------------

    def on_changes(self, changes: Iterable[ConditionChange]) -> list[dict[str, Any]]:
        """Apply detector condition changes; return the alarm messages to commit, in order."""
        out = []
        for c in changes:
            info = self.tags[c.tag]
            context = self._named(c.context)
            if "model" in context:  # a multivariate model's alarm: one per model
                alarm = self._alarm(c.kind, None, info.device, key=f"{context['model']}/{c.kind}")
                alarm.tag = context["top_tags"][0] if context.get("top_tags") else info.name
            else:
                alarm = self._alarm(c.kind, info.name, info.device)
            newly = False
            if c.active:
                alarm.unconfirmed_until = None
                if alarm.active and alarm.level == c.level:
                    continue
                newly = not alarm.active
                if newly:
                    self._activated(alarm, c.ts)
                alarm.active = True
                alarm.acked = False
                alarm.latched = False
            else:
                if not alarm.active:
                    continue
                alarm.active = False
                alarm.active_since = None
                alarm.latched = info.latch and not alarm.acked
                if alarm.shelved and alarm.shelve_until is None:  # one-shot shelve ends here
                    alarm.shelved = False
            alarm.level = c.level
            alarm.value, alarm.limit, alarm.ts, alarm.context = c.value, c.limit, c.ts, context
            out.append(self.message(alarm, "active" if alarm.active else "cleared", c.ts))
            if newly:
                out += self._auto_shelve(alarm, c.ts)
        return out

    def _activated(self, alarm: Alarm, ts: float) -> None:
        """Bookkeeping for a new activation: chattering and flood detection."""
        alarm.active_since = ts
        r = self.rules
        alarm.activations.append(ts)
        while alarm.activations and alarm.activations[0] < ts - r.chatter_window_s:
            alarm.activations.popleft()
        alarm.chattering = len(alarm.activations) >= r.chatter_count
        self.new_alarms.append(ts)
        while self.new_alarms and self.new_alarms[0] < ts - r.flood_window_s:
            self.new_alarms.popleft()
        flood = len(self.new_alarms) > r.flood_count
        if flood and not self.flood:
            self.floods += 1
        self.flood = flood

    def _auto_shelve(self, alarm: Alarm, ts: float) -> list[dict[str, Any]]:
        """A chattering alarm is shelved for ``chatter_shelve_s`` when that is configured."""
        if not (alarm.chattering and self.rules.chatter_shelve_s > 0 and not alarm.shelved):
            return []
        alarm.shelved, alarm.shelve_until = True, ts + self.rules.chatter_shelve_s
        return [self.message(alarm, "shelved", ts, user="plantwatch",
                              comment=f"chattering: {len(alarm.activations)} activations in {self.rules.chatter_window_s:g} s")]

    def on_device(self, device: str, error: str | None, ts: float) -> list[dict[str, Any]]:
        """A device stopped answering (error text) or answers again (None): the comm alarm."""
        key = f"{device}/comm"
        alarm = self.alarms.get(key)
        if error is None and (alarm is None or not alarm.active):
            return []
        alarm = self._alarm("comm", None, device)
        out: list[dict[str, Any]] = []
        if error is not None:
            if alarm.active:
                return []
            self._activated(alarm, ts)
            alarm.active, alarm.acked = True, False
        else:
            alarm.active, alarm.active_since = False, None
        alarm.level = "COMM"
        alarm.value, alarm.limit, alarm.ts = float("nan"), float("nan"), ts
        alarm.context = {"error": error} if error else {}
        out.append(self.message(alarm, "active" if alarm.active else "cleared", ts))
        if error is not None:
            out += self._auto_shelve(alarm, ts)
        return out

    def raise_system(self, kind: str, device: str, active: bool, ts: float, context: Mapping[str, Any],
                     value: float = float("nan"), limit: float = float("nan"), unit: str = "") -> list[dict[str, Any]]:
        """An alarm about the agent itself (e.g. ``storage``), identified by ``device``/kind;
        ``context["text"]`` is its message."""
        alarm = self._alarm(kind, None, device)
        if alarm.active == active:
            return []
        if active:
            self._activated(alarm, ts)
            alarm.acked = False
        else:
            alarm.active_since = None
        alarm.active = active
        alarm.level = kind.upper()
        alarm.value, alarm.limit, alarm.ts, alarm.context = value, limit, ts, dict(context)
        msg = self.message(alarm, "active" if active else "cleared", ts)
        msg["unit"] = unit
        return [msg]

    # --- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Expire timed shelves and unconfirmed restored alarms. Called with the current time."""
        out = []
        for alarm in self.alarms.values():
            if alarm.unconfirmed_until is not None and now >= alarm.unconfirmed_until:
                comm = self.alarms.get(f"{alarm.device}/comm")
                if comm is not None and comm.active:  # no samples to judge by: wait for the device
                    alarm.unconfirmed_until = now + alarm.confirm_grace
                    continue
                alarm.unconfirmed_until = None
                if alarm.active:
                    alarm.active, alarm.active_since = False, None
                    alarm.latched = self._latching(alarm) and not alarm.acked
                    alarm.context = {**alarm.context, "reason": "not confirmed after a restart of the agent"}
                    out.append(self.message(alarm, "cleared", now))
            if alarm.shelved and alarm.shelve_until is not None and now >= alarm.shelve_until:
                alarm.shelved, alarm.shelve_until = False, None
                out.append(self.message(alarm, "unshelved", now, user="plantwatch"))
            if alarm.suppressed and alarm.suppress_until is not None and now >= alarm.suppress_until:
                alarm.suppressed, alarm.suppress_until = False, None
                out.append(self.message(alarm, "unsuppressed", now, user="plantwatch", comment="duration elapsed"))
            if alarm.out_of_service and alarm.out_of_service_until is not None and now >= alarm.out_of_service_until:
                alarm.out_of_service, alarm.out_of_service_until = False, None
                out.append(self.message(alarm, "in_service", now, user="plantwatch", comment="duration elapsed"))
        return out

    # --- operator commands ----------------------------------------------------------------------

    def command(self, op: str, alarm_id: str, now: float, user: str = "", comment: str = "",
                duration_s: float | None = None, actor: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """ack, shelve (timed with ``duration_s``, else one-shot), unshelve, suppress and
        out_of_service (each with a reason in ``comment`` and a ``duration_s`` up to its maximum),
        unsuppress, in_service. ``user`` is the authenticated author; ``actor`` adds how it was
        authenticated (``via``) and a name the request only claims (``claimed_user``). Raises
        CommandError when it does not apply."""
        alarm = self.alarms.get(alarm_id)
        try:
            if alarm is None:
                raise CommandError(f"no alarm {alarm_id!r}")
            state = self._apply(alarm, op, now, duration_s, comment)
        except CommandError:
            self.commands_rejected += 1
            raise
        self.commands_applied += 1
        msg = self.message(alarm, state, now, user=user, comment=comment)
        msg["context"].update({k: v for k, v in (actor or {}).items() if v})
        return [msg]

    def _timed(self, op: str, duration_s: float | None, comment: str, longest: float, now: float) -> float:
        """The end of a suppression or out-of-service: both need a reason and a bounded duration."""
        if not comment.strip():
            raise CommandError(f"{op} needs a reason (comment)")
        if duration_s is None or not 0 < duration_s <= longest:
            raise CommandError(f"{op} needs duration_s in (0, {longest:g}], not {duration_s!r}")
        return now + duration_s

    def _apply(self, alarm: Alarm, op: str, now: float, duration_s: float | None, comment: str = "") -> str:
        if op == "ack":
            if alarm.acked and not alarm.active:
                raise CommandError(f"{alarm.id} has cleared (returned to normal) and is already acknowledged: "
                                   "nothing to acknowledge")
            if alarm.acked:
                raise CommandError(f"{alarm.id} is already acknowledged")
            alarm.acked, alarm.latched = True, False
            return "acked"
        if op == "shelve":
            if duration_s is not None and not 0 < duration_s <= self.rules.max_shelve_s:
                raise CommandError(f"duration_s must be in (0, {self.rules.max_shelve_s:g}], not {duration_s!r}")
            if duration_s is None and not alarm.active:
                raise CommandError(f"{alarm.id} is not active: a one-shot shelve needs an active alarm")
            alarm.shelved = True
            alarm.shelve_until = None if duration_s is None else now + duration_s
            return "shelved"
        if op == "unshelve":
            if not alarm.shelved:
                raise CommandError(f"{alarm.id} is not shelved")
            alarm.shelved, alarm.shelve_until = False, None
            return "unshelved"
        if op == "suppress":
            alarm.suppress_until = self._timed(op, duration_s, comment, self.rules.max_suppress_s, now)
            alarm.suppressed = True
            return "suppressed"
        if op == "out_of_service":
            alarm.out_of_service_until = self._timed(op, duration_s, comment, self.rules.max_out_of_service_s, now)
            alarm.out_of_service = True
            return op
        if op == "unsuppress":
            alarm.suppressed, alarm.suppress_until = False, None
            return "unsuppressed"
        if op == "in_service":
            alarm.out_of_service, alarm.out_of_service_until = False, None
            return op
        raise CommandError(f"unknown operation {op!r}")

    # --- health ---------------------------------------------------------------------------------

    def kpis(self, now: float) -> dict[str, Any]:
        """Alarm-system health (EEMUA 191 / ISA-18.2) for the status message and metrics."""
        active = self.active()
        stale = [a.id for a in active if a.active_since is not None and now - a.active_since > self.rules.stale_s]
        recent = sum(1 for t in self.new_alarms if t >= now - self.rules.flood_window_s)
        return {
            "active": len(active),
            "unacked": sum(1 for a in self.alarms.values() if not a.acked),
            "shelved": sum(1 for a in self.alarms.values() if a.shelved),
            "suppressed": sum(1 for a in self.alarms.values() if a.suppressed),
            "out_of_service": sum(1 for a in self.alarms.values() if a.out_of_service),
            "chattering": sorted(a.id for a in self.alarms.values() if a.chattering and a.activations
                                 and a.activations[-1] >= now - self.rules.chatter_window_s),
            "stale": sorted(stale),
            "flood": recent > self.rules.flood_count,
            "floods": self.floods,
            "new_in_window": recent,
            "commands_applied": self.commands_applied,
            "commands_rejected": self.commands_rejected,
        }

    # --- the message ----------------------------------------------------------------------------

    def message(self, alarm: Alarm, state: str, ts: float, user: str = "", comment: str = "") -> dict[str, Any]:
        """The json-profile message (without seq) for ``alarm`` in ``state``."""
        info = self._info(alarm)
        priority, unit, text = self._text(alarm, info)
        if state not in ("active", "cleared"):
            text = f"{text} — {state}" + (f" by {user}" if user else "") + (f": {comment}" if comment else "")
        context = dict(alarm.context)
        preset = PRESETS.get(info.preset) if info is not None else None
        if preset is not None and alarm.kind == "limit":
            for key, value in preset.context(alarm.level, info.gas, info.oel).items():
                context.setdefault(key, value)
        if user:
            context["user"] = user
        if comment:
            context["comment"] = comment
        if alarm.shelved and alarm.shelve_until is not None:
            context["shelved_until"] = rfc3339(alarm.shelve_until)
        if alarm.suppressed and alarm.suppress_until is not None:
            context["suppressed_until"] = rfc3339(alarm.suppress_until)
        if alarm.out_of_service and alarm.out_of_service_until is not None:
            context["out_of_service_until"] = rfc3339(alarm.out_of_service_until)
        return {
            "schema": ALARM_SCHEMA,
            "plant": self.plant,
            "id": alarm.id,
            "tag": alarm.tag,
            "device": alarm.device,
            "kind": alarm.kind,
            "level": alarm.level,
            "priority": priority,
            "state": state,
            "active": alarm.active,
            "acked": alarm.acked,
            "shelved": alarm.shelved,
            "suppressed": alarm.suppressed,
            "out_of_service": alarm.out_of_service,
            "latched": alarm.latched,
            "value": number(alarm.value),
            "limit": number(alarm.limit),
            "unit": unit,
            "ts": rfc3339(ts if state not in ("active", "cleared") else alarm.ts),
            "message": text,
            "context": context,
        }

    def wording(self, alarm: Alarm) -> tuple[int, str, str]:
        """An alarm's priority (1 = highest), unit and words, as its messages carry them."""
        return self._text(alarm, self._info(alarm))

    def _text(self, alarm: Alarm, info: TagInfo | None) -> tuple[int, str, str]:
        """The priority, unit and words of an alarm's message: its family's words when the
        family has its own, else the generic text of a model's, a device's or a tag's alarm."""
        described = self._described(alarm)
        model = alarm.context.get("model")
        if model is not None:
            priority = level_priority(info.priority, alarm.level, alarm.kind) if info else 2
            text = described or f"{model} {alarm.kind} {alarm.level} {'active' if alarm.active else 'cleared'}"
            return priority, "", text
        if info is None:
            if alarm.kind == "comm":
                text = (f"设备 {alarm.device} 通讯中断 communication lost: {alarm.context.get('error', '')}".strip()
                        if alarm.active else f"设备 {alarm.device} 通讯恢复 communication restored")
                return 2, "", text
            return 3, "", alarm.context.get("text") or f"{alarm.device} {alarm.kind} {'active' if alarm.active else 'cleared'}"
        priority = level_priority(info.priority, alarm.level, alarm.kind)
        if described is not None:
            return priority, info.unit, described
        preset = PRESETS.get(info.preset)
        texts = preset.level_text if preset is not None else LEVEL_TEXT
        what = texts.get(alarm.level, f"{alarm.kind} {alarm.level}".strip()) if alarm.kind == "limit" else \
            f"{alarm.kind} {alarm.level}".strip()
        name = info.desc or info.name
        value = "" if number(alarm.value) is None else f" {alarm.value:.6g}{(' ' + info.unit) if info.unit else ''}"
        limit = "" if number(alarm.limit) is None else f", limit {alarm.limit:.6g}"
        text = f"{name} {what}{value}{limit}" if alarm.active else f"{name} {what} cleared{value}"
        return priority, info.unit, text

    def _described(self, alarm: Alarm) -> str | None:
        describe = self.describe.get(alarm.kind)
        return None if describe is None else describe(alarm.level, alarm.active, alarm.value, alarm.limit, alarm.context)
