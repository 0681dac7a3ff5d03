"""``plantwatch replay`` and ``plantwatch train``: historian exports through the live code.

Replay feeds a CSV through the very Pipeline the agent runs (engine, alarm manager, the same
commit step), with time taken from the file instead of the clock, and writes the json-profile
alarm messages one per line. Train fits a multivariate model from normal-operation rows into
the file the config names.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import detectors
from agent.config import Config

# the reader lives in agent.csvtable; replay's callers take it from here
from agent.csvtable import TIME_COLUMNS, NoTimeColumn, ReplayError, Table, read_table  # noqa: F401
from agent.payloads import dumps
from agent.pipeline import Pipeline
from detectors.calibrate import Training
from detectors.expr import Evaluator
from drivers.base import frozen_tags

CHUNK_ROWS = 2048


#: the epoch of replayed messages: they are numbered from 1 by the replay, not by an outbox
REPLAY_EPOCH = "replay"


class _Recorder:
    """Takes the place of the outbox: numbers the messages like the outbox would."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def append_alarms(self, topic: str, docs: list[dict[str, Any]], now: float | None = None,
                      encode: Any = None, states: Any = ()) -> list[int]:
        """Replay always writes the json profile, whatever the uplink's profile is."""
        seqs = []
        for doc in docs:
            doc["epoch"], doc["seq"] = REPLAY_EPOCH, len(self.messages) + 1
            self.messages.append(doc)
            seqs.append(doc["seq"])
        return seqs


@dataclass
class ReplayResult:
    messages: list[dict[str, Any]]
    rows: int
    tags: list[str]
    alarm_rows: np.ndarray  # per row: any tag alarm active after that row
    ts: np.ndarray


def replay(cfg: Config, table: Table, progress: Any = None) -> ReplayResult:
    """Feed the table through the live Pipeline; one batch per chunk of rows, time-major.
    ``progress(rows_done, rows)`` is called after every chunk when given."""
    recorder = _Recorder()
    pipeline = Pipeline(cfg, recorder)
    index = cfg.tag_index()
    # a computed tag is computed from its inputs' columns, as live; a column of its name is ignored
    names = [n for n in table.columns if n not in computed_names(cfg)]
    tag_ids = np.array([index[n] for n in names], dtype=np.int32)
    values = table.matrix(names)  # rows x tags
    n_rows = len(table.ts)
    active: set[str] = set()
    alarm_rows = np.zeros(n_rows, dtype=bool)
    whole: dict[int, np.ndarray] = {}  # rows -> the tags of that many full rows, frozen
    for start in range(0, n_rows, CHUNK_ROWS):
        stop = min(n_rows, start + CHUNK_ROWS)
        block = values[start:stop]
        ok = ~np.isnan(block)  # an empty cell is no sample, not a BAD one
        rows_idx = np.repeat(np.arange(start, stop), len(names)).reshape(block.shape)
        if ok.all():  # one array for every full chunk: the kernels check its ticks once
            if len(block) not in whole:
                whole[len(block)] = frozen_tags(np.tile(tag_ids, len(block)))
            tag = whole[len(block)]
        else:
            tag = np.broadcast_to(tag_ids, block.shape)[ok]
        ts = table.ts[rows_idx[ok]]
        changes = pipeline.judge(
            np.ascontiguousarray(tag), np.ascontiguousarray(block[ok]), np.ascontiguousarray(ts),
            np.zeros(tag.shape[0], dtype=np.uint8),
        )
        changes.sort(key=lambda c: c.ts)  # families report in their own order; the stream is in time
        first = len(recorder.messages)
        # the same commit step as live: the manager turns changes into messages in order
        pipeline.commit(pipeline.manager.on_changes(changes))
        cursor = start
        for m in recorder.messages[first:]:
            row = int(np.searchsorted(table.ts, _ts(m), side="left"))
            alarm_rows[cursor:row] = bool(active)
            cursor = max(cursor, row)
            (active.add if m["active"] else active.discard)(m["id"])
        alarm_rows[cursor:stop] = bool(active)
        if progress is not None:
            progress(stop, n_rows)
    return ReplayResult(recorder.messages, n_rows, names, alarm_rows, table.ts)


