"""`plantwatch train --detectors`: per-tag calibration from normal history (detectors/tune.py,
agent/tuning.py), through the live Pipeline on a held-out week, with fixed seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agent.tuning import calibrate_config
from bench.flood import DAY, DETECTORS, SIGNALS, T0, config_data, load, onsets_per_day, signal
from detectors.tune import Cycles, fit_cycle
from tests.test_replay import plantwatch

DT = 10.0


def _series(seed: int, days: float, t0: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = int(days * DAY / DT)
    return t0 + DT * np.arange(n), {name: signal(name, n, DT, rng, t0)[1] for name in SIGNALS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The six processes calibrated on two weeks (seed 1001); the config that loads it."""
    base = tmp_path_factory.mktemp("tuned")
    ts, columns = _series(1001, 14, T0 - 14 * DAY)
    lines = calibrate_config(load(config_data(list(SIGNALS)), base), ts, columns)
    return base, lines


def test_calibrated_detectors_alarm_about_once_a_week_on_a_held_out_week(trained):
    base, lines = trained
    cfg = load(config_data(list(SIGNALS)), base)
    assert cfg.tuning is not None and set(cfg.tuning.params) == set(SIGNALS)
    ts, columns = _series(1, 7, T0)
    per_day = onsets_per_day(cfg, ts, columns)
    per_week = {k: round(v * 7) for k, v in per_day.items()}
    assert max(per_week.values()) <= 2, per_week
    assert sum(per_week.values()) <= len(per_week), per_week  # on average at most one per tag and detector
    # train printed an expected rate for every tag and detector, none above the target
    for name in SIGNALS:
        line = next(line for line in lines if line.strip().startswith(f"{name}:"))
        rates = [float(x) for x in __import__("re").findall(r"([0-9.]+)/week", line)]
        assert len(rates) == len(DETECTORS) and max(rates) <= 1.0 + 1e-9, line


@pytest.mark.parametrize("name,step", [("white", 4.0), ("ar1", 5.0), ("daily", 2.5), ("drift", 6.0)])
def test_a_step_fault_is_still_found_after_calibration(trained, name, step):
    """Calibrated for one false alarm a week, not into blindness: a step of a few sigmas of the
    tag's noise (daily: of the noise left after the cycle) is found within 15 minutes."""
    base, _ = trained
    cfg = load(config_data(list(SIGNALS)), base)
    ts, columns = _series(7, 3, T0)
    onset = T0 + 1.5 * DAY + 1234.0
    x = columns[name].copy()
    x[ts >= onset] += step
    from agent.replay import Table, replay

    result = replay(cfg, Table(__import__("pathlib").Path("step"), ts, {name: x}, {}))
    from agent.payloads import parse_rfc3339

    raised = [parse_rfc3339(m["ts"]) for m in result.messages
              if m["state"] == "active" and m["kind"] in ("ewma", "cusum", "robust")]
    after = [t for t in raised if t >= onset]
    assert after and after[0] - onset <= 900.0, (after[:3], raised[:5])
    assert len([t for t in raised if t < onset]) <= 1  # and no flood before it


def test_a_daily_cycle_is_learned_and_removed():
    ts, columns = _series(5, 14, T0)
    x = columns["daily"]
    cycle = fit_cycle(ts, x, 8 * 3600.0)
    assert cycle is not None and cycle.period_s == DAY and cycle.explained > 0.95
    cycles = Cycles(3, {1: cycle})
    later, held = _series(6, 2, T0 + 30 * DAY)
    tag = np.ones(len(later), dtype=np.int32)
    residual = cycles.residual(tag, held["daily"], later)
    assert np.std(held["daily"]) > 5.0
    assert np.std(residual) < 0.55  # the noise (0.5) and little else
    assert abs(np.mean(residual)) < 0.05
    # a tag without a cycle passes unchanged; white noise and a slow drift have none to learn
    assert cycles.residual(np.zeros(3, dtype=np.int32), np.array([1.0, 2.0, 3.0]), later[:3]).tolist() == [1, 2, 3]
    assert fit_cycle(ts, columns["white"], 0.0) is None
    assert fit_cycle(ts, columns["drift"], 0.0) is None
    # under two periods of data no cycle is claimed
    assert fit_cycle(ts[: int(1.5 * DAY / DT)], x[: int(1.5 * DAY / DT)], 0.0) is None


