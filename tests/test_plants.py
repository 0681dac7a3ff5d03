"""Industry templates: `plantwatch init` writes them, `check` accepts them, each carries the
points its standard mandates, and `plantwatch demo --plant NAME` plays its fault scenario so
the platform receives the right alarms in the right order."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import plants
from agent.cli import main
from agent.config import load, points
from agent.config.loader import registered_families
from agent.config.tags import FamilyRoles
from agent.plants.scenarios import SCENARIOS, Player, at, ramp

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(plants.TEMPLATES)


def test_the_four_templates_of_the_design():
    assert NAMES == ["al-casting", "dust-collector", "steel-gas", "chemical-major-hazard"]


# --- init ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_init_writes_a_config_that_passes_check(name, tmp_path, capsys):
    out = tmp_path / "site" / "plantwatch.toml"
    assert main(["init", "--template", name, "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == plants.render(name, "points.csv")
    assert tomllib.loads(out.read_text(encoding="utf-8"))["agent"]["points_file"] == "points.csv"
    points = tmp_path / "site" / "points.csv"
    assert points.read_text(encoding="utf-8-sig").splitlines() == [",".join(plants.POINT_COLUMNS)]
    capsys.readouterr()
    assert main(["check", str(out)]) == 0
    assert f"{out}: OK" in capsys.readouterr().out
    assert len(load(out).tags) == len(_tags(name))


def _uncomment_provincial(text: str) -> str:
    """The template with its commented [provincial] block taken in, as an engineer would."""
    lines, inside = [], False
    for line in text.splitlines():
        inside = line == "# [provincial]" or (inside and line.startswith("# "))
        lines.append(line[2:].split("  #")[0] if inside else line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", NAMES)
def test_the_commented_provincial_section_is_one_check_accepts(name, tmp_path, capsys):
    text = _uncomment_provincial(plants.text(name)).replace('profile = "json"', 'profile = "provincial"')
    if "headers = " in text:  # the 工贸 modules: HTTPS POST
        text = text.replace('url = "mqtts://platform.example:8883"', 'url = "https://platform.example/api/push"')
    assert "\n[provincial]\n" in text
    (tmp_path / "keys").mkdir()
    for f in ("sm4.key", "sm4.iv"):
        (tmp_path / "keys" / f).write_text("00112233445566778899aabbccddeeff\n", encoding="utf-8")
    (tmp_path / "keys" / "appsecret").write_text("secret\n", encoding="utf-8")
    for f in (tmp_path / "keys").iterdir():
        f.chmod(0o600)
    (tmp_path / "plantwatch.toml").write_text(text, encoding="utf-8")
    assert main(["check", str(tmp_path / "plantwatch.toml")]) == 0, capsys.readouterr().err
    assert "sm4-cbc" in capsys.readouterr().out


def test_the_point_list_columns_are_point_list_columns():
    """Every column of the empty point list is one the point list reader knows."""
    known = points.vocabulary(FamilyRoles.of(registered_families()))
    assert set(plants.POINT_COLUMNS) <= set(known), set(plants.POINT_COLUMNS) - set(known)
    assert plants.POINT_COLUMNS[0] == "name"


def _row(**cells: str) -> str:
    return ",".join(cells.get(c.replace(".", "_"), "") for c in plants.POINT_COLUMNS) + "\r\n"


@pytest.mark.parametrize("name", NAMES)
def test_rows_added_to_the_point_list_are_checked_and_loaded(name, tmp_path, capsys):
    out = tmp_path / "plantwatch.toml"
    assert main(["init", "--template", name, "--out", str(out)]) == 0
    device = tomllib.loads(plants.text(name))["devices"][0]["name"]
    points = tmp_path / "points.csv"
    with points.open("a", encoding="utf-8", newline="") as f:
        f.write(_row(name="X.PI90", device=device, address="ir:900", type="float32", unit="MPa",
                     desc="增补压力 added pressure", range="0;1.6", priority="1", l="0.25", ll="0.2",
                     alarms_deadband="0.01", alarms_on_delay_s="0.5"))
        f.write(_row(name="X.ZS90", device=device, address="di:900", type="bool", desc="增补阀位 added valve",
                     alarm_on="true", alarm_text="开 open", on_delay_s="1"))
        f.write(_row(name="X.DP90", unit="MPa", desc="computed", expr="X.PI90 - 0.1", h="1.0"))
    capsys.readouterr()
    assert main(["check", str(out)]) == 0, capsys.readouterr().err
    tags = {t.name: t for t in load(out).tags}
    assert len(tags) == len(_tags(name)) + 3
    assert tags["X.PI90"].families["limit"]["ll"] == 0.2 and tags["X.PI90"].priority == 1
    assert tags["X.ZS90"].families["discrete"]["alarm_on"] is True
    assert tags["X.DP90"].expr == "X.PI90 - 0.1"
    # a wrong row is named at its line and column, and check exits 2
    with points.open("a", encoding="utf-8", newline="") as f:
        f.write(_row(name="X.PI91", device=device, address="ir:910", type="float32", h="0.5", hh="0.4"))
    capsys.readouterr()
    assert main(["check", str(out)]) == 2
    assert "points.csv:5: column hh: must be above h" in capsys.readouterr().err


def test_init_defaults_to_plantwatch_toml_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--template", "steel-gas"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plantwatch.toml", "points.csv"]
    assert "wrote plantwatch.toml" in capsys.readouterr().out


def test_init_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    out = tmp_path / "plantwatch.toml"
    out.write_text("# my own config\n", encoding="utf-8")
    assert main(["init", "--template", "al-casting", "--out", str(out)]) == 1
    assert "exists; --force overwrites" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "# my own config\n"
    assert not (tmp_path / "points.csv").exists()  # nothing written at all
    (tmp_path / "points.csv").write_text("name\nX\n", encoding="utf-8")
    out.unlink()
    assert main(["init", "--template", "al-casting", "--out", str(out)]) == 1  # the point list is kept too
    assert (tmp_path / "points.csv").read_text(encoding="utf-8") == "name\nX\n"
    assert main(["init", "--template", "al-casting", "--out", str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8") == plants.render("al-casting", "points.csv")
    assert (tmp_path / "points.csv").read_bytes() == plants.points_header().encode("utf-8")


def test_an_unknown_template_exits_2_listing_them():
    result = subprocess.run([sys.executable, "-m", "agent.cli", "init", "--template", "al-castng"],
                            capture_output=True, text=True, timeout=60, cwd="/tmp")
    assert result.returncode == 2
    assert result.stderr.strip() == ("init: unknown template 'al-castng' (did you mean 'al-casting'?); templates: "
                                     "al-casting, dust-collector, steel-gas, chemical-major-hazard")
    assert "Traceback" not in result.stderr


def test_init_without_a_template_exits_2(capsys):
    assert main(["init"]) == 2
    assert "--template NAME" in capsys.readouterr().err


def test_init_list_names_each_template_on_one_line(capsys):
    assert main(["init", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMES


def test_the_wheel_ships_the_templates():
    """pyproject's package data names every template file (the wheel has no configs/)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["agent"]
    for name in NAMES:
        assert any(fnmatch.fnmatch(f"plants/{name}.toml", p) for p in patterns), name


