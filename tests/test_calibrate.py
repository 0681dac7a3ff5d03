"""``plantwatch train`` calibrating itself from normal data (detectors/calibrate.py), and the
training data and model files it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.calibrate import Training, calibrate, debounced, empirical_limits, search, slow_tags
from detectors.inputs import InputSpec, table_rows
from tests.test_replay import T0, plantwatch

TAGS = ("a", "b", "c", "d")
MIX = np.array([[1.0, 0.8, 0.2, 0.0], [0.0, 0.6, 1.0, 0.3], [0.0, 0.0, 0.3, 1.0], [0.0, 0.0, 0.0, 0.4]])


def steady(n: int, seed: int) -> np.ndarray:
    """Four correlated tags, independent rows: a steady process."""
    return np.random.default_rng(seed).normal(size=(n, 4)) @ MIX + np.array([50.0, 10.0, 3.0, 100.0])


def test_target_far_is_met_on_fresh_normal_data():
    """Limits set for 1 % on 20,000 rows of a steady process alarm on about 1 % of 20,000 fresh
    rows of it. Tolerance 0.4 points: the share on fresh rows has a binomial standard deviation of
    sqrt(0.01 * 0.99 / 20000) = 0.07 points, and the limits, quantiles estimated from 20,000
    out-of-sample rows, add about as much again: 0.4 points is over four standard deviations of
    the two together (fixed seeds, so the test is deterministic; it fails for a bias, not chance)."""
    X = steady(20_000, 1)
    tr = Training(TAGS, X, T0 + np.arange(20_000.0), target_far=0.01, auto=False)
    model, chosen, lines = calibrate(tr)
    assert chosen.on_delay_s == 0 and chosen.off_delay_s == 0
    fresh = steady(20_000, 2)
    t2, spe = model.score(fresh)
    alarmed = (t2 > model.t2_limit) | (spe > model.spe_limit)
    assert abs(alarmed.mean() - 0.01) < 0.004, alarmed.mean()
    assert model.target_far == 0.01
    assert any("limits at target false-alarm rate 1 %" in line for line in lines)


def test_target_far_counts_the_delays():
    """With an on-delay and off-delay, the share of rows *alarmed after the delays* is the target."""
    X = steady(20_000, 3)
    tr = Training(TAGS, X, T0 + np.arange(20_000.0), target_far=0.02, auto=False, on_delay_s=2.0, off_delay_s=5.0)
    model, _, _ = calibrate(tr)
    fresh = steady(20_000, 4)
    t2, spe = model.score(fresh)
    alarm = debounced(t2, spe, T0 + np.arange(20_000.0), model.t2_limit, model.spe_limit, 2.0, 5.0)
    assert abs(alarm.mean() - 0.02) < 0.006, alarm.mean()
    assert (model.on_delay_s, model.off_delay_s) == (2.0, 5.0)


def test_empirical_limits_bound_the_alarmed_share():
    rng = np.random.default_rng(5)
    t2, spe = rng.chisquare(3, 5000), rng.chisquare(2, 5000)
    times = np.arange(5000.0)
    lt, ls, share = empirical_limits([(t2, spe, times)], 0.0, 0.0, 0.05)
    alarmed = ((t2 > lt) | (spe > ls)).mean()
    assert alarmed == pytest.approx(share) and 0.045 < share <= 0.05


def drifting(n: int, seed: int, fault_at: int | None = None) -> np.ndarray:
    """Three correlated steady tags and a fourth that warms slowly (a random walk plus a trend,
    with a little noise): its level never comes back to where the model saw it."""
    rng = np.random.default_rng(seed)
    X = steady(n, seed)
    X[:, 3] = 20 + 0.01 * np.arange(n) + rng.normal(0, 1, n).cumsum() * 0.05 + rng.normal(0, 0.05, n)
    if fault_at is not None:
        X[fault_at:, 1] += 4.0 * 0.6  # b off its correlation with a and c (4 of its sigma from a)
    return X


def test_calibration_picks_rates_for_a_slow_tag_and_sees_the_fault():
    X = drifting(2000, 6)
    ts = T0 + np.arange(2000.0)
    assert slow_tags(TAGS, X) == ("d",)
    model, chosen, lines = calibrate(Training(TAGS, X, ts, target_far=0.01))
    assert "d" not in chosen.spec.level_tags and "rate(d" in " ".join(chosen.spec.columns())
    # a fresh stretch from the same process, warmer: the fault is seen, the warming is not an alarm
    fresh = drifting(3000, 7, fault_at=2000)
    fresh[:, 3] += 30.0  # much warmer than in training: a level model would alarm throughout
    X2, times = table_rows(chosen.spec, fresh, T0 + 10_000 + np.arange(3000.0))
    t2, spe = model.score(X2)
    alarm = debounced(t2, spe, times, model.t2_limit, model.spe_limit, model.on_delay_s, model.off_delay_s)
    row = (times - T0 - 10_000).astype(int)
    assert alarm[row < 2000].mean() < 0.05
    assert alarm[row >= 2000].mean() > 0.9
    assert any(line.startswith("  inputs: ") for line in lines)


def test_what_the_config_fixes_is_not_searched():
    X = drifting(2000, 8)
    spec = InputSpec(TAGS, lags=1)
    model, chosen, _ = calibrate(Training(TAGS, X, T0 + np.arange(2000.0), spec=spec, components=2,
                                          on_delay_s=1.0, off_delay_s=4.0))
    assert chosen.spec == spec and model.n_components == 2
    assert (model.on_delay_s, model.off_delay_s) == (1.0, 4.0)


def test_off_delays_are_searched_only_where_the_hold_out_can_show_their_cost():
    """At 1 %, 200 hold-out rows allow 2 false rows: no false alarm with an off-delay fits, so none
    is searched; 2,000 allow 20: off-delays of 0 and 10 intervals are, 30 (31 rows) is not."""
    short = search(Training(TAGS, steady(400, 10), T0 + np.arange(400.0), target_far=0.01))
    assert {c.off_delay_s for c in short} == {0.0}
    long = search(Training(TAGS, steady(4000, 11), T0 + np.arange(4000.0), target_far=0.01))
    assert {c.off_delay_s for c in long} == {0.0, 10.0}
    assert {c.on_delay_s for c in short} == {c.on_delay_s for c in long} == {0.0, 3.0, 10.0}


# --- bad input: each a message naming the column, row or file, exit 2 ---------------------------


def model_config(write_config, **keys):
    from tests.conftest import config_dict

    data = config_dict(models=[{"name": "m", "kind": "pca", "tags": ["R101.TI01", "R101.PI01"],
                                "file": "models/m.npz", **keys}])
    return write_config(data)


def csv_of(path, rows):
    path.write_text("ts,R101.TI01,R101.PI01\n" + "".join(f"{t},{a},{b}\n" for t, a, b in rows))
    return path


def good_rows(n=300):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(n, 2)) @ np.array([[1.0, 0.5], [0.0, 0.5]])
    return [(T0 + i, f"{120 + x[i, 0]:.4f}", f"{0.8 + 0.01 * x[i, 1]:.5f}") for i in range(n)]


def bad_cases():
    rows = good_rows()
    constant = [(t, a, "0.8") for t, a, _ in rows]
    nan_run = [(t, "" if 100 <= i < 130 else a, b) for i, (t, a, b) in enumerate(rows)]
    backwards = list(rows)
    backwards[50] = (T0 + 49, *rows[50][1:])
    return [
        ({}, constant, "column 'R101.PI01' is constant (0.8) in the training rows"),
        ({}, nan_run, "column 'R101.TI01' has no value in data rows 101-130 (30 rows)"),
        ({}, backwards, "data row 51: time 1800000049.000 does not move forward"),
        ({"lags": 20}, rows[:100], "100 data rows are too few to train 2 tags with lags 20: need at least 126"),
    ]


@pytest.mark.parametrize("keys,rows,message", bad_cases())
def test_bad_training_data_is_refused_naming_the_place(write_config, tmp_path, keys, rows, message):
    # the time column is found by its name, as replay finds it
    result = plantwatch("train", str(model_config(write_config, **keys)), "--csv", str(csv_of(tmp_path / "n.csv", rows)),
                        "--model", "m")
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and str(tmp_path / "n.csv") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "models" / "m.npz").exists()


def test_a_model_file_of_an_older_format_is_refused_naming_it(write_config, tmp_path):
    config = model_config(write_config)
    csv = csv_of(tmp_path / "n.csv", good_rows())
    assert plantwatch("train", str(config), "--csv", str(csv), "--model", "m", "--time-col", "ts").returncode == 0
    file = tmp_path / "data" / "models" / "m.npz"
    data = dict(np.load(file))
    data["version"] = np.array(1)
    np.savez(file, **data)
    for cmd in (["replay", str(config), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl")], ["run", str(config)]):
        result = plantwatch(*cmd)
        assert result.returncode == 2
        assert f"{file}: model format version 1, this build reads version 2: fit it again with `plantwatch train`" \
            in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
