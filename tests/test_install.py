"""Installing a gateway: `plantwatch --version`, the hashed lock of the runtime dependencies, and
`make wheelhouse` installed offline into a fresh virtualenv (no index, every hash required)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import version
from pathlib import Path

import Cython

from tests.conftest import config_dict, to_toml

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "gateway.txt"
NOT_FOR_GATEWAYS = {"pytest", "pytest-timeout", "pytest-benchmark", "hypothesis", "ruff", "import-linter", "amqtt",
                    "pymodbustcp", "river", "cython", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_version_names_the_package_and_the_kernels_build():
    out = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out[0] == f"plantwatch {version('plantwatch')}"
    assert out[1].startswith("python 3.")
    kernels = [line for line in out if line.startswith("detectors._")]
    assert [line.split(":")[0] for line in kernels] == ["detectors._csv", "detectors._expr", "detectors._kernels",
                                                         "detectors._pca"]
    for line in kernels:
        assert f": Cython {Cython.__version__}, numpy " in line and ", -O3 -ffp-contract=off, built " in line
        assert line.endswith(".so)")


def test_the_lock_pins_every_runtime_dependency_with_hashes_and_nothing_else():
    text = LOCK.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M))
    body = text[re.search(r"^[A-Za-z0-9_.-]+==", text, re.M).start():]  # past the header's comments
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", body)
    assert len(entries) == len(pins) and all("--hash=sha256:" in e for e in entries)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    locked = {canonical(n) for n in pins}
    for requirement in declared:
        name = canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group())
        assert name in locked, f"{requirement} is not in {LOCK.name}: run make lock"
    assert not locked & NOT_FOR_GATEWAYS
    assert int(pins["cryptography"].split(".")[0]) >= 45  # ExtensionPolicy


def test_wheelhouse_installs_offline_into_a_fresh_venv(tmp_path):
    venv = Path(sys.prefix)
    house = tmp_path / "wheelhouse"
    made = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", str(venv / ".installed"), "wheelhouse",
                           f"VENV={venv}", f"WHEELHOUSE={house}"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    with tarfile.open(f"{house}.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"requirements.txt", "SHA256SUMS"} <= names and any(n.startswith("plantwatch-") for n in names)
    assert not {canonical(n.split("-")[0]) for n in names if n.endswith(".whl")} & NOT_FOR_GATEWAYS

    gateway = tmp_path / "gateway"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    subprocess.run([sys.executable, "-m", "venv", str(gateway)], check=True, timeout=120, env=env)
    # --isolated: no pip configuration or environment (no index, no other find-links) but the wheelhouse
    install = subprocess.run([str(gateway / "bin" / "python"), "-m", "pip", "--isolated", "install", "-q",
                              "--no-index", "--find-links", str(house), "--require-hashes",
                              "-r", str(house / "requirements.txt")], capture_output=True, text=True, timeout=600, env=env)
    assert install.returncode == 0, install.stderr
    shown = subprocess.run([str(gateway / "bin" / "plantwatch"), "--version"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"Cython {Cython.__version__}" in shown.stdout and str(gateway / "lib") in shown.stdout
    config = tmp_path / "plantwatch.toml"
    config.write_text(to_toml(config_dict()))
    checked = subprocess.run([str(gateway / "bin" / "plantwatch"), "check", str(config)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{config}: OK\n") and "device r1-plc: modbus" in checked.stdout
    # the web console's files are package data of the wheel
    console = subprocess.run([str(gateway / "bin" / "python"), "-c", "from agent.webconsole import FILES, static; "
                              "print(*(len(static(p)[2]) for p in FILES))"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
    assert console.returncode == 0 and all(int(n) > 100 for n in console.stdout.split()), console.stderr
