"""The limit family: HH/H/L/LL with deadband and delays, agreeing with its pure-Python twin."""

from __future__ import annotations

import math

import numpy as np
from batches import feed
from detector_twins import LimitTwin, run_twins
from hypothesis import given, settings
from hypothesis import strategies as st

import detectors
from detectors.base import BAD, COMM_FAIL, GOOD, UNCERTAIN
from detectors.engine import Engine
from detectors.families import LimitFamily

LIMITS = {"hh": 180.0, "h": 160.0, "l": 20.0, "ll": 10.0}


def levels(changes):
    return [(c.level, c.active) for c in changes]


def family(n_tags=1, **params):
    return LimitFamily(n_tags, {0: {**LIMITS, **params}})


# --- check -----------------------------------------------------------------------------------


def test_check_accepts_a_full_ordered_table():
    assert LimitFamily.check({**LIMITS, "deadband": 1.0, "on_delay_s": 2, "off_delay_s": 5}) == []


def test_check_accepts_any_subset_of_limits():
    assert LimitFamily.check({"h": 5}) == []
    assert LimitFamily.check({"hh": 9, "ll": -3}) == []
    assert LimitFamily.check({}) == []


def test_check_names_the_limit_out_of_order():
    assert LimitFamily.check({"hh": 150.0, "h": 160.0}) == [("hh", "must be above h (160.0)")]
    assert LimitFamily.check({"h": 160, "ll": 170}) == [("h", "must be above ll (170.0)")]
    assert LimitFamily.check({"l": 20, "ll": 20}) == [("l", "must be above ll (20.0)")]


def test_check_rejects_negative_deadband_and_delays():
    problems = LimitFamily.check({"h": 1, "deadband": -1, "on_delay_s": -0.5, "off_delay_s": -2})
    assert [k for k, _ in problems] == ["deadband", "on_delay_s", "off_delay_s"]
    assert problems[0][1] == "must be >= 0, not -1"


def test_check_rejects_unknown_keys_and_non_numbers():
    problems = dict(LimitFamily.check({"hi": 3, "h": "high", "deadband": True}))
    assert problems["hi"].startswith("unknown key")
    assert problems["h"] == "must be a number, not 'high'"
    assert problems["deadband"] == "must be a number, not True"


def test_family_is_registered_under_its_name():
    assert detectors.load("limit") is LimitFamily


# --- limits and deadband ---------------------------------------------------------------------


def test_high_enters_at_the_limit_and_clears_only_past_the_deadband():
    fam = family(deadband=1.0)
    assert feed(fam, [159.9]) == []
    [c] = feed(fam, [160.0], ts=[1])
    assert (c.level, c.active, c.limit, c.value, c.ts, c.kind) == ("H", True, 160.0, 160.0, 1.0, "limit")
    assert feed(fam, [159.5, 159.01, 170.0], ts=[2, 3, 4]) == []
    [c] = feed(fam, [159.0], ts=[5])
    assert (c.level, c.active, c.limit) == ("H", False, 160.0)


def test_low_mirrors_high():
    fam = family(deadband=2.0)
    assert levels(feed(fam, [20.0, 21.9, 22.0])) == [("L", True), ("L", False)]
    assert levels(feed(fam, [10.0, 11.9, 12.0, 22.0], ts=[3, 4, 5, 6])) == [("LL", True), ("L", True), ("L", False)]


def test_escalation_is_a_level_change_of_the_same_alarm():
    fam = family(deadband=1.0)
    changes = feed(fam, [165.0, 181.0, 179.5, 178.9, 150.0])
    assert [(c.level, c.active, c.limit) for c in changes] == [
        ("H", True, 160.0),
        ("HH", True, 180.0),
        ("H", True, 160.0),
        ("H", False, 160.0),
    ]
    assert changes[1].context["previous"] == "H"


