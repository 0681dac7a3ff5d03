"""The command line as users type it: exit codes and what it prints."""

from __future__ import annotations

import subprocess
import sys

from tests.modbus.server import start_server


def plantwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_probe_modbus_decodes_a_range():
    with start_server() as srv:
        srv.set_value(10, 172.5, "float32", "ABCD")
        result = plantwatch("probe", srv.url + "?unit=1", "hr:10-11", "--type", "float32")
        assert srv.function_codes <= {3, 43}
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split()[-1] == "172.5"


def test_probe_bad_range_is_a_usage_error():
    result = plantwatch("probe", "tcp://127.0.0.1:1", "hr:9-1")
    assert result.returncode == 2
    assert "range must go upwards" in result.stderr
    assert "Traceback" not in result.stderr


def test_probe_unreachable_device_fails_cleanly():
    result = plantwatch("probe", "tcp://127.0.0.1:1?unit=1", "hr:0-1", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.startswith("probe: tcp://127.0.0.1:1?unit=1:")
    assert "Traceback" not in result.stderr


def test_run_with_bad_config_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[agent]\nplant = "x"\n[[tags]]\nname = "a"\n')
    result = plantwatch("run", str(path))
    assert result.returncode == 2
    assert "tags[0].device: is required" in result.stderr
    assert "tags[0].address: is required" in result.stderr
