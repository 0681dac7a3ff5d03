"""The command line as users type it: exit codes and what it prints."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

from agent.ciphers import PayloadCipher
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


def _provincial_config(tmp_path, write_config, **section):
    from tests.conftest import config_dict

    (tmp_path / "sm4.key").write_text("0123456789abcdeffedcba9876543210\n")
    (tmp_path / "sm4.iv").write_text("fedcba98765432100123456789abcdef\n")
    (tmp_path / "appsecret").write_text("app-s3cr3t\n")
    data = config_dict()
    data["uplink"]["profile"] = "provincial"
    data["provincial"] = {"gateway_code": "GW-1", "cipher": "sm4-cbc", "key_file": "sm4.key", "iv_file": "sm4.iv",
                          "encoding": "HEX", "appid": "GM-0001", "appsecret_file": "appsecret",
                          "envelope": '{"appid":"{appid}","data":"{payload}"}', **section}
    return data, write_config(data)


def test_provincial_decrypt_prints_each_payload_in_clear_and_names_the_lines_that_fail(tmp_path, write_config,
                                                                                        capsys):
    from agent.cli import main
    from agent.config import load

    data, path = _provincial_config(tmp_path, write_config)
    profile = load(path).provincial
    docs = [profile.status(1_800_000_000.0, True), profile.data(1_800_000_000.0, [("R101.TI01", 1.5, "good")])]
    sent = [profile.encode(d).decode() for d in docs]
    damaged = sent[1].replace('"data":"', '"data":"00')
    other = dataclasses.replace(profile, cipher=PayloadCipher("sm4-cbc", bytes(16), profile.cipher.iv, "HEX"))
    wrong_key = other.encode(docs[0]).decode()
    (tmp_path / "payloads.txt").write_text(f"{sent[0]}\n\n not json\n{damaged}\n{wrong_key}\n{sent[1]}\r\n")
    assert main(["provincial", "decrypt", str(path), "--in", str(tmp_path / "payloads.txt")]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == docs
    size = len(json.loads(damaged)["data"]) // 2
    assert err.splitlines() == [
        "line 3: envelope: not JSON: Expecting value: line 1 column 1 (char 0)",
        f"line 4: payload: ciphertext of {size} bytes is not whole 16-byte blocks",
        "line 5: payload: bad PKCS#7 padding after sm4-cbc decryption: wrong key or IV, or a damaged message",
    ]
    assert "0123456789abcdef" not in out + err


def test_provincial_decrypt_reads_standard_input_and_refuses_a_config_it_cannot_use(tmp_path, write_config, capsys,
                                                                                     monkeypatch):
    from agent.cli import main
    from agent.config import load

    data, path = _provincial_config(tmp_path, write_config)
    profile = load(path).provincial
    doc = profile.status(1_800_000_000.0, False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(profile.encode(doc) + b"\n")))
    assert main(["provincial", "decrypt", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == doc

    (tmp_path / "sm4.key").write_text("0123456789abcdef\n")
    assert main(["provincial", "decrypt", str(path), "--in", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "provincial.key_file:" in err and "16-byte key" in err and "0123456789abcdef" not in err
    data["uplink"]["profile"] = "json"
    del data["provincial"]
    assert main(["provincial", "decrypt", str(write_config(data, "json.toml"))]) == 2
    assert 'uplink.profile is not "provincial"' in capsys.readouterr().err


def test_check_shows_how_payloads_go_out_but_not_the_key_or_the_secret(tmp_path, write_config, capsys):
    from agent.cli import main

    _, path = _provincial_config(tmp_path, write_config)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert ('provincial 640100000001/GW-1: payload sm4-cbc (fixed IV), HEX, envelope {"appid":"{appid}",'
            '"data":"{payload}"}, appid GM-0001, appsecret set') in out.splitlines()
    assert "s3cr3t" not in out and "0123456789" not in out.replace("640100000001", "")
