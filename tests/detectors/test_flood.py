"""Per-tag detectors on signals that never misbehave, through the live Pipeline (bench/flood.py):
the untrained defaults stay at a few alarms a day; the old defaults flooded."""

from __future__ import annotations

import numpy as np
import pytest

from bench.flood import DAY, DETECTORS, SIGNALS, config_data, load, onsets_per_day, signal

#: the defaults before this measurement: what flooded
OLD_DEFAULTS = {
    "ewma": {"L": 3.0, "warmup": 30, "on_delay_s": 0.0, "off_delay_s": 0.0},
    "cusum": {"k": 0.5, "h": 5.0, "warmup": 30, "off_delay_s": 10.0},
    "robust": {"window": 31, "threshold": 3.5, "on_delay_s": 0.0, "off_delay_s": 0.0},
    "flatline": {"duration_s": 60.0},
}


def rates(tmp_path, dt: float, tables=None, days: float = 7.0, seed: int = 1):
    rng = np.random.default_rng(seed)
    series = {name: signal(name, int(days * DAY / dt), dt, rng) for name in SIGNALS}
    cfg = load(config_data(list(SIGNALS), tables), tmp_path)
    return onsets_per_day(cfg, series[SIGNALS[0]][0], {n: v for n, (_, v) in series.items()})


@pytest.mark.parametrize("dt", [10.0, 1.0])
def test_untrained_defaults_alarm_at_most_a_few_times_a_day(tmp_path, dt):
    r = rates(tmp_path, dt)
    worst = max(r, key=r.get)
    assert r[worst] <= 4.0, (worst, r[worst], r)
    # steady signals, noisy or coarse, do not alarm at all
    for name in ("white", "ar1", "quantized"):
        assert all(r[(name, d)] == 0.0 for d in DETECTORS), {d: r[(name, d)] for d in DETECTORS}


def test_the_old_defaults_flooded(tmp_path):
    r = rates(tmp_path, 10.0, OLD_DEFAULTS)
    assert r[("white", "ewma")] > 20 and r[("ar1", "cusum")] > 100 and r[("drift", "robust")] > 20
    assert sum(r.values()) > 1000
