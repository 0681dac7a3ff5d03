"""`plantwatch demo` works end to end, here with the embedded broker a fresh machine falls back to."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_with_embedded_broker_delivers_alarms_without_gaps():
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--seconds", "22", "--embedded-broker"],
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "broker AmqttBroker" in out
    assert "STATUS 640100000001 ONLINE" in out
    # the reactor's temperature crosses H, and the dust collector's PLC drops off the network
    assert re.search(r"ALARM 640100000001 seq=\d+ \S+ R101\.TI01/limit active H ", out), out
    assert re.search(r"ALARM 640100000001 seq=\d+ \S+ dc-plc/comm active COMM", out), out
    summary = out.split("what the platform received:")[1]
    assert "no gaps" in summary and "0 duplicates" in summary
    assert "Traceback" not in result.stderr


def test_demo_in_the_provincial_profile_is_decrypted_by_the_platform():
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--seconds", "16", "--profile", "provincial"],
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "payload sm4-cbc (fixed IV), HEX, envelope" in out
    assert "REGISTRY 640100000001 6 points" in out
    assert re.search(r"ALARM 640100000001 seq=\d+ [\d-]+ [\d:]+ R101\.TI01 active code=2 value=1\d\d\.\d{3} °C", out), out
    assert "INVALID" not in out
    summary = out.split("what the platform received:")[1]
    assert "no gaps" in summary and "offline" in summary


def test_demo_over_tcp_reaches_the_reference_platform_without_a_broker():
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--seconds", "16", "--transport", "tcp"],
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "broker" not in out.split("what the platform received:")[0]
    assert re.search(r"the reference platform listens at tcp://127\.0\.0\.1:\d+", out), out
    assert "payload aes-128-cbc (random IV in front), base64" in out and '"dataId":"{uuid}"' in out
    assert "REGISTRY 640100000001 6 points" in out and "STATUS 640100000001 ONLINE" in out
    assert re.search(r"ALARM 640100000001 seq=\d+ [\d-]+ [\d:]+ R101\.TI01 active code=2", out), out
    assert "INVALID" not in out
    summary = out.split("what the platform received:")[1]
    assert "no gaps" in summary and "offline" in summary
