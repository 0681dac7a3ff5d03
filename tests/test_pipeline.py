"""The functional core: engine + alarm manager + commit, driven by samples and time only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from agent.alarms import Alarm
from agent.config import parse
from agent.payloads import parse_rfc3339
from agent.pipeline import Pipeline, build_engine, build_manager, restore_grace
from detectors import cva_model, pca_model
from detectors.base import ConditionChange
from detectors.cva_model import CvaModel
from detectors.inputs import InputSpec
from detectors.pca import PcaFamily
from drivers.base import SampleBatch
from tests.conftest import config_dict

T0 = 1_800_000_000.0


class Sink:
    """Takes the place of the outbox."""

    def __init__(self):
        self.messages = []

    def append_alarms(self, topic, docs, now=None, encode=None, states=()):
        self.messages += docs
        return list(range(len(docs)))


def model_config(**options):
    return config_dict(models=[{"name": "reactor-pca", "kind": "pca", "tags": ["R101.TI01", "R101.PI01"],
                                "file": "m.npz", **options}])


def test_a_batch_without_samples_is_dated_by_the_callers_time():
    sink = Sink()
    pipeline = Pipeline(parse(config_dict()), sink)
    messages = pipeline.process(SampleBatch.failed("r1-plc", [], T0, "timeout"), now=T0 + 42)
    assert [(m["id"], m["state"]) for m in messages] == [("r1-plc/comm", "active")]
    assert parse_rfc3339(messages[0]["ts"]) == T0 + 42
    assert sink.messages == messages


def test_the_engine_runs_the_sensor_family_first():
    engine = build_engine(parse(config_dict()))
    assert [f.name for f in engine.families] == ["sensor", "limit"]


def test_a_model_alarm_is_written_in_its_familys_words():
    manager = build_manager(parse(model_config()))
    assert manager.describe["pca"] == PcaFamily.describe
    change = ConditionChange(0, "pca", "T2", True, 12.0, 9.5, T0, {"model": "reactor-pca", "top_tags": [1, 0]})
    (message,) = manager.on_changes([change])
    assert message["message"] == "多变量模型 reactor-pca 异常 multivariate pca T2: T² 12 > 9.5, top contributors R101.PI01, R101.TI01"
    assert message["id"] == "reactor-pca/pca" and message["unit"] == ""


def test_a_restored_model_alarm_waits_for_the_models_on_delay():
    cfg = parse(model_config(on_delay_s=30.0))
    alarm = Alarm(id="reactor-pca/pca", kind="pca", tag="R101.TI01", device="r1-plc", active=True,
                  context={"model": "reactor-pca"})
    interval = cfg.devices[0].interval_s
    assert restore_grace(cfg, alarm) == 30.0 + 3 * interval + 2.0


def restored_grace(tmp_path, model, **options):
    """The grace a restored alarm of ``model`` (saved as the config's model file) gets at a restart."""
    data = model_config(**options)
    data["agent"]["data_dir"] = str(tmp_path)
    data["models"][0]["kind"] = "cva" if isinstance(model, CvaModel) else "pca"
    cfg = parse(data)
    model.save(cfg.models[0].file)
    alarm = Alarm(id=f"reactor-pca/{cfg.models[0].kind}", kind=cfg.models[0].kind, tag="R101.TI01", device="r1-plc",
                  active=True, context={"model": "reactor-pca"})
    return Pipeline(cfg, Sink()).restore_grace(alarm), cfg.devices[0].interval_s


def test_a_restored_model_alarm_waits_for_the_trained_on_delay(tmp_path):
    """The delays train chose live in the model file: a restart waits for those, unless the config
    fixes its own (which the engine then runs with)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    pca = pca_model.fit(X, ["R101.TI01", "R101.PI01"]).with_limits(9.0, 4.0, 45.0, 10.0, 0.01)
    grace, interval = restored_grace(tmp_path, pca)
    assert grace == 45.0 + 3 * interval + 2.0
    grace, interval = restored_grace(tmp_path, pca, on_delay_s=5.0)
    assert grace == 5.0 + 3 * interval + 2.0
    lagged = pca_model.fit(np.column_stack([X[1:], X[:-1]]), ["R101.TI01", "R101.PI01"],
                           inputs=InputSpec(("R101.TI01", "R101.PI01"), lags=1)).with_limits(9.0, 4.0, 20.0, 0.0, 0.01)
    grace, interval = restored_grace(tmp_path, lagged)
    assert grace == 20.0 + 1 * interval + 3 * interval + 2.0  # and the tick of its lag
    cva = cva_model.fit(X, ["R101.TI01", "R101.PI01"], lags=3).with_limits(9.0, 4.0, 12.0, 0.0, 0.01)
    grace, interval = restored_grace(tmp_path, cva)
    assert grace == 12.0 + 2 * interval + 3 * interval + 2.0  # a past of 3 ticks: 2 before the one judged


def test_replay_imports_nothing_of_the_shell():
    code = ("import sys, agent.replay; "
            "shell = [m for m in ('agent.runtime', 'agent.uplink', 'agent.api', 'agent.cli', 'paho') if m in sys.modules]; "
            "print(shell)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_models_limit_factors_reach_the_engine(tmp_path):
    import numpy as np

    from detectors.pca_model import fit

    rng = np.random.default_rng(5)
    base = rng.normal(size=500)
    X = np.column_stack([base + 0.1 * rng.normal(size=500), 2 * base + 0.1 * rng.normal(size=500)])
    (tmp_path / "data").mkdir()
    fit(X, ["R101.TI01", "R101.PI01"]).save(tmp_path / "data" / "m.npz")
    plain = parse(model_config(), base=tmp_path)
    wide = parse(model_config(t2_factor=2.0, spe_factor=3.0), base=tmp_path)
    (m1,) = next(f for f in build_engine(plain).families if f.name == "pca").monitors
    (m2,) = next(f for f in build_engine(wide).families if f.name == "pca").monitors
    assert m2.t2_limit == 2.0 * m1.t2_limit and m2.spe_limit == 3.0 * m1.spe_limit


def test_tags_with_equal_detector_tables_share_one_and_keep_their_own_values():
    tag = {"device": "r1-plc", "type": "float32", "detectors": ["ewma"], "alarms": {"h": 160.0}}
    tags = [{**tag, "name": f"T{i}", "address": f"hr:{2 * i}"} for i in range(3)]
    tags[2] = {**tags[2], "ewma": {"lambda_": 0.5}, "alarms": {"h": 150.0}}
    cfg = parse(config_dict(tags=tags))
    assert cfg.tags[0].families["ewma"] is cfg.tags[1].families["ewma"]
    assert cfg.tags[2].families["ewma"]["lambda_"] == 0.5 and cfg.tags[0].families["ewma"].get("lambda_") != 0.5
    engine = build_engine(cfg)
    ewma = next(f for f in engine.families if f.name == "ewma")
    limit = next(f for f in engine.families if f.name == "limit")
    assert ewma.params[0] is ewma.params[1] and ewma.params[2]["lambda_"] == 0.5
    assert limit.params[0] is limit.params[1]
    assert limit.params[0]["h"] == 160.0 and limit.params[2]["h"] == 150.0
