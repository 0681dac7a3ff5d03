"""Computed tags in the config: a [[tags]] entry with ``expr`` instead of ``device`` and
``address``. Each entry's keys are checked as it is read (``check_entry``); once every tag is
known, the expressions are compiled together (``read_computed``): unknown names, self
references and cycles are problems at the tag's ``expr``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.schema import Problems
from agent.expressions import ExprError, Plan, parse, plan
from drivers.base import DeviceSpec

#: the keys that say where and how a driver reads a tag: not for a computed tag
READ_KEYS = ("device", "address", "order", "scale", "offset")
#: the value types a computed tag may declare
COMPUTED_TYPES = ("float64", "bool")

EXPR_DOC = ("makes the tag a computed tag: an expression over other tags, e.g. `\"CW.FI01 - CW.FI02\"` "
            "(grammar under “Computed tags” below); without `device` and `address`")


def check_entry(t: dict[str, Any], entry: Any, path: str, p: Problems) -> None:
    """One entry's read keys against its ``expr``: required without it, refused with it. A
    computed tag's type is "float64" unless it says "bool" or its expression is a comparison or
    and/or/not, which makes it a bool tag (for discrete alarms)."""
    given = set(entry) if isinstance(entry, dict) else set()
    if not t["expr"]:
        for k in ("device", "address"):
            if k not in given:
                p.add(f"{path}.{k}", "is required (or `expr` for a computed tag)")
        return
    for k in READ_KEYS:
        if k in given:
            p.add(f"{path}.{k}", "not with expr: a computed tag is read from no device")
    try:
        boolean = parse(t["expr"]).boolean
    except ExprError as exc:
        p.add(f"{path}.expr", str(exc))
        # the type it was meant to have: no second problem at alarm_on or feedback
        boolean = entry.get("alarm_on") is not None or "feedback" in entry
    if "type" not in given:
        t["type"] = "bool" if boolean else "float64"
    elif t["type"] not in COMPUTED_TYPES:
        p.add(f"{path}.type", f'a computed tag is "float64" or "bool", not {t["type"]!r}')


def read_computed(raw: Sequence[Any], tags: Sequence[Any], paths: Sequence[str], devices: Sequence[DeviceSpec],
                  p: Problems) -> Plan:
    """Compile every computed tag (those with ``expr``) together; problems at each tag's expr."""
    exprs, path_of = {}, {}
    for tag, path in zip(tags, paths, strict=True):
        if tag.expr:
            try:
                exprs[tag.name] = parse(tag.expr)
            except ExprError:
                continue  # reported by check_entry
            path_of[tag.name] = path
    if not exprs:
        return Plan()
    interval: Mapping[str, float] = {d.name: d.interval_s for d in devices}
    interval_of = {t.name: interval.get(t.device, 1.0) for t in tags if not t.expr}
    index = {t.name: t.index for t in tags}
    compiled, problems = plan(exprs, index, interval_of)
    for name, message in problems.items():
        p.add(f"{path_of[name]}.expr", message)
    return compiled
