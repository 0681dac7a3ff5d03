"""The plugin contract: the test kits pass on the built-ins and catch broken plugins, and a
driver and a detector family installed as a separate package are found by entry point."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import numpy as np
import pytest

import detectors
from detectors.base import ConditionChange, Family
from detectors.testkit import check_family
from drivers.base import DeviceSpec, Driver, SampleBatch, TagSpec
from drivers.modbus import ModbusDriver
from drivers.testkit import check_driver
from tests.conftest import config_dict, to_toml
from tests.modbus.server import start_server

FAMILY_PARAMS = {
    "limit": {"hh": 20.0, "h": 10.0, "l": -10.0, "ll": -20.0, "deadband": 1.0, "on_delay_s": 1.0, "off_delay_s": 2.0},
    "roc": {"max_per_s": 5.0},
    "ewma": {},
    "cusum": {},
    "robust": {},
    "flatline": {},
    "sensor": {"lo": -30.0, "hi": 30.0},
}


@pytest.mark.parametrize("name", sorted(FAMILY_PARAMS))
def test_builtin_families_pass_the_kit(name):
    cls = detectors.load(name)
    params = {t: FAMILY_PARAMS[name] for t in (0, 2, 3)}
    assert check_family(cls, params, n_tags=5) == []


class Chatty(Family):
    """Broken on purpose: raises every non-NaN sample, even at the same level."""

    name = "chatty"
    defaults = {"limit": 0.0}

    def update(self, tag, value, ts, quality):
        return [ConditionChange(int(t), "chatty", "H", True, float(v), 0.0, float(s))
                for t, v, s in zip(tag, value, ts, strict=True) if int(t) in self.params and v > 0]


def test_family_kit_catches_a_broken_family():
    problems = check_family(Chatty, {0: {}}, n_tags=2)
    assert any("raised again at level H" in p for p in problems), problems


def test_modbus_driver_passes_the_kit():
    with start_server() as srv:
        srv.set_value(0, 12.5, "float32")
        device = DeviceSpec("plc", "modbus", srv.url, interval_s=0.05, timeout_s=0.5)
        tags = [TagSpec(3, "a", "plc", "hr:0", "float32"), TagSpec(7, "b", "plc", "hr:2", "uint16")]
        assert asyncio.run(check_driver(ModbusDriver, device, tags)) == []


class Float32Driver(Driver):
    """Broken on purpose: float32 values and a tag index of another device."""

    name = "broken"

    async def batches(self) -> AsyncIterator[SampleBatch]:
        while True:
            n = len(self.tags)
            yield SampleBatch(self.device.name, np.arange(n, dtype=np.int32) + 100, np.zeros(n, dtype=np.float32),
                              np.full(n, 1.8e9), np.zeros(n, dtype=np.uint8))
            await asyncio.sleep(0.01)


def test_driver_kit_catches_a_broken_driver():
    device = DeviceSpec("x", "broken", "sim://x")
    problems = asyncio.run(check_driver(Float32Driver, device, [TagSpec(0, "a", "x", "a")], batches=1))
    assert any("dtype float32, not float64" in p for p in problems), problems
    assert any("indices [100] that are not this device's tags" in p for p in problems), problems


PLUGIN = '''
"""An integrator's package: a simulated-sine driver and a 'spike' detector family."""
import asyncio, math, time
import numpy as np
from drivers.base import Driver, Problem, SampleBatch
from detectors.base import ConditionChange, Family

class SineDriver(Driver):
    name = "sine"
    schemes = ("sine",)
    tag_keys = frozenset({"amplitude"})

    @classmethod
    def check(cls, device, tags):
        return [Problem("address", "must be a number of seconds (the period)", t)
                for t in tags if not t.address.replace(".", "", 1).isdigit()]

    async def batches(self):
        while True:
            now = time.time()
            values = [t.options.get("amplitude", 1.0) * math.sin(now / float(t.address)) for t in self.tags]
            yield SampleBatch.build(self.device.name, self.tag_indices, values, now, 0)
            await asyncio.sleep(self.device.interval_s)

class SpikeFamily(Family):
    name = "spike"
    defaults = {"above": 1.0}

    def update(self, tag, value, ts, quality):
        return []
'''


def test_plugins_are_found_by_entry_point(tmp_path):
    (tmp_path / "pw_sine.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "pw_sine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pw-sine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[plantwatch.drivers]\nsine = pw_sine:SineDriver\n\n[plantwatch.detectors]\nspike = pw_sine:SpikeFamily\n")
    data = config_dict()
    data["devices"].append({"name": "sim", "driver": "sine", "url": "sine://local", "interval_s": 0.5})
    data["tags"].append({"name": "S1", "device": "sim", "address": "30", "amplitude": 5.0, "detectors": ["spike"],
                         "spike": {"above": 2.0}})
    data["tags"].append({"name": "S2", "device": "sim", "address": "fast", "detectors": ["spikee"]})
    config = tmp_path / "plant.toml"
    config.write_text(to_toml(data))
    env_path = f"{tmp_path}"
    result = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, text=True,
                            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    # the plugin's own address check and the detector registry both speak through the config
    assert "tags[3] (S2).address: must be a number of seconds (the period)" in result.stderr
    assert "tags[3] (S2).detectors[0]: unknown detector 'spikee'" in result.stderr and "spike" in result.stderr
    assert "tags[2]" not in result.stderr  # the plugin's own tag key and detector table are accepted
    del data["tags"][3]
    config.write_text(to_toml(data))
    result = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, text=True,
                            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "device sim: sine sine://local" in result.stdout and "spike on 1 tags" in result.stdout
