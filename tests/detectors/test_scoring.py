"""Scoring alarms against labels: point-wise rates, event delays, and the SKAB NAB scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.scoring import (
    EventScores,
    NabCounts,
    PointScores,
    changepoints,
    nab_curve,
    nab_windows,
    summary,
)


def test_point_scores_pool_over_files():
    a = PointScores.of([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    b = PointScores.of([1, 0], [1, 0])
    s = a + b
    assert (s.tp, s.tn, s.fp, s.fn) == (2, 3, 1, 1)
    assert s.f1 == pytest.approx(2 / (2 + 1)) == pytest.approx(2 * s.precision * s.recall / (s.precision + s.recall))
    assert s.far == pytest.approx(25.0) and s.mar == pytest.approx(100 / 3)


def test_events_measure_delay_misses_and_false_alarms_per_day():
    ts = np.arange(12) * 3600.0
    labels = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    alarms = [1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    e = EventScores.of(labels, alarms, ts)
    assert e.delays == [3600.0] and e.missed == 1 and e.false_alarms == 2
    assert e.false_alarms_per_day == pytest.approx(2 * 24 / 11)
    s = summary(labels, alarms, ts)
    assert s["mean_detection_delay_s"] == 3600.0 and s["recall"] == pytest.approx(2 / 5)


def test_predicted_changepoints_are_the_alarm_edges_with_the_first_sample_as_is():
    assert changepoints([1, 1, 0, 0, 1]).astype(int).tolist() == [1, 0, 1, 0, 1]
    assert changepoints([0, 1, 1]).astype(int).tolist() == [0, 1, 0]


def test_overlapping_windows_are_cut_from_the_right():
    assert nab_windows([0, 30, 200], 60) == [(0, 60), (60, 90), (200, 260)]


def test_nab_curve_runs_from_a_tp_to_a_fp():
    assert nab_curve(0.0, 1.0, -0.11) == pytest.approx(1.0)
    assert nab_curve(1.0, 1.0, -0.11) == pytest.approx(-0.11)
    assert nab_curve(0.5, 1.0, -0.11) == pytest.approx((1 - 0.11) / 2, abs=0.01)


def test_nab_perfect_null_and_false_positive_scores():
    ts = np.arange(300.0)
    cps = [100.0]
    perfect = np.zeros(300, dtype=bool)
    perfect[100:150] = True
    assert NabCounts.of(cps, perfect, ts).nab()["Standard"] == pytest.approx(100.0)
    null = NabCounts.of(cps, np.zeros(300, dtype=bool), ts)
    assert null.nab() == {"Standard": 0.0, "LowFP": 0.0, "LowFN": 0.0} and null.missed == 1
    early = np.zeros(300, dtype=bool)
    early[10:20] = True  # two predicted changepoints before the window
    late = np.zeros(300, dtype=bool)
    late[130:] = True  # found half-way through the window
    counts = NabCounts.of(cps, early, ts) + NabCounts.of(cps, late, ts)
    assert (counts.fps, counts.missed, counts.true_cps, counts.delays) == (2, 1, 2, [30.0])
    s = counts.nab()["Standard"]
    raw = -0.11 * 2 - 1 + nab_curve(0.5, 1.0, -0.11)
    assert s == pytest.approx(100 * (raw - (-2)) / (2 - (-2)))


def test_nab_without_true_changepoints_counts_only_false_positives():
    c = NabCounts.of([], [0, 1, 1, 0], np.arange(4.0))
    assert c.fps == 2 and c.score["Standard"] == pytest.approx(-0.22)
    assert math.isnan(c.nab()["Standard"])