@pytest.mark.parametrize("name", NAMES)
def test_configs_link_to_the_templates(name):
    """configs/NAME.toml is the template itself (a link), so the two cannot drift apart."""
    path = ROOT / "configs" / f"{name}.toml"
    assert path.resolve() == (ROOT / "agent" / "plants" / f"{name}.toml").resolve()


def _same(tag) -> tuple:
    """What makes a point alarm as it does: its families' parameters (the words aside), priority,
    unit, type, range and expression."""
    families = {f: {k: v for k, v in p.items() if k not in ("desc", "text")} if isinstance(p, dict) else p
                for f, p in tag.families.items()}
    return families, tag.priority, tag.unit, tag.spec.type, tag.range, tag.expr, tag.preset, tag.gas


def test_the_chemical_reactor_example_configures_its_points_as_the_template_does():
    """configs/chemical-reactor.toml is a filled-in reactor of the chemical-major-hazard template:
    every point it has, the template has, configured alike."""
    example = {t.name: t for t in load(ROOT / "configs" / "chemical-reactor.toml").tags}
    template = _tags("chemical-major-hazard")
    assert set(example) <= set(template), set(example) - set(template)
    for name, tag in example.items():
        assert _same(tag) == _same(template[name]), name


# --- what each template mandates ----------------------------------------------------------------


