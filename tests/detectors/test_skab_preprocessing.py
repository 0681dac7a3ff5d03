"""bench/skab.py's preprocessing and validation segments: causal inputs, faults where stated."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def skab():
    spec = importlib.util.spec_from_file_location("skab_bench", ROOT / "bench" / "skab.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.normal(10.0 * (i + 1), 1.0 + i, n) for i, s in enumerate(
        ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
         "Thermocouple", "Voltage", "Volume Flow RateRMS"])}


def test_trailing_mean_is_the_mean_of_the_last_rows(skab):
    x = np.arange(10, dtype=float) ** 2
    out = skab.trailing_mean(x, 3)
    assert np.isnan(out[:2]).all()
    for i in range(2, 10):
        assert out[i] == pytest.approx(x[i - 2:i + 1].mean())
    assert skab.trailing_mean(x, 1) is x


@pytest.mark.parametrize(("lag_s", "smooth"), [(0, 1), (30, 5), (60, 15)])
def test_inputs_use_past_rows_only(skab, lag_s, smooth):
    n = 200
    ts = np.arange(n, dtype=float)
    raw = columns(n)
    base = skab.model_inputs(ts, raw, lag_s, smooth)
    changed = {s: v.copy() for s, v in raw.items()}
    for v in changed.values():
        v[120:] += 1000.0  # the future changes ...
    after = skab.model_inputs(ts, changed, lag_s, smooth)
    assert list(after.columns) == skab.tag_names(lag_s)
    for name in base.columns:  # ... the inputs up to row 119 do not
        np.testing.assert_array_equal(base.columns[name][:120], after.columns[name][:120])
        assert not np.array_equal(base.columns[name][120:], after.columns[name][120:])
    history = max(lag_s, smooth - 1)
    for name, col in base.columns.items():
        assert np.isfinite(col[history:]).all(), name


def test_validation_faults_cover_the_stated_rows_only(skab, tmp_path):
    n = 500
    raw = columns(n, seed=3)
    path = tmp_path / "run.csv"
    names = list(raw)
    lines = [";".join(["datetime", *names, "anomaly", "changepoint"])]
    for i in range(n):
        stamp = f"2020-03-09 12:{i // 60:02d}:{i % 60:02d}"
        lines.append(";".join([stamp, *(f"{raw[s][i]:.6f}" for s in names), "0", "0"]))
    path.write_text("\n".join(lines) + "\n")
    run = skab.read(path)
    assert run.table.ts[1] - run.table.ts[0] == 1.0
    times, segs = skab.validation_segments(run)
    rows = skab.TRAIN_ROWS
    assert len(times) == rows * (1 + 2 * len(names))
    assert (np.diff(times) > 0).all()
    first, stop = skab.FAULT_ROWS
    clean = {s: segs[s][:rows] for s in names}
    for k in range(1, 1 + 2 * len(names)):
        delta = {s: segs[s][k * rows:(k + 1) * rows] - clean[s] for s in names}
        moved = [s for s in names if np.any(delta[s] != 0)]
        assert len(moved) == 1  # one sensor per fault
        d = delta[moved[0]]
        assert np.all(d[:first] == 0) and np.all(d[stop:] == 0)
        step = skab.FAULT_SIGMAS * np.std(clean[moved[0]][:skab.FIT_ROWS], ddof=1)
        np.testing.assert_allclose(np.abs(d[first:stop]), step)
