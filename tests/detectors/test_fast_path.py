"""The whole-tick path of the limit, ewma and cusum kernels gives exactly what their per-sample
loop gives: the same events (sample index, levels, detail, bit for bit) and the same state,
batch after batch, whether a batch takes the whole-tick path or falls back to the loop.

Each test feeds the same batches to two families, one of them with ``kernel.fast = False``,
and checks ``kernel.fast_ticks`` to know which path each batch took.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_family_twins import CASES as CHART_CASES
from test_limit_family import edges, params_strategy

from detectors import _kernels
from detectors.base import BAD, COMM_FAIL, GOOD, UNCERTAIN
from detectors.families import CusumFamily, EwmaFamily, LimitFamily
from detectors.kernel import as_batch
from drivers.base import frozen_tags

FAMILIES = {"limit": LimitFamily, "ewma": EwmaFamily, "cusum": CusumFamily}

#: every state array of each kernel, compared byte for byte
STATE = {
    "limit": ("raw", "level", "pending", "since"),
    "ewma": ("count", "mean", "m2", "z", "ucl", "lcl", "level", "pending", "since"),
    "cusum": ("count", "mean", "m2", "inv_sigma", "sp", "sn", "level", "pending", "since"),
}

#: how a batch of whole ticks is broken so that it must take the per-sample loop
BROKEN = ("bad", "comm_fail", "missing", "unwatched", "swapped", "partial")


def pair(name: str, params: list[dict]):
    """Two families watching tags 0..len(params)-1 of len(params)+1 tags (the last one is
    never watched): whole-tick path allowed, and per-sample loop only."""
    fast, loop = (FAMILIES[name](len(params) + 1, dict(enumerate(params))) for _ in range(2))
    loop.kernel.fast = False
    return fast, loop


def events(kernel, tag, value, ts, quality, plan=None):
    """The kernel's events as lists (detail floats as their bits, so NaN and -0.0 compare too)."""
    got = kernel.update(*as_batch(tag, value, ts, quality), plan)
    if got is None:
        return []
    idx, prev, new, detail = got
    return list(zip(idx.tolist(), prev.tolist(), new.tolist(), detail.view(np.int64).tolist(), strict=True))


def assert_same_state(name, fast, loop):
    """The two kernels' state arrays are identical, byte for byte."""
    for key in STATE[name]:
        a, b = getattr(fast, key), getattr(loop, key)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (key, a, b)


def warmed_up(name, fam) -> bool:
    return name == "limit" or bool((fam.kernel.count >= fam.kernel.warmup).all())


def whole_ticks(values, ts, n_slots):
    """Tags, values, times and qualities of whole ticks (values and ts: one row per tick)."""
    ticks = len(values)
    tag = np.tile(np.arange(n_slots, dtype=np.int32), ticks)
    return tag, np.ravel(values), np.ravel(ts), np.full(tag.size, GOOD, dtype=np.uint8)


def whole_tick_count(kernel, tag, quality) -> int:
    """The rule of the whole-tick path, in Python: the number of ticks a batch is judged as,
    0 when it takes the per-sample loop. A tick is each tag of a run of consecutive slots once,
    in slot order (a tick ends before its first tag comes again); the batch is whole such
    ticks, with no BAD or COMM_FAIL sample, every slot having a tag, none warming up."""
    tag_of_slot = kernel.tag_of_slot.tolist()
    n, n_slots = len(tag), len(tag_of_slot)
    if not n or (quality >= BAD).any() or -1 in tag_of_slot:
        return 0
    if hasattr(kernel, "count") and (kernel.count < kernel.warmup).any():
        return 0
    if tag[0] not in tag_of_slot:
        return 0
    first = tag_of_slot.index(int(tag[0]))
    m = 1
    while m < n and m < n_slots - first and tag[m] != tag[0]:
        m += 1
    run = tag_of_slot[first:first + m]
    if n % m or any(tag[j:j + m].tolist() != run for j in range(0, n, m)):
        return 0
    return n // m


