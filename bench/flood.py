"""How often the per-tag detectors alarm on signals that never misbehave.

Six synthetic processes, each one tag watched by ewma, cusum, robust and flatline, are replayed
through the live Pipeline (agent.replay.replay: engine, alarm manager, commit step). Counted: alarm
onsets (messages turning an alarm id active) per day, per signal and detector.

    PYTHONPATH=$PWD python bench/flood.py [--days 7] [--dt 10] [--seed 1] [--tuned]

``--tuned``: ``plantwatch train``'s per-tag calibration (detectors/tune.py) on a first stretch of
the same processes (another seed), then the count on the held-out stretch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DAY = 86400.0
DETECTORS = ("ewma", "cusum", "robust", "flatline")
SIGNALS = ("white", "ar1", "daily", "daily_clean", "drift", "quantized")


# declarative: one generator per synthetic process
def signal(name: str, n: int, dt: float, rng: np.random.Generator, t0: float = T0) -> tuple[np.ndarray, np.ndarray]:
    """(ts, values) of one process, n samples dt seconds apart from t0."""
    ts = t0 + dt * np.arange(n)
    e = rng.normal(0.0, 1.0, n)
    day = 2 * np.pi * (ts - T0) / DAY
    if name == "white":  # steady and noisy
        v = 50.0 + e
    elif name == "ar1":  # noisy with memory: a 5-minute correlation time, stationary sigma 1
        phi = np.exp(-dt / 300.0)
        v = 50.0 + _ar1(e * np.sqrt(1 - phi * phi), phi)
    elif name == "daily":  # a daily cycle (amplitude 10) with noise
        v = 50.0 + 10.0 * np.sin(day) + 3.0 * np.sin(2 * day + 1.0) + 0.5 * e
    elif name == "daily_clean":  # a daily cycle that never misbehaves, no noise (resolution 0.001)
        v = np.round(50.0 + 10.0 * np.sin(day), 3)
    elif name == "drift":  # a slow wander (6 h correlation time, sigma 3) with noise
        phi = np.exp(-dt / 21600.0)
        v = 50.0 + _ar1(3.0 * np.sqrt(1 - phi * phi) * rng.normal(0.0, 1.0, n), phi) + 0.5 * e
    elif name == "quantized":  # a steady value read at a coarse resolution (0.5 steps, sigma 0.3)
        v = np.round((50.0 + 0.3 * e) * 2.0) / 2.0
    else:
        raise ValueError(name)
    return ts, v


def _ar1(e: np.ndarray, phi: float) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -phi], e)


def config_data(names: list[str], detector_tables: dict[str, Any] | None = None) -> dict[str, Any]:
    tags = [{"name": n, "device": "plc", "address": f"hr:{100 + 2 * i}", "type": "float32",
             "detectors": list(DETECTORS)} for i, n in enumerate(names)]
    return {
        "agent": {"plant": "640100000001", "name": "flood", "data_dir": "data", "timezone": "UTC"},
        "uplink": {"url": "mqtt://127.0.0.1:1883"},
        "devices": [{"name": "plc", "driver": "modbus", "url": "tcp://127.0.0.1:5020"}],
        "tags": tags,
        **({"detectors": detector_tables} if detector_tables else {}),
    }


def onsets_per_day(cfg, ts: np.ndarray, columns: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Alarm onsets per day of each (tag, detector) over a replay of the columns."""
    from agent.replay import Table, replay

    result = replay(cfg, Table(Path("synthetic"), ts, columns, {}))
    days = (ts[-1] - ts[0]) / DAY
    out = {(t, d): 0.0 for t in columns for d in DETECTORS}
    active: set[str] = set()
    for m in result.messages:
        if m["state"] == "active" and m["id"] not in active:
            active.add(m["id"])
            if (m["tag"], m["kind"]) in out:
                out[(m["tag"], m["kind"])] += 1.0 / days
        elif m["state"] == "cleared":
            active.discard(m["id"])
    return out


def load(data: dict[str, Any], base: Path):
    from agent.config import parse

    return parse(data, base=base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--dt", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tuned", action="store_true")
    args = ap.parse_args()
    n = int(args.days * DAY / args.dt)
    rng = np.random.default_rng(args.seed)
    series = {name: signal(name, n, args.dt, rng) for name in SIGNALS}
    ts = series[SIGNALS[0]][0]
    columns = {name: v for name, (_, v) in series.items()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = config_data(list(SIGNALS))
        if args.tuned:
            from agent.tuning import calibrate_config

            train_rng = np.random.default_rng(args.seed + 1000)
            t_train = T0 - 14 * DAY
            train = {name: signal(name, int(14 * DAY / args.dt), args.dt, train_rng, t_train)[1] for name in SIGNALS}
            cfg0 = load(data, base)
            print("\n".join(calibrate_config(cfg0, t_train + args.dt * np.arange(len(train[SIGNALS[0]])), train)))
        cfg = load(data, base)
        rates = onsets_per_day(cfg, ts, columns)
    print(f"alarm onsets per day, {args.days:g} days at {args.dt:g} s, seed {args.seed}"
          f"{' (after train)' if args.tuned else ' (untrained defaults)'}")
    print(f"| signal | {' | '.join(DETECTORS)} |")
    print("|---|" + "---:|" * len(DETECTORS))
    for name in SIGNALS:
        print(f"| {name} | " + " | ".join(f"{rates[(name, d)]:.2f}" for d in DETECTORS) + " |")


if __name__ == "__main__":
    main()
