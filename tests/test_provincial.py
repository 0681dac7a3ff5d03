"""Profile `provincial`: a province's field names, codes, local time, fixed decimals, SM4."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.alarms import AlarmManager, TagInfo
from agent.ciphers import PayloadCipher
from agent.config import ConfigError, parse
from agent.provincial import ProvincialError
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
    wrong_key = dataclasses.replace(profile, cipher=PayloadCipher("sm4-cbc", bytes(16)))
    with pytest.raises(ProvincialError, match="padding"):
        wrong_key.decode(payload)


def test_sm4_key_file_keeps_the_format_it_always_had(tmp_path):
    """``sm4_key_file`` alone: base64(iv ‖ SM4-CBC(PKCS#7(json))), read here with the primitive itself."""
    (tmp_path / "sm4.key").write_text(KEY_HEX)
    profile = parse(provincial_config(tmp_path, sm4_key_file="sm4.key"), base=tmp_path).provincial
    assert (profile.cipher.name, profile.cipher.iv, profile.cipher.encoding) == ("sm4-cbc", None, "base64")
    doc = profile.alarm(alarm_doc())
    blob = base64.b64decode(profile.encode(doc), validate=True)
    dec = Cipher(algorithms.SM4(bytes.fromhex(KEY_HEX)), modes.CBC(blob[:16])).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(dec.update(blob[16:]) + dec.finalize()) + unpadder.finalize()
    assert plain == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


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
        "roc": "5", "ewma": "6", "cusum": "6", "robust": "6", "flatline": "7", "pca": "8", "cva": "8",
        "sensor": "9", "discrete": "12", "mismatch": "13", "comm": "10", "storage": "11",
    }


# --- ciphers, encodings and envelopes from the config ------------------------------------------

IV_HEX = "fedcba98765432100123456789abcdef"
GONGMAO = '{"appid":"{appid}","data":"{payload}"}'
TCP_ENVELOPE = ('{"appId":"{appid}","serviceId":"{service}","dataId":"{uuid}","districtCode":"{district}",'
                '"time":"{time14}","data":"{payload}"}')


def keyed_config(tmp_path, key_hex=KEY_HEX, iv_hex=None, **section):
    (tmp_path / "payload.key").write_text(key_hex + "\n")
    if iv_hex is not None:
        (tmp_path / "payload.iv").write_text(iv_hex + "\n")
        section["iv_file"] = "payload.iv"
    return provincial_config(tmp_path, key_file="payload.key", **section)


def problems_of(data, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, base=tmp_path)
    return info.value.problems


@pytest.mark.parametrize("encoding", ["base64", "hex", "HEX"])
@pytest.mark.parametrize("cipher", ["sm4-cbc", "sm4-ecb", "aes-128-cbc", "aes-128-ecb"])
@pytest.mark.parametrize("envelope", ["", TCP_ENVELOPE])
def test_every_cipher_encoding_and_envelope_round_trips(tmp_path, cipher, encoding, envelope):
    data = keyed_config(tmp_path, cipher=cipher, encoding=encoding, envelope=envelope, appid="A1",
                        service_id="S1", district_code="640100")
    profile = parse(data, base=tmp_path).provincial
    doc = profile.alarm(alarm_doc())
    payload = profile.encode(doc)
    assert b"R101" not in payload
    assert profile.decode(payload) == doc
    if envelope:
        outer = json.loads(payload)
        assert (outer["appId"], outer["serviceId"], outer["districtCode"]) == ("A1", "S1", "640100")
        assert outer["time"] == "20270115160000"  # the alarm's own time, yyyyMMddHHmmss
        assert profile.unwrap(payload) == (outer, outer["data"])


def test_gongmao_http_body_sm4_cbc_fixed_iv_upper_case_hex(tmp_path):
    """The 工贸 modules' body: {"appid", "data"}, SM4-CBC with the issued key and IV, upper-case hex."""
    data = keyed_config(tmp_path, iv_hex=IV_HEX, cipher="sm4-cbc", encoding="HEX", envelope=GONGMAO, appid="GM-0001")
    profile = parse(data, base=tmp_path).provincial
    doc = profile.alarm(alarm_doc())
    body = profile.encode(doc)
    assert body == profile.encode(doc)  # a fixed IV: the same message, the same body
    outer = json.loads(body)
    assert list(outer) == ["appid", "data"] and outer["appid"] == "GM-0001"
    blob = bytes.fromhex(outer["data"])
    assert outer["data"] == blob.hex().upper()
    dec = Cipher(algorithms.SM4(bytes.fromhex(KEY_HEX)), modes.CBC(bytes.fromhex(IV_HEX))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(dec.update(blob) + dec.finalize()) + unpadder.finalize()  # no IV in front
    assert json.loads(plain) == doc


def test_envelope_time_and_uuid_come_from_the_sender_when_it_gives_them(tmp_path):
    data = keyed_config(tmp_path, cipher="aes-128-cbc", envelope=TCP_ENVELOPE.replace("{time14}", "{time}"),
                        appid="A", service_id="S", district_code="D")
    profile = parse(data, base=tmp_path).provincial
    doc = profile.data(1_800_000_000.0, [("R101.TI01", 1.0, "good")])
    outer = json.loads(profile.encode(doc, now=1_800_000_060.0, message_id="id-1"))
    assert outer["dataId"] == "id-1" and outer["time"] == "2027-01-15 16:01:00"
    first, second = (json.loads(profile.encode(doc))["dataId"] for _ in range(2))
    assert first != second and len(first) == 36  # a fresh UUID per message
    values = profile.envelope_values(doc, now=1_800_000_000.0, message_id="m")
    assert values["time14"] == "20270115160000" and values["type"] == "data" and "appsecret" not in values


def test_an_envelope_without_a_cipher_carries_the_json_as_a_string(tmp_path):
    profile = parse(provincial_config(tmp_path, envelope='{"head":{"id":"{uuid}"},"body":["{payload}"]}'),
                    base=tmp_path).provincial
    doc = profile.alarm(alarm_doc())
    outer = json.loads(profile.encode(doc))
    assert json.loads(outer["body"][0]) == doc
    assert profile.decode(profile.encode(doc)) == doc


def test_decode_says_what_is_wrong(tmp_path):
    profile = parse(keyed_config(tmp_path, cipher="sm4-ecb", encoding="hex", envelope=GONGMAO, appid="A"),
                    base=tmp_path).provincial
    good = json.loads(profile.encode(profile.alarm(alarm_doc())))
    cases = {
        b"not json": "envelope: not JSON",
        b'{"appid":"A"}': "envelope: no payload at data",
        b'{"appid":"A","data":7}': "the payload is int, not a string",
        b'{"appid":"A","data":"zz"}': "payload: not hexadecimal",
        b'{"appid":"A","data":"0011"}': "not whole 16-byte blocks",
        json.dumps({"appid": "A", "data": good["data"][:-32]}).encode(): "padding",
        json.dumps({"appid": "A", "data": profile.cipher.encrypt(b"[1,2]")}).encode(): "not an object",
        json.dumps({"appid": "A", "data": profile.cipher.encrypt(b"{nope")}).encode(): "decrypted payload is not JSON",
    }
    for payload, reason in cases.items():
        with pytest.raises(ProvincialError, match=re.escape(reason)):
            profile.decode(payload)


def test_an_unknown_placeholder_is_a_problem_listing_the_known_ones(tmp_path):
    problems = problems_of(provincial_config(tmp_path, envelope='{"id":"{appId}","data":"{payload}"}'), tmp_path)
    assert problems == ["provincial.envelope: unknown placeholder {appId} (known: {payload} {appid} {uuid} {time} "
                        "{time14} {district} {service} {enterprise} {gateway} {type})"]


@pytest.mark.parametrize(("envelope", "reason"), [
    ('{"data":{payload}}', "must be JSON, with each placeholder inside a string"),
    ('{"data":"x{payload}"}', 'must hold the payload as a whole string value: "{payload}"'),
    ('["{payload}"]', "must be a JSON object"),
    ('{"a":"{payload}","b":"{payload}"}', "must name {payload} once"),
])
def test_an_envelope_that_cannot_carry_the_payload_is_a_problem(tmp_path, envelope, reason):
    problems = problems_of(provincial_config(tmp_path, envelope=envelope), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"provincial.envelope: {reason}"), problems


def test_what_the_envelope_names_must_be_configured(tmp_path):
    problems = problems_of(provincial_config(tmp_path, envelope=TCP_ENVELOPE, time_format="%H:%M"), tmp_path)
    assert "provincial.appid: is required: the envelope names {appid}" in problems
    assert "provincial.service_id: is required: the envelope names {service}" in problems
    assert "provincial.district_code: is required: the envelope names {district}" in problems
    assert "provincial.time_format: must read back as a time for the envelope's {time14}" not in problems  # %H:%M does


def test_keys_and_ivs_that_cannot_be_used_are_problems_that_never_show_them(tmp_path):
    cases = [
        (dict(key_hex="abcdef0123", cipher="sm4-cbc"), "provincial.key_file", "must hold a 16-byte key (32 hex "
                                                                                "characters), not 5 bytes"),
        (dict(iv_hex="abcdef0123abcdef", cipher="aes-128-cbc"), "provincial.iv_file", "must hold a 16-byte IV"),
        (dict(iv_hex=IV_HEX, cipher="sm4-ecb"), "provincial.iv_file", "sm4-ecb uses no IV"),
        (dict(iv_hex=IV_HEX, cipher="aes-128-ecb"), "provincial.iv_file", "aes-128-ecb uses no IV"),
        (dict(key_hex="0123456789abcdefXYZ3456789abcdef", cipher="sm4-cbc"), "provincial.key_file",
         "must hold hexadecimal text (0-9, a-f) only"),
        (dict(iv_hex="fedcba98765432100123456789abcde", cipher="sm4-cbc"), "provincial.iv_file",
         "two characters a byte, not 31"),
        (dict(cipher="none"), "provincial.key_file", 'a key with cipher = "none"'),
        (dict(cipher="sm4-cbc", encoding="hexa"), "provincial.encoding", "did you mean 'hex'?"),
    ]
    for case, path, reason in cases:
        problems = problems_of(keyed_config(tmp_path, **case), tmp_path)
        assert len(problems) == 1 and problems[0].startswith(path + ": ") and reason in problems[0], (case, problems)
        secret = (case.get("key_hex", KEY_HEX), case.get("iv_hex") or IV_HEX)
        assert not any(s[:8].lower() in problems[0].lower() for s in secret), problems


def test_a_cipher_without_a_key_and_an_encoding_without_a_cipher_are_problems(tmp_path):
    assert problems_of(provincial_config(tmp_path, cipher="aes-128-ecb"), tmp_path) == [
        'provincial.key_file: is required with cipher = \'aes-128-ecb\'']
    assert problems_of(provincial_config(tmp_path, encoding="HEX"), tmp_path) == [
        'provincial.encoding: has no use with cipher = "none": the payload is the JSON text itself']
    problems = problems_of(provincial_config(tmp_path, cipher="sm4-cbc", key_file="missing.key"), tmp_path)
    assert len(problems) == 1 and problems[0].startswith("provincial.key_file: cannot read")


def test_sm4_key_file_is_the_older_name_of_key_file(tmp_path):
    (tmp_path / "sm4.key").write_text(KEY_HEX)
    both = keyed_config(tmp_path, sm4_key_file="sm4.key", cipher="sm4-cbc")
    assert problems_of(both, tmp_path) == ["provincial.sm4_key_file: is the older name of key_file: set only key_file"]
    aes = provincial_config(tmp_path, sm4_key_file="sm4.key", cipher="aes-128-cbc")
    assert problems_of(aes, tmp_path) == [
        'provincial.sm4_key_file: is an SM4-CBC key: with cipher = "aes-128-cbc" name the key in key_file']
    (tmp_path / "sm4.iv").write_text(IV_HEX)
    fixed = parse(provincial_config(tmp_path, sm4_key_file="sm4.key", iv_file="sm4.iv", encoding="HEX"),
                  base=tmp_path).provincial
    assert (fixed.cipher.name, fixed.cipher.iv, fixed.cipher.encoding) == ("sm4-cbc", bytes.fromhex(IV_HEX), "HEX")


def test_the_appsecret_is_read_and_never_shown(tmp_path):
    (tmp_path / "appsecret").write_text("s3cr3t-value\n")
    profile = parse(provincial_config(tmp_path, appsecret_file="appsecret"), base=tmp_path).provincial
    assert profile.appsecret == "s3cr3t-value"
    assert "s3cr3t" not in repr(profile)
    assert "s3cr3t" not in profile.encode(profile.alarm(alarm_doc())).decode()
    (tmp_path / "appsecret").write_bytes(b"\xffs3cr3t")
    problems = problems_of(provincial_config(tmp_path, appsecret_file="appsecret"), tmp_path)
    assert problems == [f"provincial.appsecret_file: {tmp_path / 'appsecret'} is not UTF-8 text"]
    (tmp_path / "appsecret").write_text("  \n")
    assert problems_of(provincial_config(tmp_path, appsecret_file="appsecret"), tmp_path) == [
        f"provincial.appsecret_file: {tmp_path / 'appsecret'} is empty"]


def test_the_worked_examples_of_provinces_md_decrypt_to_what_they_say():
    from pathlib import Path

    from agent.provincial import Profile

    text = (Path(__file__).resolve().parents[1] / "docs" / "PROVINCES.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    status = json.loads(next(line for line in lines if line.startswith('{"qybm":')))
    gongmao = Profile("640100000001", "GW-640100-01", envelope=GONGMAO, appid="GM-0001",
                      cipher=PayloadCipher("sm4-cbc", bytes.fromhex(KEY_HEX), bytes.fromhex(IV_HEX), "HEX"))
    body = next(line for line in lines if line.startswith('{"appid":"GM-0001"'))
    assert gongmao.decode(body.encode()) == status
    assert gongmao.encode(status).decode() == body
    tcp = Profile("640100000001", "GW-640100-01", time_format="%Y%m%d%H%M%S", envelope="", appid="HG-0001",
                  cipher=PayloadCipher("aes-128-cbc", bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")))
    frame = json.loads(next(line for line in lines if line.startswith('{"appId":"HG-0001"')))
    assert tcp.decode(frame["data"].encode()) == {**status, "cjsj": "20270115160000"}
    assert frame["sendTime"] == "20270115160000"


def test_a_time_format_that_cannot_be_read_back_is_refused_only_for_time14(tmp_path):
    data = provincial_config(tmp_path, envelope='{"t":"{time14}","data":"{payload}"}', time_format="%d.%m. %Hh")
    assert parse(data, base=tmp_path).provincial  # day, month and hour read back (into 1900)
    data["provincial"]["time_format"] = "%s"  # epoch seconds: strftime only
    assert problems_of(data, tmp_path) == ["provincial.time_format: must read back as a time for the envelope's {time14}"]
    data["provincial"]["envelope"] = '{"t":"{time}","data":"{payload}"}'
    profile = parse(data, base=tmp_path).provincial
    doc = profile.status(1_800_000_000.0, True)
    assert json.loads(profile.encode(doc))["t"] == doc["cjsj"]
    assert profile.envelope_values(doc)["time14"] == ""
    assert profile.envelope_values(doc, now=1_800_000_000.0)["time14"] == "20270115160000"
