"""A study of train's fixed defaults on SKAB's anomaly-free recording, never on the benchmark's
test parts: windows of the recording (400 rows to train on, as the protocol's training part, then
750 rows forward, about a test part's length), and per window the forward rows replayed once as
recorded and once per synthetic fault (a step of +-3 training standard deviations in one sensor
over forward rows 200-399; 16 faults). Pooled point-wise F1, false-alarm share of the normal rows
(the clean forward rows and the fault-free rows of the faulty copies) and the share of faulty rows
detected. The forward rows run up to 19 minutes after the training rows, as the test parts do, so
the false alarms include what the rig's drift does to a model fitted on 400 rows.

    PYTHONPATH=. .venv/bin/python bench/skab_normal.py [--slow-ratio 3 --slow-ratio 8 ...] [--set KEY=VALUE]
        [--limit-factor 1.5] [--refit recursive|none] [--refit-memory ROWS] [--data DIR]

Train's calibration runs as `plantwatch train` runs it (detectors.calibrate with the defaults);
``--slow-ratio`` replaces the fixed von Neumann ratio above which a tag counts as slow
(detectors.calibrate.SLOW_RATIO) for one pass each, to compare the values on this recording;
``--set`` fixes a field of the training (target_far, holdout, on_delay_s, off_delay_s, as the
``[[models]]`` keys of those names do), ``--limit-factor`` multiplies the limits train set, and
``--refit`` is the model's ``refit`` option (the forward rows judged as the live family judges).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from agent.payloads import parse_rfc3339
from bench.skab import SENSORS, TRAIN_ROWS
from detectors import _pca, calibrate
from detectors.cva import levels
from detectors.inputs import table_rows
from detectors.pca import REFIT, recentring
from detectors.scoring import PointScores

ROOT = Path(__file__).resolve().parent.parent
FORWARD = 750  # rows replayed after each window's training rows (a test part has 700 on average)
FAULT = (200, 400)  # forward rows carrying the synthetic step
STRIDE = 700  # rows between the starts of two windows
MEMORY = [0]  # the refit_memory option (0: the model's training rows)


def recording(data: Path) -> tuple[np.ndarray, np.ndarray]:
    with (data / "data" / "anomaly-free" / "anomaly-free.csv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    X = np.array([[float(r[s]) for s in SENSORS] for r in rows])
    ts = np.array([parse_rfc3339(r["datetime"].replace(" ", "T") + "Z") for r in rows])
    return X, ts


def judged(model, rows: np.ndarray, times: np.ndarray, factor: float, refit: str) -> np.ndarray:
    """Per input row: the model in alarm after it, as the live family judges (``refit`` its option)."""
    debounce = _pca.SeriesDebounce(model.on_delay_s, model.off_delay_s)
    lt, ls = factor * model.t2_limit, factor * model.spe_limit
    centre = recentring(model, {"refit": refit, "refit_memory": MEMORY[0]})
    if centre is None:
        t2, spe = model.score(rows)
        return calibrate.debounced(t2, spe, times, lt, ls, model.on_delay_s, model.off_delay_s)
    _, _, _, pos, _, new = centre.judge(model.statistics, rows, np.ascontiguousarray(times), debounce, lt, ls)
    return levels(0, pos, new, len(rows)) != 0


def score_window(X: np.ndarray, ts: np.ndarray, fixed: dict[str, float], factor: float,
                 refit: str) -> tuple[PointScores, float]:
    """One window: train on its first TRAIN_ROWS rows, replay the rest clean and with each fault."""
    model, _, _ = calibrate.calibrate(calibrate.Training(tuple(SENSORS), X[:TRAIN_ROWS], ts[:TRAIN_ROWS], **fixed))
    sd = np.std(X[:TRAIN_ROWS], axis=0, ddof=1)
    faults = [(None, 0.0)] + [(j, sign * calibrate.FAULT_SIGMAS * sd[j]) for j in range(len(SENSORS))
                              for sign in (1.0, -1.0)]
    points, clean_far = PointScores(), 0.0
    a, b = TRAIN_ROWS + FAULT[0], TRAIN_ROWS + FAULT[1]
    for col, step in faults:
        Y = X.copy()
        if col is not None:
            Y[a:b, col] += step
        rows, times = table_rows(model.inputs, Y, ts)
        keep = times >= ts[TRAIN_ROWS]
        alarm = judged(model, rows[keep], times[keep], factor, refit)
        row = np.searchsorted(ts, times[keep])
        faulty = (row >= a) & (row < b) if col is not None else np.zeros(len(alarm), dtype=bool)
        points = points + PointScores.of(faulty, alarm)
        if col is None:
            clean_far = float(alarm.mean())
    return points, clean_far


def study(X: np.ndarray, ts: np.ndarray, fixed: dict[str, float], factor: float,
          refit: str) -> tuple[PointScores, list[float]]:
    points, clean = PointScores(), []
    for start in range(0, len(ts) - TRAIN_ROWS - FORWARD + 1, STRIDE):
        end = start + TRAIN_ROWS + FORWARD
        p, far = score_window(X[start:end], ts[start:end], fixed, factor, refit)
        points, clean = points + p, [*clean, far]
    return points, clean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "skab")
    ap.add_argument("--slow-ratio", type=float, action="append", default=[],
                    help=f"von Neumann ratio above which a tag is slow (default {calibrate.SLOW_RATIO:g})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a field of the training: target_far, holdout, on_delay_s, off_delay_s")
    ap.add_argument("--limit-factor", type=float, default=1.0, help="multiplier of the limits train set")
    ap.add_argument("--refit", default="recursive", choices=REFIT, help="the model's refit option")
    ap.add_argument("--refit-memory", type=float, default=0.0, help="the model's refit_memory option")
    args = ap.parse_args(argv)
    MEMORY[0] = args.refit_memory
    fixed = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    X, ts = recording(args.data)
    print(f"{'slow ratio':>10}{'F1':>8}{'FAR %':>8}{'detected %':>12}{'clean FAR %':>13}  per window (clean FAR %)")
    for ratio in args.slow_ratio or [calibrate.SLOW_RATIO]:
        calibrate.SLOW_RATIO = ratio
        points, clean = study(X, ts, fixed, args.limit_factor, args.refit)
        print(f"{ratio:>10g}{points.f1:>8.4f}{points.far:>8.2f}{100 - points.mar:>12.1f}"
              f"{100 * float(np.mean(clean)):>13.2f}  " + " ".join(f"{100 * c:.1f}" for c in clean))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