def _tags(name: str) -> dict:
    return {t.name: t for t in load(ROOT / "agent" / "plants" / f"{name}.toml").tags}


def test_al_casting_points():
    t = _tags("al-casting")
    # cooling water inlet pressure and flow: low alarms at the top priority
    for name in ("CW.PI01", "CW.FI01"):
        assert {"l", "ll"} <= set(t[name].families["limit"]) and t[name].priority == 1
    assert "进水温度" in t["CW.TI01"].desc and "h" in t["CW.TI01"].families["limit"]
    assert "出水温度" in t["CW.TI02"].desc and "出水流量" in t["CW.FI02"].desc
    # the in/out flow difference is computed, with its own alarm
    assert t["CW.DF01"].expr == "CW.FI01 - CW.FI02" and {"h", "hh"} <= set(t["CW.DF01"].families["limit"])
    # runner levels at the furnace outlet and at the mould-table inlet
    assert "出口流槽" in t["LT.LI01"].desc and "模盘" in t["LT.LI02"].desc
    for name in ("LT.LI01", "LT.LI02"):
        assert {"h", "hh", "l"} <= set(t[name].families["limit"])
    # valves and interlocks are states: a command that its feedback must follow, or a state alarm
    assert t["XV01.CMD"].families["mismatch"]["feedback"] == t["XV01.ZSC"].index
    assert t["XV02.CMD"].families["mismatch"]["feedback"] == t["XV02.ZSO"].index
    for name in ("LT.BRK", "FCE.TILT", "ILK.FAULT", "XV02.ZSO", "EW.XV03"):
        assert t[name].families["discrete"]["alarm_on"] is True, name
        assert "limit" not in t[name].families
    assert "禁止浇铸" in t["ILK.FAULT"].desc
    assert "应急水" in t["EW.PI01"].desc and "l" in t["EW.PI01"].families["limit"]


def test_dust_collector_points():
    t = _tags("dust-collector")
    assert "灰斗温度" in t["DC1.TI01"].desc and {"h", "hh"} <= set(t["DC1.TI01"].families["limit"])
    assert "入口温度" in t["DC1.TI02"].desc and "灰斗" not in t["DC1.TI02"].desc
    assert "进出口压差" in t["DC1.PDI01"].desc
    for name in ("DC1.AIRLOCK", "DC1.SPARK", "DC1.VENT", "DC1.ISO"):
        assert t[name].families["discrete"]["alarm_on"] is True, name
    assert t["DC1.SPARK"].priority == 1
    assert {"l", "ll"} <= set(t["WC1.LI01"].families["limit"]) and "水位" in t["WC1.LI01"].desc
    assert {"l", "ll"} <= set(t["WC1.FI01"].families["limit"]) and "循环水流量" in t["WC1.FI01"].desc


def test_steel_gas_points():
    t = _tags("steel-gas")
    co = [x for x in t.values() if x.name.endswith(".CO")]
    assert len(co) == 3
    for x in co:
        assert x.unit == "ppm" and x.families["limit"]["h"] == 24.0 and x.families["limit"]["hh"] == 160.0
    assert t["GD201.LEL"].preset == "gb50493" and t["GD201.LEL"].families["limit"]["h"] == 25.0


def test_chemical_major_hazard_points():
    t = _tags("chemical-major-hazard")
    for prefix in ("T101", "R101"):
        for kind in ("LI01", "TI01", "PI01"):
            assert "limit" in t[f"{prefix}.{kind}"].families, f"{prefix}.{kind}"
    assert t["R101.ESD"].families["discrete"]["alarm_on"] is True
    assert t["R101.TI01.RATE"].expr == "rate(R101.TI01, 60)" and "h" in t["R101.TI01.RATE"].families["limit"]
    assert t["R101.COOLING.LOSS"].families["discrete"]["alarm_on"] is True
    assert t["XV101.CMD"].families["mismatch"]["feedback"] == t["XV101.ZSC"].index
    h2s = t["GD102.H2S"]
    assert (h2s.preset, h2s.gas) == ("gb50493-toxic", "H2S")
    assert h2s.families["limit"]["h"] == 7.0 and h2s.families["limit"]["hh"] == 14.0
    assert t["GD101.LEL"].preset == "gb50493"


