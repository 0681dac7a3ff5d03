"""Secret files: keys are created 0600 whatever the umask, never through a link, never over an
existing file unless asked; secret files others can read are reported by `check` and the agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import load
from agent.config.secrets import secret_files
from drivers.opcua.certs import CERT_NAME, KEY_NAME, load_certificate, make_self_signed, write_new
from tests.conftest import config_dict
from tests.helpers import AgentProcess


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def permissive_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path) -> int:
    return os.lstat(path).st_mode & 0o777


# --- creating keys ------------------------------------------------------------------------------


def test_key_is_0600_even_under_a_permissive_umask(tmp_path, permissive_umask):
    cert, key = make_self_signed(tmp_path / "pki", "gw", "urn:gw", days=2, key_size=1024)
    assert mode(key) == 0o600 and mode(cert) == 0o644
    os.umask(0o277)  # a umask that would take the owner's write bit: the mode is still exactly 0600
    write_new(tmp_path / "other.key", b"k", 0o600)
    assert mode(tmp_path / "other.key") == 0o600


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_key_path_is_never_followed(tmp_path, dangling):
    pki = tmp_path / "pki"
    pki.mkdir()
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
    (pki / KEY_NAME).symlink_to(victim)
    with pytest.raises(FileExistsError):
        make_self_signed(pki, "gw", "urn:gw", days=2, key_size=1024)
    with pytest.raises(FileExistsError):  # not through the link either when written directly
        write_new(pki / KEY_NAME, b"key", 0o600)
    assert victim.exists() != dangling and (dangling or victim.read_bytes() == b"precious")
    # --force replaces the link itself with a new key file; its target is untouched
    make_self_signed(pki, "gw", "urn:gw", days=2, key_size=1024, replace=True)
    assert not (pki / KEY_NAME).is_symlink() and mode(pki / KEY_NAME) == 0o600
    assert victim.exists() != dangling and (dangling or victim.read_bytes() == b"precious")


def test_an_existing_key_is_refused_not_truncated_and_force_replaces_it_whole(tmp_path):
    pki = tmp_path / "pki"
    made = plantwatch("opcua-cert", "--out", str(pki), "--days", "2")
    assert made.returncode == 0, made.stderr
    first_key, first_cert = (pki / KEY_NAME).read_bytes(), (pki / CERT_NAME).read_bytes()
    os.chmod(pki / KEY_NAME, 0o644)  # loosened by hand since

    again = plantwatch("opcua-cert", "--out", str(pki), "--days", "2")
    assert again.returncode == 1
    assert again.stderr == f"opcua-cert: {pki / KEY_NAME}: exists (replace it with --force)\n"
    assert (pki / KEY_NAME).read_bytes() == first_key and (pki / CERT_NAME).read_bytes() == first_cert

    forced = plantwatch("opcua-cert", "--out", str(pki), "--days", "2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (pki / KEY_NAME).read_bytes() != first_key and mode(pki / KEY_NAME) == 0o600  # the old mode is gone
    load_certificate(pki / CERT_NAME)
    assert sorted(p.name for p in pki.iterdir()) == sorted([KEY_NAME, CERT_NAME])  # no temporary left


# --- secret files others can read ---------------------------------------------------------------


def secret_config(tmp_path, write_config, secret_mode: int):
    for name in ("mqtt.pass", "provincial.key", "provincial.secret"):
        (tmp_path / name).write_text("0123456789abcdeffedcba9876543210\n")
        os.chmod(tmp_path / name, 0o600)
    os.chmod(tmp_path / "mqtt.pass", secret_mode)
    data = config_dict(uplink={"url": "mqtt://127.0.0.1:1", "username": "gw", "password_file": "mqtt.pass",
                               "profile": "provincial"},
                       provincial={"gateway_code": "GW01", "cipher": "sm4-cbc", "key_file": "provincial.key",
                                   "appsecret_file": "provincial.secret"})
    return write_config(data)


def test_check_warns_of_secret_files_others_can_read_and_strict_refuses(tmp_path, write_config, capsys):
    from agent.cli import main

    path = secret_config(tmp_path, write_config, 0o644)
    os.chmod(tmp_path / "provincial.secret", 0o620)
    warning = (f"warning: uplink.password_file: {tmp_path / 'mqtt.pass'} is readable by group and others "
               f"(mode 0644); a secret belongs to the plantwatch user alone: chmod 600 {tmp_path / 'mqtt.pass'}")
    assert main(["check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: OK" and lines[1] == warning
    assert f"warning: provincial.appsecret_file: {tmp_path / 'provincial.secret'} is writable by group (mode 0620)" in lines[2]
    assert len([line for line in lines if line.startswith("warning:")]) == 2  # the key file is 0600

    assert main(["check", "--strict", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[:2] == [f"{path}: refused (--strict): warnings", warning]

    for name in ("mqtt.pass", "provincial.secret"):
        os.chmod(tmp_path / name, 0o400)
    assert main(["check", "--strict", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert load(path).warnings == ()


def test_device_secret_files_are_found_by_their_key_names(tmp_path):
    data = {"uplinks": [{"name": "a", "key_file": "a.key"}],
            "devices": [{"name": "opc", "driver": "opcua", "password_file": "/etc/plantwatch/opc.pass",
                         "key_password_file": "rel.pass", "cert_file": "c.der"}]}
    assert list(secret_files(data, tmp_path)) == [
        ("uplinks[0] (a).key_file", tmp_path / "a.key"),
        ("devices[0] (opc).password_file", Path("/etc/plantwatch/opc.pass")),
        ("devices[0] (opc).key_password_file", Path("rel.pass")),  # a driver reads its own paths as written
    ]
    operators = {"alarm_system": {"api_token_file": "api.token", "command_key_file": "cmd.key",
                                  "command_public_key_file": "cmd.pub"}}  # a public key is no secret
    assert list(secret_files(operators, tmp_path)) == [
        ("alarm_system.api_token_file", tmp_path / "api.token"), ("alarm_system.command_key_file", tmp_path / "cmd.key")]


def test_the_agent_logs_the_warning_at_start(tmp_path, write_config, mosquitto):
    path = secret_config(tmp_path, write_config, 0o640)
    text = path.read_text().replace("mqtt://127.0.0.1:1", mosquitto.url)
    path.write_text(text)
    agent = AgentProcess(path, tmp_path / "agent.log").start()
    try:
        deadline = time.monotonic() + 20
        while "password_file" not in agent.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        rc = agent.signal(signal.SIGTERM)
    finally:
        agent.kill()
    out = agent.output()
    assert rc == 0, out
    assert (f"WARNING agent: uplink.password_file: {tmp_path / 'mqtt.pass'} is readable by group (mode 0640)"
            in out), out
