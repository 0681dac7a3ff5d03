"""[[models]]: multivariate models over several tags. The generic keys are the agent's; the
options of each kind are declared and checked by the detector family of that kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.schema import Key, Problems, item, nonempty, one_of
from detectors.inputs import InputSpec

MODEL_KEYS = {
    "name": Key("str", required=True, check=nonempty, doc="unique model name (`plantwatch train CONFIG --model NAME`)"),
    "kind": Key("str", shown="the default kind", doc="the multivariate model kind: a detector family that "
                                                 "declares model options (the default: the only kind installed, "
                                                 "else the built-in family that declares itself the default)"),
    "tags": Key("list[str]", required=True, doc="at least two tag names; a tag belongs to at most one model"),
    "file": Key("path", required=True, check=nonempty, doc="model file, relative to `data_dir`"),
    # the model's inputs (any kind; detectors.inputs): computed per tick, identical in train, replay and live
    "lags": Key("int", 0, doc="dynamic inputs: each input also at the ticks t-1 … t-lags (0 = none); "
                              "given: fixed, else `plantwatch train` may choose 0 or 1. The same key is a `cva` "
                              "model's past window (see its own `lags`)"),
    "rates": Key("list[float]", [], doc="windows (s): `rate(T, W)` of each tag of `rate_tags` as an input; "
                                        "given: fixed, else chosen by train"),
    "rolling_means": Key("list[float]", [], doc="windows (s): `rolling_mean(T, W)` of each tag of `mean_tags` "
                                                "as an input; given: fixed, else chosen by train"),
    "rate_tags": Key("list[str]", None, shown="all the model's tags", doc="the tags that get the `rates`"),
    "mean_tags": Key("list[str]", None, shown="all the model's tags", doc="the tags that get the `rolling_means`"),
    "level_tags": Key("list[str]", None, shown="all the model's tags",
                      doc="the tags that enter with their level (`[]`: none, e.g. rolling means only)"),
    # calibration by `plantwatch train` (detectors.calibrate)
    "target_far": Key("float", 0.01, doc="in [0, 0.5): train sets the T²/SPE limits empirically so that this "
                                          "share of normal rows alarms after the delays; 0 = limits from the "
                                          "F / Jackson–Mudholkar distributions at `confidence`"),
    "auto": Key("bool", True, doc="train chooses the inputs, components and on/off delays that the config "
                                   "does not give, on a hold-out with synthetic faults"),
    "holdout": Key("float", 0.5, doc="in [0.1, 0.9]: the later share of the training rows held out for "
                                      "the calibration"),
}
#: the keys that fix the model's inputs: any of them given, train does not search inputs
INPUT_KEYS = ("lags", "rates", "rolling_means", "rate_tags", "mean_tags", "level_tags")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kind: str
    tags: tuple[str, ...]
    file: Path
    options: Mapping[str, Any] = field(default_factory=dict)  # the kind's model options, defaults filled in
    inputs: InputSpec | None = None  # None: chosen by train (no input key given)
    target_far: float = 0.01
    auto: bool = True
    holdout: float = 0.5

    def params(self, tag: str) -> dict[str, Any]:
        """What the model's family watches one of the model's tags with; with the inputs the
        config fixes (``inputs``, as JSON), which the family holds the model file to."""
        fixed = {"inputs": self.inputs.to_json()} if self.inputs is not None else {}
        return {"model": self.name, "file": str(self.file), "name": tag, **self.options, **fixed}


def model_kinds(families: Mapping[str, type]) -> dict[str, type]:
    return {name: families[name] for name in sorted(families) if families[name].model_options}


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
        if fam is not None:  # a generic key the kind declares too (target_far, lags) it checks and uses as well
            options = {k: v for k, v in table.items() if k not in MODEL_KEYS or k in fam.model_options}
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
        inputs = None
        if fam is not None and not fam.derived_inputs:
            for k in (k for k in INPUT_KEYS if k in table and k not in fam.model_options):
                p.add(f"{path}.{k}", f"not for kind {m['kind']!r}: it takes no derived inputs (see its own keys)")
        else:
            inputs = _inputs(m, table, path, p)
        if (fam is None or "target_far" not in fam.model_options) and not 0 <= m["target_far"] < 0.5:
            p.add(f"{path}.target_far", f"must be in [0, 0.5), not {m['target_far']!r}")
        if not 0.1 <= m["holdout"] <= 0.9:
            p.add(f"{path}.holdout", f"must be in [0.1, 0.9], not {m['holdout']!r}")
        out.append(ModelConfig(m["name"] or "", m["kind"] or "", tuple(m["tags"] or ()), data_dir / (m["file"] or ""),
                               options, inputs, float(m["target_far"]), bool(m["auto"]), float(m["holdout"])))
    return out


def _inputs(m: Mapping[str, Any], table: Mapping[str, Any], path: str, p: Problems) -> InputSpec | None:
    """The inputs the config fixes (any INPUT_KEYS given), or None: train chooses."""
    if not any(k in table for k in INPUT_KEYS) or not m["tags"]:
        return None
    if m["lags"] is not None and m["lags"] < 0:
        p.add(f"{path}.lags", f"must be >= 0, not {m['lags']}")
        return None
    for k in ("rate_tags", "mean_tags", "level_tags"):
        for j, t in enumerate(m[k] or ()):
            if t not in m["tags"]:
                p.add(f"{path}.{k}[{j}]", f"{t!r} is not one of the model's tags")
                return None
    for k in ("rates", "rolling_means"):
        if any(not w > 0 for w in m[k] or ()):
            p.add(f"{path}.{k}", f"windows must be > 0 s, not {m[k]}")
            return None

    def tup(v):
        return None if v is None else tuple(v)

    try:
        return InputSpec(tuple(m["tags"]), tup(m["level_tags"]), tuple(float(w) for w in m["rates"] or ()),
                         tuple(float(w) for w in m["rolling_means"] or ()), tup(m["rate_tags"]), int(m["lags"] or 0),
                         tup(m["mean_tags"]))
    except ValueError as exc:
        p.add(path, str(exc))
        return None


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
