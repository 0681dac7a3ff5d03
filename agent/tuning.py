"""``plantwatch train --detectors``: calibrate every tag's ewma, cusum, robust and flatline from
its normal history (detectors/tune.py) and write the calibration to ``[agent] detectors_file``
under ``data_dir``, where the config loader picks it up at the next start."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

import detectors
from agent.config import Config
from agent.config.tuning import FORMAT
from agent.replay import ReplayError, Table, computed_columns
from detectors.tune import TUNED, calibrate


def tuned_tags(cfg: Config) -> list[str]:
    """The tags that list one of the calibrated detectors."""
    return [t.name for t in cfg.tags if any(d in t.families for d in TUNED)]


def calibrate_config(cfg: Config, ts: np.ndarray, columns: Mapping[str, np.ndarray], progress: Any = None) -> list[str]:
    """Calibrate the tags of ``columns`` that list a calibrated detector; write the file; the lines
    to print (one per tag: the cycle found and each detector's expected alarms per week).
    ``progress(tags_done, tags)`` after each tag when given."""
    target = cfg.agent.target_alarms_per_week
    mid = datetime.fromtimestamp(float(ts[len(ts) // 2]), tz=UTC)
    offset = ZoneInfo(cfg.agent.timezone).utcoffset(mid).total_seconds()
    doc: dict = {"format": FORMAT, "trained": mid.isoformat(), "rows": len(ts),
                 "target_alarms_per_week": target, "tags": {}}
    lines = [f"per-tag detectors, target {target:g} alarm(s) per tag and detector per week:"]
    problems = []
    todo = [t for t in cfg.tags if t.name in columns and any(d in t.families for d in TUNED)]
    for done, tag in enumerate(todo):
        if progress is not None:
            progress(done, len(todo))
        dets = [d for d in TUNED if d in tag.families]
        try:
            params = {d: detectors.load(d).resolve(tag.families[d]) for d in dets}
            got = calibrate(ts, columns[tag.name], dets, params, target, offset)
        except ValueError as exc:
            problems.append(f"{tag.name}: {exc}")
            continue
        cycle = got["cycle"]
        doc["tags"][tag.name] = {"cycle": cycle.to_json() if cycle is not None else None,
                                 "params": got["params"], "expected_per_week": got["expected"]}
        shown = ", ".join(f"{d} {got['expected'][d]:.2f}/week" for d in dets)
        what = (f"{'daily' if cycle.period_s < 100000 else 'weekly'} cycle removed ({100 * cycle.explained:.0f} % "
                "of the variance)") if cycle is not None else "no cycle"
        lines.append(f"  {tag.name}: {what}; expected {shown}")
    if progress is not None:
        progress(len(todo), len(todo))
    if problems:
        raise ValueError("; ".join(problems))
    out = cfg.agent.data_dir / cfg.agent.detectors_file
    _write(out, doc)
    lines.append(f"  written to {out}")
    return lines


def _write(out: Path, doc: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_detectors(cfg: Config, table: Table, progress: Any = None) -> list[str]:
    """``plantwatch train --detectors`` on a table of normal operation (a computed tag from its inputs)."""
    columns = {**table.columns, **computed_columns(cfg, table)}
    if not any(t in columns for t in tuned_tags(cfg)):
        raise ReplayError(f"{table.path}: no column for a tag with ewma, cusum, robust or flatline")
    try:
        return calibrate_config(cfg, table.ts, columns, progress)
    except ValueError as exc:
        raise ReplayError(f"{table.path}: {exc}") from None
