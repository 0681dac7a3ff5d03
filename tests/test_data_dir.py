"""A data_dir that cannot be created or written at start: `plantwatch run` says so and exits 2
before any device is polled (the PLC sees no request)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import config_dict
from tests.modbus.server import start_server
from tests.test_cli import plantwatch


def run_with_data_dir(write_config, data_dir) -> tuple[subprocess.CompletedProcess, set[int]]:
    with start_server() as plc:
        data = config_dict()
        data["agent"]["data_dir"] = str(data_dir)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        result = plantwatch("run", str(write_config(data)), timeout=30)
        return result, set(plc.function_codes)


def test_a_data_dir_that_cannot_be_created_exits_2_before_polling(tmp_path, write_config):
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    result, requests = run_with_data_dir(write_config, tmp_path / "not-a-dir" / "data")
    assert result.returncode == 2, result.stderr
    assert "data_dir" in result.stderr and "cannot be created or written" in result.stderr, result.stderr
    assert requests == set()
    assert "running: plant" not in result.stderr


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a read-only bind mount (the tests run as root: permissions alone stop nothing)."""
    path = tmp_path / "ro"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_data_dir_that_cannot_be_written_exits_2_before_polling(read_only_dir, write_config):
    result, requests = run_with_data_dir(write_config, read_only_dir)
    assert result.returncode == 2, result.stderr
    assert f"data_dir '{read_only_dir}' cannot be created or written: Read-only file system" in result.stderr, \
        result.stderr
    assert requests == set()
    assert list(read_only_dir.iterdir()) == []


def test_a_data_dir_on_a_full_disk_exits_2_before_polling(tmp_path, write_config):
    from tests.faults.test_storage import fill

    path = tmp_path / "full"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        fill(path / "filler")
        result, requests = run_with_data_dir(write_config, path)
    finally:
        subprocess.run(["umount", str(path)], check=True)
    assert result.returncode == 2, result.stderr
    assert "cannot be created or written: No space left on device" in result.stderr, result.stderr
    assert requests == set()
