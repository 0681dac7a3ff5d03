"""Fixtures for the OPC-UA driver tests: certificates made once per run, and quiet asyncua logs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.opcua.certs import make_self_signed
from tests.opcua.helpers import SERVER_URI

CLIENT_URI = "urn:plantwatch:test:client"


@dataclass(frozen=True)
class Certs:
    server_cert: Path
    server_key: Path
    other_server_cert: Path
    other_server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate the servers do not trust
    stranger_key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("pki")
    server = make_self_signed(root / "server", "plant server", SERVER_URI, 30)
    other = make_self_signed(root / "other-server", "impostor server", SERVER_URI, 30)
    client = make_self_signed(root / "client", "plantwatch gateway", CLIENT_URI, 30)
    stranger = make_self_signed(root / "stranger", "unknown gateway", CLIENT_URI, 30)
    return Certs(*server, *other, *client, *stranger)


@pytest.fixture(autouse=True)
def _quiet_asyncua():
    # asyncua logs every refused request and reconnect attempt with a traceback; the tests
    # provoke many of those on purpose
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
