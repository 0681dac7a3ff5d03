"""Timing of the detection kernels under pytest-benchmark (`make bench`); the normal test run
skips these (addopts has --benchmark-skip). The full table with the C floor and river is
bench/kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.families import CusumFamily, EwmaFamily, LimitFamily
from drivers.base import frozen_tags

N_TAGS = 1_000
TICKS = 200

PARAMS = {
    LimitFamily: {"hh": 4.5, "h": 4.0, "l": -4.0, "ll": -4.5, "deadband": 0.1, "on_delay_s": 2.0},
    EwmaFamily: {"lambda_": 0.2, "L": 6.0, "mean": 0.0, "sigma": 1.0},
    CusumFamily: {"k": 0.5, "h": 50.0, "mean": 0.0, "sigma": 1.0},
}


@pytest.mark.parametrize("path", ["whole-tick", "whole-tick-checked", "per-sample"])
@pytest.mark.parametrize("family", list(PARAMS), ids=lambda c: c.name)
def test_kernel_batch_of_1000_tags_by_200_ticks(benchmark, family, path):
    rng = np.random.default_rng(0)
    tag = np.tile(np.arange(N_TAGS, dtype=np.int32), TICKS)
    if path == "whole-tick":  # a frozen read plan, as drivers pass it: its ticks are checked once
        tag = frozen_tags(tag)
    value = rng.normal(0.0, 1.0, tag.size)
    ts = np.repeat(np.arange(TICKS, dtype=np.float64), N_TAGS)
    quality = np.zeros(tag.size, dtype=np.uint8)
    fam = family(N_TAGS, dict.fromkeys(range(N_TAGS), PARAMS[family]))
    fam.kernel.fast = path != "per-sample"  # per-sample: what a batch of any other shape gets
    start = iter(range(0, 10**9, TICKS))

    def later():
        # the same samples, later each round: time going back would hold pending delays open
        return (tag, value, ts + next(start), quality), {}

    changes = benchmark.pedantic(fam.update, setup=later, rounds=200, warmup_rounds=5)
    # the signal is N(0, 1) against limits far outside it: nothing may alarm
    assert changes == []
    assert (fam.kernel.fast_ticks > 0) == (path != "per-sample")
    benchmark.extra_info["ns_per_sample"] = benchmark.stats.stats.min / tag.size * 1e9
