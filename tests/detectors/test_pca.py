"""PCA monitoring: fitting and control limits, the model file and its errors, and the online
family (ticks, missing variables, contributions) against a pure-Python twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_twins import Debounce
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import detectors
from detectors.base import BAD, COMM_FAIL, GOOD, UNCERTAIN
from detectors.calibrate import Training
from detectors.pca import PcaFamily
from detectors.pca_model import PcaModel, PcaModelError, fit, spe_limit, t2_limit

NAMES = ["FI01", "TI01", "PI01", "LI01"]


def plant(n, rng, noise=0.1):
    """Four tags driven by two latent causes (flow and heat), as in a real unit."""
    flow, heat = rng.normal(size=(2, n))
    X = np.column_stack([
        50 + 5 * flow,
        120 + 3 * heat + 1 * flow,
        8 + 0.4 * flow,
        60 - 2 * heat,
    ])
    return X + noise * rng.normal(size=X.shape) * np.array([5, 3, 0.4, 2])


@pytest.fixture(scope="module")
def model():
    return fit(plant(2000, np.random.default_rng(3)), NAMES, confidence=0.99, variance=0.9)


# --- fitting and limits -----------------------------------------------------------------------


def test_fit_finds_the_latent_structure(model):
    assert model.n_components == 2
    assert model.loadings.shape == (4, 2)
    np.testing.assert_allclose(model.loadings.T @ model.loadings, np.eye(2), atol=1e-12)


def test_fit_honours_an_explicit_component_count():
    m = fit(plant(300, np.random.default_rng(1)), NAMES, n_components=3)
    assert m.n_components == 3 and m.residual_eigenvalues.shape == (1,)


def test_t2_limit_follows_the_f_distribution():
    n, k, a = 400, 3, 0.99
    assert t2_limit(n, k, a) == pytest.approx(k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(a, k, n - k))


def test_spe_limit_matches_jackson_mudholkar_by_hand():
    lam = np.array([0.5, 0.25, 0.1])
    th1, th2, th3 = lam.sum(), (lam**2).sum(), (lam**3).sum()
    h0 = 1 - 2 * th1 * th3 / (3 * th2**2)
    c = stats.norm.ppf(0.95)
    q = th1 * (c * math.sqrt(2 * th2 * h0**2) / th1 + 1 + th2 * h0 * (h0 - 1) / th1**2) ** (1 / h0)
    assert spe_limit(lam, 0.95) == pytest.approx(q)
    assert spe_limit(np.array([]), 0.95) == math.inf


def test_limits_hold_their_false_alarm_rate_on_fresh_normal_data(model):
    t2, spe = model.score(plant(20000, np.random.default_rng(11)))
    assert 0.003 < (t2 > model.t2_limit).mean() < 0.02
    assert 0.003 < (spe > model.spe_limit).mean() < 0.03


def test_fit_rejects_bad_training_data():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="must be"):
        fit(plant(100, rng)[:, :3], NAMES)
    X = plant(100, rng)
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(X, NAMES)
    with pytest.raises(ValueError, match="at least 6 rows"):
        fit(plant(5, rng), NAMES)


def test_a_constant_tag_does_not_break_autoscaling():
    X = plant(500, np.random.default_rng(2))
    X[:, 3] = 7.0
    m = fit(X, NAMES)
    assert m.scale[3] == 1.0 and np.isfinite(m.t2_limit) and np.isfinite(m.spe_limit)


# --- the model file ---------------------------------------------------------------------------


def test_save_and_load_round_trip(model, tmp_path):
    path = tmp_path / "models" / "unit.npz"
    model.save(path)
    back = PcaModel.load(path, names=NAMES)
    assert back.names == tuple(NAMES)
    for key in ("mean", "scale", "loadings", "eigenvalues", "residual_eigenvalues"):
        np.testing.assert_array_equal(getattr(back, key), getattr(model, key))
    assert (back.t2_limit, back.spe_limit, back.n_train) == (model.t2_limit, model.spe_limit, 2000)
    assert list(tmp_path.joinpath("models").iterdir()) == [path]  # no temp file left behind


def test_missing_model_file_names_the_file(tmp_path):
    with pytest.raises(PcaModelError, match=r"absent\.npz: no such model file"):
        PcaModel.load(tmp_path / "absent.npz")


def test_corrupt_model_file_names_the_file(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PcaModelError, match=r"m\.npz: not a readable \.npz model file"):
        PcaModel.load(path)


def test_model_of_other_tags_is_refused(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    with pytest.raises(PcaModelError, match=r"fitted for tags \['FI01', 'TI01', 'PI01', 'LI01'\], but the config"):
        PcaModel.load(path, names=["FI01", "TI01", "PI01", "LI02"])


def test_other_format_version_is_refused(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    data = dict(np.load(path))
    data["version"] = np.array(99)
    np.savez(path, **data)
    with pytest.raises(PcaModelError, match="model format version 99, this build reads version 2: fit it again"):
        PcaModel.load(path)


def test_inconsistent_arrays_are_refused(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    data = dict(np.load(path))
    data["mean"] = data["mean"][:3]
    np.savez(path, **data)
    with pytest.raises(PcaModelError, match=r"mean has shape \(3,\), expected \(4,\) for 4 inputs"):
        PcaModel.load(path)


def test_a_file_that_is_not_a_plantwatch_model_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(PcaModelError, match="not a plantwatch PCA model"):
        PcaModel.load(path)


# --- the online family ------------------------------------------------------------------------


def ticks(X, tags, t0=0.0):
    """Samples of one tick per row, all tags of a row at the same timestamp."""
    n, p = X.shape
    tag = np.tile(np.asarray(tags, dtype=np.int32), n)
    ts = np.repeat(t0 + np.arange(n, dtype=np.float64), p)
    return tag, X.ravel().copy(), ts, np.zeros(n * p, dtype=np.uint8)


def test_family_loads_its_model_files_from_config_params(model, tmp_path):
    path = tmp_path / "reactor.npz"
    model.save(path)
    # tags 3..6 in config order differ from model order: the family maps them by name
    order = [2, 0, 3, 1]
    params = {3 + i: {"model": "reactor", "file": str(path), "name": NAMES[j]} for i, j in enumerate(order)}
    assert all(PcaFamily.check(p) == [] for p in params.values())
    fam = PcaFamily(8, params)
    assert fam.monitors[0].tags.tolist() == [4, 6, 3, 5]
    assert detectors.load("pca") is PcaFamily


def test_family_refuses_a_model_for_other_tags(model, tmp_path):
    path = tmp_path / "reactor.npz"
    model.save(path)
    params = {i: {"model": "r", "file": str(path), "name": n} for i, n in enumerate(["FI01", "TI01", "PI01", "XX"])}
    with pytest.raises(PcaModelError, match="reactor.npz: fitted for tags"):
        PcaFamily(4, params)


def test_check_reports_missing_strings_and_bad_numbers():
    problems = dict(PcaFamily.check({"model": "m", "top": 0, "spe_factor": -1}))
    assert problems == {
        "file": "required (a non-empty string)",
        "name": "required (a non-empty string)",
        "top": "must be a whole number >= 1, not 0",
        "spe_factor": "must be > 0, not -1",
    }


def test_broken_correlation_raises_spe_and_names_the_culprit(model):
    rng = np.random.default_rng(5)
    fam = PcaFamily.for_model(10, model, [6, 7, 8, 9])
    assert fam.update(*ticks(plant(50, rng, noise=0.02), [6, 7, 8, 9])) == []
    X = plant(5, rng, noise=0.02)
    X[:, 2] += 0.6  # PI01 drifts on its own, the flow it follows did not change
    changes = fam.update(*ticks(X, [6, 7, 8, 9], t0=50))
    assert [(c.kind, c.level, c.active, c.ts) for c in changes] == [("pca", "SPE", True, 50.0)]
    # the alarm is anchored on the model (its first tag), the culprit is named in the context
    assert changes[0].tag == 6 and changes[0].context["top_tags"][0] == 8
    assert changes[0].value > changes[0].limit == model.spe_limit
    cleared = fam.update(*ticks(plant(3, rng, noise=0.02), [6, 7, 8, 9], t0=55))
    assert [(c.level, c.active) for c in cleared] == [("SPE", False)]


def test_a_tick_with_a_bad_variable_is_not_judged(model):
    fam = PcaFamily.for_model(4, model, [0, 1, 2, 3])
    tag, value, ts, quality = ticks(np.array([[50, 120, 8, 60], [50, 120, 80, 60], [50, 120, 80, 60.0]]), range(4))
    quality[6] = BAD  # tick 1's PI01 is BAD: the value 80 must not count
    value[10] = np.nan  # tick 2's PI01 is NaN
    assert fam.update(tag, value, ts, quality) == []


def test_contributions_add_up_to_the_statistics(model):
    z = model.autoscale(np.array([55.0, 110.0, 9.0, 70.0]))
    c_t2, c_spe = model.contributions(z)
    t2, spe = model.statistics(z[None, :])
    assert c_t2.sum() == pytest.approx(t2[0]) and c_spe.sum() == pytest.approx(spe[0])


class PcaTwin:
    """The online PCA family, one sample at a time, written plainly."""

    def __init__(self, model, tags, on_delay_s, off_delay_s):
        self.model, self.var = model, {t: j for j, t in enumerate(tags)}
        self.latest = [None] * len(tags)
        self.deb = Debounce(on_delay_s, off_delay_s)

    def batch(self, tag, value, ts, quality):
        events = []
        model_samples = [i for i, t in enumerate(tag) if int(t) in self.var]
        for pos, i in enumerate(model_samples):
            j, v = self.var[int(tag[i])], float(value[i])
            self.latest[j] = None if quality[i] >= BAD or math.isnan(v) else (v - self.model.mean[j]) / self.model.scale[j]
            last_of_tick = pos + 1 == len(model_samples) or ts[model_samples[pos + 1]] != ts[i]
            if last_of_tick and all(x is not None for x in self.latest):
                z = np.array(self.latest)
                t = z @ self.model.loadings
                t2 = float(sum(t * t / self.model.eigenvalues))
                spe = float(((z - self.model.loadings @ t) ** 2).sum())
                raw = (t2 > self.model.t2_limit) + 2 * (spe > self.model.spe_limit)
                prev = self.deb.level
                if self.deb.step(int(raw), float(ts[i])):
                    events.append((i, prev, self.deb.level))
        return events


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_online_family_agrees_with_twin(model, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(1, 300))
    tag = rng.choice(np.array([0, 1, 2, 3, 4], dtype=np.int32), n)  # tag 4 is not in the model
    X = plant(n, rng)
    value = X[np.arange(n), np.minimum(tag, 3)]
    # occasional faults far outside the model, so alarms happen and clear
    value = np.where(rng.random(n) < 0.1, value * rng.choice([0.5, 1.5], n), value)
    value[rng.random(n) < 0.05] = np.nan
    ts = np.cumsum(rng.choice([0.0, 0.0, 0.0, 1.0, 3.0], n))
    quality = rng.choice(np.array([GOOD] * 8 + [UNCERTAIN, BAD, COMM_FAIL], dtype=np.uint8), n)
    on, off = data.draw(st.sampled_from([(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (2.0, 3.0)]))
    # the twin judges against the model's fixed centre: so does the family with refit "none"
    # (with the default moving centre its statistics drift from the twin's by design, and a tick
    # whose T2 lies that close to the limit is judged differently; tests/detectors/test_recentre.py)
    fam = PcaFamily.for_model(5, model, [0, 1, 2, 3], on_delay_s=on, off_delay_s=off, refit="none")
    twin = PcaTwin(model, [0, 1, 2, 3], on, off)
    cut = data.draw(st.integers(1, 60))
    got, want = [], []
    for start in range(0, n, cut):
        sl = slice(start, start + cut)
        got += [(c.ts, c.level, c.active) for c in fam.update(tag[sl], value[sl], ts[sl], quality[sl])]
        names = {1: "T2", 2: "SPE", 3: "T2+SPE"}
        want += [(float(ts[sl][i]), names[b or a], b != 0) for i, a, b in twin.batch(tag[sl], value[sl], ts[sl], quality[sl])]
    assert got == want


def test_a_model_alarm_names_the_model_the_statistic_and_the_top_contributors():
    context = {"model": "reactor-pca", "top_tags": ["R101.FI01", "R101.TI01"]}
    assert PcaFamily.describe("SPE", True, 42.123, 9.5, context) == (
        "多变量模型 reactor-pca 异常 multivariate pca SPE: SPE 42.12 > 9.5, top contributors R101.FI01, R101.TI01")
    assert PcaFamily.describe("T2", True, 12.0, 9.5, context).endswith("T2: T² 12 > 9.5, top contributors R101.FI01, R101.TI01")
    assert PcaFamily.describe("T2+SPE", False, 1.0, 9.5, context) == (
        "多变量模型 reactor-pca 恢复 multivariate pca back to normal")


def test_a_family_without_words_of_its_own_gets_the_generic_text():
    assert detectors.load("limit").describe("H", True, 1.0, 0.5, {}) is None
    assert detectors.load("sensor").order < detectors.load("limit").order == 0


def test_the_family_trains_its_model_into_the_named_file(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3)) @ np.array([[1.0, 0.8, 0.1], [0.0, 0.5, 1.0], [0.0, 0.0, 0.2]])
    file = tmp_path / "models" / "m.npz"
    data = Training(("a", "b", "c"), X, np.arange(400.0), target_far=0.0)
    options = {"confidence": 0.99, "variance": 0.9, "components": 2, "on_delay_s": None, "off_delay_s": None}
    lines = PcaFamily.train(data, options, str(file))
    loaded = PcaModel.load(file)
    assert loaded.names == ("a", "b", "c") and loaded.n_components == 2
    assert lines == [f"  inputs: 3 levels (3 columns), components 2, T² limit {loaded.t2_limit:.4g}, "
                     f"SPE limit {loaded.spe_limit:.4g} at confidence 0.99"]


def test_a_family_without_a_model_has_nothing_to_train(tmp_path):
    with pytest.raises(NotImplementedError, match="limit family has no model to train"):
        detectors.load("limit").train(Training(("a", "b"), np.zeros((10, 2)), np.arange(10.0)), {},
                                      str(tmp_path / "x.npz"))