def _csv(path, ts, columns):
    names = list(columns)
    rows = ["ts," + ",".join(names)]
    rows += [f"{t:.0f}," + ",".join(f"{columns[n][i]:.4f}" for n in names) for i, t in enumerate(ts)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_detectors_command_writes_the_calibration_the_config_loads(write_config, tmp_path):
    data = config_data(["daily", "white"])
    data["tags"][1]["ewma"] = {"L": 20.0}  # the tag's own key wins over the calibration
    config = write_config(data)
    ts, columns = _series(3, 3, T0)
    csv = _csv(tmp_path / "normal.csv", ts, {"daily": columns["daily"], "white": columns["white"]})
    neither = plantwatch("train", str(config), "--csv", str(csv))
    assert neither.returncode == 2 and "--detectors" in neither.stderr
    result = plantwatch("train", str(config), "--csv", str(csv), "--detectors")
    assert result.returncode == 0, result.stderr
    assert "daily: daily cycle removed" in result.stdout and "white: no cycle" in result.stdout
    assert "ewma 1.00/week" in result.stdout or "ewma 0." in result.stdout
    written = tmp_path / "data" / "detectors.json"
    doc = json.loads(written.read_text())
    assert len(doc["tags"]["daily"]["cycle"]["profile"]) == 96
    cfg = load(data, tmp_path)
    white = next(t for t in cfg.tags if t.name == "white")
    assert white.families["ewma"]["L"] == 20.0 and math.isclose(white.families["ewma"]["sigma"],
                                                                 doc["tags"]["white"]["params"]["ewma"]["sigma"])
    checked = plantwatch("check", str(config))
    assert checked.returncode == 0 and "detectors.json, 2 tags, 1 with a cycle" in checked.stdout, checked.stdout
    doc["tags"]["white"]["params"]["robust"]["threshold"] = -1
    doc["tags"]["daily"]["cycle"]["profile"] = [1.0, 2.0]
    written.write_text(json.dumps(doc))
    bad = plantwatch("check", str(config))
    assert bad.returncode == 2
    assert "detectors.json: tags.white.params.robust.threshold" in bad.stderr, bad.stderr
    assert "detectors.json: tags.daily.cycle.profile: must be 96 finite numbers" in bad.stderr, bad.stderr


def test_the_engine_removes_the_learned_cycle(trained):
    """The calibrated charts judge the deviation from the daily profile: without the engine's
    cycle removal the same parameters would stand in alarm most of the time."""
    import dataclasses
    from pathlib import Path

    from agent.replay import Table, replay

    base, _ = trained
    cfg = load(config_data(list(SIGNALS)), base)
    assert set(cfg.tuning.cycles) == {"daily", "daily_clean"}
    ts, columns = _series(11, 2, T0 + 20 * DAY)
    table = {n: columns[n] for n in ("daily", "daily_clean")}
    with_cycles = replay(cfg, Table(Path("held-out"), ts, table, {}))
    assert with_cycles.alarm_rows.mean() < 0.03  # at most an alarm or two, each held 30 min by its off-delay
    blind = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning, cycles={}))
    without = replay(blind, Table(Path("held-out"), ts, table, {}))
    assert without.alarm_rows.mean() > 0.5


def test_train_detectors_names_a_constant_column_and_writes_nothing(write_config, tmp_path):
    config = write_config(config_data(["daily", "white"]))
    ts, columns = _series(3, 1, T0)
    csv = _csv(tmp_path / "normal.csv", ts, {"daily": columns["daily"], "white": np.full(len(ts), 7.0)})
    result = plantwatch("train", str(config), "--csv", str(csv), "--detectors")
    assert result.returncode == 2
    assert "normal.csv: white: 8640 usable samples, all equal" in result.stderr, result.stderr
    assert not (tmp_path / "data" / "detectors.json").exists()


def test_a_restored_chart_alarm_waits_for_the_warm_up_unless_calibrated(tmp_path):
    from agent.alarms import Alarm
    from agent.pipeline import restore_grace

    data = config_data(["white"])
    cfg = load(data, tmp_path)
    interval = cfg.interval_of(cfg.tags[0])
    alarm = Alarm(id="white/ewma", kind="ewma", tag="white", device="plc", active=True)
    assert restore_grace(cfg, alarm) == pytest.approx(60.0 + 3600 * interval + 3 * interval + 2.0)
    data["tags"][0]["ewma"] = {"mean": 0.0, "sigma": 1.0}  # as train --detectors sets them
    assert restore_grace(load(data, tmp_path), alarm) == pytest.approx(60.0 + 3 * interval + 2.0)
