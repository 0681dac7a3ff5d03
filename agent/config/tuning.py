"""The per-tag detector calibration ``plantwatch train --detectors`` writes (``[agent] detectors_file``,
JSON under ``data_dir``), read with the config: each tag's calibrated ewma/cusum/robust/flatline
parameters, under the tag's own keys and over ``[detectors.NAME]``, and its daily or weekly cycle
for the engine. A missing file is no calibration; a broken one is a config problem naming it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.schema import Problems
from detectors.tune import BIN_S, DAY, WEEK, Cycle

FORMAT = "plantwatch.detectors/1"


@dataclass(frozen=True)
class Tuning:
    path: Path
    params: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # tag -> detector -> params
    cycles: Mapping[str, Cycle] = field(default_factory=dict)  # tag -> its cycle
    expected: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # tag -> detector -> per week


def read(path: Path, tag_names: set[str], p: Problems) -> Tuning | None:
    """The file's calibration, or None when there is no file (problems added under its path)."""
    if not path.is_file():
        return None
    where = str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        p.add(where, f"cannot read the detector calibration: {exc}")
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("tags"), dict):
        p.add(where, f"not a detector calibration of format {FORMAT!r} (run plantwatch train --detectors again)")
        return None
    params, cycles, expected = {}, {}, {}
    for name, entry in doc["tags"].items():
        at = f"{where}: tags.{name}"
        if name not in tag_names:
            p.add(at, "no such tag in the config (run plantwatch train --detectors again)")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("params", {}), dict):
            p.add(at, "must be an object with params")
            continue
        params[name] = entry.get("params", {})
        expected[name] = entry.get("expected_per_week", {})
        if entry.get("cycle") is not None:
            c = _cycle(entry["cycle"], f"{at}.cycle", p)
            if c is not None:
                cycles[name] = c
    return Tuning(path, params, cycles, expected)


def _cycle(raw: Any, at: str, p: Problems) -> Cycle | None:
    if not isinstance(raw, dict) or raw.get("period_s") not in (DAY, WEEK):
        p.add(at, f"period_s must be {DAY:.0f} or {WEEK:.0f}")
        return None
    prof, offset = raw.get("profile"), raw.get("offset_s", 0.0)
    n = int(raw["period_s"] / BIN_S)
    if not isinstance(prof, list) or len(prof) != n or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in prof):
        p.add(f"{at}.profile", f"must be {n} finite numbers")
        return None
    if not isinstance(offset, int | float) or isinstance(offset, bool) or not math.isfinite(offset):
        p.add(f"{at}.offset_s", "must be a number")
        return None
    return Cycle(float(raw["period_s"]), float(offset), np.asarray(prof, dtype=np.float64),
                 float(raw.get("explained", math.nan)))
