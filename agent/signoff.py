"""The per-tag sign-off table of ``plantwatch check --points``: for every point, where it is
read, how it is decoded, and the alarm settings actually in force — a preset's limits and
priorities filled in, the point code the platform will see — so that the engineer and the
plant can sign it off line by line before the gateway goes live.

Part of the core: built from the config alone. The point codes come from the point registry
(agent/registry.py), the priorities from the alarm manager's rule (agent/alarms.py).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

from agent import registry
from agent.alarms import level_priority
from agent.provincial import Profile

if TYPE_CHECKING:
    from agent.config import Config, TagConfig
    from drivers.base import TagSpec

#: the columns, in order; csv uses these names as its header
COLUMNS = ("tag", "device", "address", "type", "scale", "unit", "range", "LL", "L", "H", "HH", "preset",
           "priority", "discrete", "detectors", "point", "position", "desc")
#: the types whose byte order matters (more than one register or word)
_MULTI_WORD = ("int32", "uint32", "float32", "int64", "uint64", "float64")


def number(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def profile_for(cfg: Config) -> Profile:
    """The profile point codes are composed by: the config's [provincial], else the default
    field names with the tags' own codes (what ``plantwatch registry`` registers)."""
    return cfg.provincial or Profile(
        enterprise_code=cfg.agent.plant, gateway_code="", points={t.name: t.point for t in cfg.tags if t.point},
        decimals_of={t.name: t.decimals for t in cfg.tags if t.decimals is not None},
        switches=frozenset(t.name for t in cfg.tags if t.spec.type == "bool"))


def decoding(spec: TagSpec, typed: bool = True) -> tuple[str, str]:
    """The type (with its byte order where it matters; ``(server)`` when the protocol carries
    typed values, ``typed`` False) and the scale/offset in words."""
    kind = "(server)" if not typed else f"{spec.type} {spec.order}" if spec.type in _MULTI_WORD else spec.type
    scale = []
    if spec.scale != 1.0:
        scale.append(f"×{spec.scale:g}")
    if spec.offset != 0.0:
        scale.append(f"{spec.offset:+g}")
    return kind, " ".join(scale)


@cache
def _own_columns() -> frozenset[str]:
    """The families shown in columns of their own rather than under ``detectors``: the limits,
    and the families a core tag key configures (the range's plausibility check, discrete and
    command/feedback alarms)."""
    from agent.config.loader import registered_families
    from agent.config.tags import TAG_KEYS

    return frozenset({registry.LIMIT_FAMILY} | {f.name for f in registered_families().values()
                                                if getattr(f, "tag_key", None) in TAG_KEYS})


def detectors(tag: TagConfig) -> list[str]:
    """The detector families watching the tag beyond its limits and discrete alarms."""
    own = _own_columns()
    return [f for f in tag.families if f not in own]


def priorities(tag: TagConfig, limits: Mapping[str, float | None]) -> str:
    """The priority of every alarm the tag can raise, as the alarm manager sets it: each limit
    level (``HH 1, H 2``), the discrete level, and each other family by name, per level where
    its levels differ (``roc 2``, ``ewma H 1, ewma L 2``)."""
    from agent.config.loader import registered_families

    out = [f"{lv} {level_priority(tag.priority, lv)}" for lv in ("HH", "H", "L", "LL") if limits.get(lv) is not None]
    d = tag.families.get("discrete")
    if d is not None:
        lv = "ON" if d.get("alarm_on", True) else "OFF"
        out.append(f"{lv} {level_priority(tag.priority, lv, 'discrete')}")
    families = registered_families()
    for fam in tag.families:
        if fam in (registry.LIMIT_FAMILY, "discrete") or fam not in families:
            continue
        levels = families[fam].levels or (fam,)
        each = {lv: level_priority(tag.priority, lv, fam) for lv in levels}
        if len(set(each.values())) == 1:
            out.append(f"{fam} {next(iter(each.values()))}")
        else:
            out += [f"{fam} {lv} {prio}" for lv, prio in each.items()]
    return ", ".join(out)


def discrete(tag: TagConfig, names: Mapping[int, str]) -> str:
    """A discrete or command/feedback alarm's settings in words."""
    parts = []
    d = tag.families.get("discrete")
    if d is not None:
        delays = [f"{k.split('_')[0]} delay {d[k]:g} s" for k in ("on_delay_s", "off_delay_s") if d.get(k)]
        parts.append(f"alarm on {'true' if d['alarm_on'] else 'false'}" + "".join(f", {x}" for x in delays))
    m = tag.families.get("mismatch")
    if m is not None:
        parts.append(f"feedback {names.get(m['feedback'], m['feedback'])} within {m['mismatch_s']:g} s")
    return "; ".join(parts)


def rows(cfg: Config, address_of: Callable[[TagSpec], str] | None = None,
         typed: Callable[[TagSpec], bool] | None = None) -> list[dict[str, str]]:
    """One row per tag, every column of COLUMNS as text (empty when not set). ``address_of``
    shows an address in its driver's words (e.g. both notations of a register); ``typed`` says whether
    the tag's driver decodes by the configured type (see ``Driver.typed_by_config``)."""
    profile = profile_for(cfg)
    points = {p.tag: p for p in registry.points(cfg.tags, profile)}
    names = {t.index: t.name for t in cfg.tags}
    out = []
    for t in cfg.tags:
        p = points[t.name]
        kind, scale = (t.spec.type, "") if t.expr else decoding(t.spec, typed(t.spec) if typed else True)
        preset = t.preset + (f" {t.gas}" if t.gas else f" oel {t.oel:g}" if t.oel else "") if t.preset else ""
        out.append({
            "tag": t.name, "device": t.device,
            "address": f"= {t.expr}" if t.expr else address_of(t.spec) if address_of else t.spec.address,
            "type": kind, "scale": scale, "unit": t.unit,
            "range": f"{t.range[0]:g}..{t.range[1]:g}" if t.range else "",
            **{lv: number(p.limits[lv]) for lv in ("LL", "L", "H", "HH")},
            "preset": preset, "priority": priorities(t, p.limits), "discrete": discrete(t, names),
            "detectors": " ".join(detectors(t)),
            "point": p.code, "position": p.position, "desc": t.desc,
        })
    return out


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def aligned(cells: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as aligned text lines (two spaces between columns)."""
    if not cells:
        return []
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def table(lines: Sequence[Mapping[str, str]], columns: Sequence[str] = COLUMNS) -> list[str]:
    """Aligned text: a header, then one line per row; empty cells show as ``-``. Columns empty
    in every row are left out."""
    used = [c for c in columns if any(r.get(c) for r in lines)]
    return aligned([used, *([r.get(c) or "-" for c in used] for r in lines)])


def to_csv(lines: Sequence[Mapping[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return out.getvalue()
