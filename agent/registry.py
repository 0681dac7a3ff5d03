"""The point registry (测点基础数据): every point the platform must know before its values mean
anything — its codes, 位号, unit, range, the limits in force and whether it is in service.

Part of the core: built from the config alone. The agent sends it as the ``registry`` message
in the provincial profile; ``plantwatch registry`` prints it for the platform's onboarding.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.provincial import Profile

if TYPE_CHECKING:
    from agent.config.tags import TagConfig

#: the placeholders of ``[provincial] point_code``
CODE_PARTS = ("enterprise", "hazard", "equipment", "indicator", "position", "tag")
#: placeholder -> where a tag gets it (for messages)
PART_KEYS = {"enterprise": "agent.plant", "hazard": "hazard_code", "equipment": "equipment_code",
             "indicator": "indicator_code", "position": "position", "tag": "name"}
#: the limit levels a point is registered with, lowest first
LEVELS = ("LL", "L", "H", "HH")
#: the detector family whose parameters are the limits in force
LIMIT_FAMILY = "limit"


@dataclass(frozen=True)
class Point:
    tag: str
    code: str  # 测点编码
    enterprise: str
    hazard: str
    equipment: str
    indicator: str
    position: str  # 位号
    desc: str
    unit: str
    range: tuple[float, float] | None
    limits: Mapping[str, float | None]  # level (LL, L, H, HH) -> limit in force, None when unset
    in_service: bool


def code_parts(tag: TagConfig, enterprise: str, hazard: str) -> dict[str, str]:
    """What ``[provincial] point_code`` may compose a tag's code from; ``hazard`` is the
    section's default for a tag that names none."""
    return {"enterprise": enterprise, "hazard": tag.hazard_code or hazard, "equipment": tag.equipment_code,
            "indicator": tag.indicator_code, "position": tag.position or tag.name, "tag": tag.name}


def limits_in_force(tag: TagConfig) -> dict[str, float | None]:
    """The tag's LL/L/H/HH as its limit family watches them (a preset's, under the tag's own)."""
    params = tag.families.get(LIMIT_FAMILY, {})
    out: dict[str, float | None] = {}
    for level in LEVELS:
        v = params.get(level.lower())
        out[level] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return out


def computed_desc(tag: TagConfig) -> str:
    """What a computed tag without a ``desc`` is registered as: its expression (it has no
    address a platform could look up)."""
    return f"计算点 computed: {tag.expr}" if tag.expr else ""


def points(tags: Iterable[TagConfig], profile: Profile) -> list[Point]:
    """Every tag as a registered point, in config order."""
    return [
        Point(tag=t.name, code=profile.point(t.name, t.name), enterprise=profile.enterprise_code,
              hazard=t.hazard_code or profile.hazard_code, equipment=t.equipment_code, indicator=t.indicator_code,
              position=t.position or t.name, desc=t.desc or computed_desc(t), unit=t.unit, range=t.range, limits=limits_in_force(t),
              in_service=t.in_service)
        for t in tags
    ]


def columns(profile: Profile) -> list[str]:
    """The field names of a point entry, in order (the province's names)."""
    f = profile.fields
    return [f[k] for k in ("point", "enterprise", "hazard", "equipment", "indicator", "position", "desc", "unit",
                           "range_lo", "range_hi", "limit_ll", "limit_l", "limit_h", "limit_hh", "in_service")]


def entry(profile: Profile, p: Point) -> dict[str, str]:
    """One point in the province's fields; numbers as the tag's values are written."""
    lo, hi = p.range or (None, None)
    values = [p.code, p.enterprise, p.hazard, p.equipment, p.indicator, p.position, p.desc, p.unit,
              profile.value(p.tag, lo), profile.value(p.tag, hi),
              *(profile.value(p.tag, p.limits[level]) for level in LEVELS), "1" if p.in_service else "0"]
    return dict(zip(columns(profile), values, strict=True))


def message(profile: Profile, ts: float, pts: Sequence[Point]) -> dict[str, Any]:
    """The registry (base-data) message: every point, sent at start when it changed."""
    return {**profile.head("registry", ts), profile.fields["datas"]: [entry(profile, p) for p in pts]}


def digest(profile: Profile, doc: Mapping[str, Any]) -> str:
    """What identifies a registry message's content: its fields without the time it was made."""
    content = {k: v for k, v in doc.items() if k != profile.fields["time"]}
    return hashlib.sha256(json.dumps(content, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def to_csv(profile: Profile, pts: Sequence[Point]) -> str:
    """A header row of the province's field names, then one row per point."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(profile), lineterminator="\n")
    writer.writeheader()
    writer.writerows(entry(profile, p) for p in pts)
    return out.getvalue()


def to_json(profile: Profile, pts: Sequence[Point]) -> str:
    """A JSON array of the point entries, as the registry message carries them."""
    return json.dumps([entry(profile, p) for p in pts], ensure_ascii=False, indent=2) + "\n"
