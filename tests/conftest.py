"""Shared fixtures: a real mosquitto per test on a free loopback port, config builders."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from agent.broker import Mosquitto
from tests.helpers import register_source_entry_points

# a family or driver declared in pyproject.toml is found by entry point even before the
# editable install is made again
register_source_entry_points()

# benchmarks run with `make bench` (PLANTWATCH_BENCH=1), not as part of the test suite
collect_ignore_glob = [] if os.environ.get("PLANTWATCH_BENCH") else ["bench/*"]


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A mosquitto of the test's own (max_queued_messages 0), stopped afterwards."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto").start()
    yield broker
    broker.close()


@pytest.fixture
def persistent_mosquitto(tmp_path: Path):
    """A mosquitto that keeps sessions across restarts, as a platform's broker would."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto", persistent=True).start()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL of the test session's own (the OS's initdb and pg_ctl, a temporary data
    directory, a free port), removed at the end."""
    from tests.postgres import Postgres

    server = Postgres().start()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A new, empty database on the session's PostgreSQL."""
    import uuid

    import psycopg

    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server.url.rsplit('/', 1)[0]}/{name}"


BASE_CONFIG: dict[str, Any] = {
    "agent": {"plant": "640100000001", "name": "测试化工", "data_dir": "data"},
    "uplink": {"url": "mqtt://127.0.0.1:1883", "heartbeat_s": 5.0, "telemetry_interval_s": 0.0},
    "alarm_system": {"api_port": 0},
    "devices": [
        {"name": "r1-plc", "driver": "modbus", "url": "tcp://127.0.0.1:5020", "unit": 1, "interval_s": 0.2, "timeout_s": 0.5},
    ],
    "tags": [
        {
            "name": "R101.TI01",
            "device": "r1-plc",
            "address": "hr:100",
            "type": "float32",
            "unit": "°C",
            "desc": "1#反应釜温度",
            "range": [-50.0, 400.0],
            "alarms": {"hh": 180.0, "h": 160.0, "l": 20.0, "ll": 10.0, "deadband": 1.0},
        },
        {"name": "R101.PI01", "device": "r1-plc", "address": "hr:102", "type": "float32", "unit": "MPa"},
    ],
}


def config_dict(**sections: Any) -> dict[str, Any]:
    """A valid config as a dict; keyword arguments replace whole sections."""
    data = copy.deepcopy(BASE_CONFIG)
    data.update(copy.deepcopy(sections))
    return data


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML writing for test configs (tables, arrays of tables, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    lines: list[str] = []
    for section, body in data.items():
        if isinstance(body, list):
            for entry in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in entry.items()]
                lines.append("")
        elif isinstance(body, dict) and all(isinstance(v, dict) for v in body.values()) and section == "detectors":
            for name, params in body.items():
                lines.append(f"[{section}.{name}]")
                lines += [f"{k} = {value(v)}" for k, v in params.items()]
                lines.append("")
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in body.items()]
            lines.append("")
    return "\n".join(lines)


@pytest.fixture
def write_config(tmp_path: Path):
    """write_config(data) -> path of a TOML file holding ``data``."""

    def write(data: dict[str, Any], name: str = "plantwatch.toml") -> Path:
        path = tmp_path / name
        path.write_text(to_toml(data), encoding="utf-8")
        return path

    return write