def computed_names(cfg: Config) -> list[str]:
    """The computed tags of the config, whose CSV columns replay ignores."""
    return [t.name for t in cfg.tags if t.expr]


def columns_needed(cfg: Config, names: Sequence[str]) -> list[str]:
    """The CSV columns that give these tags: a read tag's own, a computed tag's inputs'."""
    index, out = cfg.tag_index(), []
    for name in names:
        sources = cfg.computed.source_tags(index[name]) if cfg.tags[index[name]].expr else (index[name],)
        out += [cfg.tags[s].name for s in sources if cfg.tags[s].name not in out]
    return out


def computed_columns(cfg: Config, table: Table) -> dict[str, np.ndarray]:
    """Each computed tag's value per row, computed from the table's columns with the live
    evaluator (NaN where it has none: an input not yet seen, a window without enough samples)."""
    if not cfg.computed:
        return {}
    ev = Evaluator(len(cfg.tags), cfg.computed.programs, cfg.computed.intervals)
    index = cfg.tag_index()
    names = [n for n in table.columns if n not in computed_names(cfg)]
    block = table.matrix(names)
    ok = ~np.isnan(block)
    tag = np.broadcast_to(np.array([index[n] for n in names], dtype=np.int32), block.shape)[ok]
    rows = np.broadcast_to(np.arange(len(table.ts))[:, None], block.shape)[ok]
    out = ev.evaluate(tag, block[ok], table.ts[rows], np.zeros(tag.shape[0], dtype=np.uint8))
    columns = {n: np.full(len(table.ts), np.nan) for n in computed_names(cfg)}
    if out is not None:
        row = np.searchsorted(table.ts, out[2], side="right") - 1
        for i, n in enumerate(t.name for t in cfg.tags):
            if n in columns:
                mine = out[0] == i
                columns[n][row[mine]] = out[1][mine]
    return columns


def _ts(message: dict[str, Any]) -> float:
    from agent.payloads import parse_rfc3339

    return parse_rfc3339(message["ts"])