# --- the scenarios --------------------------------------------------------------------------------


def test_a_track_ramps_and_steps():
    knots = ramp(10.0, (1.0, 3.0, 30.0), (5.0, 5.0, 0.0))
    assert [at(knots, t) for t in (0.0, 1.0, 2.0, 3.0, 4.9, 5.0, 9.0)] == [10.0, 10.0, 20.0, 30.0, 30.0, 0.0, 0.0]


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_plays_every_point_of_its_template(name):
    """A point the scenario forgot would sit at 0 in the simulator (and may alarm); a track for
    no point means the template lost one."""
    read = {n for n, t in _tags(name).items() if not t.expr}
    assert set(SCENARIOS[name]().tracks) == read


def test_the_scenario_clock_starts_at_the_first_read():
    player = Player(SCENARIOS["steel-gas"]())
    assert player.narrate(100.0) == []
    assert player.values(1000.0)["GD101.CO"] == 3.0
    assert player.values(1000.0 + 4.5)["GD101.CO"] == 40.0
    assert player.narrate(1000.0 + 3.0) == ["t= 2.5 s  a gas valve group leaks: CO rises at detector 1"]
    assert player.values(1000.0 + 18.0 + 4.5)["GD101.CO"] == 40.0  # the next cycle
    assert player.narrate(1000.0 + 3.1) == []


# --- demo --plant ---------------------------------------------------------------------------------

ALARM = re.compile(r"^platform\| ALARM \S+ seq=\d+ \S+ (\S+) (active|cleared) (\S+) ")

#: template -> seconds to run, and every alarm level raised in that time, in order: (id, level)
SEQUENCES = {
    "al-casting": (19.0, [
        ("CW.PI01/limit", "L"), ("CW.FI01/limit", "L"), ("CW.PI01/limit", "LL"), ("CW.DF01/limit", "H"),
        ("XV01.CMD/mismatch", "MISMATCH"), ("LT.BRK/discrete", "ON"), ("LT.LI02/limit", "L"),
        ("XV02.ZSO/discrete", "ON"), ("FCE.TILT/discrete", "ON"), ("CW.TI02/limit", "H"),
        ("ILK.FAULT/discrete", "ON")]),
    "dust-collector": (15.0, [
        ("DC1.TI01/limit", "H"), ("DC1.TI01/limit", "HH"), ("DC1.SPARK/discrete", "ON"),
        ("DC1.VENT/discrete", "ON"), ("DC1.ISO/discrete", "ON"), ("DC1.AIRLOCK/discrete", "ON"),
        ("WC1.FI01/limit", "L")]),
    "steel-gas": (16.0, [
        ("GD101.CO/limit", "H"), ("GD101.CO/limit", "HH"), ("GD102.CO/limit", "H")]),
    "chemical-major-hazard": (21.0, [
        ("GD102.H2S/limit", "H"), ("GD102.H2S/limit", "HH"), ("R101.FI01/limit", "L"), ("R101.TI01/limit", "H"),
        ("R101.TI01.RATE/limit", "H"), ("R101.COOLING.LOSS/discrete", "ON"), ("R101.TI01/limit", "HH"),
        ("R101.ESD/discrete", "ON"), ("T101.LI01/limit", "H")]),
}


@pytest.mark.parametrize("name", NAMES)
def test_demo_plays_the_templates_fault_scenario_in_order(name):
    seconds, expected = SEQUENCES[name]
    result = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--plant", name, "--seconds", str(seconds)],
                            capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"template {name}" in out
    raised = []  # each level an alarm is raised to, first time only (the return de-escalates HH to H)
    for line in out.splitlines():
        if (m := ALARM.match(line)) and m[2] == "active" and (m[1], m[3]) not in raised:
            raised.append((m[1], m[3]))
    assert raised == expected, out
    summary = out.split("what the platform received:")[1]
    assert "no gaps" in summary and "0 duplicates" in summary
    assert "plant   | t=" in out  # the story is told as it plays
    assert "Traceback" not in result.stderr
