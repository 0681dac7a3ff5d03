"""Gas presets: GB/T 50493-2019 combustible and toxic gas limits, their maxima, the OEL table and
its ppm conversion, and what an alarm of a preset tag says."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load, parse
from agent.pipeline import build_manager
from agent.presets import GASES, MOLAR_VOLUME_L, PRESETS, floor_significant, ppm_from_mg_m3
from detectors.base import ConditionChange
from tests.conftest import config_dict

ROOT = Path(__file__).resolve().parent.parent


def gas_tag(**keys):
    """The base config with tags[1] a gas detector carrying ``keys``."""
    data = config_dict()
    data["tags"][1] = {"name": "GD101", "device": "r1-plc", "address": "hr:110", "type": "float32",
                       "desc": "有毒气体探测器", **keys}
    return data


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


# --- the table and the conversion ---------------------------------------------------------------


def test_mg_m3_to_ppm_at_20_degrees():
    assert MOLAR_VOLUME_L == 24.04
    assert ppm_from_mg_m3(10.0, 34.08) == pytest.approx(7.054, abs=1e-3)  # H2S MAC
    assert ppm_from_mg_m3(30.0, 28.01) == pytest.approx(25.75, abs=1e-2)  # CO PC-STEL
    assert ppm_from_mg_m3(1.0, 70.90) == pytest.approx(0.339, abs=1e-3)  # Cl2 MAC


def test_limits_are_cut_never_rounded_up():
    assert floor_significant(7.054) == 7.0
    assert floor_significant(14.108) == 14.0
    assert floor_significant(0.6781) == 0.67
    assert floor_significant(10.0) == 10.0 and floor_significant(20.0) == 20.0
    assert floor_significant(30.0) == 30.0  # an exact value stays, float noise notwithstanding


def test_table_says_which_limit_each_value_is():
    assert {g.kind for g in GASES.values()} <= {"MAC", "PC-STEL", "PC-TWA"}
    assert GASES["H2S"].oel_mg_m3 == 10.0 and GASES["H2S"].kind == "MAC"
    assert GASES["CO"].oel_mg_m3 == 30.0 and GASES["CO"].kind == "PC-STEL"
    for g in GASES.values():
        assert g.molar_mass > 0 and g.oel_mg_m3 > 0 and g.desc


# --- limits in force --------------------------------------------------------------------------


def test_toxic_preset_in_ppm_from_the_gas_table():
    tag = parse(gas_tag(preset="gb50493-toxic", gas="H2S", unit="ppm")).tags[1]
    assert tag.families["limit"] == {"h": 7.0, "hh": 14.0}
    assert tag.unit == "ppm" and tag.priority == {"HH": 1, "H": 2}


def test_toxic_preset_in_mg_m3_from_the_table_or_an_explicit_oel():
    assert parse(gas_tag(preset="gb50493-toxic", gas="H2S", unit="mg/m³")).tags[1].families["limit"] == \
        {"h": 10.0, "hh": 20.0}
    assert parse(gas_tag(preset="gb50493-toxic", oel=5.0, unit="mg/m3")).tags[1].families["limit"] == \
        {"h": 5.0, "hh": 10.0}


def test_stricter_own_limits_are_allowed():
    data = gas_tag(preset="gb50493-toxic", gas="H2S", unit="ppm", alarms={"h": 5.0, "deadband": 0.5})
    assert parse(data).tags[1].families["limit"] == {"h": 5.0, "hh": 14.0, "deadband": 0.5}
    data = gas_tag(preset="gb50493", alarms={"h": 20.0, "hh": 40.0})
    assert parse(data).tags[1].families["limit"] == {"h": 20.0, "hh": 40.0, "deadband": 1.0}


def test_a_limit_at_the_maximum_is_allowed():
    data = gas_tag(preset="gb50493-toxic", gas="H2S", unit="ppm", alarms={"h": 7.0, "hh": 14.0})
    assert parse(data).tags[1].families["limit"]["hh"] == 14.0


# --- bad input ----------------------------------------------------------------------------------

BAD = [
    ("combustible limits above the standard", gas_tag(preset="gb50493", alarms={"h": 30.0, "hh": 60.0}),
     ["tags[1] (GD101).alarms.h: above GB/T 50493-2019's first-level maximum (25 %LEL)",
      "tags[1] (GD101).alarms.hh: above GB/T 50493-2019's second-level maximum (50 %LEL)"]),
    ("combustible preset on a ppm tag", gas_tag(preset="gb50493", unit="ppm"),
     ["tags[1] (GD101).unit: unit mismatch: preset 'gb50493' needs unit '%LEL', not 'ppm'"]),
    ("toxic limits above the OEL", gas_tag(preset="gb50493-toxic", gas="H2S", unit="ppm",
                                           alarms={"h": 10.0, "hh": 20.0}),
     ["tags[1] (GD101).alarms.h: above GB/T 50493-2019's first-level maximum (7 ppm = 100 % OEL of H2S)",
      "tags[1] (GD101).alarms.hh: above GB/T 50493-2019's second-level maximum (14 ppm = 200 % OEL of H2S)"]),
    ("toxic limit above an explicit OEL", gas_tag(preset="gb50493-toxic", oel=2.0, unit="mg/m³",
                                                  alarms={"hh": 4.5}),
     ["tags[1] (GD101).alarms.hh: above GB/T 50493-2019's second-level maximum (4 mg/m³ = 200 % OEL)"]),
    ("toxic preset without a unit", gas_tag(preset="gb50493-toxic", gas="H2S"),
     ["tags[1] (GD101).unit: unit mismatch: preset 'gb50493-toxic' needs unit 'ppm' or 'mg/m³', not none set"]),
    ("toxic preset on a %LEL tag", gas_tag(preset="gb50493-toxic", gas="H2S", unit="%LEL"),
     ["tags[1] (GD101).unit: unit mismatch: preset 'gb50493-toxic' needs unit 'ppm' or 'mg/m³', not '%LEL'"]),
    ("unknown gas, misspelt", gas_tag(preset="gb50493-toxic", gas="H2s", unit="ppm"),
     ["tags[1] (GD101).gas: unknown gas 'H2s' (did you mean 'H2S'?); the table has "
      "H2S, CO, NH3, Cl2, HCN, SO2, NO2, benzene"]),
    ("unknown gas, close", gas_tag(preset="gb50493-toxic", gas="benzen", unit="ppm"),
     ["tags[1] (GD101).gas: unknown gas 'benzen' (did you mean 'benzene'?); the table has "
      "H2S, CO, NH3, Cl2, HCN, SO2, NO2, benzene"]),
    ("neither gas nor oel", gas_tag(preset="gb50493-toxic", unit="ppm"),
     ["tags[1] (GD101).preset: 'gb50493-toxic' needs `gas` (one of H2S, CO, NH3, Cl2, HCN, SO2, NO2, benzene) "
      "or `oel` (mg/m³)"]),
    ("both gas and oel", gas_tag(preset="gb50493-toxic", gas="H2S", oel=10.0, unit="ppm"),
     ["tags[1] (GD101).oel: give `gas` or `oel`, not both"]),
    ("explicit oel on a ppm tag", gas_tag(preset="gb50493-toxic", oel=10.0, unit="ppm"),
     ['tags[1] (GD101).oel: an explicit oel is in mg/m³: with unit = "ppm" name the `gas` instead, '
      'or set unit = "mg/m³"']),
    ("gas without the toxic preset", gas_tag(gas="H2S", unit="ppm"),
     ['tags[1] (GD101).gas: only with a toxic gas preset (preset = "gb50493-toxic")']),
    ("oel with the combustible preset", gas_tag(preset="gb50493", oel=10.0),
     ['tags[1] (GD101).oel: only with a toxic gas preset (preset = "gb50493-toxic")']),
    ("non-positive oel", gas_tag(preset="gb50493-toxic", oel=0.0, unit="mg/m³"),
     ["tags[1] (GD101).oel: must be > 0, not 0.0"]),
]


@pytest.mark.parametrize("data, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_preset_input(data, expected):
    assert problems_of(data) == expected


def test_check_refuses_the_old_chemical_reactor_h2s_limits(tmp_path, capsys):
    """The H2S set-points the chemical-reactor config had (10/20 ppm, above 100/200 % of the
    OEL) on the toxic preset: `check` names them and exits 2."""
    text = (ROOT / "configs" / "chemical-reactor.toml").read_text(encoding="utf-8")
    old = "alarms = { deadband = 1.0 }"
    assert text.count(old) == 1
    path = tmp_path / "plant.toml"
    path.write_text(text.replace(old, "alarms = { hh = 20.0, h = 10.0, deadband = 1.0 }"), encoding="utf-8")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "(GD102.H2S).alarms.h: above GB/T 50493-2019's first-level maximum (7 ppm = 100 % OEL of H2S)" in err
    assert "(GD102.H2S).alarms.hh: above GB/T 50493-2019's second-level maximum (14 ppm = 200 % OEL of H2S)" in err


# --- the alarm ----------------------------------------------------------------------------------


def test_toxic_alarm_text_and_context():
    m = build_manager(parse(gas_tag(preset="gb50493-toxic", gas="H2S", unit="ppm")))
    first = m.on_changes([ConditionChange(1, "limit", "H", True, 8.0, 7.0, 0.0)])[0]
    second = m.on_changes([ConditionChange(1, "limit", "HH", True, 15.0, 14.0, 1.0)])[0]
    assert first["message"] == "有毒气体探测器 一级报警 first-level toxic gas alarm 8 ppm, limit 7"
    assert second["message"] == "有毒气体探测器 二级报警 second-level toxic gas alarm 15 ppm, limit 14"
    assert first["priority"] == 2 and second["priority"] == 1 and first["unit"] == "ppm"
    assert first["context"] == {"standard": "GB/T 50493-2019", "grade": 1, "gas": "H2S", "oel_mg_m3": 10.0}
    assert second["context"]["grade"] == 2


def test_toxic_alarm_context_with_an_explicit_oel():
    m = build_manager(parse(gas_tag(preset="gb50493-toxic", oel=4.0, unit="mg/m³")))
    msg = m.on_changes([ConditionChange(1, "limit", "H", True, 5.0, 4.0, 0.0)])[0]
    assert msg["context"] == {"standard": "GB/T 50493-2019", "grade": 1, "gas": None, "oel_mg_m3": 4.0}


def test_combustible_alarm_context_has_no_gas():
    m = build_manager(parse(gas_tag(preset="gb50493")))
    msg = m.on_changes([ConditionChange(1, "limit", "H", True, 26.0, 25.0, 0.0)])[0]
    assert msg["context"] == {"standard": "GB/T 50493-2019", "grade": 1}
    assert "一级报警 first-level gas alarm" in msg["message"]


# --- the shipped configs --------------------------------------------------------------------------


def test_chemical_reactor_h2s_on_the_toxic_preset():
    cfg = load(ROOT / "configs" / "chemical-reactor.toml")
    h2s = next(t for t in cfg.tags if t.name == "GD102.H2S")
    assert (h2s.preset, h2s.gas, h2s.unit) == ("gb50493-toxic", "H2S", "ppm")
    assert h2s.families["limit"] == {"h": 7.0, "hh": 14.0, "deadband": 1.0}
    assert h2s.priority == 1  # the config's own priority over the preset's


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")) + [ROOT / "agent" / "demo.toml"],
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load(path)


def test_every_preset_cites_its_standard():
    for preset in PRESETS.values():
        assert preset.standard == "GB/T 50493-2019" and preset.level_text and preset.grades


def test_docs_gas_table_matches_the_presets_table():
    """docs/CONFIG.md's OEL table states what the code uses: name, OEL, kind, molar mass and
    the limits in ppm."""
    text = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    block = text.split("<!-- gases -->")[1].split("<!-- /gases -->")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.strip().splitlines()[2:]]
    assert [r[0].strip("`") for r in rows] == list(GASES)
    for name, _desc, oel, kind, _twa, molar, ppm in rows:
        g = GASES[name.strip("`")]
        assert float(oel) == g.oel_mg_m3 and kind == g.kind
        assert float(molar.split()[0]) == g.molar_mass
        limits = parse(gas_tag(preset="gb50493-toxic", gas=g.name, unit="ppm")).tags[1].families["limit"]
        assert [float(x) for x in ppm.split(" / ")] == [limits["h"], limits["hh"]]
