"""SKAB benchmark through plantwatch's own commands only: one config for all 34 files, then per
file ``plantwatch train`` on its first 400 rows (the protocol's training part; train chooses the
inputs, components and delays and sets the limits itself) and ``plantwatch replay`` of the rest.
The prediction per row is whether any alarm is active after that row, from the active/cleared
transitions of each alarm id in replay's output. Scored by the SKAB protocol (pooled point-wise
F1, FAR, MAR; NAB with 60 s windows) and printed beside the published leaderboard.

    .venv/bin/python bench/skab.py [--data ../shared/data/skab] [--set KEY=VALUE ...]

The script writes the CSV parts and the config; everything else is the product's. ``--set`` adds
a key to the ``[[models]]`` entry (the same for every file), e.g. ``--set target_far=0.05``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.cli import main as plantwatch
from agent.payloads import parse_rfc3339
from detectors.scoring import NabCounts, PointScores

ROOT = Path(__file__).resolve().parent.parent
SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS"]
TRAIN_ROWS = 400  # the protocol's split: the first 400 rows of each file are the training part
MODEL = "skab"


def config(data_dir: Path, extra: list[str]) -> str:
    """The one config: the eight sensors as tags of one (never polled) device, one model over
    all of them with the defaults, plus the ``--set`` keys."""
    lines = ["[agent]", 'plant = "000000000000"', f'data_dir = "{data_dir}"', 'timezone = "UTC"', "",
             "[uplink]", 'url = "mqtt://127.0.0.1:1883"', "",
             "[[devices]]", 'name = "skab-rig"', 'driver = "modbus"', 'url = "tcp://127.0.0.1:5020"', ""]
    for i, tag in enumerate(SENSORS):
        lines += ["[[tags]]", f'name = "{tag}"', 'device = "skab-rig"', f'address = "hr:{2 * i}"', ""]
    lines += ["[[models]]", f'name = "{MODEL}"', 'kind = "pca"', f"tags = {json.dumps(SENSORS)}",
              'file = "skab.npz"', *extra]
    return "\n".join(lines) + "\n"


def split(path: Path, workdir: Path) -> tuple[Path, Path, list[dict[str, str]]]:
    """The file's training and test parts as CSV files, and the test rows (for the labels)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    head = ["datetime", *SENSORS]
    out = []
    for name, part in (("train", rows[:TRAIN_ROWS]), ("test", rows[TRAIN_ROWS:])):
        p = workdir / f"{name}.csv"
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(head)
            w.writerows([r[h] for h in head] for r in part)
        out.append(p)
    return out[0], out[1], rows[TRAIN_ROWS:]


def alarm_rows(alarms: Path, ts: np.ndarray) -> np.ndarray:
    """Per row: any alarm id active after it (its last transition at or before the row's time)."""
    active: set[str] = set()
    out = np.zeros(len(ts), dtype=bool)
    cursor = 0
    for line in alarms.read_text().splitlines():
        m = json.loads(line)
        if m["state"] not in ("active", "cleared"):
            continue
        row = int(np.searchsorted(ts, parse_rfc3339(m["ts"]), side="left"))
        out[cursor:row] = bool(active)
        cursor = max(cursor, row)
        (active.add if m["state"] == "active" else active.discard)(m["id"])
    out[cursor:] = bool(active)
    return out


def run(cmd: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = plantwatch(cmd)
    if code != 0:
        raise SystemExit(f"plantwatch {' '.join(cmd)}: exit {code}\n{buf.getvalue()}")
    return buf.getvalue()


def score_file(path: Path, cfg: Path, workdir: Path, verbose: bool) -> tuple[PointScores, NabCounts, str]:
    train_csv, test_csv, test_rows = split(path, workdir)
    chose = run(["train", str(cfg), "--csv", str(train_csv), "--model", MODEL, "--time-col", "datetime"])
    out = workdir / "alarms.jsonl"
    run(["replay", str(cfg), "--csv", str(test_csv), "--time-col", "datetime", "--out", str(out)])
    ts = np.array([parse_rfc3339(r["datetime"].replace(" ", "T") + "Z") for r in test_rows])
    alarm = alarm_rows(out, ts)
    anomaly = np.array([float(r["anomaly"]) != 0 for r in test_rows])
    cps = np.array([float(r["changepoint"]) != 0 for r in test_rows])
    if verbose:
        print(f"--- {path.parent.name}/{path.name}\n{chose}", end="")
    return PointScores.of(anomaly, alarm), NabCounts.of(ts[cps], alarm, ts), chose


def leaderboard(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def report(points: PointScores, nab: NabCounts, board_rows: list[dict[str, str]], n_files: int) -> None:
    ours = "plantwatch PCA (train + replay)"
    print(f"\ntest parts: {n_files} files, {points.tp + points.fn + points.fp + points.tn} rows, "
          f"{nab.true_cps} true changepoints")
    print(f"\n{'outlier detection':<34}{'F1':>6}{'FAR %':>8}{'MAR %':>8}")
    board = [(r["algorithm"], float(r["F1"]), float(r["FAR_pct"]), float(r["MAR_pct"]))
             for r in board_rows if r["problem"] == "outlier"]
    board.append((ours, points.f1, points.far, points.mar))
    for name, f1, far, mar in sorted(board, key=lambda r: -r[1]):
        mark = f"  <- F1 {f1:.4f}, FAR {far:.3f} %, MAR {mar:.3f} %" if name == ours else ""
        print(f"{name:<34}{f1:>6.2f}{far:>8.2f}{mar:>8.2f}{mark}")
    scores = nab.nab()
    print(f"\n{'changepoint detection (NAB, 60 s)':<34}{'Std':>7}{'LowFP':>7}{'LowFN':>7}{'missed':>8}{'FPs':>6}")
    cps = [(r["algorithm"], float(r["NAB_standard"]), float(r["NAB_lowFP"]), float(r["NAB_lowFN"]),
            r["missed_CPs"], r["FPs"]) for r in board_rows if r["problem"] == "changepoint"]
    cps.append((ours, scores["Standard"], scores["LowFP"], scores["LowFN"], str(nab.missed), str(nab.fps)))
    for name, std, lfp, lfn, missed, fps in sorted(cps, key=lambda r: -r[1]):
        mark = " <-" if name == ours else ""
        print(f"{name:<34}{std:>7.2f}{lfp:>7.2f}{lfn:>7.2f}{missed:>8}{fps:>6}{mark}")
    print(f"\nmean detection delay (first alarm in a changepoint window): {nab.mean_delay:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "skab")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a key of the [[models]] entry, TOML (the same for every file)")
    ap.add_argument("--verbose", action="store_true", help="print what train chose for each file")
    args = ap.parse_args(argv)
    files = sorted(f for f in (args.data / "data").glob("*/*.csv") if f.parent.name != "anomaly-free")
    if not files:
        raise SystemExit(f"no SKAB files under {args.data / 'data'}")
    points, nab = PointScores(), NabCounts()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pw-skab-") as tmp:
        work = Path(tmp)
        cfg = work / "skab.toml"
        cfg.write_text(config(work / "data", [s.replace("=", " = ", 1) for s in args.set]))
        print("config ([[models]] entry):\n  " + "\n  ".join(cfg.read_text().split("[[models]]\n")[1].splitlines()))
        for f in files:
            p, n, _ = score_file(f, cfg, work, args.verbose)
            points, nab = points + p, nab + n
    print(f"\n{len(files)} files trained and replayed in {time.perf_counter() - started:.0f} s")
    report(points, nab, leaderboard(args.data / "LEADERBOARD_current_2024.csv"), len(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
