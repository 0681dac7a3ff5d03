"""Fixtures for the Modbus driver tests: a real pymodbus TCP server per test."""

from __future__ import annotations

import pytest

from tests.modbus.server import start_server


@pytest.fixture
def server():
    srv = start_server()
    yield srv
    srv.stop()
