"""Alarm presets a tag can name (``preset = "..."``): limits, unit, priorities and the words of
the alarm text that a standard prescribes, so a plant engineer does not restate them per tag."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: litres per mole of an ideal gas at 20 °C and 101.325 kPa, the reference state of the
#: occupational exposure limits (GBZ 2.1-2019)
MOLAR_VOLUME_L = 24.04

PPM = "ppm"
MG_M3 = ("mg/m³", "mg/m3")


@dataclass(frozen=True)
class Gas:
    """A toxic gas's occupational exposure limit (GBZ 2.1-2019) and what converts it to ppm."""

    name: str
    desc: str
    molar_mass: float  # g/mol of what the limit's mass is expressed as
    oel_mg_m3: float
    kind: str  # MAC, PC-STEL or PC-TWA: which of the standard's limits oel_mg_m3 is
    note: str = ""


#: GBZ 2.1-2019 limits in mg/m³. A detector's alarm compares an instantaneous reading, so a gas
#: with a MAC uses it, else the short-term PC-STEL, else PC-TWA.
GASES: dict[str, Gas] = {g.name: g for g in (
    Gas("H2S", "硫化氢 hydrogen sulfide", 34.08, 10.0, "MAC"),
    Gas("CO", "一氧化碳 carbon monoxide", 28.01, 30.0, "PC-STEL", "PC-TWA 20 mg/m³; non-plateau value"),
    Gas("NH3", "氨 ammonia", 17.03, 30.0, "PC-STEL", "PC-TWA 20 mg/m³"),
    Gas("Cl2", "氯 chlorine", 70.90, 1.0, "MAC"),
    Gas("HCN", "氰化氢 hydrogen cyanide", 26.02, 1.0, "MAC", "the limit is expressed as CN, so ppm uses M(CN)"),
    Gas("SO2", "二氧化硫 sulfur dioxide", 64.07, 10.0, "PC-STEL", "PC-TWA 5 mg/m³"),
    Gas("NO2", "二氧化氮 nitrogen dioxide", 46.01, 10.0, "PC-STEL", "PC-TWA 5 mg/m³"),
    Gas("benzene", "苯 benzene", 78.11, 10.0, "PC-STEL", "PC-TWA 6 mg/m³"),
)}


def ppm_from_mg_m3(mg_m3: float, molar_mass: float) -> float:
    """A concentration in mg/m³ as ppm (by volume) at 20 °C, 101.325 kPa."""
    return mg_m3 * MOLAR_VOLUME_L / molar_mass


def floor_significant(x: float, digits: int = 2) -> float:
    """``x`` cut (never rounded up) to ``digits`` significant digits, so a limit derived from a
    maximum never exceeds it."""
    if x <= 0:
        return x
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return round(math.floor(x / step + 1e-9) * step, 12)


@dataclass(frozen=True)
class Preset:
    """What a standard fixes for a kind of measurement. A tag's own keys override each part,
    except that its limits may not exceed ``maxima`` (the standard's highest set-points)."""

    name: str
    standard: str  # cited in the alarm context
    alarms: Mapping[str, float]  # limit-family parameters (h, hh, deadband, ...)
    unit: str = ""
    priority: Mapping[str, int] = field(default_factory=dict)
    level_text: Mapping[str, str] = field(default_factory=dict)  # level -> words in the alarm text
    grades: Mapping[str, int] = field(default_factory=dict)  # level -> the standard's alarm grade
    maxima: Mapping[str, float] = field(default_factory=dict)  # limit key -> highest allowed (in `unit`)
    units: tuple[str, ...] = ()  # the units a tag with this preset may have; empty: `unit` only
    oel_factors: Mapping[str, float] = field(default_factory=dict)  # limit key -> multiple of the gas's OEL

    @property
    def toxic(self) -> bool:
        """The limits follow an occupational exposure limit (a `gas` or an `oel`)."""
        return bool(self.oel_factors)

    def context(self, level: str, gas: str = "", oel: float | None = None) -> dict[str, Any]:
        """What a limit alarm of a tag with this preset carries in its context."""
        out: dict[str, Any] = {"standard": self.standard, "grade": self.grades.get(level)}
        if self.toxic:
            out["gas"] = gas or None
            out["oel_mg_m3"] = oel_mg_m3(gas, oel)
        return out

    def limits(self, unit: str, gas: str = "",
               oel: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """The preset's alarm parameters and its maxima in ``unit`` (empty when they cannot be
        known: no OEL, or mg/m³ not convertible to ppm)."""
        if not self.toxic:
            return dict(self.alarms), dict(self.maxima)
        mg = oel_mg_m3(gas, oel)
        if mg is None or unit not in (PPM, *MG_M3):
            return dict(self.alarms), {}
        if unit == PPM:
            if gas not in GASES:
                return dict(self.alarms), {}
            base = ppm_from_mg_m3(mg, GASES[gas].molar_mass)
        else:
            base = mg
        maxima = {k: floor_significant(base * f) for k, f in self.oel_factors.items()}
        return {**self.alarms, **maxima}, maxima


def oel_mg_m3(gas: str, oel: float | None) -> float | None:
    """The OEL in force: the tag's own, else the gas's from the table."""
    if oel is not None:
        return float(oel)
    known = GASES.get(gas)
    return known.oel_mg_m3 if known is not None else None


PRESETS: dict[str, Preset] = {
    # GB/T 50493-2019 combustible gas detection: two alarm grades, set at most 25 %LEL and 50 %LEL
    "gb50493": Preset(
        name="gb50493",
        standard="GB/T 50493-2019",
        alarms={"h": 25.0, "hh": 50.0, "deadband": 1.0},
        unit="%LEL",
        priority={"HH": 1, "H": 2},
        level_text={"H": "一级报警 first-level gas alarm", "HH": "二级报警 second-level gas alarm"},
        grades={"H": 1, "HH": 2},
        maxima={"h": 25.0, "hh": 50.0},
    ),
    # GB/T 50493-2019 toxic gas detection: first grade at most 100 % OEL, second at most 200 % OEL
    "gb50493-toxic": Preset(
        name="gb50493-toxic",
        standard="GB/T 50493-2019",
        alarms={},
        priority={"HH": 1, "H": 2},
        level_text={"H": "一级报警 first-level toxic gas alarm", "HH": "二级报警 second-level toxic gas alarm"},
        grades={"H": 1, "HH": 2},
        units=(PPM, *MG_M3),
        oel_factors={"h": 1.0, "hh": 2.0},
    ),
}

#: the words of the maxima in messages: limit key -> the standard's grade
GRADE_WORDS = {"h": "first-level", "hh": "second-level"}
