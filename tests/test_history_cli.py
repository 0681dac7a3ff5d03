"""`plantwatch history`: the window, text and CSV, errors and exit codes, reading beside a
running agent and from a read-only directory, a real agent run, and history -> replay."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from agent.cli import main
from agent.config import parse
from agent.history_compress import Points
from agent.history_store import DAY_S, Store, day_files
from tests.conftest import config_dict
from tests.helpers import AgentProcess
from tests.test_history import T0

# --- plantwatch history ------------------------------------------------------------------------


def recorded(tmp_path: Path, write_config) -> tuple[Path, float]:
    """A config and its history: R101.TI01 = 100 + hour of day, one point a minute, two days."""
    data = config_dict()
    data["agent"]["data_dir"] = str(tmp_path / "data")
    data["agent"]["timezone"] = "Asia/Shanghai"
    config = write_config(data)
    store = Store(tmp_path / "data" / "history", ["R101.TI01", "R101.PI01"])
    ts = T0 + np.arange(0, 2 * DAY_S, 60.0)
    value = 100 + (ts - T0) % DAY_S // 3600
    q = np.where((ts >= T0 + 3600) & (ts < T0 + 3720), 3, 0).astype(np.uint8)
    value[q == 3] = np.nan
    store.write(Points(np.zeros(len(ts), np.int32), ts, value, q))
    store.close()
    return config, T0


def test_cli_window_text_and_csv(tmp_path, write_config, capsys):
    config, t0 = recorded(tmp_path, write_config)
    # 08:30..09:30 Asia/Shanghai = 00:30..01:30Z, with the point before 08:30 first
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29 08:30:30", "--to", "2025-11-29 09:30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# R101.TI01 2025-11-29 08:30:30.000+08:00 .. 2025-11-29 09:30:00.000+08:00")
    assert out[1] == "2025-11-29 08:30:00.000+08:00  100  good"  # the last point before --from
    assert out[2].startswith("2025-11-29 08:31:00.000+08:00  100  good") and len(out) == 1 + 1 + 60
    assert out[-1] == "2025-11-29 09:30:00.000+08:00  101  good"
    assert "2025-11-29 09:00:00.000+08:00  nan  comm_fail" in out
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29T00:59:00Z",
                 "--to", "2025-11-29T01:03:00Z", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # the point before --from, then the window: a comm failure has no value
    assert lines == ["time,R101.TI01,quality", "2025-11-29T00:58:00.000Z,100.0,good",
                     "2025-11-29T00:59:00.000Z,100.0,good", "2025-11-29T01:00:00.000Z,,comm_fail",
                     "2025-11-29T01:01:00.000Z,,comm_fail", "2025-11-29T01:02:00.000Z,101.0,good",
                     "2025-11-29T01:03:00.000Z,101.0,good"]


def test_cli_across_midnight_and_errors(tmp_path, write_config, capsys):
    config, t0 = recorded(tmp_path, write_config)
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29T23:58:00Z", "--to",
                 "2025-11-30T00:02:00Z", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(",")[0] for x in lines[1:]] == [f"2025-11-29T23:5{m}:00.000Z" for m in (7, 8, 9)] + [
        f"2025-11-30T00:0{m}:00.000Z" for m in (0, 1, 2)]
    assert main(["history", str(config), "R101.TI0", "--csv"]) == 2
    assert "unknown tag 'R101.TI0' (did you mean 'R101.TI01'?)" in capsys.readouterr().err
    assert main(["history", str(config), "R101.TI01", "--from", "yesterday"]) == 2
    assert "'yesterday' is not a time" in capsys.readouterr().err
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-30", "--to", "2025-11-29"]) == 2
    assert "--from must be before --to" in capsys.readouterr().err
    # a window with no points: the point before it alone
    assert main(["history", str(config), "R101.TI01", "--from", "2025-12-05", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["2025-11-30T23:59:00.000Z,123.0,good"]
    shutil.rmtree(tmp_path / "data" / "history")
    assert main(["history", str(config), "R101.TI01"]) == 1
    assert "nothing recorded yet" in capsys.readouterr().err


def test_history_csv_replays(tmp_path, write_config, capsys):
    """A day's history as CSV through `plantwatch replay`: the limit alarms of the day come out."""
    config, t0 = recorded(tmp_path, write_config)
    csv_path = tmp_path / "day.csv"
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29T00:00:00Z", "--to",
                 "2025-11-29T23:59:59Z", "--csv"]) == 0
    csv_path.write_text(capsys.readouterr().out, encoding="utf-8")
    data = config_dict()
    data["tags"][0]["alarms"] = {"h": 110.5, "deadband": 0.1}
    replay_cfg = write_config(data, "replay.toml")
    out = tmp_path / "alarms.jsonl"
    assert main(["replay", str(replay_cfg), "--csv", str(csv_path), "--out", str(out)]) == 0
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    limit = [(m["state"], m["level"], m["value"], m["ts"]) for m in msgs if m["id"] == "R101.TI01/limit"]
    # 111 from 11:00Z (hour 11 of the day) until midnight
    assert limit == [("active", "H", 111.0, "2025-11-29T11:00:00.000Z")]


