"""Derived model inputs (rates, rolling means, lags): the same rows in train, replay and live,
no alarm before their history exists, and the config keys that declare them."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import load
from agent.config.loader import ConfigError
from agent.pipeline import Pipeline
from agent.replay import Table, replay, train
from detectors.inputs import InputSpec, InputStage, table_rows
from drivers.base import SampleBatch
from tests.conftest import config_dict

T0 = 1_800_000_000.0
TAGS = ["R101.TI01", "R101.PI01", "R101.FI01"]


def model_config(write_config, **keys):
    data = config_dict(models=[{"name": "reactor", "kind": "pca", "tags": TAGS, "file": "models/reactor.npz",
                                "auto": False, "target_far": 0.01, **keys}])
    data["tags"].append({"name": "R101.FI01", "device": "r1-plc", "address": "hr:104", "unit": "m³/h"})
    return load(write_config(data))


def process(n: int, seed: int) -> np.ndarray:
    """Three correlated tags around a slow common movement."""
    rng = np.random.default_rng(seed)
    base = np.sin(np.arange(n) / 40.0) + rng.normal(0, 1, n).cumsum() * 0.02
    return np.column_stack([120 + 10 * base + rng.normal(0, 0.3, n), 0.8 + 0.05 * base + rng.normal(0, 0.002, n),
                            20 + 2 * base + rng.normal(0, 0.06, n)])


def table(X: np.ndarray, t0: float = T0) -> Table:
    return Table(None, t0 + np.arange(len(X), dtype=float), {t: X[:, j].copy() for j, t in enumerate(TAGS)}, {})


class Spy:
    """Records every row an InputStage gives out (the real stage does the work)."""

    def __init__(self, stage: InputStage):
        self.stage, self.X, self.times = stage, [], []
        self._rows = stage.rows
        stage.rows = self.rows

    def rows(self, *batch):
        X, times = self._rows(*batch)
        self.X.append(X)
        self.times.append(times)
        return X, times

    def result(self):
        return np.vstack(self.X), np.concatenate(self.times)


def monitor(pipeline: Pipeline):
    (fam,) = [f for f in pipeline.engine.families if f.name == "pca"]
    return fam.monitors[0]


class Sink:
    def __init__(self):
        self.messages = []

    def append_alarms(self, topic, docs, now=None, encode=None, states=()):
        self.messages += docs


ALL = {"rates": [5.0], "rolling_means": [3.0], "lags": 2, "level_tags": ["R101.TI01", "R101.FI01"]}
# one tag's rate: the kernel sees only that tag's samples, and FI01 comes after it in each tick
ONE = {"rates": [7.0], "rate_tags": ["R101.PI01"], "lags": 1}


@pytest.mark.parametrize("keys", [ALL, ONE], ids=["all", "one"])
def test_derived_inputs_are_the_same_in_train_replay_and_live(write_config, tmp_path, keys):
    cfg = model_config(write_config, **keys)
    spec = cfg.models[0].inputs
    if keys is ALL:
        assert spec.columns()[:7] == ["R101.TI01", "R101.FI01", "rate(R101.TI01, 5)", "rate(R101.PI01, 5)",
                                      "rate(R101.FI01, 5)", "rolling_mean(R101.TI01, 3)", "rolling_mean(R101.PI01, 3)"]
    else:
        assert spec.columns() == [*TAGS, "rate(R101.PI01, 7)", *(f"{c}[t-1]" for c in (*TAGS, "rate(R101.PI01, 7)"))]
    X = process(3000, 1)
    train(cfg, "reactor", table(X[:1000]))
    fresh = X[1000:]
    # train: the rows it fits on
    trained, t_train = table_rows(spec, fresh, T0 + np.arange(len(fresh), dtype=float))
    # replay: chunks of 2048 rows of every tag
    replayed_pipeline_spy = []
    orig = Pipeline.__init__

    def spying_init(self, *a, **k):
        orig(self, *a, **k)
        replayed_pipeline_spy.append(Spy(monitor(self).stage))

    Pipeline.__init__ = spying_init
    try:
        replay(cfg, table(fresh))
    finally:
        Pipeline.__init__ = orig
    replayed, t_replay = replayed_pipeline_spy[0].result()
    # live: one batch per read of the device, through Pipeline.process
    live = Pipeline(cfg, Sink())
    spy = Spy(monitor(live).stage)
    ids = [cfg.tag_index()[t] for t in TAGS]
    for i, row in enumerate(fresh):
        live.process(SampleBatch.build("r1-plc", ids, list(row), T0 + i, 0), T0 + i)
    lived, t_live = spy.result()
    warmup, lags = max(keys["rates"] + keys.get("rolling_means", [])), keys["lags"]
    assert trained.shape == (len(fresh) - warmup - lags, len(spec.columns()))  # warm-up, then the lags
    np.testing.assert_array_equal(t_train, t_replay)
    np.testing.assert_array_equal(t_train, t_live)
    np.testing.assert_allclose(replayed, trained, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lived, trained, rtol=1e-12, atol=1e-12)
    if keys is ONE:
        r = int(t_train[50] - T0)
        assert trained[50, 3] == pytest.approx((fresh[r, 1] - fresh[r - 7, 1]) / 7)
        np.testing.assert_array_equal(trained[50, 4:], trained[49, :4])
        return
    # and the inputs are what they say: rate over 5 s, mean over 3 s, lag 2
    i = 100
    ts = t_train[i]
    r = int(ts - T0)
    assert trained[i, 2] == pytest.approx((fresh[r, 0] - fresh[r - 5, 0]) / 5)
    assert trained[i, 6] == pytest.approx(fresh[r - 3:r + 1, 1].mean())
    np.testing.assert_array_equal(trained[i, 16:], trained[i - 2, :8])


def test_no_alarm_before_the_history_exists(write_config, tmp_path):
    cfg = model_config(write_config, rates=[20.0], lags=3)
    train(cfg, "reactor", table(process(1500, 2)))
    faulty = process(200, 3)
    faulty[:, 1] += 5.0  # broken from the very first row: far outside anything normal
    result = replay(cfg, table(faulty, T0 + 10_000))
    active = [m for m in result.messages if m["kind"] == "pca" and m["state"] == "active"]
    assert active, "the fault is never seen"
    first = min(m["ts"] for m in active)
    from agent.payloads import parse_rfc3339

    # 20 s until the rate window is full, then 3 more complete ticks for the lags
    assert parse_rfc3339(first) == T0 + 10_000 + 20 + 3
    assert not result.alarm_rows[:23].any() and result.alarm_rows[23:].all()


def test_stage_warm_up_counts_from_the_first_complete_tick():
    spec = InputSpec(("a", "b"), rates=(4.0,), lags=1)
    stage = InputStage(2, spec, [0, 1])
    tag = np.tile(np.array([0, 1], dtype=np.int32), 10)
    ts = np.repeat(np.arange(10.0), 2)
    X, times = stage.rows(tag, np.arange(20.0), ts, np.zeros(20, dtype=np.uint8))
    assert times.tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]  # window full at 4, lag 1 needs tick 4 before 5
    assert X.shape == (5, 8)
    np.testing.assert_array_equal(X[1, 4:], X[0, :4])  # lag 1 of tick 6 is tick 5
    assert X[0, 2] == pytest.approx(2.0)  # a's value rises by 2 per second


@pytest.mark.parametrize("keys,problem", [
    ({"lags": -1}, "models[0] (reactor).lags: must be >= 0"),
    ({"rates": [0.0]}, "models[0] (reactor).rates: windows must be > 0 s"),
    ({"rate_tags": ["R101.XX"], "rates": [5.0]}, "models[0] (reactor).rate_tags[0]: 'R101.XX' is not one of the model's"),
    ({"level_tags": [], "rates": []}, "models[0] (reactor): the model has no inputs"),
    ({"target_far": 0.6}, "models[0] (reactor).target_far: must be in [0, 0.5)"),
])
def test_bad_input_keys_are_config_problems(write_config, keys, problem):
    with pytest.raises(ConfigError) as err:
        model_config(write_config, **keys)
    assert problem in str(err.value)


def test_no_input_key_leaves_the_inputs_to_train(write_config):
    assert model_config(write_config).models[0].inputs is None
    assert model_config(write_config, lags=0).models[0].inputs == InputSpec(tuple(TAGS))


def test_derived_input_keys_are_refused_for_a_kind_without_them(write_config):
    data = config_dict(models=[{"name": "loop", "kind": "cva", "tags": ["R101.TI01", "R101.PI01"],
                                "file": "models/loop.npz", "lags": 2, "rates": [5.0]}])
    with pytest.raises(ConfigError) as err:
        load(write_config(data))
    assert "models[0] (loop).rates: not for kind 'cva': it takes no derived inputs" in str(err.value)
    assert "lags" not in str(err.value)  # for cva, `lags` is its past window (detectors/cva.py)


def test_a_model_file_fitted_with_other_inputs_than_the_config_gives_is_refused(write_config, tmp_path):
    from tests.test_replay import plantwatch

    cfg = model_config(write_config, rates=[5.0])
    train(cfg, "reactor", table(process(600, 4)))
    # the same inputs, the tags listed in another order: accepted
    data = config_dict(models=[{"name": "reactor", "kind": "pca", "tags": TAGS[::-1], "file": "models/reactor.npz",
                                "auto": False, "rates": [5.0]}])
    data["tags"].append({"name": "R101.FI01", "device": "r1-plc", "address": "hr:104", "unit": "m³/h"})
    csv = tmp_path / "x.csv"
    csv.write_text("ts," + ",".join(TAGS) + "\n" + "".join(f"{T0 + i},{120 + i % 3},0.8,20\n" for i in range(10)))
    ok = plantwatch("replay", str(write_config(data)), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl"))
    assert ok.returncode == 0, ok.stderr
    data["models"][0]["rates"] = [10.0]
    result = plantwatch("replay", str(write_config(data)), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert (f"{cfg.models[0].file}: fitted with inputs 3 levels, rate over 5 s of 3 tags, but the config gives "
            "3 levels, rate over 10 s of 3 tags: fit it again with `plantwatch train`") in result.stderr, result.stderr
