"""Secure defaults toward the platform and the operators, as `plantwatch check` sees them: no
password over cleartext to another host, no credentials in a URL (and none printed), examples
over mqtts with a CA, operator keys and tokens checked."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config.sections import redact
from tests.conftest import config_dict

ROOT = Path(__file__).resolve().parent.parent


def check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("url, ok", [
    ("mqtt://platform.example.gov.cn:1883", False),
    ("mqtt://10.1.2.3:1883", False),
    ("http://platform.example.gov.cn/api", False),
    ("mqtt://127.0.0.1:1883", True),
    ("mqtt://localhost:1883", True),
    ("mqtts://platform.example.gov.cn:8883", True),
])
def test_a_password_never_crosses_the_network_in_clear(url, ok, tmp_path, write_config):
    (tmp_path / "mqtt.password").write_text("s3cret-Passw0rd\n")
    data = config_dict()
    data["uplink"].update(url=url, username="gw", password_file="mqtt.password")
    out = check(write_config(data))
    assert out.returncode == (0 if ok else 2), out.stdout + out.stderr
    assert ("a password would cross the network in clear" in out.stderr) is not ok
    assert "s3cret-Passw0rd" not in out.stdout + out.stderr


def test_credentials_in_a_url_are_refused_and_never_shown(write_config):
    data = config_dict()
    data["uplink"].update(url="mqtts://gw:s3cret-Passw0rd@platform.example.gov.cn:8883")
    out = check(write_config(data))
    assert out.returncode == 2
    assert "uplink.url: must not carry credentials (mqtts://gw:***@platform.example.gov.cn:8883)" in out.stderr
    data["uplink"].update(url="ftp://gw:s3cret-Passw0rd@platform.example.gov.cn:21")
    out = check(write_config(data))
    assert out.returncode == 2 and "ftp://gw:***@platform" in out.stderr
    assert "s3cret-Passw0rd" not in out.stdout + out.stderr


def test_redact_keeps_everything_but_the_password():
    assert redact("mqtt://u:p%40ss@h:1883/x?y=1") == "mqtt://u:***@h:1883/x?y=1"
    assert redact("mqtt://h:1883") == "mqtt://h:1883"
    assert redact("https://user@h/api") == "https://user@h/api"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml") if p.name != "demo.toml"))
def test_the_examples_uplink_over_tls_with_a_ca(name):
    """Every example but the loopback demo: mqtts, to a CA given in ca_file (the filled-in
    chemical reactor) or, for the templates `plantwatch init` writes, the system's trust store
    (with the ca_file line ready to uncomment)."""
    text = (ROOT / "configs" / name).read_text()
    uplink = tomllib.loads(text)["uplink"]
    assert uplink["url"].startswith("mqtts://")
    if name == "chemical-reactor.toml":
        assert (ROOT / "configs" / uplink["ca_file"]).is_file()
    else:
        assert "ca_file" in uplink or '# ca_file = "keys/platform-ca.pem"' in text
    out = check(ROOT / "configs" / name)
    assert out.returncode == 0, out.stderr
    assert " tls" in out.stdout and "operators: socket" in out.stdout


def test_operator_settings_are_checked(tmp_path, write_config):
    (tmp_path / "short.token").write_text("scada tooshort\n")
    (tmp_path / "short.key").write_bytes(b"k" * 20)
    data = config_dict()
    data["alarm_system"] = {"commands": True, "command_key_file": "short.key", "api_token_file": "short.token",
                            "api_socket_group": "no-such-group-here", "max_suppress_s": 0}
    out = check(write_config(data))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    for line in ("alarm_system.command_key_file: ", "needs at least 32 bytes, this one has 20",
                 "alarm_system.api_token_file: token 1 is shorter than 16 characters",
                 "alarm_system.api_socket_group: no such group: 'no-such-group-here'",
                 "alarm_system.max_suppress_s: must be > 0"):
        assert line in out.stderr, out.stderr
    assert "tooshort" not in out.stderr
