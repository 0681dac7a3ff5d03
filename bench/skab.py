"""SKAB benchmark: the PCA family, run through the detection engine, on the Skoltech Anomaly
Benchmark, scored by the SKAB protocol and printed beside the published leaderboard.

Per file: fit on the first 400 rows, replay the rest through ``Engine.process`` (one batch per
file, time from the file), take "any PCA alarm active" per row as the prediction.

    .venv/bin/python bench/skab.py [--data ../shared/data/skab] [--variant NAME]

Variants (all fitted on the training rows only):
  plain     all 8 sensors as levels, alarm while T^2 or SPE is over its limit
  rates     the two temperatures as their 5 s change instead of their level (they drift through
            every run: the training rows already show it), on-delay 3 s, off-delay 10 s
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.engine import Engine  # noqa: E402
from detectors.pca import PcaFamily, fit  # noqa: E402
from detectors.scoring import NabCounts, PointScores  # noqa: E402

SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS"]
TRAIN_ROWS = 400
DRIFTING = ("Temperature", "Thermocouple")


def read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UTC seconds, sensor matrix (rows, 8), anomaly labels, changepoint labels."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    head, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(head)}
    missing = [c for c in (*SENSORS, "datetime", "anomaly", "changepoint") if c not in col]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}")
    ts = np.array([dt.datetime.fromisoformat(r[col["datetime"]]).replace(tzinfo=dt.UTC).timestamp() for r in body])
    X = np.array([[float(r[col[s]]) for s in SENSORS] for r in body])
    y = np.array([float(r[col["anomaly"]]) for r in body]).astype(bool)
    cp = np.array([float(r[col["changepoint"]]) for r in body]).astype(bool)
    return ts, X, y, cp


def features(X: np.ndarray, variant: str, lag: int = 5) -> tuple[np.ndarray, list[str], int]:
    """The model's inputs, their names, and the first row where all are defined."""
    if variant == "plain":
        return X, list(SENSORS), 0
    keep = [i for i, s in enumerate(SENSORS) if s not in DRIFTING]
    drift = [SENSORS.index(s) for s in DRIFTING]
    rates = np.full((len(X), len(drift)), np.nan)
    rates[lag:] = X[lag:, drift] - X[:-lag, drift]
    names = [SENSORS[i] for i in keep] + [f"d{lag}s({SENSORS[i]})" for i in drift]
    return np.column_stack([X[:, keep], rates]), names, lag


VARIANTS = {
    "plain": {"confidence": 0.99, "variance": 0.85, "on_delay_s": 0.0, "off_delay_s": 0.0},
    "rates": {"confidence": 0.99, "variance": 0.85, "on_delay_s": 3.0, "off_delay_s": 10.0},
}


def replay(ts: np.ndarray, F: np.ndarray, names: list[str], start: int, settings: dict) -> np.ndarray:
    """Fit on the training rows, replay the test rows through the engine; alarm per test row."""
    model = fit(F[start:TRAIN_ROWS], names, confidence=settings["confidence"], variance=settings["variance"])
    p = len(names)
    family = PcaFamily.for_model(p, model, list(range(p)), on_delay_s=settings["on_delay_s"],
                                 off_delay_s=settings["off_delay_s"])
    engine = Engine(p, [family])
    test_ts, test = ts[TRAIN_ROWS:], F[TRAIN_ROWS:]
    n = len(test)
    changes = engine.process(
        np.tile(np.arange(p, dtype=np.int32), n), test.ravel(), np.repeat(test_ts, p), np.zeros(n * p, dtype=np.uint8)
    )
    alarm = np.zeros(n, dtype=bool)
    row_of = {t: i for i, t in enumerate(test_ts.tolist())}
    state, since = False, 0
    for c in changes:
        row = row_of[c.ts]
        alarm[since:row] = state
        state, since = c.active, row
    alarm[since:] = state
    return alarm


def leaderboard(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "skab")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="rates")
    args = ap.parse_args(argv)
    files = sorted((args.data / "data").glob("*/*.csv"))
    files = [f for f in files if f.parent.name != "anomaly-free"]
    if not files:
        raise SystemExit(f"no SKAB files under {args.data / 'data'}")
    settings = VARIANTS[args.variant]
    points, nab = PointScores(), NabCounts()
    for f in files:
        ts, X, y, cp = read(f)
        F, names, start = features(X, args.variant)
        alarm = replay(ts, F, names, start, settings)
        points = points + PointScores.of(y[TRAIN_ROWS:], alarm)
        nab = nab + NabCounts.of(ts[TRAIN_ROWS:][cp[TRAIN_ROWS:]], alarm, ts[TRAIN_ROWS:])
    scores = nab.nab()
    ours = f"plantwatch PCA ({args.variant})"
    print(f"{len(files)} files, {points.tp + points.fn + points.fp + points.tn} test rows, "
          f"{nab.true_cps} true changepoints; settings {settings}")
    print(f"\n{'outlier detection':<34}{'F1':>6}{'FAR %':>8}{'MAR %':>8}")
    rows = leaderboard(args.data / "LEADERBOARD_current_2024.csv")
    board = [(r["algorithm"], float(r["F1"]), float(r["FAR_pct"]), float(r["MAR_pct"]))
             for r in rows if r["problem"] == "outlier"]
    board.append((ours, round(points.f1, 2), round(points.far, 2), round(points.mar, 2)))
    for name, f1, far, mar in sorted(board, key=lambda r: -r[1]):
        mark = " <-" if name == ours else ""
        print(f"{name:<34}{f1:>6.2f}{far:>8.2f}{mar:>8.2f}{mark}")
    print(f"\n{'changepoint detection (NAB, 60 s)':<34}{'Std':>7}{'LowFP':>7}{'LowFN':>7}{'missed':>8}{'FPs':>6}")
    cps = [(r["algorithm"], float(r["NAB_standard"]), float(r["NAB_lowFP"]), float(r["NAB_lowFN"]),
            r["missed_CPs"], r["FPs"]) for r in rows if r["problem"] == "changepoint"]
    cps.append((ours, round(scores["Standard"], 2), round(scores["LowFP"], 2), round(scores["LowFN"], 2),
                str(nab.missed), str(nab.fps)))
    for name, std, lfp, lfn, missed, fps in sorted(cps, key=lambda r: -r[1]):
        mark = " <-" if name == ours else ""
        print(f"{name:<34}{std:>7.2f}{lfp:>7.2f}{lfn:>7.2f}{missed:>8}{fps:>6}{mark}")
    print(f"\nmean detection delay (first alarm in a changepoint window): {nab.mean_delay:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
