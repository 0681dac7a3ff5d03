"""The alarm manager: condition changes in, alarm messages out, with ISA-18.2 style state.

A pure state machine driven by (changes, time): no clock, no I/O. Each alarm is one
(tag or device, kind) pair with separate flags (active, acked, shelved, suppressed,
out_of_service, latched) as OPC UA Part 9 models them. H -> HH escalation is the same alarm
changing level. Messages carry no ``seq``: the outbox assigns it in the commit that makes the
message durable, so a seq exists only for a message that will reach the platform.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.payloads import ALARM_SCHEMA, number, rfc3339
from detectors.base import ConditionChange

LEVEL_TEXT = {
    "HH": "高高报警 high-high",
    "H": "高报警 high",
    "L": "低报警 low",
    "LL": "低低报警 low-low",
}


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
    suppressed: bool = False
    out_of_service: bool = False
    latched: bool = False
    value: float = float("nan")
    limit: float = float("nan")
    ts: float = 0.0
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TagInfo:
    """What the manager needs to know about a tag to write an alarm message."""

    name: str
    device: str
    unit: str = ""
    desc: str = ""
    priority: int = 2


def level_priority(base: int, level: str) -> int:
    """HH and LL are one step more urgent than the tag's priority (1 is the highest)."""
    return max(1, base - 1) if level in ("HH", "LL") else base


class AlarmManager:
    def __init__(self, plant: str, tags: Iterable[TagInfo]):
        self.plant = plant
        self.tags = list(tags)
        self.alarms: dict[str, Alarm] = {}

    def _alarm(self, kind: str, tag: str | None, device: str) -> Alarm:
        key = f"{tag if tag is not None else device}/{kind}"
        alarm = self.alarms.get(key)
        if alarm is None:
            alarm = self.alarms[key] = Alarm(id=key, kind=kind, tag=tag, device=device)
        return alarm

    def active(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if a.active]

    def on_changes(self, changes: Iterable[ConditionChange]) -> list[dict[str, Any]]:
        """Apply detector condition changes; return the alarm messages to commit, in order."""
        out = []
        for c in changes:
            info = self.tags[c.tag]
            alarm = self._alarm(c.kind, info.name, info.device)
            if c.active:
                if alarm.active and alarm.level == c.level:
                    continue
                alarm.active, alarm.acked = True, False
            else:
                if not alarm.active:
                    continue
                alarm.active = False
            alarm.level = c.level
            alarm.value, alarm.limit, alarm.ts, alarm.context = c.value, c.limit, c.ts, dict(c.context)
            out.append(self._message(alarm, info))
        return out

    def on_device(self, device: str, error: str | None, ts: float) -> list[dict[str, Any]]:
        """A device stopped answering (error text) or answers again (None): the comm alarm."""
        key = f"{device}/comm"
        alarm = self.alarms.get(key)
        if error is None and (alarm is None or not alarm.active):
            return []
        alarm = self._alarm("comm", None, device)
        if error is not None:
            if alarm.active:
                return []
            alarm.active, alarm.acked = True, False
        else:
            alarm.active = False
        alarm.level = "COMM"
        alarm.value, alarm.limit, alarm.ts = float("nan"), float("nan"), ts
        alarm.context = {"error": error} if error else {}
        return [self._message(alarm, None)]

    def _message(self, alarm: Alarm, info: TagInfo | None) -> dict[str, Any]:
        state = "active" if alarm.active else "cleared"
        if info is None:
            priority = 2
            text = f"设备 {alarm.device} 通讯中断 communication lost: {alarm.context.get('error', '')}".strip()
            if not alarm.active:
                text = f"设备 {alarm.device} 通讯恢复 communication restored"
            unit = ""
        else:
            priority = level_priority(info.priority, alarm.level)
            what = LEVEL_TEXT.get(alarm.level, f"{alarm.kind} {alarm.level}".strip())
            name = info.desc or info.name
            value = "" if number(alarm.value) is None else f" {alarm.value:.6g}{(' ' + info.unit) if info.unit else ''}"
            limit = "" if number(alarm.limit) is None else f", limit {alarm.limit:.6g}"
            text = f"{name} {what}{value}{limit}" if alarm.active else f"{name} {what} cleared{value}"
            unit = info.unit
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
            "value": number(alarm.value),
            "limit": number(alarm.limit),
            "unit": unit,
            "ts": rfc3339(alarm.ts),
            "message": text,
            "context": dict(alarm.context),
        }
