"""Profile `provincial`: a province's field names, codes, local time, fixed decimals, SM4."""

from __future__ import annotations

import base64

import pytest

from agent.alarms import AlarmManager, TagInfo
from agent.config import ConfigError, parse
from agent.provincial import ProvincialError, sm4_decrypt, sm4_encrypt
from detectors.base import ConditionChange
from tests.conftest import config_dict

KEY_HEX = "0123456789abcdeffedcba9876543210"


def provincial_config(tmp_path, **section):
    data = config_dict()
    data["uplink"]["profile"] = "provincial"
    data["provincial"] = {"gateway_code": "GW-640100-01", **section}
    data["tags"][0]["point"] = "640100000001-R101-TI01"
    return data


def alarm_doc(seq: int = 7):
    m = AlarmManager("640100000001", [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度")])
    doc = m.on_changes([ConditionChange(0, "limit", "HH", True, 185.04321, 180.0, 1_800_000_000.4)])[0]
    doc["seq"] = seq
    return doc


def test_alarm_in_default_fields_with_local_time_and_fixed_decimals(tmp_path):
    profile = parse(provincial_config(tmp_path), base=tmp_path).provincial
    out = profile.alarm(alarm_doc())
    assert out == {
        "qybm": "640100000001", "wgbm": "GW-640100-01", "lx": "alarm", "xh": 7,
        "cdbm": "640100000001-R101-TI01",
        "cjsj": "2027-01-15 16:00:00",  # 08:00:00.4 UTC in Asia/Shanghai
        "cdz": "185.043", "bjyz": "180.000", "dw": "°C", "bjlx": "1", "bjzt": "1",
        "bjms": out["bjms"],
    }
    assert "1#反应釜温度" in out["bjms"]
    assert profile.alarm(alarm_doc(), repeat=True)["bjzt"] == "1"


def test_fields_codes_and_decimals_are_configuration(tmp_path):
    data = provincial_config(tmp_path, decimals=1, fields={"enterprise": "enterpriseCode", "value": "val"},
                             codes={"HH": "A1"}, states={"active": "ALARM"}, time_format="%Y%m%d%H%M%S")
    profile = parse(data, base=tmp_path).provincial
    out = profile.alarm(alarm_doc())
    assert out["enterpriseCode"] == "640100000001" and out["val"] == "185.0"
    assert out["bjlx"] == "A1" and out["bjzt"] == "ALARM" and out["cjsj"] == "20270115160000"
    data_msg = profile.data(1_800_000_000.0, [("R101.TI01", 120.25, "good"), ("R101.PI01", None, "comm_fail")])
    # samples without a time of their own take the message's
    assert data_msg["datas"] == [{"cdbm": "640100000001-R101-TI01", "cjsj": "20270115160000", "val": "120.2", "zt": "0"},
                                 {"cdbm": "R101.PI01", "cjsj": "20270115160000", "val": "", "zt": "3"}]


def test_sm4_payload_roundtrip_and_wrong_key(tmp_path):
    (tmp_path / "sm4.key").write_text(KEY_HEX + "\n")
    profile = parse(provincial_config(tmp_path, sm4_key_file="sm4.key"), base=tmp_path).provincial
    payload = profile.encode(profile.alarm(alarm_doc()))
    blob = base64.b64decode(payload)
    assert len(blob) % 16 == 0 and len(blob) >= 48
    assert b"R101" not in blob
    assert profile.decode(payload)["xh"] == 7
    # a fresh IV per message: equal messages encrypt differently
    assert payload != profile.encode(profile.alarm(alarm_doc()))
    with pytest.raises(ProvincialError):
        sm4_decrypt(bytes(16), blob)


def test_sm4_known_answer():
    # GB/T 32907-2016 appendix A example 1: key = plaintext = 0123456789abcdeffedcba9876543210
    key = bytes.fromhex(KEY_HEX)
    blob = sm4_encrypt(key, key, iv=bytes(16))
    assert blob[16:32].hex() == "681edf34d206965e86b3e94f536e4246"


def test_provincial_config_problems_name_the_key_and_hide_the_key(tmp_path):
    (tmp_path / "short.key").write_text("abcd")
    data = provincial_config(tmp_path, sm4_key_file="short.key", fields={"nope": "x"})
    del data["provincial"]["gateway_code"]
    with pytest.raises(ConfigError) as info:
        parse(data, base=tmp_path)
    problems = info.value.problems
    assert any(p.startswith("provincial.gateway_code: is required") for p in problems)
    assert any(p.startswith("provincial.fields.nope: unknown key") for p in problems)
    assert any(p.startswith("provincial.sm4_key_file:") and "16-byte key" in p for p in problems)
    assert not any("abcd" in p for p in problems)
    stray = config_dict()
    stray["provincial"] = {"gateway_code": "x"}
    with pytest.raises(ConfigError, match="provincial: is set but uplink.profile is not"):
        parse(stray)


def test_agent_publishes_the_provincial_format_encrypted(tmp_path, write_config, mosquitto):
    """A running agent with profile provincial: alarms, repeats and the status, SM4-encrypted."""
    import json
    import signal
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.helpers import AgentProcess
    from tests.modbus.server import start_server

    (tmp_path / "sm4.key").write_text(KEY_HEX)
    got: list[tuple[str, bytes]] = []
    arrived = threading.Condition()

    def on_message(c, u, msg):
        with arrived:
            got.append((msg.topic, msg.payload))
            arrived.notify_all()

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("plantwatch/640100000001/#", qos=1)
    sub.loop_start()
    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        data = provincial_config(tmp_path, sm4_key_file="sm4.key", repeat_s=0.5)
        data["uplink"].update(url=mosquitto.url, telemetry_interval_s=0.5)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        profile = parse(data, base=tmp_path).provincial

        def decoded(kind: str) -> list[dict]:
            return [profile.decode(p) for t, p in got if t.endswith("/" + kind)]

        def wait(pred, timeout=20.0):
            with arrived:
                return arrived.wait_for(pred, timeout)

        try:
            assert wait(lambda: decoded("status")), agent.output()
            plc.set_value(100, 185.0, type="float32")
            assert wait(lambda: len([a for a in decoded("alarm") if a["xh"] == 1]) >= 3), agent.output()
            assert wait(lambda: decoded("telemetry")), agent.output()
            assert agent.signal(signal.SIGTERM) == 0
        finally:
            agent.kill()
            sub.loop_stop()
    alarms = decoded("alarm")
    first = alarms[0]
    assert (first["qybm"], first["wgbm"], first["xh"], first["cdbm"]) == ("640100000001", "GW-640100-01", 1, "640100000001-R101-TI01")
    assert first["bjlx"] == "1" and first["bjzt"] == "1" and first["cdz"].startswith("185.0")
    assert len(first["cjsj"]) == 19 and first["cjsj"][4] == "-"
    assert all(a == {**first} for a in alarms[1:3])  # the repeats while active carry the same content
    status = decoded("status")
    assert status[0]["zxzt"] == "1" and status[-1]["zxzt"] == "0"
    data_msg = decoded("telemetry")[0]
    assert data_msg["lx"] == "data" and {d["cdbm"] for d in data_msg["datas"]} == {"640100000001-R101-TI01", "R101.PI01"}
    # nothing readable on the wire
    assert all(b"R101" not in p and not p.startswith(b"{") for _, p in got)
    assert KEY_HEX not in agent.output()
    json.dumps(alarms)


def test_outbox_housekeeping_copes_with_encrypted_payloads(tmp_path):
    """Telemetry thinning reads the json profile's "change" marker; SM4 payloads are not JSON."""
    from agent.outbox import TELEMETRY, Outbox

    (tmp_path / "sm4.key").write_text(KEY_HEX)
    profile = parse(provincial_config(tmp_path, sm4_key_file="sm4.key"), base=tmp_path).provincial
    outbox = Outbox(tmp_path / "outbox.db")
    day = 86400.0
    ids = [outbox.append("t", profile.encode(profile.data(0.0, [("R101.TI01", 1.0, "good")])), lane=TELEMETRY,
                         now=1_000_000.0 + 60 * i) for i in range(30)]  # 30 minutes of snapshots, a minute apart
    outbox.mark_sent(ids, now=1_000_000.0 + 1800)
    report = outbox.maintain(64 * 2**20, now=1_000_000.0 + 2 * day)
    buckets = {int((1_000_000.0 + 60 * i) // 900) for i in range(30)}
    assert report["thinned"] == 30 - len(buckets)  # one snapshot per 15-minute window is kept
    assert report["over"] is False


def test_default_codes_come_from_the_families_and_the_agents_own_kinds(tmp_path):
    profile = parse(provincial_config(tmp_path), base=tmp_path).provincial
    assert profile.codes == {
        "HH": "1", "H": "2", "L": "3", "LL": "4",
        "roc": "5", "ewma": "6", "cusum": "6", "robust": "6", "flatline": "7", "pca": "8",
        "sensor": "9", "comm": "10", "storage": "11",
    }
