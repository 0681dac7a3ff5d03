"""kind = "cva" through the self-calibrating `plantwatch train` (detectors/calibrate.py): the past
window (`lags`) and the on/off delays chosen on the hold-out, empirical limits, what the config
fixes; `past` as the former name of `lags`; bad training data and older model files refused."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.calibrate import FAULT_SIGMAS, Training, debounced
from detectors.cva import LAGS, CvaFamily, configured_lags
from detectors.cva_model import CvaModel
from tests.conftest import config_dict
from tests.detectors.dynamic_plant import NAMES, plant
from tests.test_cva import COLUMNS, T0, plant_csv, plantwatch

TAGS = [0, 1, 2, 3]


def options(**given):
    return {**CvaFamily.defaults, "model": "loop", "file": "x", "name": "a", **given}


def test_train_chooses_the_past_window_and_delays_on_the_holdout(tmp_path):
    lines = CvaFamily.train(Training(tuple(NAMES), plant(4000, seed=1), T0 + np.arange(4000.0)), options(),
                            str(tmp_path / "m.npz"))
    model = CvaModel.load(tmp_path / "m.npz")
    text = "\n".join(lines)
    assert f"lags {model.lags - 1} (a past of {model.lags} ticks, chosen among {', '.join(map(str, LAGS))})" in text
    assert model.lags - 1 in LAGS
    assert f"on-delay {model.on_delay_s:g} s, off-delay {model.off_delay_s:g} s" in text
    # 3 windows x 3 on-delays x 2 off-delays: an off-delay of 30 intervals is beyond the budget of the
    # 2,000-row hold-out at target_far 0.01 (20 rows)
    assert "hold-out with synthetic faults (18 candidates): F1 " in text
    assert f"T² {model.t2_limit:.4g}, SPE {model.q_limit:.4g}" in text and model.target_far == 0.01
    # the limits hold on normal data the model never saw, after the delays it runs with
    fresh = plant(20_000, seed=7)
    t2, q = model.score(fresh)
    alarmed = debounced(t2, q, T0 + np.arange(len(t2)), model.t2_limit, model.q_limit, model.on_delay_s,
                        model.off_delay_s)
    assert alarmed.mean() < 0.03
    # and a fault of the size the hold-out injects (a step of FAULT_SIGMAS standard deviations) is found
    step = FAULT_SIGMAS * float(np.std(plant(4000, seed=1)[:, 1]))
    t2, q = model.score(plant(2000, seed=3, bias_at=1000, bias=step))
    assert ((t2[1000:] > model.t2_limit) | (q[1000:] > model.q_limit)).mean() > 0.5


def test_what_the_config_fixes_is_not_searched_and_wins_in_the_engine(tmp_path):
    file = tmp_path / "m.npz"
    lines = CvaFamily.train(Training(tuple(NAMES), plant(3000, seed=1), T0 + np.arange(3000.0)),
                            options(lags=3, on_delay_s=2.0, off_delay_s=5.0), str(file))
    model = CvaModel.load(file)
    assert (model.lags, model.on_delay_s, model.off_delay_s) == (4, 2.0, 5.0)
    assert "lags 3 (a past of 4 ticks, fixed by the config)" in "\n".join(lines)
    assert "(1 candidates)" in "\n".join(lines)
    # delays the config gives win over the file's; not given, the file's are used
    assert CvaFamily.for_model(4, model.with_limits(1, 1, 7.0, 9.0, 0.01), TAGS).monitors[0].delays == (7.0, 9.0)
    assert CvaFamily.for_model(4, model, TAGS, on_delay_s=0.0).monitors[0].delays == (0.0, 5.0)
    # auto = false: nothing searched, the default window and no delays
    lines = CvaFamily.train(Training(tuple(NAMES), plant(3000, seed=1), T0 + np.arange(3000.0), auto=False),
                            options(), str(file))
    assert "lags 2 (a past of 3 ticks, the default)" in "\n".join(lines)
    assert (CvaModel.load(file).on_delay_s, CvaModel.load(file).off_delay_s) == (0.0, 0.0)


def test_past_is_the_former_name_of_lags():
    from tests.test_config import parse, problems_of

    model = {"name": "loop", "kind": "cva", "tags": ["R101.TI01", "R101.PI01"], "file": "m.npz"}
    assert configured_lags(parse(config_dict(models=[dict(model, past=4)])).models[0].options) == 3
    assert configured_lags(parse(config_dict(models=[dict(model, lags=3)])).models[0].options) == 3
    assert configured_lags(parse(config_dict(models=[model])).models[0].options) is None
    assert problems_of(config_dict(models=[dict(model, lags=3, past=4)])) == [
        "models[0] (loop).past: is the former name of the past window (past = lags + 1): give lags alone, "
        "not lags = 3 and past = 4"]
    assert problems_of(config_dict(models=[dict(model, lags=-1)])) == [
        "models[0] (loop).lags: must be a whole number >= 0, not -1"]
    # for pca, lags stays its lagged inputs
    pca = parse(config_dict(models=[dict(model, kind="pca", lags=2)])).models[0]
    assert pca.inputs.lags == 2 and "lags" not in pca.options


def cva_config(write_config, **keys):
    data = config_dict(models=[{"name": "loop", "kind": "cva", "tags": COLUMNS, "file": "models/loop.npz", **keys}])
    data["tags"] += [{"name": "R101.FI01", "device": "r1-plc", "address": "hr:104"},
                     {"name": "R101.LI01", "device": "r1-plc", "address": "hr:106"}]
    return write_config(data)


def bad_rows():
    constant, gap, backwards = plant(600, seed=1), plant(600, seed=1), plant(600, seed=1)
    constant[:, 3] = 2.5
    gap[200:240, 1] = np.nan
    return [
        ({}, constant, None, ": column 'R101.LI01' is constant (2.5) in the training rows"),
        ({}, gap, None, ": column 'R101.PI01' has no value in data rows 201-240 (40 rows)"),
        ({}, backwards, (300, 1), ": data row 301: time 1800000299.000 does not move forward"),
        ({}, backwards, (300, 2), ":302: time goes backwards"),  # line 302 of the file: data row 301
        ({"lags": 20}, plant(300, seed=1), None,
         ": 300 complete rows are too few to train 4 tags with lags 20: need at least 754"),
        ({"past": 21}, plant(300, seed=1), None,
         ": 300 complete rows are too few to train 4 tags with lags 20: need at least 754"),
    ]


@pytest.mark.parametrize("keys,X,back,message", bad_rows())
def test_bad_training_data_is_refused_naming_the_place(write_config, tmp_path, keys, X, back, message):
    path = plant_csv(tmp_path / "n.csv", X)
    if back is not None:  # row back[0]'s time goes back by back[1] seconds: to the row before's, or earlier
        row, by = back
        lines = path.read_text().splitlines()
        lines[row + 1] = f"{T0 + row - by:.0f}," + lines[row + 1].split(",", 1)[1]
        path.write_text("\n".join(lines).replace(",nan", ",") + "\n")
    else:
        path.write_text(path.read_text().replace(",nan", ","))
    result = plantwatch("train", str(cva_config(write_config, **keys)), "--csv", str(path), "--model", "loop")
    assert result.returncode == 2, result.stdout
    assert f"{path}{message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "models" / "loop.npz").exists()


def test_a_cva_model_file_of_an_older_format_is_refused_naming_it(write_config, tmp_path):
    config = cva_config(write_config, lags=2)
    csv = plant_csv(tmp_path / "n.csv", plant(1500, seed=1))
    trained = plantwatch("train", str(config), "--csv", str(csv), "--model", "loop")
    assert trained.returncode == 0, trained.stderr
    file = tmp_path / "data" / "models" / "loop.npz"
    with np.load(file) as f:
        data = {k: f[k] for k in f.files if k != "delays"}  # version 1 had no delays
    np.savez(file, **{**data, "version": np.array(1)})
    for cmd in (["replay", str(config), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl")], ["run", str(config)]):
        result = plantwatch(*cmd)
        assert result.returncode == 2, result.stderr
        assert f"{file}: CVA model format version 1, this build reads version 2: fit it again with `plantwatch train`" \
            in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_scores_of_a_long_history_are_those_of_its_windows_taken_a_chunk_at_a_time():
    from detectors import cva_model

    model = cva_model.fit(plant(3000, seed=1), NAMES, lags=4)
    X = plant(2 * cva_model.CHUNK + 77, seed=5)
    t2, q = model.score(X)
    whole = model.statistics(model.past((X - model.mean) / model.scale))
    assert len(t2) == len(X) - 3 and np.allclose(t2, whole[0]) and np.allclose(q, whole[1])
    assert len(model.score(X[:3])[0]) == 0 and len(model.score(X[:4])[0]) == 1