# --- the live agent ------------------------------------------------------------------------------


def test_agent_run_leaves_history_that_plantwatch_history_returns(tmp_path, write_config, mosquitto):
    from tests.modbus.server import start_server

    with start_server(holding={}) as plc:
        plc.set_value(100, 120.0, type="float32")
        plc.set_value(102, 0.8, type="float32")
        data = config_dict()
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        data["agent"]["data_dir"] = str(tmp_path / "data")
        data["history"] = {"flush_s": 0.5}
        data["tags"].append({"name": "R101.DT01", "expr": "R101.TI01 - 100.0", "unit": "°C"})  # a computed tag
        config = write_config(data)
        started = time.time()
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            deadline = time.time() + 20
            while time.time() < deadline and not day_files(tmp_path / "data" / "history"):
                time.sleep(0.1)
            time.sleep(1.0)
            plc.set_value(100, 150.0, type="float32")
            time.sleep(1.0)
            plc.set_value(100, 150.5, type="float32")
            time.sleep(0.5)
            # the agent is running: readers read beside it
            live = subprocess.run([sys.executable, "-m", "agent.cli", "history", str(config), "R101.TI01", "--csv"],
                                  capture_output=True, text=True, timeout=30)
            assert live.returncode == 0, live.stderr
            assert ",120.0,good" in live.stdout and ",150.0,good" in live.stdout
        finally:
            rc = agent.signal(signal.SIGTERM)
        assert rc == 0, agent.output()
    done = subprocess.run([sys.executable, "-m", "agent.cli", "history", str(config), "R101.TI01", "--csv"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    values = [float(v) for _, v, _ in rows]
    assert values[0] == 120.0 and values[-1] == 150.5  # the held last sample was written at SIGTERM
    assert 150.0 in values and all(q == "good" for _, _, q in rows)
    computed = subprocess.run([sys.executable, "-m", "agent.cli", "history", str(config), "R101.DT01", "--csv"],
                              capture_output=True, text=True, timeout=30)
    assert computed.returncode == 0, computed.stderr
    derived = [float(line.split(",")[1]) for line in computed.stdout.splitlines()[1:]]
    assert derived[0] == 20.0 and derived[-1] == 50.5 and 50.0 in derived, computed.stdout
    first = datetime.fromisoformat(rows[0][0].replace("Z", "+00:00")).timestamp()
    assert rows[0][0].endswith("Z") and started < first < started + 30
    # 0.1 s polling of a flat value: a handful of points, not one per poll
    assert len(rows) < 20, done.stdout
    assert "Traceback" not in agent.output()
    assert os.path.getsize(next(iter(day_files(tmp_path / "data" / "history").values()))) > 0


def test_query_reads_the_config_like_the_full_load(tmp_path, write_config, capsys):
    from agent.config import load
    from agent.history_query import locate

    for agent_keys, history_keys in (({}, {}), ({"data_dir": "rel/data", "timezone": "UTC"}, {}),
                                     ({"data_dir": str(tmp_path / "abs")}, {"dir": "elsewhere/h"})):
        data = config_dict()
        data["agent"] = {"plant": "640100000001", **agent_keys}
        if history_keys:
            data["history"] = history_keys
        path = write_config(data)
        cfg, where = load(path), locate(path)
        assert where.directory == cfg.history.path(cfg.agent.data_dir)
        assert where.timezone == cfg.agent.timezone
    # a config the quick reading cannot take is loaded properly: a broken one exits 2 with its problems
    data = config_dict()
    data["agent"]["timezone"] = "Mars/Olympus"
    assert main(["history", str(write_config(data)), "R101.TI01"]) == 2
    assert "agent.timezone: unknown time zone 'Mars/Olympus'" in capsys.readouterr().err


def test_a_tag_no_longer_configured_is_still_readable(tmp_path, write_config, capsys):
    config, t0 = recorded(tmp_path, write_config)
    store = Store(tmp_path / "data" / "history", ["R101.TI01", "R101.PI01", "OLD.FI09"])
    store.write(Points(np.array([2], np.int32), np.array([T0 + 30.0]), np.array([4.5]), np.zeros(1, np.uint8)))
    store.close()
    assert main(["history", str(config), "OLD.FI09", "--from", "2025-11-29T00:00:00Z", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["2025-11-29T00:00:30.000Z,4.5,good"]


def test_the_quick_reading_of_agent_and_history_tables(tmp_path):
    from agent.history_query import _sections, locate

    text = ('# plant\n\n[agent]   # the gateway\nplant = "1"\ndata_dir = "d"\n[[tags]]\nname = "A"\n'
            'range = [\n  -50.0,\n  400.0,\n]\n[history]\ndir = "h"\n[tags.x]\n')
    assert _sections(text) == {"agent": {"plant": "1", "data_dir": "d"}, "history": {"dir": "h"}}
    assert _sections('agent.data_dir = "x"\n[agent]\nplant = "1"\n') is None  # dotted keys at the top
    assert _sections('[agent]\nplant = "1"\n[history]\n[agent]\nname = "x"\n') is None  # given twice
    path = tmp_path / "p.toml"
    path.write_text(text)
    assert locate(path).directory == tmp_path / "h"


def test_a_configured_tag_without_history_yet(tmp_path, write_config, capsys):
    config, t0 = recorded(tmp_path, write_config)
    store = Store(tmp_path / "data" / "history", ["R101.TI01"])  # R101.PI01 never recorded
    store.close()
    for f in day_files(tmp_path / "data" / "history").values():  # files without the tag
        import sqlite3

        with sqlite3.connect(f) as db:
            db.execute("DELETE FROM tags WHERE name = 'R101.PI01'")
    assert main(["history", str(config), "R101.PI01", "--csv"]) == 0
    assert capsys.readouterr().out == "time,R101.PI01,quality\n"


def test_history_off_and_check_says_where(tmp_path, write_config, capsys):
    from agent.runtime import Agent

    data = config_dict(history={"enabled": False})
    data["agent"]["data_dir"] = str(tmp_path / "data")
    agent = Agent(parse(data, base=tmp_path))
    try:
        assert agent.history is None
    finally:
        agent.outbox.close()
    assert main(["check", str(write_config(config_dict(history={"compression": "deadband", "retention_days": 40})))]) == 0
    assert f"history {tmp_path / 'data' / 'history'} deadband 40 days, max 2048 MB" in capsys.readouterr().out


def test_history_reads_from_a_read_only_directory(tmp_path, write_config, capsys):
    """An operator without write access to the history (here: a read-only mount) reads it
    while the agent is stopped, when SQLite cannot create the WAL's shared-memory file."""
    config, t0 = recorded(tmp_path, write_config)
    hist = tmp_path / "data" / "history"
    subprocess.run(["mount", "--bind", "-o", "ro", str(hist), str(hist)], check=True)
    try:
        assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29T00:00:00Z", "--to",
                     "2025-11-29T00:01:00Z", "--csv"]) == 0
        assert capsys.readouterr().out.splitlines()[1:] == ["2025-11-29T00:00:00.000Z,100.0,good",
                                                            "2025-11-29T00:01:00.000Z,100.0,good"]
    finally:
        subprocess.run(["umount", str(hist)], check=True)


def test_a_damaged_day_file_is_an_error_not_a_traceback(tmp_path, write_config, capsys):
    config, t0 = recorded(tmp_path, write_config)
    first = next(iter(day_files(tmp_path / "data" / "history").values()))
    first.write_bytes(b"not a database" * 100)
    assert main(["history", str(config), "R101.TI01", "--from", "2025-11-29T00:00:00Z", "--csv"]) == 1
    assert "history: cannot read the history files: file is not a database" in capsys.readouterr().err
