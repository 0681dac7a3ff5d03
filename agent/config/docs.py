"""The key tables of docs/CONFIG.md, rendered from the declarations the reader uses, so the docs
cannot drift from the loader. ``python -m agent.config.docs --write`` regenerates them between
their ``<!-- keys:NAME -->`` and ``<!-- /keys:NAME -->`` markers; the prose around stays."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import detectors
import drivers
from agent.config.devices import DEVICE_KEYS
from agent.config.models import MODEL_KEYS, model_kinds
from agent.config.provincial import PROVINCIAL_KEYS
from agent.config.schema import Key, keys_of
from agent.config.sections import (
    AgentSection,
    AlarmSystemSection,
    HistorySection,
    TrendSection,
    UplinkSection,
)
from agent.config.tags import TAG_KEYS, FamilyRoles

CONFIG_MD = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"

TYPE_TEXT = {
    "str": "string", "path": "path", "int": "int", "float": "number", "bool": "bool", "table": "table",
    "list[str]": "list of strings", "list[float]": "list of numbers", "int|table": "int or table",
}
MARKER = re.compile(r"(<!-- keys:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /keys:(?P=name) -->)", re.S)


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value is None:
        return "—"
    if isinstance(value, str) and not value:
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def key_table(keys: Mapping[str, Key]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, k in keys.items():
        default = "required" if k.required else k.shown if k.shown is not None else shown(k.default)
        choices = [f"`{c}`" for c in k.choices if c != ""]
        doc = k.doc if all(c in k.doc for c in choices) else f"{k.doc}: {' '.join(choices)}"
        rows.append(f"| `{name}` | {TYPE_TEXT[k.kind]} | {_cell(default)} | {_cell(doc)} |")
    return "\n".join(rows) + "\n"


def option_table(options: Mapping[str, Any]) -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, o in options.items():
        default = "required" if o.required else "unset" if o.default is None else shown(o.default)
        rows.append(f"| `{name}` | {default} | {_cell(o.doc)} |")
    return "\n".join(rows) + "\n"


def builtin_families() -> dict[str, type]:
    """The families this package ships (plugins document themselves)."""
    return {name: detectors.load(name) for name, target in sorted(detectors.available().items())
            if target.startswith("detectors.")}


def tables() -> dict[str, str]:
    """Marker name -> the markdown table it holds."""
    families = builtin_families()
    roles = FamilyRoles.of(families)
    tag_rows = dict(TAG_KEYS)
    for tag_key, fam in roles.keyed.items():
        tag_rows[tag_key] = Key("table", doc=f"family `{fam.name}`: {_first_line(fam)}, see below")
    out = {
        "agent": key_table(keys_of(AgentSection)),
        "uplink": key_table(keys_of(UplinkSection)),
        "devices": key_table(_with_drivers(DEVICE_KEYS)),
        "tags": key_table(tag_rows),
        "models": key_table(MODEL_KEYS),
        "alarm_system": key_table(keys_of(AlarmSystemSection)),
        "provincial": key_table(PROVINCIAL_KEYS),
        "history": key_table(keys_of(HistorySection)),
        "trend": key_table(keys_of(TrendSection)),
    }
    for fam in families.values():
        if not fam.model_options:
            out[f"family.{fam.name}"] = option_table(fam.options)
    for name, fam in model_kinds(families).items():
        out[f"model.{name}"] = option_table(fam.model_options)
    return out


def _with_drivers(keys: Mapping[str, Key]) -> dict[str, Key]:
    """The device keys with the built-in drivers and the URL schemes each accepts."""
    builtin = {name: drivers.load(name) for name, target in sorted(drivers.available().items())
               if target.startswith("drivers.")}
    names = ", ".join(f"`{n}`" for n in builtin)
    schemes = "; ".join(f"{n}: " + " ".join(f"`{s}://`" for s in cls.schemes) for n, cls in builtin.items())
    return {**keys, "driver": replace(keys["driver"], doc=f"{names} or a plugin's name; {keys['driver'].doc}"),
            "url": replace(keys["url"], doc=f"{keys['url'].doc}: {schemes}")}


def _first_line(fam: type) -> str:
    line = (fam.__doc__ or fam.name).strip().splitlines()[0].rstrip(".:,").replace("``", "`")
    return line[:1].lower() + line[1:]


def render(text: str) -> str:
    """``text`` with every marked table replaced by its rendering from the declarations."""
    generated = tables()

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in generated:
            raise KeyError(f"docs marker keys:{name} names no declared table")
        return m.group(1) + generated[name] + m.group(4)

    return MARKER.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.config.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/CONFIG.md in place")
    args = parser.parse_args(argv)
    text = CONFIG_MD.read_text(encoding="utf-8")
    new = render(text)
    if args.write:
        CONFIG_MD.write_text(new, encoding="utf-8")
    elif new != text:
        print(f"{CONFIG_MD} differs from the declarations; run python -m agent.config.docs --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
