"""The systemd unit: it verifies, `systemd-analyze security --offline` rates it OK (<= 2.5), and it
still lets the agent reach its serial ports, its network and its config. systemd-analyze comes
from Debian's systemd package (`make system-deps`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "plantwatch.service"
EXPOSURE_MAX = 2.5


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: make system-deps installs Debian's systemd package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def settings() -> dict[str, list[str]]:
    """Every Key=value of the unit (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_unit_verifies_without_a_warning(tmp_path):
    """`systemd-analyze verify` on the unit as installed: an image root holding the system's units,
    plantwatch.service in /etc/systemd/system and the virtualenv's plantwatch command in /opt."""
    system = Path("/usr/lib/systemd/system")
    shutil.copytree(system if system.is_dir() else Path("/lib/systemd/system"),
                    tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system")
    command = tmp_path / "opt/plantwatch/.venv/bin/plantwatch"
    command.parent.mkdir(parents=True)
    shutil.copy(Path(sys.prefix) / "bin" / "plantwatch", command)

    result = analyze("verify", f"--root={tmp_path}", "plantwatch.service")
    assert (result.returncode, result.stderr) == (0, "")

    command.unlink()  # verify does look: without the command the unit is refused
    missing = analyze("verify", f"--root={tmp_path}", "plantwatch.service")
    assert missing.returncode != 0 and "/opt/plantwatch/.venv/bin/plantwatch is not executable" in missing.stderr


def test_security_exposure_is_ok():
    result = analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for plantwatch\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= EXPOSURE_MAX and found.group(2) == "OK", result.stdout
    passed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✓")}
    for item in ("CapabilityBoundingSet=~CAP_SYS_ADMIN", "RestrictAddressFamilies=~AF_PACKET",
                 "RestrictAddressFamilies=~AF_NETLINK", "SystemCallFilter=~@privileged", "SystemCallFilter=~@mount",
                 "ProtectKernelTunables=", "ProtectKernelModules=", "ProtectKernelLogs=", "ProtectClock=", "UMask=",
                 "NoNewPrivileges=", "ProtectSystem=", "MemoryDenyWriteExecute=", "SystemCallArchitectures="):
        assert item in passed, (item, result.stdout)


def test_the_agent_keeps_its_serial_ports_network_and_config():
    s = settings()
    assert s["User"] == ["plantwatch"] and s["Group"] == ["plantwatch"]
    assert s["SupplementaryGroups"] == ["dialout"]  # the group of /dev/ttyS*, ttyUSB*, ttyACM*
    assert s["DevicePolicy"] == ["closed"] and "PrivateDevices" not in s  # it would hide the ports
    assert s["DeviceAllow"] == ["char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "PrivateUsers" not in s  # it would unmap dialout and so lose the ports
    assert s["StateDirectory"] == ["plantwatch"] and s["ConfigurationDirectoryMode"] == ["0750"]
    # the install steps give /etc/plantwatch and its files the group the service runs with
    install = (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert "install -d -o root -g plantwatch -m 0750 /etc/plantwatch" in install
    assert "install -o root -g plantwatch -m 0640 " in install


def test_the_unit_waits_for_ready_and_watches_the_event_loop():
    """`Type=notify`: started once the agent says READY=1; `WatchdogSec`: killed and restarted when
    its event loop stops pinging (agent/supervise.py, tests/faults/test_supervision.py). The
    notifications are datagrams on a local socket: AF_UNIX must stay allowed."""
    s = settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and s["Restart"] == ["always"]
    assert 10 <= int(s["WatchdogSec"][0]) <= 60
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0].split()
