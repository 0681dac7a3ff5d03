"""Interoperability with libmodbus (C): Modbus TCP and RTU over a virtual serial cable, against a
small server compiled here from tests/modbus/libmodbus_server.c (Debian: libmodbus-dev, gcc)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from agent.broker import free_port
from drivers.base import BAD, GOOD
from tests.modbus.helpers import device, poll, tag
from tests.modbus.serial_pair import serial_pair
from tests.modbus.server import encode

SOURCE = Path(__file__).with_name("libmodbus_server.c")


@pytest.fixture(scope="module")
def libmodbus_server(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("libmodbus") / "libmodbus_server"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmodbus"], check=True,
                           capture_output=True, text=True).stdout
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(SOURCE), *shlex.split(flags)], check=True)
    return binary


@contextmanager
def running(cmd: list[str]):
    """Start the server; yield the set of function codes it reports receiving."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    codes: set[int] = set()
    assert proc.stdout.readline().strip() == "ready"

    def reader():
        for line in proc.stdout:
            if m := re.match(r"fc (\d+)", line):
                codes.add(int(m.group(1)))
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        yield codes
    finally:
        proc.terminate()
        proc.wait(5)
        t.join(5)


def image() -> tuple[list[str], list, list[float]]:
    words = encode(-123.456, "float32", "CDAB") + encode(-2, "int16") + encode(3_000_000_000, "uint32", "DCBA")
    args = [f"hr:{10 + i}={w}" for i, w in enumerate(words)] + ["ir:0=4660", "co:3=1"]
    tags = [tag(0, "hr:10", "float32", "CDAB"), tag(1, "hr:12", "int16"), tag(2, "hr:13", "uint32", "DCBA"),
            tag(3, "ir:0", "uint16"), tag(4, "co:3", "bool"), tag(5, "co:4", "bool"),
            tag(6, "hr:98", "uint16"), tag(7, "hr:101", "uint16")]  # hr:101 is past the device's end
    want = [float(np.float32(-123.456)), -2, 3_000_000_000, 0x1234, 1, 0, 0, np.nan]
    return args, tags, want


def check(batch, want):
    np.testing.assert_array_equal(batch.value, np.array(want, dtype=float))
    assert list(batch.quality) == [GOOD] * 7 + [BAD]
    assert "exception 02" in batch.error


def test_libmodbus_tcp(libmodbus_server):
    port = free_port()
    args, tags, want = image()
    with running([str(libmodbus_server), "tcp", str(port), *args]) as codes:
        batches = poll(device(f"tcp://127.0.0.1:{port}", max_gap=2), tags, n=2)
    for batch in batches:
        check(batch, want)
    assert codes == {1, 3, 4}


def test_libmodbus_rtu_over_a_serial_line(libmodbus_server):
    args, tags, want = image()
    with serial_pair() as (device_end, server_end):
        with running([str(libmodbus_server), "rtu", server_end, "19200", "5", *args]) as codes:
            assert os.path.exists(device_end)
            batches = poll(device(f"rtu://{device_end}?baud=19200", unit=5, max_gap=2, timeout_s=1.0), tags, n=2)
    for batch in batches:
        check(batch, want)
    assert codes == {1, 3, 4}