def broken(kind, tag, value, ts, quality, n_slots, where):
    """The batch with one defect that makes it other than whole ticks of every slot; ``where``
    picks the sample. (A single tick cut short is still a tick of a shorter run of slots.)"""
    i = where % len(tag)
    tag, value, ts, quality = tag.copy(), value.copy(), ts.copy(), quality.copy()
    if kind in ("bad", "comm_fail"):
        quality[i] = BAD if kind == "bad" else COMM_FAIL
    elif kind == "missing":
        keep = np.arange(len(tag)) != i
        tag, value, ts, quality = tag[keep], value[keep], ts[keep], quality[keep]
    elif kind == "unwatched":
        tag, value, ts, quality = (np.insert(a, i, x) for a, x in ((tag, n_slots), (value, 1e9), (ts, ts[i]),
                                                                     (quality, GOOD)))
    elif kind == "swapped":
        j = i - i % n_slots + (i + 1) % n_slots  # another sample of the same tick
        for a in (tag, value, ts, quality):
            a[i], a[j] = a[j], a[i]
    elif kind == "partial":
        keep = slice(0, len(tag) - 1 - i % (n_slots - 1))
        tag, value, ts, quality = tag[keep], value[keep], ts[keep], quality[keep]
    return tag, value, ts, quality


# --- property: the same streams through both paths ------------------------------------------

LIMIT_PARAMS = st.lists(params_strategy, min_size=2, max_size=5)


def chart_params(name):
    return st.lists(st.sampled_from(CHART_CASES[name][2]), min_size=2, max_size=5)


def ladders(name, params):
    """Per slot, the sorted values its walk moves over."""
    if name == "limit":
        return [sorted(v for v in edges(p) if not math.isnan(v)) for p in params]
    return [sorted(CHART_CASES[name][3])] * len(params)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_whole_ticks_give_what_the_per_sample_loop_gives(name, data):
    params = data.draw(LIMIT_PARAMS if name == "limit" else chart_params(name))
    m = len(params)
    fast, loop = pair(name, params)
    steps = ladders(name, params)
    pos = [len(lad) // 2 for lad in steps]
    clock = 0.0
    expected_fast = 0
    for _ in range(data.draw(st.integers(1, 12))):
        ticks = data.draw(st.integers(1, 4))
        kind = data.draw(st.sampled_from(("ticks",) * 4 + BROKEN))
        # each slot walks its ladder (small moves, jumps across levels, NaN now and then), so
        # levels rise through every limit, hold, flap and clear
        values = np.empty((ticks, m))
        for j in range(ticks):
            for s in range(m):
                pos[s] = min(max(pos[s] + data.draw(st.integers(-2, 2) | st.integers(-9, 9)), 0), len(steps[s]) - 1)
                nan = data.draw(st.integers(0, 9)) == 0
                values[j, s] = math.nan if nan else steps[s][pos[s]]
        # one time per tick, as a device read gives, or per sample; 0 s steps repeat a time
        dt = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 7.0])
        if data.draw(st.booleans()):
            times = np.cumsum([data.draw(dt) for _ in range(ticks)])[:, None] + np.zeros((1, m))
        else:
            times = np.cumsum([data.draw(dt) for _ in range(ticks * m)]).reshape(ticks, m)
        tag, value, ts, quality = whole_ticks(values, clock + times, m)
        clock = float(ts[-1])
        quality[:] = data.draw(st.sampled_from([GOOD, UNCERTAIN]))
        if kind != "ticks":
            tag, value, ts, quality = broken(kind, tag, value, ts, quality, m, data.draw(st.integers(0, 10**6)))
        elif warmed_up(name, fast):
            assert whole_tick_count(fast.kernel, tag, quality) == ticks
        # a broken batch may still be ticks of a shorter run (a single tick missing its last tag)
        expected_fast += whole_tick_count(fast.kernel, tag, quality)

        assert events(fast.kernel, tag, value, ts, quality) == events(loop.kernel, tag, value, ts, quality)
        assert_same_state(name, fast.kernel, loop.kernel)
        assert fast.kernel.fast_ticks == expected_fast
    assert loop.kernel.fast_ticks == 0


