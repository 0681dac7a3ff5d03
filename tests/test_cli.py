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
    assert "tags[0] (a).device: is required" in result.stderr
    assert "tags[0] (a).address: is required" in result.stderr


def test_opcua_cert_then_probe_an_opcua_server(tmp_path):
    import asyncio
    import threading

    from tests.opcua.helpers import PlantServer

    made = plantwatch("opcua-cert", "--out", str(tmp_path / "pki"), "--cn", "gw-01")
    assert made.returncode == 0, made.stderr
    cert, key = (tmp_path / "pki").glob("*.der"), (tmp_path / "pki").glob("*.pem")
    key_path = next(key)
    assert next(cert).stat().st_size > 0 and (key_path.stat().st_mode & 0o077) == 0

    loop = asyncio.new_event_loop()
    server = PlantServer()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        result = plantwatch("probe", server.url, "--depth", "3")
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert "R101.TI01" in result.stdout and "Double" in result.stdout
