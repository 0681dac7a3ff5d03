"""What each non-limit family means, on hand-made signals: rate of change, EWMA, CUSUM,
Hampel, flatline and sensor alarms, their warm-up, and their config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from batches import feed

import detectors
from detectors.base import BAD, COMM_FAIL, GOOD, UNCERTAIN
from detectors.families import CusumFamily, EwmaFamily, FlatlineFamily, RobustFamily, RocFamily, SensorFamily


def brief(changes):
    return [(c.kind, c.level, c.active, c.ts) for c in changes]


@pytest.mark.parametrize(
    "name, cls",
    [("roc", RocFamily), ("ewma", EwmaFamily), ("cusum", CusumFamily), ("robust", RobustFamily),
     ("flatline", FlatlineFamily), ("sensor", SensorFamily)],
)
def test_family_is_registered_under_its_name(name, cls):
    assert detectors.load(name) is cls
    assert cls.name == name


def test_statistical_families_are_enabled_by_name_not_by_a_tag_key():
    assert [c.tag_key for c in (EwmaFamily, CusumFamily, RobustFamily, FlatlineFamily)] == [None] * 4
    assert (RocFamily.tag_key, SensorFamily.tag_key) == ("roc", "range")


# --- roc -------------------------------------------------------------------------------------


def test_roc_requires_a_positive_max_rate():
    assert RocFamily.check({}) == [("max_per_s", "required (units per second)")]
    assert RocFamily.check({"max_per_s": 0}) == [("max_per_s", "must be > 0, not 0")]
    assert RocFamily.check({"max_per_s": 2.0, "window_s": -1}) == [("window_s", "must be >= 0, not -1")]


def test_roc_alarms_on_a_fast_rise_and_a_fast_fall_but_not_a_slow_ramp():
    fam = RocFamily(1, {0: {"max_per_s": 2.0, "window_s": 1.0}})
    assert feed(fam, np.arange(10) * 1.5) == []
    changes = feed(fam, [13.5 + 3.0, 13.5 + 6.0, 13.5 + 6.5, 0.0], ts=[10, 11, 12, 13])
    assert brief(changes) == [("roc", "H", True, 10.0), ("roc", "H", False, 12.0), ("roc", "L", True, 13.0)]
    assert changes[0].context["rate_per_s"] == 3.0
    assert changes[0].limit == 2.0 and changes[2].limit == -2.0


def test_roc_measures_over_the_window_so_jitter_between_measurements_is_ignored():
    fam = RocFamily(1, {0: {"max_per_s": 1.0, "window_s": 5.0}})
    # +-3 jitter each second, but over any 5 s the value moved by at most 3
    values = [0, 3, 0, 3, 0, 3, 0, 3, 0, 3, 0, 3]
    assert feed(fam, values) == []


def test_roc_rate_spans_a_gap_of_bad_samples_without_counting_them():
    fam = RocFamily(1, {0: {"max_per_s": 1.0, "window_s": 1.0}})
    feed(fam, [0.0], ts=[0])
    # during the outage the PLC reported garbage; afterwards the real rate is 5 / 10 s
    assert feed(fam, [999.0, math.nan, 5.0], ts=[2, 5, 10], quality=[BAD, GOOD, GOOD]) == []


# --- ewma ------------------------------------------------------------------------------------


def test_ewma_is_silent_during_warm_up_then_catches_a_shift():
    fam = EwmaFamily(1, {0: {"lambda_": 0.2, "L": 3.0, "warmup": 20, "on_delay_s": 0.0, "off_delay_s": 0.0}})
    rng = np.random.default_rng(1)
    warm = 50.0 + rng.normal(0, 1.0, 20)
    assert feed(fam, warm) == []
    assert feed(fam, 50.0 + rng.normal(0, 0.3, 30), ts=np.arange(20, 50)) == []
    changes = feed(fam, np.full(20, 53.0), ts=np.arange(50, 70))
    assert [(c.level, c.active) for c in changes] == [("H", True)]
    s = math.sqrt(np.var(warm, ddof=1))
    assert changes[0].limit == pytest.approx(np.mean(warm) + 3.0 * s * math.sqrt(0.2 / 1.8))
    assert changes[0].context["mean"] == pytest.approx(np.mean(warm))
    cleared = feed(fam, np.full(30, np.mean(warm)), ts=np.arange(70, 100))
    assert [(c.level, c.active) for c in cleared] == [("H", False)]


def test_ewma_with_given_mean_and_sigma_needs_no_warm_up():
    fam = EwmaFamily(1, {0: {"lambda_": 1.0, "L": 3.0, "mean": 10.0, "sigma": 1.0, "on_delay_s": 0.0}})
    assert [(c.level, c.active, c.limit) for c in feed(fam, [6.5])] == [("L", True, 7.0)]


def test_ewma_warm_up_skips_nan_and_bad_samples():
    fam = EwmaFamily(1, {0: {"lambda_": 1.0, "L": 3.0, "warmup": 3}})
    feed(fam, [1.0, math.nan, 1e9, 2.0, 3.0], quality=[GOOD, GOOD, BAD, UNCERTAIN, GOOD])
    assert fam.kernel.mean[0] == 2.0 and fam.kernel.count[0] == 3
    assert fam.kernel.ucl[0] == pytest.approx(5.0)


def test_ewma_check_messages():
    assert EwmaFamily.check({"lambda_": 0}) == [("lambda_", "must be in (0, 1], not 0")]
    assert EwmaFamily.check({"mean": 3.0}) == [("sigma", "required when mean is given")]
    assert EwmaFamily.check({"warmup": 1.5}) == [("warmup", "must be a whole number >= 2, not 1.5")]
    assert EwmaFamily.check({"L": -1, "sigma": 0, "mean": 1}) == [
        ("sigma", "must be > 0, not 0"),
        ("L", "must be > 0, not -1"),
    ]


# --- cusum -----------------------------------------------------------------------------------


def test_cusum_finds_a_one_sigma_shift_and_holds_while_it_persists():
    fam = CusumFamily(1, {0: {"k": 0.5, "h": 5.0, "mean": 0.0, "sigma": 1.0, "off_delay_s": 10.0}})
    assert feed(fam, np.zeros(50)) == []
    # a +1 sigma shift adds 0.5 per sample: crosses h=5 on the 11th sample, then every 11
    changes = feed(fam, np.ones(60), ts=np.arange(50, 110))
    assert brief(changes) == [("cusum", "H", True, 60.0)]
    assert changes[0].context["sum"] == pytest.approx(5.5)
    assert fam.kernel.sp[0] < 5.0  # restarted after each crossing
    cleared = feed(fam, np.zeros(20), ts=np.arange(110, 130))
    # the last crossing was at t=104; the alarm clears 10 s after the first quiet sample (t=105)
    assert brief(cleared) == [("cusum", "H", False, 115.0)]


def test_cusum_detects_downward_shifts_as_low():
    fam = CusumFamily(1, {0: {"k": 0.5, "h": 4.0, "warmup": 10, "off_delay_s": 0.0}})
    feed(fam, np.tile([9.0, 11.0], 5))
    changes = feed(fam, np.full(5, 8.0), ts=np.arange(10, 15))
    assert [(c.level, c.active, c.limit) for c in changes][:1] == [("L", True, -4.0)]


def test_cusum_after_a_constant_warm_up_treats_any_move_as_a_shift():
    fam = CusumFamily(1, {0: {"warmup": 5, "off_delay_s": 0.0}})
    assert feed(fam, np.full(10, 3.0)) == []
    assert [(c.level, c.active) for c in feed(fam, [3.5, 3.0], ts=[10, 11])] == [("H", True), ("H", False)]


# --- robust ----------------------------------------------------------------------------------


def test_robust_flags_a_spike_against_the_rolling_median_and_mad():
    fam = RobustFamily(1, {0: {"window": 9, "threshold": 3.5, "on_delay_s": 0.0, "off_delay_s": 0.0}})
    base = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.2, 10.1, 9.9]
    assert feed(fam, base) == []
    changes = feed(fam, [14.0, 10.0], ts=[9, 10])
    assert brief(changes) == [("robust", "H", True, 9.0), ("robust", "H", False, 10.0)]
    # median 10.0, MAD 0.1 -> z = 4 / 0.14826
    assert changes[0].context["z"] == pytest.approx(4.0 / 0.14826)


def test_robust_is_silent_until_its_window_is_full():
    fam = RobustFamily(1, {0: {"window": 5}})
    assert feed(fam, [0.0, 1000.0, -1000.0, 5.0, 0.0]) == []
    assert fam.kernel.count[0] == 5


def test_robust_min_mad_keeps_a_quantised_signal_quiet():
    quiet = RobustFamily(1, {0: {"window": 5, "min_mad": 1.0, "on_delay_s": 0.0}})
    strict = RobustFamily(1, {0: {"window": 5, "on_delay_s": 0.0}})
    values = [4.0, 4.0, 4.0, 4.0, 4.0, 5.0]
    assert feed(quiet, values) == []
    assert brief(feed(strict, values)) == [("robust", "H", True, 5.0)]


def test_robust_uses_the_resolution_of_a_quantised_window_when_its_mad_is_zero():
    fam = RobustFamily(1, {0: {"window": 7, "threshold": 3.5, "on_delay_s": 0.0, "off_delay_s": 0.0}})
    # MAD 0 (most samples on 4.0), resolution 0.5: one step is z = 1, eight steps z = 8
    assert feed(fam, [4.0, 4.0, 4.5, 4.0, 4.0, 3.5, 4.0, 4.5, 4.0, 3.5]) == []
    changes = feed(fam, [8.0], ts=[10])
    assert brief(changes) == [("robust", "H", True, 10.0)]
    assert changes[0].context["z"] == pytest.approx(8.0)


# --- flatline --------------------------------------------------------------------------------


def test_flatline_raises_after_the_value_froze_for_the_duration():
    fam = FlatlineFamily(1, {0: {"eps": 0.05, "duration_s": 30.0}})
    ts = np.arange(0, 40, 1.0)
    values = np.full(40, 7.0) + np.where(np.arange(40) % 2, 0.04, 0.0)  # wobble below eps
    changes = feed(fam, values, ts=ts)
    assert brief(changes) == [("flatline", "FLAT", True, 30.0)]
    assert brief(feed(fam, [7.5], ts=[40])) == [("flatline", "FLAT", False, 40.0)]


def test_flatline_is_not_reset_by_bad_samples_in_the_stretch():
    fam = FlatlineFamily(1, {0: {"duration_s": 10.0}})
    changes = feed(fam, [1.0, 99.0, math.nan, 1.0], ts=[0, 4, 6, 10], quality=[GOOD, BAD, GOOD, GOOD])
    assert brief(changes) == [("flatline", "FLAT", True, 10.0)]


# --- sensor ----------------------------------------------------------------------------------


def test_sensor_params_come_from_the_tag_range():
    assert SensorFamily.params_from_range([-50, 400.0]) == ({"lo": -50.0, "hi": 400.0}, None)
    assert SensorFamily.params_from_range([1.0]) == (None, "must be [lo, hi] with two finite numbers, not [1.0]")
    assert SensorFamily.check({"lo": 5.0, "hi": 5.0}) == [("hi", "must be above lo (5.0)")]


def test_sensor_alarms_out_of_range_bad_quality_and_nan_but_not_comm_fail():
    fam = SensorFamily(1, {0: {"lo": -50.0, "hi": 400.0}})
    changes = feed(
        fam,
        [20.0, 450.0, 20.0, -60.0, 20.0, 20.0, 20.0, 20.0, math.nan, 20.0],
        quality=[GOOD, GOOD, GOOD, GOOD, GOOD, BAD, COMM_FAIL, GOOD, GOOD, GOOD],
    )
    assert [(c.level, c.active, c.limit if not math.isnan(c.limit) else None) for c in changes] == [
        ("H", True, 400.0),
        ("H", False, 400.0),
        ("L", True, -50.0),
        ("L", False, -50.0),
        ("BAD", True, None),
        # the COMM_FAIL sample is skipped: BAD stays active until a GOOD sample
        ("BAD", False, None),
        ("BAD", True, None),
        ("BAD", False, None),
    ]


def test_sensor_without_range_still_reports_bad_quality():
    fam = SensorFamily(2, {1: {}})
    changes = fam.update(
        np.array([1, 1], dtype=np.int32), np.array([1e12, 3.0]), np.array([0.0, 1.0]),
        np.array([GOOD, BAD], dtype=np.uint8),
    )
    assert [(c.tag, c.level, c.active) for c in changes] == [(1, "BAD", True)]


def test_engine_runs_every_family_over_one_batch_in_family_order():
    from detectors.engine import Engine
    from detectors.families import LimitFamily

    engine = Engine(3, [
        LimitFamily(3, {0: {"h": 10.0}}),
        SensorFamily(3, {0: {"lo": 0.0, "hi": 100.0}, 1: {}}),
        FlatlineFamily(3, {2: {"duration_s": 1.0}}),
    ])
    tag = np.array([0, 1, 2, 2], dtype=np.int32)
    changes = engine.process(tag, np.array([150.0, 1.0, 5.0, 5.0]), np.array([0.0, 0.0, 0.0, 1.0]),
                             np.array([GOOD, BAD, GOOD, GOOD], dtype=np.uint8))
    assert [(c.kind, c.tag, c.level) for c in changes] == [
        ("limit", 0, "H"), ("sensor", 0, "H"), ("sensor", 1, "BAD"), ("flatline", 2, "FLAT"),
    ]