def test_jump_straight_to_hh_and_back_to_normal():
    fam = family()
    assert [(c.level, c.active, c.limit) for c in feed(fam, [50.0, 200.0, 50.0])] == [
        ("HH", True, 180.0),
        ("HH", False, 180.0),
    ]


def test_only_hh_configured_clears_to_normal():
    fam = LimitFamily(1, {0: {"hh": 100.0, "deadband": 5.0}})
    assert levels(feed(fam, [100.0, 96.0, 95.0])) == [("HH", True), ("HH", False)]


def test_wide_deadband_lets_the_other_side_win():
    fam = LimitFamily(1, {0: {"h": 10.0, "l": 5.0, "deadband": 20.0}})
    assert levels(feed(fam, [10.0, 4.0, 11.0])) == [("H", True), ("L", True), ("H", True)]


# --- delays ----------------------------------------------------------------------------------


def test_on_delay_ignores_a_short_excursion():
    fam = family(on_delay_s=2.0)
    assert feed(fam, [165.0, 165.0, 150.0, 150.0], ts=[0, 1.5, 1.9, 3]) == []


def test_on_delay_raises_once_the_level_held_long_enough():
    fam = family(on_delay_s=2.0)
    changes = feed(fam, [165.0, 166.0, 167.0], ts=[10, 11, 12])
    assert [(c.level, c.ts, c.value) for c in changes] == [("H", 12.0, 167.0)]


def test_off_delay_holds_the_alarm_until_normal_lasted():
    fam = family(off_delay_s=5.0)
    assert levels(feed(fam, [165.0], ts=[0])) == [("H", True)]
    assert feed(fam, [150.0, 150.0], ts=[1, 5.9]) == []
    [c] = feed(fam, [150.0], ts=[6])
    assert (c.level, c.active, c.ts) == ("H", False, 6.0)


def test_off_delay_restarts_when_the_value_returns_before_it_expires():
    fam = family(off_delay_s=5.0)
    feed(fam, [165.0], ts=[0])
    assert feed(fam, [150.0, 165.0, 150.0, 150.0], ts=[1, 4, 5, 9]) == []
    assert levels(feed(fam, [150.0], ts=[10])) == [("H", False)]


def test_on_delay_restarts_when_the_raw_level_changes():
    fam = family(on_delay_s=2.0)
    # raw H from t=0, raw HH from t=1.5: the pending change restarts, so nothing at t=2
    assert feed(fam, [165.0, 185.0, 185.0], ts=[0, 1.5, 2.0]) == []
    [c] = feed(fam, [185.0], ts=[3.5])
    assert (c.level, c.active, c.ts) == ("HH", True, 3.5)


def test_de_escalation_uses_the_off_delay():
    fam = family(on_delay_s=0.0, off_delay_s=3.0)
    feed(fam, [185.0], ts=[0])
    assert feed(fam, [170.0, 170.0], ts=[1, 3.9]) == []
    assert levels(feed(fam, [170.0], ts=[4])) == [("H", True)]


def test_zero_delay_is_immediate_even_with_equal_timestamps():
    fam = family()
    assert levels(feed(fam, [165.0, 150.0, 185.0], ts=[7, 7, 7])) == [("H", True), ("H", False), ("HH", True)]


def test_equal_timestamps_do_not_satisfy_a_positive_delay():
    fam = family(on_delay_s=1.0)
    assert feed(fam, [165.0] * 5, ts=[3] * 5) == []
    assert levels(feed(fam, [165.0], ts=[4])) == [("H", True)]


# --- quality and NaN -------------------------------------------------------------------------


def test_nan_and_bad_samples_leave_state_and_timers_untouched():
    fam = family(on_delay_s=2.0)
    changes = feed(
        fam,
        [165.0, math.nan, 0.0, 0.0, 165.0],
        ts=[0, 1, 1.5, 1.8, 2.0],
        quality=[GOOD, GOOD, BAD, COMM_FAIL, GOOD],
    )
    # had the BAD zeros counted, the pending H would have been cancelled and restarted at t=2
    assert [(c.level, c.ts) for c in changes] == [("H", 2.0)]


