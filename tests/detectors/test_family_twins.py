"""Every statistical and rate kernel agrees with its pure-Python twin, event for event, on
streams with NaN, gaps, equal timestamps, BAD/COMM_FAIL samples and unwatched tags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_twins import CusumTwin, EwmaTwin, FlatlineTwin, RobustTwin, RocTwin, SensorTwin, run_twins
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.base import BAD, COMM_FAIL, GOOD, UNCERTAIN
from detectors.families import CusumFamily, EwmaFamily, FlatlineFamily, RobustFamily, RocFamily, SensorFamily

# family, twin, per-tag parameter sets, the values a stream draws from
CASES = {
    "roc": (RocFamily, RocTwin, [
        {"max_per_s": 1.0, "window_s": 0.0},
        {"max_per_s": 0.5, "window_s": 1.0, "on_delay_s": 1.0},
        {"max_per_s": 2.0, "window_s": 2.5, "off_delay_s": 3.0},
    ], [0.0, 0.25, 0.5, 1.0, 2.0, 5.0, -3.0]),
    "ewma": (EwmaFamily, EwmaTwin, [
        {"lambda_": 0.2, "L": 3.0, "warmup": 5, "on_delay_s": 0.0, "off_delay_s": 0.0},
        {"lambda_": 1.0, "L": 2.0, "warmup": 2, "on_delay_s": 0.5, "off_delay_s": 0.0},
        {"lambda_": 0.3, "L": 2.5, "mean": 0.0, "sigma": 1.0, "off_delay_s": 1.0, "on_delay_s": 0.0},
        {"lambda_": 0.5, "L": 3.0, "warmup": 3, "min_sigma": 0.5, "on_delay_s": 0.0, "off_delay_s": 0.0},
    ], [-4.0, -1.5, -0.5, 0.0, 0.3, 0.5, 1.0, 2.0, 6.0]),
    "cusum": (CusumFamily, CusumTwin, [
        {"k": 0.5, "h": 4.0, "warmup": 5, "off_delay_s": 0.0},
        {"k": 0.0, "h": 1.0, "warmup": 2, "off_delay_s": 0.0},
        {"k": 0.25, "h": 3.0, "mean": 0.0, "sigma": 1.0, "off_delay_s": 2.0},
        {"k": 0.5, "h": 2.0, "warmup": 3, "min_sigma": 0.5, "off_delay_s": 0.5},
    ], [-4.0, -1.5, -0.5, 0.0, 0.3, 0.5, 1.0, 2.0, 6.0]),
    "robust": (RobustFamily, RobustTwin, [
        {"window": 3, "threshold": 2.0, "on_delay_s": 0.0, "off_delay_s": 0.0},
        {"window": 4, "threshold": 3.5, "min_mad": 0.1, "on_delay_s": 0.0, "off_delay_s": 0.0},
        {"window": 7, "threshold": 3.0, "on_delay_s": 0.5, "off_delay_s": 1.0},
    ], [-10.0, -1.0, 0.0, 0.0, 0.1, 0.2, 0.5, 1.0, 30.0]),
    "flatline": (FlatlineFamily, FlatlineTwin, [
        {"eps": 0.0, "duration_s": 1.0},
        {"eps": 0.15, "duration_s": 2.0, "off_delay_s": 1.0},
        {"eps": 1.0, "duration_s": 0.5},
    ], [0.0, 0.0, 0.0, 0.1, 0.2, 1.0]),
    "sensor": (SensorFamily, SensorTwin, [
        {"lo": 0.0, "hi": 10.0},
        {"lo": -5.0, "hi": 5.0, "on_delay_s": 1.0, "off_delay_s": 0.5},
        {},
    ], [-6.0, -5.0, 0.0, 5.0, 5.5, 10.0, 10.5]),
}

STEPS = [0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 7.0]  # 0 = equal timestamps, 7 = a gap
QUALITIES = [GOOD] * 5 + [UNCERTAIN, BAD, COMM_FAIL]


def kernel_events(fam, tag, value, ts, quality, batch: int):
    """(sample index, previous, new, detail) from the kernel, fed in batches of ``batch``."""
    out = []
    for start in range(0, len(tag), batch):
        sl = slice(start, start + batch)
        ev = fam.kernel.update(*_contiguous(tag[sl], value[sl], ts[sl], quality[sl]))
        if ev is not None:
            out += [(start + i, p, n, x) for i, p, n, x in zip(*(a.tolist() for a in ev), strict=True)]
    return out


def _contiguous(*arrays):
    return [np.ascontiguousarray(a) for a in arrays]


def same(a, b) -> bool:
    """Events equal; details within rounding (compilers may fuse multiply-adds)."""
    if len(a) != len(b):
        return False
    for (i, p, n, x), (j, q, m, y) in zip(a, b, strict=True):
        if (i, p, n) != (j, q, m):
            return False
        if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)):
            return False
    return True


def check_agreement(name, tag, value, ts, quality, batch):
    family, twin, params, _ = CASES[name]
    for p in params:
        assert family.check(p) == [], (name, p)
    fam = family(len(params) + 1, dict(enumerate(params)))
    twins = {i: twin(**p) for i, p in enumerate(params)}
    expected = run_twins(twins, tag, value, ts, quality)
    got = kernel_events(fam, tag, value, ts, quality, batch)
    assert same(got, expected), (got[:10], expected[:10])
    # the family turns the same events into condition changes without losing any
    return expected


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_kernel_agrees_with_twin(name, data):
    _, _, params, values = CASES[name]
    samples = data.draw(st.lists(st.tuples(
        st.integers(0, len(params)),  # the last tag index is not watched
        st.sampled_from(values) | st.just(math.nan),
        st.sampled_from(STEPS),
        st.sampled_from(QUALITIES),
    ), min_size=1, max_size=120))
    batch = data.draw(st.integers(1, 50))
    tag = np.array([s[0] for s in samples], dtype=np.int32)
    value = np.array([s[1] for s in samples])
    ts = np.cumsum([s[2] for s in samples])
    quality = np.array([s[3] for s in samples], dtype=np.uint8)
    check_agreement(name, tag, value, ts, quality, batch)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_agrees_with_twin_on_long_streams(name):
    # long seeded streams reach states (full windows, re-crossings after reset, delays expiring
    # across batches) that short examples reach rarely
    _, _, params, values = CASES[name]
    rng = np.random.default_rng(7)
    n = 20_000
    tag = rng.integers(0, len(params) + 1, n).astype(np.int32)
    value = rng.choice(np.array(values), n)
    drift = np.repeat(rng.normal(0, 1.0, n // 200 + 1), 200)[:n]  # level shifts every 200 samples
    value = value + np.round(drift) * (name in ("ewma", "cusum"))
    value[rng.random(n) < 0.03] = math.nan
    ts = np.cumsum(rng.choice(np.array(STEPS), n))
    quality = rng.choice(np.array(QUALITIES, dtype=np.uint8), n)
    events = check_agreement(name, tag, value, ts, quality, 3_000)
    assert len(events) > 50
