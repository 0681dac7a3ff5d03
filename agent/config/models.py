"""[[models]]: multivariate models over several tags. The generic keys are the agent's; the
options of each kind are declared and checked by the detector family of that kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.schema import Key, Problems, item, nonempty, one_of

MODEL_KEYS = {
    "name": Key("str", required=True, check=nonempty, doc="unique model name (`plantwatch train CONFIG --model NAME`)"),
    "kind": Key("str", shown="the default kind", doc="the multivariate model kind: a detector family that "
                                                 "declares model options (the default: the only kind installed, "
                                                 "else the built-in family that declares itself the default)"),
    "tags": Key("list[str]", required=True, doc="at least two tag names; a tag belongs to at most one model"),
    "file": Key("path", required=True, check=nonempty, doc="model file, relative to `data_dir`"),
}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kind: str
    tags: tuple[str, ...]
    file: Path
    options: Mapping[str, Any] = field(default_factory=dict)  # the kind's model options, defaults filled in

    def params(self, tag: str) -> dict[str, Any]:
        """What the model's family watches one of the model's tags with."""
        return {"model": self.name, "file": str(self.file), "name": tag, **self.options}


def model_kinds(families: Mapping[str, type]) -> dict[str, type]:
    return {name: f for name, f in families.items() if f.model_options}


def read_models(raw: Any, tag_names: Sequence[str], data_dir: Path, kinds: Mapping[str, type],
                p: Problems) -> list[ModelConfig]:
    out: list[ModelConfig] = []
    if not isinstance(raw, list):
        p.add("models", "must be an array of tables ([[models]])")
        return out
    known = set(tag_names)
    seen: set[str] = set()
    in_model: dict[str, str] = {}
    for i, entry in enumerate(raw):
        path = item("models", i, entry)
        table = entry if isinstance(entry, dict) else {}
        options = {k: v for k, v in table.items() if k not in MODEL_KEYS}
        m = p.read({k: v for k, v in table.items() if k in MODEL_KEYS} if isinstance(entry, dict) else entry, path,
                   MODEL_KEYS)
        if m["kind"] is None and isinstance(entry, dict):
            default = [k for k, f in kinds.items() if f.default_model] if len(kinds) > 1 else list(kinds)
            if len(default) == 1:  # the only kind there is, or the default kind, needs no naming
                m["kind"] = default[0]
            else:
                p.add(f"{path}.kind", "is required")
        fam = kinds.get(m["kind"])
        if m["kind"] is not None and fam is None:
            p.add(f"{path}.kind", one_of(*kinds)(m["kind"]) or "")
        # with an unknown kind, which other keys belong is unknown too: they are not judged
        options = _options(fam, options, path, p) if fam is not None else {}
        if m["name"] in seen:
            p.add(f"{path}.name", f"duplicate model name {m['name']!r}")
        seen.add(m["name"])
        for j, tag in enumerate(m["tags"] or []):
            if tag not in known:
                p.add(f"{path}.tags[{j}]", f"unknown tag {tag!r}")
            elif tag in in_model:
                p.add(f"{path}.tags[{j}]", f"tag {tag!r} is already in model {in_model[tag]!r} (a tag belongs to one "
                                           "model)")
            else:
                in_model[tag] = m["name"]
        if m["tags"] is not None and len(m["tags"]) < 2:
            p.add(f"{path}.tags", "a multivariate model needs at least 2 tags")
        out.append(ModelConfig(m["name"] or "", m["kind"] or "", tuple(m["tags"] or ()), data_dir / (m["file"] or ""),
                               options))
    return out


def _options(fam: type, given: Mapping[str, Any], path: str, p: Problems) -> dict[str, Any]:
    """The kind's options, checked by its family, with the declared defaults filled in."""
    p.unknown(given, path, [*MODEL_KEYS, *fam.model_options])
    known = {k: v for k, v in given.items() if k in fam.model_options}
    p.extend_from(path, fam.check_model(known))
    out = {k: o.default for k, o in fam.model_options.items()}
    for k, v in known.items():
        number = isinstance(v, int) and not isinstance(v, bool)
        out[k] = float(v) if number and isinstance(out[k], float) else v
    return out