def test_uncertain_samples_are_evaluated():
    fam = family()
    assert levels(feed(fam, [165.0], quality=[UNCERTAIN])) == [("H", True)]


def test_unwatched_and_unknown_tags_are_ignored():
    fam = LimitFamily(3, {1: dict(LIMITS)})
    tag = np.array([0, 2, 7, -1, 1], dtype=np.int32)
    changes = fam.update(tag, np.full(5, 500.0), np.zeros(5), np.zeros(5, dtype=np.uint8))
    assert [(c.tag, c.level) for c in changes] == [(1, "HH")]


def test_every_transition_in_one_batch_is_reported_in_order():
    fam = LimitFamily(2, {0: dict(LIMITS), 1: {"h": 1.0}})
    tag = np.array([0, 1, 0, 1, 0], dtype=np.int32)
    value = np.array([165.0, 2.0, 185.0, 0.0, 100.0])
    changes = fam.update(tag, value, np.arange(5.0), np.zeros(5, dtype=np.uint8))
    assert [(c.tag, c.level, c.active) for c in changes] == [
        (0, "H", True),
        (1, "H", True),
        (0, "HH", True),
        (1, "H", False),
        (0, "HH", False),
    ]


def test_engine_runs_the_family_over_a_batch():
    engine = Engine(2, [LimitFamily(2, {1: {"h": 5.0}})])
    changes = engine.process(
        np.array([0, 1], dtype=np.int32), np.array([9.0, 9.0]), np.array([1.0, 1.0]), np.zeros(2, dtype=np.uint8)
    )
    assert [(c.tag, c.kind, c.level, c.active) for c in changes] == [(1, "limit", "H", True)]


def test_accepts_non_contiguous_and_other_dtypes():
    fam = family()
    values = np.array([[165.0, 0.0], [150.0, 0.0]])[:, 0]
    changes = fam.update(np.array([0, 0], dtype=np.int64), values, np.array([0, 1]), np.array([0, 0]))
    assert levels(changes) == [("H", True), ("H", False)]


# --- kernel and twin agree -------------------------------------------------------------------

LIMIT_SETS = [
    {"hh": 180.0, "h": 160.0, "l": 20.0, "ll": 10.0},
    {"h": 160.0, "l": 20.0},
    {"hh": 180.0, "ll": 10.0},
    {"h": 160.0},
    {"l": 20.0, "ll": 10.0},
]
limit_sets = st.sampled_from(LIMIT_SETS)
params_strategy = st.builds(
    lambda limits, db, on, off: {**limits, "deadband": db, "on_delay_s": on, "off_delay_s": off},
    limit_sets,
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 200.0]),
    st.sampled_from([0.0, 0.0, 0.5, 2.0]),
    st.sampled_from([0.0, 0.0, 1.0, 5.0]),
)