def write_jsonl(messages: list[dict[str, Any]], out: str | Path) -> None:
    """All or nothing: written to a temporary file, then renamed over ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            for m in messages:
                f.write(dumps(m) + b"\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def labels_of(table: Table, column: str) -> np.ndarray:
    out = np.zeros(len(table.ts), dtype=bool)
    for i, cell in enumerate(table.extra[column]):
        try:
            out[i] = float(cell or 0) != 0
        except ValueError:
            raise ReplayError(f"{table.path}: data row {i + 1}: column {column!r}: {cell!r} is not a 0/1 label") from None
    return out


def format_scores(scores: dict[str, float]) -> list[str]:
    def f(x: float, digits: int = 4) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    return [
        f"precision {f(scores['precision'])}",
        f"recall    {f(scores['recall'])}",
        f"F1        {f(scores['f1'])}",
        f"FAR       {f(scores['far_pct'], 2)} %",
        f"MAR       {f(scores['mar_pct'], 2)} %",
        f"mean detection delay {f(scores['mean_detection_delay_s'], 1)} s",
        f"false alarms per day {f(scores['false_alarms_per_day'], 2)}",
    ]


def score_lines(labels: np.ndarray, alarm_rows: np.ndarray, ts: np.ndarray) -> list[str]:
    """What ``replay --labels`` prints: the point-wise and event figures, then NAB with a 60 s
    window after each labelled onset (the SKAB protocol)."""
    from detectors.scoring import NabCounts, summary

    onsets = ts[np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8)]) == 1)]
    nab = NabCounts.of(onsets, alarm_rows, ts).nab()
    return [*format_scores(summary(labels, alarm_rows, ts)),
            *(f"NAB {k:<8} {'n/a' if math.isnan(v) else f'{v:.2f}'}" for k, v in nab.items())]


def report_html(cfg: Config, table: Table, result: ReplayResult, labels: np.ndarray | None,
                scores: list[str], summary: list[str]) -> str:
    """The replay's HTML report (agent/report.py) with each model's statistics over the rows."""
    from agent.report import Statistic, render

    columns = {**table.columns, **computed_columns(cfg, table)}
    stats = []
    for m in cfg.models:
        if all(t in columns for t in m.tags):
            X = np.column_stack([columns[t] for t in m.tags])
            for name, values, limit in detectors.load(m.kind).statistics(X, table.ts, list(m.tags), m.options,
                                                                     str(m.file)):
                stats.append(Statistic(m.name, name, values, float(limit)))
    limits = {t.name: {k.upper(): float(v) for k, v in t.families.get("limit", {}).items()
                       if k in ("hh", "h", "l", "ll") and v is not None} for t in cfg.tags}
    return render(title=f"plantwatch replay of {table.path.name}", ts=table.ts,
                  columns={n: columns[n] for n in result.tags}, messages=result.messages, ts_of=_ts,
                  limits=limits, statistics=stats, labels=labels, scores=scores, summary=summary)


def train(cfg: Config, model_name: str, table: Table) -> tuple[Path, list[str]]:
    """Fit the named model from the table's rows with the training its family does (for a
    ``target_far`` > 0, calibrated: detectors.calibrate). Bad training data is a ReplayError
    naming the column or row: a constant column, a run of empty cells, too few rows."""
    model = next((m for m in cfg.models if m.name == model_name), None)
    if model is None:
        known = ", ".join(m.name for m in cfg.models) or "none"
        raise ReplayError(f"no model {model_name!r} in the config (models: {known})")
    table.columns.update({k: v for k, v in computed_columns(cfg, table).items() if k in model.tags})
    missing = [t for t in model.tags if t not in table.columns]
    if missing:
        raise ReplayError(f"{table.path}: no column for the model's tags {missing}")
    X = table.matrix(model.tags)
    check_training(table, list(model.tags), X, model.inputs.lags if model.inputs else int(model.options.get("lags") or 0))
    data = Training(tuple(model.tags), X, table.ts, model.inputs, target_far=model.target_far,
                    holdout=model.holdout, auto=model.auto)
    try:
        described = detectors.load(model.kind).train(data, model.options, str(model.file))
    except ValueError as exc:
        raise ReplayError(f"{table.path}: {exc}") from None
    except NotImplementedError as exc:
        raise ReplayError(f"model {model.name}: {exc}") from None
    empty = int((~np.isfinite(X)).any(axis=1).sum())  # such a row is an incomplete tick: no input row
    lines = [f"model {model.name}: {len(model.tags)} tags, {len(X)} rows ({empty} with empty cells dropped)",
             *described, f"  written to {model.file}"]
    return model.file, lines


#: a run of this many empty cells in a column of training data is refused (an instrument out, not a gap)
NAN_RUN_ROWS = 10


def check_training(table: Table, names: list[str], X: np.ndarray, lags: int) -> None:
    """Training data that would make a wrong model: each a ReplayError naming what."""
    for j, name in enumerate(names):
        col = X[:, j]
        ok = np.isfinite(col)
        if ok.any() and np.nanmax(col) == np.nanmin(col):
            raise ReplayError(f"{table.path}: column {name!r} is constant ({np.nanmin(col):g}) in the training "
                              "rows: leave the tag out of the model, or train on rows where it moves")
        run = _longest_run(~ok)
        if run[1] >= NAN_RUN_ROWS:
            raise ReplayError(f"{table.path}: column {name!r} has no value in data rows {run[0] + 1}-"
                              f"{run[0] + run[1]} ({run[1]} rows): train on rows where the tag was recorded")
    same = np.flatnonzero(np.diff(table.ts) <= 0)
    if len(same):
        raise ReplayError(f"{table.path}: data row {int(same[0]) + 2}: time {table.ts[same[0] + 1]:.3f} does not "
                          "move forward from the row before (training needs one row per moment, in order)")
    if len(X) < max(20, 3 * (lags + 1) * len(names)):
        raise ReplayError(f"{table.path}: {len(X)} data rows are too few to train {len(names)} tags with lags "
                          f"{lags}: need at least {max(20, 3 * (lags + 1) * len(names))}")


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True."""
    if not mask.any():
        return 0, 0
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i] - starts[i])
