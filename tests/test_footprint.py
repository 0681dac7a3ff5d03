"""What a gateway's agent carries: a config that does not use a heavy package does not import it.

scipy (~70 MB of RSS) serves PCA limits and re-centring, pymodbus (~11 MB) the RTU lines and
``tcp_client = "pymodbus"``, asyncua the OPC-UA driver, cryptography the payload ciphers and
signed commands, jsonschema the receiver. A plant of Modbus TCP devices with limit alarms and
the statistical detectors needs none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("scipy", "pymodbus", "asyncua", "cryptography", "jsonschema")

_BUILD = """
import json, sys
import drivers
from agent.config import load
from agent.runtime import Agent
cfg = load(sys.argv[1])
agent = Agent(cfg)
objs = [drivers.load(d.driver)(d, [t.spec for t in cfg.device_tags(d.name)]) for d in cfg.devices]
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2:]))))
"""


def _heavy_imported(path) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _BUILD, str(path), *HEAVY], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def _plant() -> dict:
    device = {"name": "PLC1", "driver": "modbus", "url": "tcp://127.0.0.1:1502"}
    return {
        "agent": {"plant": "P1", "data_dir": "data"},
        "uplink": {"url": "mqtt://127.0.0.1:1883"},
        "devices": [device],
        "tags": [{"name": f"T{i}", "device": "PLC1", "address": f"hr:{2 * i}", "type": "float32", "range": [0, 500],
                  "alarms": {"hh": 300.0, "h": 250.0, "deadband": 1.0}, "detectors": ["ewma", "cusum", "flatline"]}
                 for i in range(4)],
    }


def test_a_modbus_tcp_plant_with_limits_and_detectors_imports_no_heavy_package(write_config):
    assert _heavy_imported(write_config(_plant())) == []


def test_an_opcua_device_brings_asyncua(write_config):
    # the same probe sees an import where the config needs one
    plant = _plant()
    plant["devices"] = [{"name": "PLC1", "driver": "opcua", "url": "opc.tcp://127.0.0.1:4840"}]
    for t in plant["tags"]:
        t["address"] = f"ns=2;s={t['name']}"
    assert "asyncua" in _heavy_imported(write_config(plant))  # which itself imports cryptography


_RUN = """
import gc, sys
from agent.config import load
from agent.runtime import Agent
from tests.helpers import run_agent_until
cfg = load(sys.argv[1])
agent = Agent(cfg)
tag = cfg.tags[0]
seen_before = any(o is tag for o in gc.get_objects())
run_agent_until(agent, lambda: gc.get_freeze_count() > 0, timeout_s=20)
print(seen_before, any(o is tag for o in gc.get_objects()), gc.get_freeze_count())
"""


def test_what_start_up_built_is_out_of_the_collectors_sight_once_the_agent_runs(write_config, tmp_path):
    # a full collection would otherwise walk every tag's objects (0.4 s at 100,000 tags, the loop held)
    plant = _plant()
    plant["agent"]["data_dir"] = str(tmp_path / "data")
    plant["uplink"]["url"] = "mqtt://127.0.0.1:1"  # nobody there: the agent keeps trying, as it should
    out = subprocess.run([sys.executable, "-c", _RUN, str(write_config(plant))], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out[:2] == ["True", "False"] and int(out[2]) > 1000