def edges(params):
    """Values that exercise every limit of the tag: the limit, its deadband edge, either side."""
    out = [90.0, -1e6, 1e6, math.nan]
    db = params["deadband"]
    for key, sign in (("hh", -1), ("h", -1), ("l", 1), ("ll", 1)):
        if key in params:
            lim = params[key]
            out += [lim, lim + 0.25, lim - 0.25, lim + sign * db, lim + sign * (db + 0.25)]
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_kernel_agrees_with_twin(data):
    params = data.draw(st.lists(params_strategy, min_size=1, max_size=3))
    # each tag's value walks up and down its own ladder of edge values, so streams climb
    # through every level, flap around limits and come back, as plant signals do
    ladders = [sorted(v for v in edges(p) if not math.isnan(v)) for p in params]
    moves = data.draw(st.lists(st.tuples(
        st.integers(0, len(params)),  # the last tag index is not watched
        st.integers(-2, 2) | st.integers(-25, 25),  # small moves and jumps across levels
        st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 6.0]),  # time step; 0 = equal timestamps
        st.sampled_from([GOOD, GOOD, GOOD, GOOD, UNCERTAIN, BAD, COMM_FAIL]),
        st.booleans() | st.just(False) | st.just(False),  # NaN sample
    ), min_size=10, max_size=200))
    pos = [len(lad) // 2 for lad in ladders] + [0]
    samples = []
    for t, step, dt, q, nan in moves:
        if t < len(params):
            pos[t] = min(max(pos[t] + step, 0), len(ladders[t]) - 1)
            v = math.nan if nan else ladders[t][pos[t]]
        else:
            v = 1e9
        samples.append((t, v, dt, q))
    cuts = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=10))

    fam = LimitFamily(len(params) + 1, dict(enumerate(params)))
    twins = {i: LimitTwin(**p) for i, p in enumerate(params)}
    tag = np.array([s[0] for s in samples], dtype=np.int32)
    value = np.array([s[1] for s in samples])
    ts = np.cumsum([s[2] for s in samples])
    quality = np.array([s[3] for s in samples], dtype=np.uint8)
    expected = run_twins(twins, tag, value, ts, quality)

    got = []
    start = 0
    while start < len(samples):
        for cut in cuts:
            stop = min(len(samples), start + cut)
            for c in fam.update(tag[start:stop], value[start:stop], ts[start:stop], quality[start:stop]):
                got.append((c.tag, c.level, c.active, c.ts, c.value, c.limit))
            start = stop

    names = {2: "HH", 1: "H", -1: "L", -2: "LL"}
    keys = {2: "hh", 1: "h", -1: "l", -2: "ll"}
    want = []
    for i, prev, new in expected:
        t = int(tag[i])
        level = new or prev
        want.append((t, names[level], new != 0, float(ts[i]), float(value[i]), params[t][keys[level]]))
    assert got == want


def test_kernel_agrees_with_twin_on_long_walks_over_every_parameter_combination():
    # Long seeded streams reach rare paths (a wide deadband holding one side while the value
    # enters the other, HH falling straight into H's deadband) that short examples seldom do.
    combos = [
        {**limits, "deadband": db, "on_delay_s": on, "off_delay_s": off}
        for limits in LIMIT_SETS
        for db in (0.0, 0.5, 1.0, 3.0, 200.0)
        for on in (0.0, 0.5, 2.0)
        for off in (0.0, 1.0, 5.0)
    ]
    rng = np.random.default_rng(18)
    n = 60_000
    tag = rng.integers(0, len(combos), n).astype(np.int32)
    ladders = [sorted(v for v in edges(p) if not math.isnan(v)) for p in combos]
    pos = np.array([len(lad) // 2 for lad in ladders])
    steps = np.where(rng.random(n) < 0.2, rng.integers(-25, 26, n), rng.integers(-2, 3, n))
    value = np.empty(n)
    for i in range(n):
        t = tag[i]
        pos[t] = min(max(pos[t] + steps[i], 0), len(ladders[t]) - 1)
        value[i] = ladders[t][pos[t]]
    value[rng.random(n) < 0.03] = math.nan
    ts = np.cumsum(rng.choice([0.0, 0.0, 0.01, 0.05, 0.2], n))
    quality = rng.choice(np.array([GOOD] * 6 + [UNCERTAIN, BAD, COMM_FAIL], dtype=np.uint8), n)

    fam = LimitFamily(len(combos), dict(enumerate(combos)))
    twins = {i: LimitTwin(**p) for i, p in enumerate(combos)}
    expected = run_twins(twins, tag, value, ts, quality)
    got = []
    for start in range(0, n, 7_000):
        sl = slice(start, start + 7_000)
        got += [(c.tag, c.ts, c.level, c.active) for c in fam.update(tag[sl], value[sl], ts[sl], quality[sl])]
    names = {2: "HH", 1: "H", -1: "L", -2: "LL"}
    assert len(expected) > 1000
    assert got == [(int(tag[i]), float(ts[i]), names[new or prev], new != 0) for i, prev, new in expected]
