"""The telemetry message as written out (``Telemetry.payload``) is, byte for byte, the document
the agent describes (``Telemetry.document``) encoded: snapshots and on-change messages, values
that JSON cannot carry, tags never sampled, names in any script."""

from __future__ import annotations

import json

import numpy as np

from agent import telemetry as telemetry_module
from agent.config import parse
from agent.telemetry import Telemetry
from drivers.base import SampleBatch
from tests.conftest import config_dict

T0 = 1800000000.0


def _telemetry(n: int) -> Telemetry:
    data = config_dict()
    data["tags"] = [{"name": f"反应釜{i}.TI\"{i}" if i % 7 == 3 else f"R{i}.TI", "device": "r1-plc",
                     "address": f"hr:{2 * i}", "type": "float32"} for i in range(n)]
    return Telemetry(parse(data), outbox=None, wake=lambda: None)


def test_the_written_payload_is_the_encoded_document(monkeypatch):
    monkeypatch.setattr(telemetry_module, "PART", 5)  # several parts, the last one short
    t = _telemetry(23)
    values = np.array([1.5, -0.0, np.nan, np.inf, -np.inf, 1e-300, 123456789.125, -2.0, 0.1, 3.0, 7.0, 1e22])
    t.record(SampleBatch.build("r1-plc", np.arange(12), values, T0 + 0.25, [0, 1, 2, 3, 0, 0, 1, 0, 0, 0, 2, 0]))
    t.record(SampleBatch.build("r1-plc", np.arange(12, 20), np.linspace(-5, 5, 8), T0 + 1.5, 0))
    # tags 20..22 never sampled: null value, comm_fail, no time
    latest = (t.last_value.copy(), t.last_quality.copy(), t.last_ts.copy())
    for mask in (None, np.arange(23) % 3 == 0, np.zeros(23, bool), np.arange(23) >= 20):
        written = t.payload(mask, latest, now=T0 + 2.0)
        assert written == t.encode(t.document(mask, latest, now=T0 + 2.0))
        doc = json.loads(written)
        assert len(doc["tags"]) == (23 if mask is None else int(mask.sum()))
    doc = json.loads(t.payload(now=T0 + 2.0))
    assert doc["tags"]["R2.TI"] == {"v": None, "q": "bad", "t": "2027-01-15T08:00:00.250Z"}
    assert doc["tags"]['反应釜3.TI"3'] == {"v": None, "q": "comm_fail", "t": "2027-01-15T08:00:00.250Z"}
    assert doc["tags"]["R22.TI"] == {"v": None, "q": "comm_fail", "t": None}
    assert "change" not in doc


def test_one_part_and_many_tags_give_the_same_bytes():
    t = _telemetry(3 * telemetry_module.PART + 11)
    n = len(t.names)
    rng = np.random.default_rng(2)
    t.record(SampleBatch.build("r1-plc", np.arange(n), rng.normal(100, 30, n), T0, 0))
    assert t.payload(now=T0) == t.encode(t.document(now=T0))
    mask = rng.random(n) < 0.5
    assert t.payload(mask, now=T0) == t.encode(t.document(mask, now=T0))
