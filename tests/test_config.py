"""Config validation: every problem reported together as `path.to.key: message`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, Key, load, parse
from tests.conftest import config_dict


def problems_of(data, base: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, base=base)
    return info.value.problems


def tag(i: int = 0, **changes):
    data = config_dict()
    data["tags"][i].update(changes)
    return data


def with_(section: str, **changes):
    data = config_dict()
    data[section].update(changes)
    return data


def device(**changes):
    data = config_dict()
    data["devices"][0].update(changes)
    return data


def alarms(**changes):
    data = config_dict()
    data["tags"][0]["alarms"].update(changes)
    return data


def drop(section: str, key: str):
    data = config_dict()
    del data[section][key]
    return data


BAD = [
    ("typo in an alarm key", alarms(deadbnd=2.0), "tags[0] (R101.TI01).alarms.deadbnd: unknown key"),
    ("hh not above h", alarms(hh=150.0), "tags[0] (R101.TI01).alarms.hh: must be above h (160.0)"),
    ("ll not below l", alarms(ll=25.0), "tags[0] (R101.TI01).alarms.l: must be above ll (25.0)"),
    ("negative deadband", alarms(deadband=-1.0), "tags[0] (R101.TI01).alarms.deadband:"),
    ("unknown device", tag(1, device="r2-plc"), "tags[1] (R101.PI01).device: unknown device 'r2-plc'"),
    ("duplicate tag name", tag(1, name="R101.TI01"), "tags[1] (R101.TI01).name: duplicate tag name 'R101.TI01' (also tags[0] (R101.TI01))"),
    ("float32 on a coil", tag(0, address="co:5"), "tags[0] (R101.TI01).type:"),
    ("bad address syntax", tag(0, address="hr:abc"), "tags[0] (R101.TI01).address:"),
    ("address out of range", tag(0, address="hr:70000"), "tags[0] (R101.TI01).address:"),
    ("unknown value type", tag(0, type="float16"), "tags[0] (R101.TI01).type: must be one of"),
    ("unknown byte order", tag(0, order="ACBD"), "tags[0] (R101.TI01).order: must be one of"),
    ("range upside down", tag(0, range=[400.0, -50.0]), "tags[0] (R101.TI01).range: low must be below high"),
    ("scale not a number", tag(0, scale="x"), "tags[0] (R101.TI01).scale: must be a finite number"),
    ("priority out of 1..4", tag(0, priority=7), "tags[0] (R101.TI01).priority: priorities must be 1 (highest) .. 4, not 7"),
    ("priority table out of 1..4", tag(0, priority={"HH": 0}), "tags[0] (R101.TI01).priority: priorities must be 1 (highest) .. 4, not 0"),
    ("unknown preset", tag(0, preset="gb99999"), "tags[0] (R101.TI01).preset: must be one of"),
    ("health rule out of range", {**config_dict(), "alarm_system": {"chatter_count": 1}}, "alarm_system.chatter_count: must be >= 2"),
    ("unknown statistical detector", tag(0, detectors=["ewmaa"]), "tags[0] (R101.TI01).detectors[0]: unknown detector 'ewmaa'"),
    ("typo in a tag key", tag(0, deadbnd=1.0), "tags[0] (R101.TI01).deadbnd: unknown key"),
    ("negative telemetry deadband", tag(0, telemetry_deadband=-1.0), "tags[0] (R101.TI01).telemetry_deadband: must be >= 0"),
    ("plant missing", drop("agent", "plant"), "agent.plant: is required"),
    ("plant with a topic wildcard", with_("agent", plant="64#01"), "agent.plant: must be 1-64 letters"),
    ("unknown time zone", with_("agent", timezone="Mars/Olympus"), "agent.timezone: unknown time zone"),
    ("uplink scheme unknown", with_("uplink", url="ftp://127.0.0.1:21"),
     "uplink.url: must start with mqtt://, mqtts://, http://, https://"),
    ("mqtt version 4", with_("uplink", mqtt_version=4), "uplink.mqtt_version: must be one of 3, 5"),
    ("password file missing", with_("uplink", password_file="nope.txt"), "uplink.password_file: no such file"),
    ("unknown driver", device(driver="profibus"), "devices[0] (r1-plc).driver: unknown driver 'profibus'"),
    ("negative interval", device(interval_s=-1.0), "devices[0] (r1-plc).interval_s: must be > 0"),
    ("unit id out of range", device(unit=300), "devices[0] (r1-plc).unit: must be 0..255"),
    ("modbus device with an OPC-UA url", device(url="opc.tcp://127.0.0.1:4840"), "devices[0] (r1-plc).url:"),
    ("unknown section", {**config_dict(), "agnet": {"plant": "x"}}, "agnet: unknown section"),
]


@pytest.mark.parametrize("data,expected", [(d, e) for _, d, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_config_names_the_key(data, expected):
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_duplicate_device_name_is_reported():
    data = config_dict()
    data["devices"].append(dict(data["devices"][0]))
    problems = problems_of(data)
    assert any(p.startswith("devices[1] (r1-plc).name: duplicate device name 'r1-plc' (also devices[0] (r1-plc))") for p in problems), problems


def test_two_devices_with_one_unit_on_one_serial_line():
    data = config_dict()
    data["devices"] = [
        {"name": "a", "driver": "modbus", "url": "rtu:///dev/ttyUSB0?baud=9600&parity=E", "unit": 3},
        {"name": "b", "driver": "modbus", "url": "rtu:///dev/ttyUSB0?baud=9600&parity=E", "unit": 3},
        {"name": "c", "driver": "modbus", "url": "rtu:///dev/ttyUSB0?baud=19200&parity=E", "unit": 4},
        {"name": "d", "driver": "modbus", "url": "rtu:///dev/ttyUSB1?baud=9600", "unit": 3},
    ]
    for t in data["tags"]:
        t["device"] = "a"
    problems = problems_of(data)
    assert any(p.startswith("devices[1] (b).unit: unit 3 on rtu:///dev/ttyUSB0") and "'a'" in p for p in problems), problems
    assert any(p.startswith("devices[2] (c).url: serial settings") for p in problems), problems
    assert not any(p.startswith("devices[3] (d).") for p in problems), problems


def test_model_with_unknown_tag():
    data = config_dict(models=[{"name": "m", "kind": "pca", "tags": ["R101.TI01", "R101.XX"], "file": "m.npz"}])
    assert "models[0] (m).tags[1]: unknown tag 'R101.XX'" in problems_of(data)


def test_every_problem_is_reported_together():
    data = config_dict()
    data["agent"]["timezone"] = "Nowhere/Nothing"
    data["tags"][0]["alarms"]["deadbnd"] = 1.0
    data["tags"][1]["device"] = "ghost"
    problems = problems_of(data)
    assert len(problems) >= 3
    for prefix in ("agent.timezone:", "tags[0] (R101.TI01).alarms.deadbnd:", "tags[1] (R101.PI01).device:"):
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_typo_suggests_the_key():
    problems = problems_of(device(intreval_s=1.0))
    assert "devices[0] (r1-plc).intreval_s: unknown key (did you mean 'interval_s'?)" in problems


def test_valid_config_loads_typed(write_config, tmp_path):
    cfg = load(write_config(config_dict()))
    assert cfg.agent.plant == "640100000001"
    assert cfg.agent.data_dir == tmp_path / "data"
    t = cfg.tags[0]
    assert (t.index, t.name, t.device, t.unit, t.range) == (0, "R101.TI01", "r1-plc", "°C", (-50.0, 400.0))
    assert t.families["limit"]["hh"] == 180.0
    assert cfg.devices[0].interval_s == 0.2
    assert cfg.uplink.port == 1883 and not cfg.uplink.tls


def test_not_toml_is_one_clear_problem(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[agent\nplant = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems[0].startswith(f"{path}: not valid TOML")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_prints_problems_and_exits_2(write_config):
    data = alarms(hh=150.0)
    data["tags"][1]["address"] = "hr:x"
    result = run_cli("check", str(write_config(data)))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "tags[0] (R101.TI01).alarms.hh: must be above h (160.0)" in result.stderr
    assert "tags[1] (R101.PI01).address:" in result.stderr


def test_check_prints_summary_with_modbus_plan(write_config):
    result = run_cli("check", str(write_config(config_dict())))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1 devices, 2 tags" in out
    assert "device r1-plc: modbus tcp://127.0.0.1:5020" in out
    # both float32 tags (hr:100-103) are read in one request
    assert "100" in out and "103" in out
    assert "limit on 1 tags" in out


@pytest.mark.parametrize("name", ["demo.toml", "chemical-reactor.toml", "al-casting.toml", "dust-collector.toml",
                                  "steel-gas.toml", "chemical-major-hazard.toml"])
def test_example_configs_pass_check(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- one vocabulary: names checked like keys, readable paths, docs from the declarations -------


def test_a_misspelled_section_suggests_the_section():
    data = config_dict()
    data["uplnk"] = data.pop("uplink")
    assert "uplnk: unknown section (did you mean 'uplink'?)" in problems_of(data)


def test_a_priority_table_names_only_levels_and_kinds():
    problems = problems_of(tag(0, priority={"comms": 3, "HH": 1}))
    assert problems == ["tags[0] (R101.TI01).priority.comms: unknown key (did you mean 'comm'?)"]
    assert parse(tag(0, priority={"HH": 1, "sensor": 3, "BAD": 2})).tags[0].priority == {"HH": 1, "sensor": 3, "BAD": 2}


def test_provincial_tables_name_only_known_names(tmp_path):
    data = config_dict()
    data["uplink"]["profile"] = "provincial"
    data["provincial"] = {"gateway_code": "GW", "codes": {"flatlin": "7"}, "states": {"activ": "1"}}
    problems = problems_of(data)
    assert "provincial.codes.flatlin: unknown key (did you mean 'flatline'?)" in problems
    assert "provincial.states.activ: unknown key (did you mean 'active'?)" in problems


def test_option_lists_never_offer_an_empty_choice():
    problems = problems_of(tag(0, preset="gb5049"))
    assert problems == ["tags[0] (R101.TI01).preset: must be one of gb50493, gb50493-toxic, not 'gb5049' (did you mean 'gb50493'?)"]
    assert parse(tag(0, preset="")).tags[0].preset == ""


def test_paths_name_the_entry_among_hundreds_of_tags():
    data = config_dict()
    data["tags"] = [{"name": f"CW.PI{i:03d}", "device": "r1-plc", "address": f"hr:{2 * i}"} for i in range(300)]
    data["tags"][212]["alarms"] = {"h": 160.0, "hh": 150.0}
    data["tags"][7]["address"] = "hr:x"
    problems = problems_of(data)
    assert "tags[212] (CW.PI212).alarms.hh: must be above h (160.0)" in problems
    assert any(p.startswith("tags[7] (CW.PI007).address: ") for p in problems), problems


def test_a_family_table_suggests_its_options():
    assert "tags[0] (R101.TI01).roc.max_per: unknown key (did you mean 'max_per_s'?)" in problems_of(
        tag(0, roc={"max_per_s": 1.0, "max_per": 2.0}))
    assert "detectors.ewma.lamda_: unknown key (did you mean 'lambda_'?)" in problems_of(
        {**config_dict(), "detectors": {"ewma": {"lamda_": 0.1}}})


def test_model_options_are_the_familys_own():
    model = {"name": "m", "tags": ["R101.TI01", "R101.PI01"], "file": "m.npz", "t2_factor": 1.5, "on_delay_s": 5}
    cfg = parse(config_dict(models=[model]))
    m = cfg.models[0]
    assert (m.kind, m.options["t2_factor"], m.options["spe_factor"], m.options["on_delay_s"]) == ("pca", 1.5, 1.0, 5.0)
    assert cfg.family_params()["pca"][1] == {"model": "m", "file": str(m.file), "name": "R101.PI01", **m.options}
    bad = dict(model, spe_factor=-1, confidence=1.0, topp=3)
    assert problems_of(config_dict(models=[bad])) == [
        "models[0] (m).topp: unknown key (did you mean 'top'?)",
        "models[0] (m).confidence: must be in [0.5, 1), not 1.0",
        "models[0] (m).spe_factor: must be > 0, not -1",
    ]
    assert problems_of(config_dict(models=[dict(model, kind="pcaa")])) == [
        "models[0] (m).kind: must be one of cva, pca, not 'pcaa' (did you mean 'pca'?)"]


def test_the_sensor_family_watches_every_tag_from_its_range():
    cfg = parse(config_dict())
    assert cfg.tags[0].families["sensor"] == {"lo": -50.0, "hi": 400.0}
    assert cfg.tags[1].families["sensor"] == {}


def test_docs_tables_are_the_declarations():
    from agent.config import docs

    text = docs.CONFIG_MD.read_text(encoding="utf-8")
    assert docs.render(text) == text, "docs/CONFIG.md differs: run python -m agent.config.docs --write"
    for name in docs.tables():
        assert f"<!-- keys:{name} -->" in text, f"docs/CONFIG.md has no table keys:{name}"


def test_a_changed_declaration_shows_in_the_docs(monkeypatch):
    from agent.config import docs, sections

    text = docs.CONFIG_MD.read_text(encoding="utf-8")
    monkeypatch.setattr(docs, "keys_of", lambda cls: {**sections.keys_of(cls), "extra": Key("int", 1, doc="new")})
    assert "| `extra` | int | `1` | new |" in docs.render(text)


def test_a_family_declares_options_or_defaults_and_gets_the_other():
    from detectors.base import Family, Option

    class Declared(Family):
        name = "declared"
        options = {"above": Option(1.0, "the limit"), "hold_s": Option(None, "how long", required=True)}

        def update(self, tag, value, ts, quality):
            return []

    class Plain(Declared):
        defaults = {"below": 0.0}

    assert Declared.defaults == {"above": 1.0, "hold_s": None}
    assert Plain.options == {"below": Option(0.0)}
    assert Declared.check({"above": "x", "hold": 1}) == [
        ("above", "must be a number, not 'x'"), ("hold", "unknown key (expected one of: above, hold_s)")]


def test_several_uplinks_are_named_and_each_picks_its_transport(tmp_path):
    data = config_dict()
    data.pop("uplink")
    data["uplinks"] = [{"name": "park", "url": "mqtt://127.0.0.1:1883"},
                       {"name": "province", "url": "https://platform.example/api/push", "profile": "provincial"}]
    data["provincial"] = {"gateway_code": "GW", "headers": {"appsecret": "{appsecret}"},
                          "success": {"status": 200, "field": "code", "equals": "200"}}
    cfg = parse(data, base=tmp_path)
    assert [(u.name, u.transport, u.tls, u.port) for u in cfg.uplinks] == [
        ("park", "mqtt", False, 1883), ("province", "http", True, 443)]
    assert cfg.uplink is cfg.uplinks[0] and cfg.http.success.matches(200, b'{"code": 200}')
    assert not cfg.http.success.matches(200, b'{"code": "500"}') and not cfg.http.success.matches(201, b'{"code":"200"}')
    assert parse(config_dict(), base=tmp_path).uplinks[0].name == "default"


def test_tcp_uplinks_need_a_port_the_provincial_profile_and_an_envelope_with_uuid(tmp_path):
    data = config_dict()
    data.pop("uplink")
    data["uplinks"] = [{"name": "park", "url": "tcp://c"}, {"name": "json", "url": "tcp://c:9000"},
                       {"name": "province", "url": "tls://c:9001", "profile": "provincial", "framing": "lines",
                        "delimiter": ""}]
    data["provincial"] = {"gateway_code": "GW", "appid": "HG-1", "envelope": '{"appId":"{appid}","data":"{payload}"}'}
    problems = problems_of(data)
    assert "uplinks[0] (park).url: a tcp:// url needs a port: 'tcp://c'" in problems
    assert any(p.startswith('uplinks[1] (json).profile: must be "provincial" for a tcp:// uplink') for p in problems)
    assert any(p.startswith('provincial.envelope: uplinks[2] (province) is a tls:// uplink: the envelope needs a '
                            'top-level field "{uuid}"') for p in problems)
    assert any(p.startswith("uplinks[2] (province).framing:") for p in problems)
    assert any(p.startswith("uplinks[2] (province).delimiter:") for p in problems)
    data["uplinks"] = [{"name": "province", "url": "tls://c:9001", "profile": "provincial", "framing": "length",
                        "refused_codes": ["400", "4001"]}]
    data["provincial"]["envelope"] = '{"appId":"{appid}","dataId":"{uuid}","data":"{payload}"}'
    u = parse(data, base=tmp_path).uplinks[0]
    assert (u.transport, u.tls, u.port, u.framing, u.delimiter, u.refused_codes) == (
        "tcp", True, 9001, "length", "\n", ("400", "4001"))


def test_uplinks_and_http_rules_that_cannot_work_are_path_precise_problems(tmp_path):
    data = config_dict()
    data["uplinks"] = [{"url": "http://a/x"}, {"name": "b", "url": "https://b/x", "profile": "provincial"},
                       {"name": "b", "url": "udp://c:1"}]
    data["provincial"] = {"gateway_code": "GW", "headers": {"X-Id": "{appkey}"}, "success": {"status": 700}}
    problems = problems_of(data)
    assert "uplinks: use [uplink] for one uplink or [[uplinks]] for several, not both" in problems
    assert "uplinks[0].name: is required" in problems
    assert "uplinks[2] (b).name: duplicate uplink name 'b'" in problems
    assert any(p.startswith("uplinks[2] (b).url: must start with mqtt://") for p in problems)
    assert "provincial.headers.X-Id: unknown placeholder {appkey} (known: appsecret, appid, uuid, time)" in problems
    assert "provincial.success.status: an HTTP status is 100..599: 700 can never match" in problems
    data["provincial"]["success"] = {"field": "code"}
    assert "provincial.success.equals: is required with field" in problems_of(data)


def test_an_mqtt_keepalive_the_protocol_cannot_carry_is_a_problem():
    data = config_dict(uplink={"url": "mqtt://127.0.0.1:1883", "keepalive_s": 70000})
    assert problems_of(data) == ["uplink.keepalive_s: MQTT's keepalive is 1..65535 s"]
    data["uplink"]["keepalive_s"] = 0.5
    assert problems_of(data) == ["uplink.keepalive_s: MQTT's keepalive is 1..65535 s"]
