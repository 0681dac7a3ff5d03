"""`plantwatch replay` and `plantwatch train`: historian data through the live code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.config import load
from agent.payloads import validator
from agent.pipeline import Pipeline
from agent.replay import read_table, replay
from drivers.base import SampleBatch
from tests.conftest import config_dict

T0 = 1_800_000_000.0


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120)


def reactor_csv(path: Path, temps, pressure=None, labels=None, sep=",") -> Path:
    rows = [sep.join(["ts", "R101.TI01", "R101.PI01", "anomaly"])]
    for i, t in enumerate(temps):
        p = 0.8 if pressure is None else pressure[i]
        lab = 0 if labels is None else labels[i]
        rows.append(sep.join([f"{T0 + i:.0f}", f"{t}", f"{p}", str(lab)]))
    path.write_text("\n".join(rows) + "\n")
    return path


TEMPS = [120.0] * 5 + [165.0] * 5 + [185.0] * 5 + [150.0] * 5 + [170.0] * 3 + [100.0] * 2


def test_replay_writes_the_live_alarm_messages(write_config, tmp_path):
    config = write_config(config_dict())
    out = tmp_path / "alarms.jsonl"
    result = plantwatch("replay", str(config), "--csv", str(reactor_csv(tmp_path / "h.csv", TEMPS)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(m["seq"], m["id"], m["state"], m["level"]) for m in msgs] == [
        (1, "R101.TI01/limit", "active", "H"),
        (2, "R101.TI01/limit", "active", "HH"),
        (3, "R101.TI01/limit", "cleared", "HH"),
        (4, "R101.TI01/limit", "active", "H"),
        (5, "R101.TI01/limit", "cleared", "H"),
    ]
    assert msgs[1]["ts"] == "2027-01-15T08:00:10.000Z"  # time from the file, not the clock
    for m in msgs:
        validator("alarm").validate(m)
    assert "25 rows" in result.stdout and "5 alarm messages" in result.stdout


def test_replay_equals_the_live_pipeline(write_config, tmp_path):
    """The same rows, once as live batches through Pipeline.process and once as a replay."""
    rng = np.random.default_rng(3)
    temps = list(np.round(150 + 40 * np.sin(np.arange(400) / 15) + rng.normal(0, 3, 400), 2))
    data = config_dict()
    data["tags"][0]["alarms"].update(on_delay_s=2.0, off_delay_s=3.0)
    data["tags"][0]["roc"] = {"max_per_s": 4.0}
    cfg = load(write_config(data))
    table = read_table(reactor_csv(tmp_path / "s.csv", temps), ["R101.TI01", "R101.PI01"], None, None, None)
    replayed = replay(cfg, table).messages

    class Sink:
        def __init__(self):
            self.messages = []

        def append_alarms(self, topic, docs, now=None, encode=None, states=()):
            for d in docs:
                d["epoch"], d["seq"] = "replay", len(self.messages) + 1
                self.messages.append(d)

    sink = Sink()
    live = Pipeline(cfg, sink)
    for i, t in enumerate(temps):
        live.process(SampleBatch.build("r1-plc", [0, 1], [t, 0.8], T0 + i, 0), T0 + i)
    assert len(replayed) > 6
    assert replayed == sink.messages


def test_replay_labels_print_scores(write_config, tmp_path):
    labels = [0] * 5 + [1] * 10 + [0] * 10
    temps = [120.0] * 5 + [185.0] * 10 + [120.0] * 10
    csv = reactor_csv(tmp_path / "l.csv", temps, labels=labels, sep=";")
    result = plantwatch("replay", str(write_config(config_dict())), "--csv", str(csv), "--labels", "anomaly",
                        "--out", str(tmp_path / "a.jsonl"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "precision 1.0000" in out and "recall    1.0000" in out and "F1        1.0000" in out
    assert "FAR       0.00 %" in out and "mean detection delay 0.0 s" in out


@pytest.mark.parametrize("body,expected", [
    ("ts,R101.TI01\n1,120\n2,abc\n", ":3: column 'R101.TI01': 'abc' is not a number"),
    ("ts,R101.TI01\n5,120\n4,121\n", ":3: time goes backwards"),
    ("time_of_day,R101.TI01\n1,120\n", "no time column"),
    ("ts,OTHER\n1,120\n", "no column is named like a tag"),
    ("ts,R101.TI01\n1,120,7\n", ":2: 3 fields, the header has 2"),
])
def test_bad_csv_names_the_place_and_writes_nothing(write_config, tmp_path, body, expected):
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    out = tmp_path / "never.jsonl"
    result = plantwatch("replay", str(write_config(config_dict())), "--csv", str(csv), "--out", str(out))
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def pca_config(write_config, tmp_path):
    data = config_dict(models=[{"name": "reactor", "kind": "pca", "tags": ["R101.TI01", "R101.PI01", "R101.FI01"],
                                "file": "models/reactor.npz", "confidence": 0.999}])
    data["tags"].append({"name": "R101.FI01", "device": "r1-plc", "address": "hr:104", "unit": "m³/h"})
    return write_config(data)


def correlated_csv(path: Path, n: int, seed: int, break_at: int | None = None) -> Path:
    """Temperature, pressure and cooling flow move together until ``break_at``, where the
    pressure rises on its own: the correlation breaks, no single value leaves its range."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, n).cumsum() * 0.05
    temp = 120 + 10 * base + rng.normal(0, 0.3, n)
    pres = 0.8 + 0.05 * base + rng.normal(0, 0.0015, n)
    flow = 20 + 2 * base + rng.normal(0, 0.06, n)
    if break_at is not None:
        pres[break_at:] += 0.03
    lines = ["ts,R101.TI01,R101.PI01,R101.FI01"]
    lines += [f"{T0 + i:.0f},{temp[i]:.4f},{pres[i]:.6f},{flow[i]:.4f}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_then_replay_raises_a_pca_alarm_naming_the_tags(write_config, tmp_path):
    config = pca_config(write_config, tmp_path)
    trained = plantwatch("train", str(config), "--csv", str(correlated_csv(tmp_path / "n.csv", 600, 1)), "--model", "reactor")
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "data" / "models" / "reactor.npz").is_file()
    assert "model reactor: 3 tags, 600 rows" in trained.stdout
    out = tmp_path / "pca.jsonl"
    csv = correlated_csv(tmp_path / "f.csv", 300, 2, break_at=150)
    result = plantwatch("replay", str(config), "--csv", str(csv), "--out", str(out))
    assert result.returncode == 0, result.stderr
    pca = [json.loads(line) for line in out.read_text().splitlines() if '"kind":"pca"' in line]
    assert pca, out.read_text()
    first = pca[0]
    assert first["id"] == "reactor/pca" and first["state"] == "active"
    assert first["context"]["model"] == "reactor"
    assert first["context"]["top_tags"][0] == "R101.PI01"
    assert first["tag"] == "R101.PI01"
    assert first["ts"] >= "2027-01-15T08:02:30.000Z"  # not before the break
    assert {m["id"] for m in pca} == {"reactor/pca"}
    for m in pca:
        validator("alarm").validate(m)


def test_missing_or_corrupt_model_is_a_clear_error(write_config, tmp_path):
    config = pca_config(write_config, tmp_path)
    csv = reactor_csv(tmp_path / "x.csv", [120.0] * 5)
    model = tmp_path / "data" / "models" / "reactor.npz"
    result = plantwatch("replay", str(config), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and str(model) in result.stderr, result.stderr
    run = plantwatch("run", str(config))
    assert run.returncode == 2 and str(model) in run.stderr and "Traceback" not in run.stderr
    model.parent.mkdir(parents=True)
    model.write_bytes(b"not a model at all")
    result = plantwatch("replay", str(config), "--csv", str(csv), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and str(model) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_train_unknown_model(write_config, tmp_path):
    result = plantwatch("train", str(pca_config(write_config, tmp_path)), "--csv",
                        str(reactor_csv(tmp_path / "x.csv", [1.0] * 10)), "--model", "nope")
    assert result.returncode == 2 and "no model 'nope' in the config (models: reactor)" in result.stderr
