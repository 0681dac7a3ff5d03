"""SKAB scored as a plant engineer would run plantwatch, for any model kind: one config for all
34 files (the eight sensors as tags, one `[[models]]` entry of the kind, its defaults unless
options are given), `train` on each file's first 400 rows, `replay` of the rest; an alarm per
row from the model's active/cleared messages. Pooled point-wise F1/FAR/MAR and NAB (60 s).

    .venv/bin/python bench/skab_kinds.py --kind cva [--option past=5 --option on_delay_s=5] [--data DIR]

No preprocessing and no selection: what the product does with its defaults.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from agent.config import Config, parse
from agent.replay import Table, labels_of, read_table, replay, train
from detectors.scoring import NabCounts, PointScores

ROOT = Path(__file__).resolve().parent.parent
SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS"]
TRAIN_ROWS = 400


def config(kind: str, options: dict[str, object], data_dir: Path) -> Config:
    lines = ["[agent]", 'plant = "000000000000"', f'data_dir = "{data_dir}"', 'timezone = "UTC"', "",
             "[uplink]", 'url = "mqtt://127.0.0.1:1883"', "",
             "[[devices]]", 'name = "skab-rig"', 'driver = "modbus"', 'url = "tcp://127.0.0.1:5020"', ""]
    for i, tag in enumerate(SENSORS):
        lines += ["[[tags]]", f'name = "{tag}"', 'device = "skab-rig"', f'address = "hr:{2 * i}"', ""]
    lines += ["[[models]]", 'name = "skab"', f'kind = "{kind}"', f"tags = {SENSORS!r}".replace("'", '"'),
              'file = "skab.npz"', *(f"{k} = {json.dumps(v)}" for k, v in options.items())]
    return parse(tomllib.loads("\n".join(lines)))


def rows(table: Table, start: int, stop: int | None = None) -> Table:
    return Table(table.path, table.ts[start:stop], {k: v[start:stop] for k, v in table.columns.items()}, {})


def option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value as TOML (a bare word is a string)."""
    key, _, raw = text.partition("=")
    try:
        return key.strip(), tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), raw.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "skab")
    ap.add_argument("--kind", default="cva")
    ap.add_argument("--option", action="append", default=[], help="KEY=VALUE of the model entry")
    args = ap.parse_args()
    options = dict(option(o) for o in args.option)
    files = sorted(f for f in (args.data / "data").glob("*/*.csv") if f.parent.name != "anomaly-free")
    if not files:
        raise SystemExit(f"no SKAB files under {args.data / 'data'}")
    points, nab = PointScores(), NabCounts()
    with tempfile.TemporaryDirectory(prefix="pw-skab-kinds-") as tmp:
        cfg = config(args.kind, options, Path(tmp))
        for f in files:
            table = read_table(f, SENSORS, "datetime", None, ZoneInfo("UTC"), keep=("anomaly", "changepoint"))
            anomaly, changepoint = labels_of(table, "anomaly"), labels_of(table, "changepoint")
            train(cfg, "skab", rows(table, 0, TRAIN_ROWS))
            alarm = replay(cfg, rows(table, TRAIN_ROWS)).alarm_rows
            ts = table.ts[TRAIN_ROWS:]
            points = points + PointScores.of(anomaly[TRAIN_ROWS:], alarm)
            nab = nab + NabCounts.of(ts[changepoint[TRAIN_ROWS:]], alarm, ts)
    scores = nab.nab()
    shown = ", ".join(f"{k} = {v}" for k, v in options.items()) or "defaults"
    print(f"kind {args.kind} ({shown}), {len(files)} files: F1 {points.f1:.3f}, FAR {points.far:.2f} %, "
          f"MAR {points.mar:.2f} %; NAB standard {scores['Standard']:.2f}, low FP {scores['LowFP']:.2f}, "
          f"low FN {scores['LowFN']:.2f}; mean detection delay {nab.mean_delay:.1f} s")
    return 0 if np.isfinite(points.f1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
