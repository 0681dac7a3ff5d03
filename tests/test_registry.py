"""The point registry and the provincial data message: point codes composed from a tag's codes,
the limits in force, the registry sent at start only when it changed, `plantwatch registry`,
each point's own sample time, per-tag decimals, switch points and the 补传 mark."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from agent import registry
from agent.config import ConfigError, parse
from agent.telemetry import Telemetry
from drivers.base import SampleBatch
from tests.conftest import config_dict

KEY_HEX = "0123456789abcdeffedcba9876543210"
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC = 16:00:00 in Asia/Shanghai


def registry_config(**section) -> dict:
    """Three tags: explicit limits with codes, a gas detector on a preset (one limit of its own),
    and a switch point out of service."""
    data = config_dict()
    data["uplink"]["profile"] = "provincial"
    data["provincial"] = {"gateway_code": "GW-01", "hazard_code": "HZ01",
                          "point_code": "{enterprise}{hazard}{equipment}{indicator}", **section}
    data["tags"][0].update(position="TI-101", equipment_code="R101", indicator_code="T01", decimals=1)
    data["tags"][1].update(equipment_code="R101", indicator_code="P01", hazard_code="HZ02")
    data["tags"].append({"name": "GD201.CH4", "device": "r1-plc", "address": "hr:104", "type": "float32",
                         "desc": "可燃气体 CH4", "preset": "gb50493", "alarms": {"h": 20.0},
                         "point": "640100000001-GD201", "range": [0.0, 100.0]})
    data["tags"].append({"name": "P101.RUN", "device": "r1-plc", "address": "co:3", "type": "bool",
                         "equipment_code": "P101", "indicator_code": "RUN", "in_service": False})
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


def test_registry_carries_codes_and_the_limits_in_force():
    cfg = parse(registry_config())
    rows = [registry.entry(cfg.provincial, p) for p in registry.points(cfg.tags, cfg.provincial)]
    assert rows[0] == {
        "cdbm": "640100000001HZ01R101T01", "qybm": "640100000001", "wxybm": "HZ01", "sbbm": "R101", "zbbm": "T01",
        "wh": "TI-101", "cdmc": "1#反应釜温度", "dw": "°C", "lcxx": "-50.0", "lcsx": "400.0",
        "ddbjz": "10.0", "dbjz": "20.0", "gbjz": "160.0", "ggbjz": "180.0", "sfty": "1",
    }
    # the tag's own hazard code over the section's; no limits configured: empty
    assert rows[1]["cdbm"] == "640100000001HZ02R101P01" and rows[1]["wh"] == "R101.PI01"
    assert [rows[1][k] for k in ("ddbjz", "dbjz", "gbjz", "ggbjz", "lcxx")] == ["", "", "", "", ""]
    # the preset's HH and unit, the tag's own H over the preset's
    assert (rows[2]["cdbm"], rows[2]["dw"], rows[2]["gbjz"], rows[2]["ggbjz"], rows[2]["dbjz"]) == \
        ("640100000001-GD201", "%LEL", "20.000", "50.000", "")
    assert (rows[3]["cdbm"], rows[3]["sfty"]) == ("640100000001HZ01P101RUN", "0")


def test_registry_message_and_its_digest_ignore_the_time_it_was_made():
    cfg = parse(registry_config())
    profile = cfg.provincial
    pts = registry.points(cfg.tags, profile)
    doc = registry.message(profile, T0, pts)
    assert (doc["lx"], doc["cjsj"], doc["wgbm"], len(doc["datas"])) == ("registry", "2027-01-15 16:00:00", "GW-01", 4)
    assert registry.digest(profile, doc) == registry.digest(profile, registry.message(profile, T0 + 60, pts))
    changed = registry_config()
    changed["tags"][0]["alarms"]["hh"] = 190.0
    cfg2 = parse(changed)
    assert registry.digest(profile, doc) != registry.digest(
        cfg2.provincial, registry.message(cfg2.provincial, T0, registry.points(cfg2.tags, cfg2.provincial)))


def test_point_code_template_names_only_known_placeholders():
    found = problems(registry_config(point_code="{enterprise}{hazrd}{equipment}{unit}"))
    assert any(p.startswith("provincial.point_code: unknown placeholder {hazrd}, {unit}") and "did you mean 'hazard'"
               in p for p in found), found


def test_require_points_refuses_a_tag_without_a_code_and_says_which_codes_are_missing():
    data = registry_config(require_points=True)
    del data["tags"][3]["indicator_code"]
    found = problems(data)
    assert found == ["tags[3] (P101.RUN).point: required (provincial.require_points): this tag has no point code; "
                     "or set indicator_code for provincial.point_code"]
    data = registry_config(require_points=True, point_code="")
    found = problems(data)
    assert "tags[0] (R101.TI01).point: required (provincial.require_points): this tag has no point code" in found
    assert not any(p.startswith("tags[2]") for p in found)  # it has its own point


def test_without_require_points_a_tag_without_codes_keeps_its_name():
    data = registry_config()
    del data["tags"][3]["equipment_code"]
    assert parse(data).provincial.point("P101.RUN", "") == "P101.RUN"


def test_two_tags_with_one_point_code_is_a_problem():
    data = registry_config()
    data["tags"][1].update(hazard_code="", indicator_code="T01")
    assert "tags[1] (R101.PI01).point: point code '640100000001HZ01R101T01' is also tags[0] (R101.TI01)'s" \
        in problems(data)


def test_tag_decimals_are_checked():
    data = registry_config()
    data["tags"][0]["decimals"] = 12
    assert "tags[0] (R101.TI01).decimals: must be 0..9" in problems(data)


# --- the data message -----------------------------------------------------------------------------


def test_data_message_each_point_with_its_own_time_decimals_and_switches_as_0_1():
    profile = parse(registry_config()).provincial
    doc = profile.data(T0 + 30, [("R101.TI01", 120.25, "good", T0), ("R101.PI01", 0.5, "good", T0 + 1.5),
                                 ("P101.RUN", 1.0, "good", T0 + 2), ("P101.RUN", 0.0, "bad", None),
                                 ("GD201.CH4", float("nan"), "comm_fail", T0)])
    assert (doc["lx"], doc["cjsj"], doc["bc"]) == ("data", "2027-01-15 16:00:30", "0")
    assert [(d["cdbm"], d["cjsj"], d["cdz"], d["zt"]) for d in doc["datas"]] == [
        ("640100000001HZ01R101T01", "2027-01-15 16:00:00", "120.2", "0"),  # the tag's decimals = 1
        ("640100000001HZ02R101P01", "2027-01-15 16:00:01", "0.500", "0"),
        ("640100000001HZ01P101RUN", "2027-01-15 16:00:02", "1", "0"),
        ("640100000001HZ01P101RUN", "2027-01-15 16:00:30", "0", "2"),  # no time of its own: the message's
        ("640100000001-GD201", "2027-01-15 16:00:00", "", "3"),
    ]


def test_alarm_values_follow_the_tags_decimals_and_switches():
    from agent.alarms import AlarmManager, TagInfo
    from detectors.base import ConditionChange

    profile = parse(registry_config()).provincial
    m = AlarmManager("640100000001", [TagInfo("R101.TI01", "r1-plc", "°C", "温度"), TagInfo("P101.RUN", "r1-plc", "", "运行")])
    docs = m.on_changes([ConditionChange(0, "limit", "HH", True, 185.04321, 180.0, T0),
                         ConditionChange(1, "flatline", "FLAT", True, 1.0, None, T0)])
    for seq, doc in enumerate(docs, 1):
        doc["seq"] = seq
    assert [(a["cdbm"], a["cdz"], a["bjyz"]) for a in map(profile.alarm, docs)] == [
        ("640100000001HZ01R101T01", "185.0", "180.0"), ("640100000001HZ01P101RUN", "1", "")]


def test_late_mark_is_set_by_the_sender_and_survives_encryption(tmp_path):
    (tmp_path / "sm4.key").write_text(KEY_HEX)
    profile = parse(registry_config(sm4_key_file="sm4.key", fields={"late": "isResend"}), base=tmp_path).provincial
    doc = profile.data(T0, [("R101.TI01", 1.0, "good", T0)])
    assert doc["isResend"] == "0" and profile.data(T0, [], late=True)["isResend"] == "1"
    late = profile.mark_late(doc)
    assert late["isResend"] == "1" and doc["isResend"] == "0" and list(late) == list(doc)
    assert profile.mark_late(late, late=False) == doc
    assert profile.decode(profile.encode(late)) == late
    status = profile.status(T0, True)
    assert profile.mark_late(status) is status  # only data messages carry the mark


def test_telemetry_carries_each_tags_sample_time():
    cfg = parse(config_dict())
    telemetry = Telemetry(cfg, outbox=None, wake=lambda: None)
    telemetry.record(SampleBatch.build("r1-plc", [0], [120.5], T0 + 0.25, 0))
    tags = telemetry.document()["tags"]
    assert tags["R101.TI01"] == {"v": 120.5, "q": "good", "t": "2027-01-15T08:00:00.250Z"}
    assert tags["R101.PI01"]["t"] is None  # not sampled yet


# --- plantwatch registry ------------------------------------------------------------------------


def plantwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, timeout=60)


def test_registry_command_prints_csv_and_json(write_config):
    path = write_config(registry_config())
    result = plantwatch("registry", str(path))
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout.decode("utf-8"))))
    assert rows[0] == ["cdbm", "qybm", "wxybm", "sbbm", "zbbm", "wh", "cdmc", "dw", "lcxx", "lcsx",
                       "ddbjz", "dbjz", "gbjz", "ggbjz", "sfty"]
    assert len(rows) == 5 and rows[1][:7] == ["640100000001HZ01R101T01", "640100000001", "HZ01", "R101", "T01",
                                              "TI-101", "1#反应釜温度"]
    result = plantwatch("registry", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    points = json.loads(result.stdout.decode("utf-8"))
    assert [p["cdbm"] for p in points] == [r[0] for r in rows[1:]]
    assert points[2]["ggbjz"] == "50.000"


def test_registry_command_without_the_provincial_profile_registers_the_tags_by_name(write_config):
    result = plantwatch("registry", str(write_config(config_dict())), "--format", "json")
    assert result.returncode == 0, result.stderr
    points = json.loads(result.stdout)
    assert [(p["cdbm"], p["wh"], p["qybm"], p["ggbjz"]) for p in points] == [
        ("R101.TI01", "R101.TI01", "640100000001", "180.000"), ("R101.PI01", "R101.PI01", "640100000001", "")]


def test_registry_command_refuses_a_bad_config(write_config):
    result = plantwatch("registry", str(write_config(registry_config(point_code="{nope}"))))
    assert result.returncode == 2
    assert b"provincial.point_code: unknown placeholder {nope}" in result.stderr and b"Traceback" not in result.stderr


# --- the running agent ---------------------------------------------------------------------------


def test_agent_sends_the_registry_at_start_and_again_only_after_a_config_change(tmp_path, write_config, mosquitto):
    """Three starts: the first sends the registry, the second (same config) does not, the third
    (an equipment code changed) sends the new one. The registry goes out before any data."""
    import signal
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.outbox import Outbox
    from tests.helpers import AgentProcess
    from tests.modbus.server import start_server

    got: list[tuple[str, dict]] = []
    arrived = threading.Condition()

    def on_message(c, u, msg):
        if msg.topic.endswith(("/registry", "/telemetry")):
            with arrived:
                got.append((msg.topic.rsplit("/", 1)[1], json.loads(msg.payload)))
                arrived.notify_all()

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("plantwatch/640100000001/#", qos=1)
    sub.loop_start()

    def start(data: dict, run: int) -> list[tuple[str, dict]]:
        """One run of the agent until its first data message; what arrived in that run."""
        with arrived:
            del got[:]
        agent = AgentProcess(write_config(data), tmp_path / f"agent{run}.log").start()
        try:
            with arrived:
                assert arrived.wait_for(lambda: any(kind == "telemetry" for kind, _ in got), 30), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
        with arrived:
            return list(got)

    try:
        with start_server() as plc:
            plc.set_value(100, 120.0, type="float32")
            data = registry_config()
            data["uplink"].update(url=mosquitto.url, telemetry_interval_s=0.5)
            data["devices"][0].update(url=plc.url, interval_s=0.1)
            first = start(data, 1)
            second = start(data, 2)
            data["tags"][0]["equipment_code"] = "R102"
            third = start(data, 3)
    finally:
        sub.loop_stop()
    assert [kind for kind, _ in first][0] == "registry"
    assert [d["cdbm"] for d in first[0][1]["datas"]][:2] == ["640100000001HZ01R101T01", "640100000001HZ02R101P01"]
    assert "registry" not in [kind for kind, _ in second]
    assert [kind for kind, _ in third][0] == "registry"
    assert third[0][1]["datas"][0]["cdbm"] == "640100000001HZ01R102T01"
    telemetry = next(doc for kind, doc in first if kind == "telemetry")
    assert telemetry["bc"] == "0" and all(d["cjsj"] for d in telemetry["datas"])
    outbox = Outbox(tmp_path / "data" / "outbox.db")
    topics = [t for (t,) in outbox.db.execute("SELECT topic FROM outbox WHERE topic LIKE '%/registry'")]
    outbox.close()
    assert topics == ["plantwatch/640100000001/registry"] * 2
