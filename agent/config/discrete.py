"""The [[tags]] keys of discrete alarms (a bool state that alarms, a command whose feedback
disagrees) and their checks: the tag types they need and the feedback tag they name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.schema import Key, Problems, did_you_mean, non_negative, positive

#: the top-level tag keys of the `discrete` and `mismatch` families
DISCRETE_KEYS = {
    "alarm_on": Key("bool", None, doc='on a `type = "bool"` tag: alarm while the value is true (1) or false (0) '
                                      "(family `discrete`, levels ON / OFF)", shown="unset"),
    "alarm_text": Key("str", "", doc="the words of the alarm state in the message, after `desc`", shown="on / off"),
    "on_delay_s": Key("float", 0.0, check=non_negative,
                      doc="with `alarm_on`: the alarm state must persist this long before the alarm is raised"),
    "off_delay_s": Key("float", 0.0, check=non_negative,
                       doc="with `alarm_on` or `feedback`: the normal state must persist this long before the "
                           "alarm clears"),
    "feedback": Key("str", "", doc='on a bool command tag: the bool tag that reports its state, e.g. '
                                   '`"XV101.ZSO"`; alarm (family `mismatch`) while they disagree for `mismatch_s`'),
    "mismatch_s": Key("float", None, check=positive,
                      doc="> 0, required with `feedback`: how long command and feedback may disagree",
                      shown="unset"),
}


def check_discrete(t: Mapping[str, Any], entry: Any, path: str, p: Problems) -> None:
    """One tag's discrete keys against its type and each other."""
    given = set(entry) if isinstance(entry, dict) else set()
    bool_tag = t["type"] == "bool"
    if t["alarm_on"] is not None and not bool_tag:
        p.add(f"{path}.alarm_on", f'a discrete alarm needs a bool tag (type = "bool"), not type {t["type"]!r}')
    for k in ("alarm_text", "on_delay_s"):
        if k in given and t["alarm_on"] is None:
            p.add(f"{path}.{k}", "only with alarm_on")
    if "off_delay_s" in given and t["alarm_on"] is None and not t["feedback"]:
        p.add(f"{path}.off_delay_s", "only with alarm_on or feedback")
    if t["feedback"]:
        if not bool_tag:
            p.add(f"{path}.feedback", f'a command/feedback alarm needs a bool command tag (type = "bool"), '
                                      f'not type {t["type"]!r}')
        if "mismatch_s" not in given:
            p.add(f"{path}.mismatch_s", "required with feedback (seconds command and feedback may disagree)")
    elif "mismatch_s" in given:
        p.add(f"{path}.mismatch_s", "only with feedback")


def link_feedback(raw: Sequence[Any], tags: Sequence[Any], paths: Sequence[str], p: Problems) -> None:
    """Each command tag's ``mismatch`` parameters, naming its feedback tag by index; a feedback
    that names no tag, a non-bool tag or the tag itself is a problem."""
    by_name = {t.name: t for t in tags}
    for entry, tag, path in zip(raw, tags, paths, strict=True):
        name = entry.get("feedback") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(entry.get("mismatch_s"), (int, float)):
            continue
        fb = by_name.get(name)
        if fb is None:
            p.add(f"{path}.feedback", f"unknown tag {name!r}{did_you_mean(name, by_name)}")
        elif fb is tag:
            p.add(f"{path}.feedback", "names the tag itself")
        elif fb.spec.type != "bool":
            p.add(f"{path}.feedback", f'{name!r} is not a bool tag (type {fb.spec.type!r}); feedback must be '
                                      f'type = "bool"')
        elif tag.spec.type == "bool" and entry["mismatch_s"] > 0:
            off = entry.get("off_delay_s", 0.0)
            off = float(off) if isinstance(off, (int, float)) and not isinstance(off, bool) else 0.0
            mismatch = {"feedback": fb.index, "mismatch_s": float(entry["mismatch_s"]), "off_delay_s": off,
                        "desc": tag.desc}
            # copies: tags with equal settings share one settings object and one families dict
            families = {**tag.families, "mismatch": mismatch}
            object.__setattr__(tag, "settings", dataclasses.replace(tag.settings, families=families))