# --- seeded long streams: many slots (several blocks per tick), alarms everywhere ----------------


def plant(n_slots, ticks, rng):
    """Noise around 0 with level shifts (one per 1,000 samples) and spikes, NaN now and then."""
    value = rng.normal(0.0, 1.0, (ticks, n_slots))
    for _ in range(ticks * n_slots // 1000):
        s, start = rng.integers(0, n_slots), rng.integers(0, ticks)
        value[start:start + rng.integers(5, 60), s] += rng.choice([-6.0, -3.0, 3.0, 6.0])
    value[rng.random(value.shape) < 0.002] = 40.0 * rng.choice([-1.0, 1.0])
    value[rng.random(value.shape) < 0.01] = math.nan
    return value


SLOT_PARAMS = {
    "limit": [
        {"hh": 6.0, "h": 4.0, "l": -4.0, "ll": -6.0, "deadband": 0.5, "on_delay_s": 2.0, "off_delay_s": 5.0},
        {"h": 3.5, "deadband": 1.0},
        {"l": -3.0, "ll": -5.0, "off_delay_s": 3.0},
    ],
    "ewma": [
        {"lambda_": 0.2, "L": 3.0, "mean": 0.0, "sigma": 1.0, "on_delay_s": 1.0, "off_delay_s": 2.0},
        {"lambda_": 0.5, "L": 3.5, "warmup": 20},
        {"lambda_": 1.0, "L": 3.5, "warmup": 5, "off_delay_s": 4.0},
    ],
    "cusum": [
        {"k": 0.5, "h": 5.0, "mean": 0.0, "sigma": 1.0, "off_delay_s": 10.0},
        {"k": 0.25, "h": 8.0, "warmup": 20, "off_delay_s": 0.0},
        {"k": 1.0, "h": 4.0, "warmup": 5, "min_sigma": 0.5, "off_delay_s": 3.0},
    ],
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("n_slots", [1, 7, 700])
def test_long_streams_through_both_paths(name, n_slots):
    rng = np.random.default_rng(n_slots)
    params = [SLOT_PARAMS[name][s % 3] for s in range(n_slots)]
    fast, loop = pair(name, params)
    ticks = 120_000 // n_slots
    value = plant(n_slots, ticks, rng)
    ts = np.repeat(np.arange(ticks, dtype=np.float64), n_slots).reshape(ticks, n_slots)
    # with one slot a missing, swapped or partial tick is still whole ticks
    kinds = BROKEN if n_slots > 1 else ("bad", "comm_fail", "unwatched")
    n_events = expected_fast = start = 0
    while start < ticks:
        k = int(rng.integers(1, 40))
        batch = whole_ticks(value[start:start + k], ts[start:start + k], n_slots)
        if rng.random() < 0.1:
            batch = broken(str(rng.choice(kinds)), *batch, n_slots, int(rng.integers(0, 10**6)))
        elif warmed_up(name, fast):
            assert whole_tick_count(fast.kernel, batch[0], batch[3]) == len(batch[0]) // n_slots
        expected_fast += whole_tick_count(fast.kernel, batch[0], batch[3])
        got = events(fast.kernel, *batch)
        assert got == events(loop.kernel, *batch)
        n_events += len(got)
        start += k
    assert_same_state(name, fast.kernel, loop.kernel)
    assert n_events > 100
    assert fast.kernel.fast_ticks == expected_fast > ticks / 2


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_infinite_values_through_both_paths(name):
    # usable samples: +-inf drive the sums and averages to inf and NaN the same way in both
    rng = np.random.default_rng(4)
    fast, loop = pair(name, SLOT_PARAMS[name] * 2)
    value = plant(6, 400, rng)
    value[rng.random(value.shape) < 0.02] = math.inf
    value[rng.random(value.shape) < 0.02] = -math.inf
    ts = np.repeat(np.arange(400.0), 6).reshape(400, 6)
    for start in range(0, 400, 20):
        batch = whole_ticks(value[start:start + 20], ts[start:start + 20], 6)
        assert events(fast.kernel, *batch) == events(loop.kernel, *batch)
    assert_same_state(name, fast.kernel, loop.kernel)
    assert fast.kernel.fast_ticks > 300


# --- which batches take the whole-tick path ----------------------------------------------------

QUIET = {
    "limit": {"h": 5.0, "l": -5.0},
    "ewma": {"mean": 0.0, "sigma": 1.0},
    "cusum": {"mean": 0.0, "sigma": 1.0},
}


def ticks_of(n_tags, k, rng):
    """k whole ticks of N(0, 1) values, one time per tick."""
    return whole_ticks(rng.normal(0.0, 1.0, (k, n_tags)), np.repeat(np.arange(k, dtype=np.float64), n_tags), n_tags)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_whole_ticks_take_the_fast_path(name):
    rng = np.random.default_rng(1)
    fam = FAMILIES[name](1000, dict.fromkeys(range(1000), QUIET[name]))
    assert fam.kernel.fast_ticks == 0
    fam.update(*ticks_of(1000, 5, rng))
    assert fam.kernel.fast_ticks == 5
    fam.update(*ticks_of(1000, 1, rng))
    assert fam.kernel.fast_ticks == 6
    with pytest.raises(AttributeError):
        fam.kernel.fast_ticks = 0
    fam.kernel.fast = False
    fam.update(*ticks_of(1000, 5, rng))
    assert fam.kernel.fast_ticks == 6


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("kind", BROKEN)
def test_batches_that_are_not_whole_ticks_fall_back(name, kind):
    rng = np.random.default_rng(2)
    fast, loop = pair(name, [QUIET[name]] * 4)
    batch = broken(kind, *ticks_of(4, 3, rng), 4, 5)
    assert events(fast.kernel, *batch) == events(loop.kernel, *batch)
    assert fast.kernel.fast_ticks == 0
    assert_same_state(name, fast.kernel, loop.kernel)


@pytest.mark.parametrize("name", ["ewma", "cusum"])
def test_charts_take_the_fast_path_once_every_slot_is_warm(name):
    rng = np.random.default_rng(3)
    fam = FAMILIES[name](3, {0: {"warmup": 4}, 1: {"mean": 0.0, "sigma": 1.0}, 2: {"warmup": 6}})
    fam.update(*ticks_of(3, 4, rng))
    assert fam.kernel.fast_ticks == 0  # slot 2 has seen 4 of its 6
    batch = ticks_of(3, 2, rng)
    batch[1][2] = math.nan  # a NaN sample does not count towards warm-up
    fam.update(*batch)
    assert fam.kernel.fast_ticks == 0 and fam.kernel.count[2] == 5
    fam.update(*ticks_of(3, 1, rng))  # warm-up completes inside this batch: the loop takes it
    assert fam.kernel.fast_ticks == 0 and fam.kernel.count[2] == 6
    fam.update(*ticks_of(3, 2, rng))
    assert fam.kernel.fast_ticks == 2


def limit_kernel(slot_of_tag, fast):
    """HH 2, H 1, no low limits, deadband 0.5, no on-delay, 1 s off-delay."""
    n = int(max(slot_of_tag)) + 1
    unset = np.full(n, math.nan)
    return _kernels.LimitKernel(np.array(slot_of_tag, dtype=np.int32), np.full(n, 2.0), np.ones(n), unset, unset,
                                np.full(n, 0.5), np.zeros(n), np.ones(n), fast=fast)


def test_whole_ticks_follow_slot_order_not_tag_order():
    # tag 2 is slot 0 and tag 0 slot 1 (tag 1 not watched): a tick in slot order is [2, 0]
    value = np.array([0.0, 1.5, 3.0, 0.2, 0.9, 2.5])
    ts = np.repeat(np.arange(3.0), 2)
    q = np.zeros(6, dtype=np.uint8)
    for tick, taken in (([0, 2], 0), ([2, 0], 3)):
        fast, loop = limit_kernel([1, -1, 0], True), limit_kernel([1, -1, 0], False)
        assert fast.tag_of_slot.tolist() == [2, 0]
        tag = np.array(tick * 3, dtype=np.int32)
        assert events(fast, tag, value, ts, q) == events(loop, tag, value, ts, q) != []
        assert fast.fast_ticks == taken
        assert_same_state("limit", fast, loop)


def test_a_slot_without_a_tag_rules_out_whole_ticks():
    kernel = limit_kernel([0, 2], True)  # slot 1 has no tag: tag_of_slot is [0, -1, 1]
    # tag -1 where slot 1's tag would be: not watched, so slot 1 must stay normal
    tag = np.array([0, -1, 1] * 3, dtype=np.int32)
    kernel.update(tag, np.full(9, 3.0), np.arange(9.0), np.zeros(9, dtype=np.uint8))
    assert kernel.fast_ticks == 0 and kernel.level.tolist() == [2, 0, 2]


LOUD = {  # parameters that raise and clear often on N(0, 2) values
    "limit": {"hh": 4.0, "h": 2.0, "l": -2.0, "ll": -4.0, "deadband": 0.5, "on_delay_s": 1.0, "off_delay_s": 2.0},
    "ewma": {"mean": 0.0, "sigma": 1.0, "lambda_": 0.5, "L": 1.5, "on_delay_s": 1.0, "off_delay_s": 2.0},
    "cusum": {"mean": 0.0, "sigma": 1.0, "k": 0.25, "h": 2.0},
}


def judge_both(name, fast, loop, tag, value, ts, quality):
    """Feed one batch to both families: the same events and state, and the fast one judges
    exactly the ticks the rule gives, with the plan its family keeps for a frozen tag array.
    Returns (those ticks, the number of events)."""
    expected = whole_tick_count(fast.kernel, tag, quality)
    before = fast.kernel.fast_ticks
    got = events(fast.kernel, tag, value, ts, quality, fast.plan(tag))
    assert got == events(loop.kernel, tag, value, ts, quality)
    assert_same_state(name, fast.kernel, loop.kernel)
    assert fast.kernel.fast_ticks - before == expected
    return expected, len(got)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_ticks_of_a_run_of_consecutive_slots_take_the_fast_path(name):
    # a plant of two devices: tags 0-2 on one, 3-5 on the other; each read is one device's tick
    rng = np.random.default_rng(4)
    fast, loop = pair(name, [LOUD[name]] * 6)
    taken = n_events = 0
    for step in range(40):
        run = [0, 1, 2] if step % 2 else [3, 4, 5]
        k = 1 + step % 3
        tag = np.tile(np.array(run, dtype=np.int32), k)
        value = rng.normal(0.0, 2.0, tag.size)
        value[rng.integers(0, tag.size)] = math.nan
        ts = np.repeat(np.arange(step * 10.0, step * 10.0 + k), len(run))
        quality = np.zeros(tag.size, dtype=np.uint8)
        ticks, got = judge_both(name, fast, loop, tag, value, ts, quality)
        assert ticks == k  # the parameters give mean and sigma: no warm-up
        taken += ticks
        n_events += got
    assert n_events > 10  # alarms raised and cleared along the way
    # not a run of consecutive slots, or out of slot order: the per-sample loop
    for run in ([0, 2], [4, 3], [2, 3, 4, 5, 0]):
        tag = np.array(run, dtype=np.int32)
        batch = (tag, np.zeros(len(run)), np.full(len(run), 1e6), np.zeros(len(run), dtype=np.uint8))
        assert whole_tick_count(fast.kernel, tag, batch[3]) == 0
        assert events(fast.kernel, *batch) == events(loop.kernel, *batch)
        assert fast.kernel.fast_ticks == taken


@pytest.mark.parametrize("lambdas", [(1.0, 1.0, 1.0), (1.0, 1.0, 0.5)])
@pytest.mark.parametrize("edge_slot", [0, 1])
def test_ewma_on_its_control_limits_exactly(lambdas, edge_slot):
    # lambda 1 makes z the sample itself and the limits mean +- L*sigma exactly, so the samples
    # land on the limits to the bit: a limit is not a crossing (z > ucl raises, z == ucl does
    # not), and a slot in alarm at z == ucl is returning. The other slots stay quiet at 0, so
    # the whole-tick pass flags a block only for the slot on the edge.
    params = [{"lambda_": lam, "L": 2.0, "mean": 0.0, "sigma": 1.0, "on_delay_s": 1.0, "off_delay_s": 1.0}
              for lam in lambdas]
    fast, loop = pair("ewma", params)
    assert fast.kernel.one_lambda == (len(set(lambdas)) == 1)
    ucl = float(fast.kernel.ucl[edge_slot])
    assert ucl == 2.0 and float(fast.kernel.lcl[edge_slot]) == -2.0
    up, down = np.nextafter(ucl, np.inf), np.nextafter(-ucl, -np.inf)
    edge = [ucl, up, up, up, ucl, ucl, ucl, 0.0, -ucl, down, down, down, -ucl, -ucl, -ucl, 0.0,
            up, ucl, up, ucl, 0.0]
    n_events = 0
    for t, x in enumerate(edge):
        row = np.zeros((1, len(lambdas)))
        row[0, edge_slot] = x
        batch = whole_ticks(row, np.full((1, len(lambdas)), float(t)), len(lambdas))
        assert whole_tick_count(fast.kernel, batch[0], batch[3]) == 1
        got = events(fast.kernel, *batch)
        assert got == events(loop.kernel, *batch), t
        assert_same_state("ewma", fast.kernel, loop.kernel)
        n_events += len(got)
    assert fast.kernel.fast_ticks == len(edge)
    assert n_events == 4  # up and back, down and back; the last excursion is too short


# --- frozen read plans ------------------------------------------------------------------------


def test_a_frozen_tag_array_can_never_be_written():
    tags = frozen_tags([3, 1, 2])
    assert tags.dtype == np.int32 and tags.tolist() == [3, 1, 2]
    for arr in (tags, tags[1:], tags.reshape(3, 1)):
        with pytest.raises(ValueError):
            arr.flags.writeable = True
        with pytest.raises(ValueError):
            arr[0] = 7


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_frozen_read_plans_are_judged_as_any_batch(name):
    # two devices' frozen plans (tags 0-2 and 3-5, k ticks each), one plan out of slot order,
    # reused batch after batch: same events and state as the per-sample loop, whole ticks
    # counted exactly as the rule says, BAD samples sending a known plan to the loop
    rng = np.random.default_rng(5)
    fast, loop = pair(name, [LOUD[name]] * 6)
    plans = [frozen_tags(np.tile(run, k)) for run in ([0, 1, 2], [3, 4, 5], [4, 3, 5]) for k in (1, 2)]
    taken = n_events = 0
    for step in range(120):
        tag = plans[step % len(plans)]
        value = rng.normal(0.0, 2.0, tag.size)
        ts = np.full(tag.size, float(step))
        quality = np.zeros(tag.size, dtype=np.uint8)
        if step % 7 == 3:
            quality[rng.integers(0, tag.size)] = BAD
        ticks, got = judge_both(name, fast, loop, tag, value, ts, quality)
        taken += ticks
        n_events += got
    assert n_events > 10 and 0 < taken < 120 * 2


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_writeable_tag_array_is_checked_at_every_batch(name):
    # the same array object, rewritten in place between batches: only a frozen array's answer
    # may be kept, so the swapped tick must take the per-sample loop
    rng = np.random.default_rng(6)
    fast, loop = pair(name, [LOUD[name]] * 3)
    tag = np.array([0, 1, 2], dtype=np.int32)
    for step, order in enumerate(([0, 1, 2], [1, 0, 2], [0, 1, 2], [2, 1, 0])):
        tag[:] = order
        value, ts, quality = rng.normal(0.0, 2.0, 3), np.full(3, float(step)), np.zeros(3, dtype=np.uint8)
        before = fast.kernel.fast_ticks
        plan = fast.plan(tag)
        assert plan is None
        assert events(fast.kernel, tag, value, ts, quality, plan) == events(loop.kernel, tag, value, ts, quality)
        assert fast.kernel.fast_ticks - before == (order == [0, 1, 2])
        assert_same_state(name, fast.kernel, loop.kernel)


@pytest.mark.parametrize("name", ["ewma", "cusum"])
def test_a_frozen_plan_seen_during_warm_up_takes_the_fast_path_after_it(name):
    rng = np.random.default_rng(7)
    fam = FAMILIES[name](3, dict.fromkeys(range(3), {"warmup": 5}))
    tag = frozen_tags(np.tile([0, 1, 2], 2))
    for step in range(5):
        fam.update(tag, rng.normal(0.0, 1.0, 6), np.full(6, float(step)), np.zeros(6, dtype=np.uint8))
    assert fam.kernel.fast_ticks == 4  # warm-up ends inside the third batch


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_plans_a_frozen_tag_array_once(name):
    fam = FAMILIES[name](7, dict.fromkeys(range(6), QUIET[name]))
    tag = frozen_tags(np.tile([3, 4, 5], 2))
    plan = fam.plan(tag)
    assert fam.kernel.whole_ticks and plan.ticks == 2 and plan.kernel is fam.kernel
    assert fam.plan(tag) is plan
    # a view of a frozen array is frozen too: one tick of the same run
    assert fam.plan(tag[3:]).ticks == 1
    # an equal array is another array: planned on its own
    again = frozen_tags(tag)
    assert fam.plan(again) is not plan and fam.plan(again).ticks == 2
    # not whole ticks of a run of slots (6 is not watched): planned as such, and kept too
    assert fam.plan(frozen_tags([0, 1, 6])).ticks == 0
    assert fam.plan(frozen_tags([])).ticks == 0


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_keeps_no_plan_for_an_array_that_may_change(name):
    fam = FAMILIES[name](3, dict.fromkeys(range(3), QUIET[name]))
    writeable = np.array([0, 1, 2], dtype=np.int32)
    read_only = writeable.view()
    read_only.flags.writeable = False  # its base is writeable: it may still change
    for tag in (writeable, read_only, np.frombuffer(bytearray(writeable.tobytes()), dtype=np.int32)):
        assert fam.plan(tag) is None
    assert len(fam._plans) == 0


def test_a_family_keeps_at_most_64_plans():
    fam = LimitFamily(3, dict.fromkeys(range(3), QUIET["limit"]))
    plans = [frozen_tags([k % 3]) for k in range(64)]
    kept = [fam.plan(tag) for tag in plans]
    assert all(fam.plan(tag) is plan for tag, plan in zip(plans, kept, strict=True))
    fam.plan(frozen_tags([0, 1]))
    assert len(fam._plans) == 1  # full: started over
    assert fam.plan(plans[0]) is not kept[0] and fam.plan(plans[0]).ticks == 1


def test_families_without_a_whole_tick_path_have_no_plan():
    from detectors.families import FlatlineFamily, RobustFamily, RocFamily, SensorFamily

    tag = frozen_tags([0, 1])
    for cls, params in ((RocFamily, {"max_per_s": 1.0}), (RobustFamily, {}), (FlatlineFamily, {}),
                        (SensorFamily, {"lo": 0.0, "hi": 1.0})):
        fam = cls(2, dict.fromkeys(range(2), params))
        assert not fam.kernel.whole_ticks
        assert fam.plan(tag) is None and fam.kernel.plan(tag) is None


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_kernel_takes_only_its_own_plan_for_the_batch(name):
    fam, other = (FAMILIES[name](3, dict.fromkeys(range(3), QUIET[name])) for _ in range(2))
    tag = frozen_tags(np.tile([0, 1, 2], 2))
    value, ts, quality = np.zeros(6), np.zeros(6), np.zeros(6, dtype=np.uint8)
    with pytest.raises(ValueError):
        fam.kernel.update(tag, value, ts, quality, other.kernel.plan(tag))
    with pytest.raises(ValueError):
        fam.kernel.update(tag[:3], value[:3], ts[:3], quality[:3], fam.kernel.plan(tag))
    fam.kernel.update(tag, value, ts, quality, fam.kernel.plan(tag))
    assert fam.kernel.fast_ticks == 2
