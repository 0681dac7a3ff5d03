"""Alarm presets a tag can name (``preset = "..."``): limits, unit, priorities and the words of
the alarm text that a standard prescribes, so a plant engineer does not restate them per tag."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """What a standard fixes for a kind of measurement. A tag's own keys override each part."""

    name: str
    standard: str  # cited in the alarm context
    alarms: Mapping[str, float]  # limit-family parameters (h, hh, deadband, ...)
    unit: str = ""
    priority: Mapping[str, int] = field(default_factory=dict)
    level_text: Mapping[str, str] = field(default_factory=dict)  # level -> words in the alarm text
    grades: Mapping[str, int] = field(default_factory=dict)  # level -> the standard's alarm grade

    def context(self, level: str) -> dict[str, Any]:
        """What a limit alarm of a tag with this preset carries in its context."""
        return {"standard": self.standard, "grade": self.grades.get(level)}


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
    ),
}
