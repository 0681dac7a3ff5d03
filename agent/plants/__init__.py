"""Industry templates for ``plantwatch init --template NAME``: one commented config per kind of
plant (``agent/plants/NAME.toml``), with the points a standard mandates for it, and the header
of the empty point list written next to it. ``plantwatch demo --plant NAME`` runs a template
against the scenario of agent/plants/scenarios.py."""

from __future__ import annotations

import re
from importlib import resources

from agent.config.schema import did_you_mean

#: template name -> what it covers, one line for ``plantwatch init --list``
TEMPLATES: dict[str, str] = {
    "al-casting": "aluminium deep-well casting (铝加工深井铸造): mould cooling water, runner levels, "
                  "cut-off and drain valves, tilting furnace, emergency water",
    "dust-collector": "dust collectors, dry and wet (粉尘涉爆): hopper temperature, differential pressure, "
                      "airlock, spark, venting, isolation, water level and flow",
    "steel-gas": "steelworks gas areas (煤气区域): fixed CO detectors at 24 / 160 ppm, combustible gas",
    "chemical-major-hazard": "chemical major hazard installation (危险化学品重大危险源): tank and reactor "
                             "level, temperature, pressure, interlocks, combustible and toxic gas",
}

#: the columns of the point list (位号表): [[tags]] keys, the limits flat (`hh` … `ll`), the rest of a
#: table as `TABLE.KEY`; each row is one more [[tags]] entry (docs/CONFIG.md, “Point lists”)
POINT_COLUMNS = ("name", "device", "address", "type", "order", "scale", "offset", "unit", "desc", "range",
                 "priority", "hh", "h", "l", "ll", "alarms.deadband", "alarms.on_delay_s", "alarm_on",
                 "alarm_text", "on_delay_s", "feedback", "mismatch_s", "preset", "gas", "expr")


class UnknownTemplate(ValueError):
    """A template name that is not one of ``TEMPLATES``; the message lists them."""

    def __init__(self, name: str):
        super().__init__(f"unknown template {name!r}{did_you_mean(name, TEMPLATES)}; "
                         f"templates: {', '.join(TEMPLATES)}")


#: the template's line naming the point list, commented out: a template checks as shipped, where
#: no point list lies next to it
_POINTS_LINE = re.compile(r'^# (points_file = "[^"]*")', re.MULTILINE)


def text(name: str) -> str:
    """The template's config, as shipped (commented TOML, no point list)."""
    if name not in TEMPLATES:
        raise UnknownTemplate(name)
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


def render(name: str, points_file: str) -> str:
    """The template as ``init`` writes it: ``[agent] points_file`` naming the point list written
    next to it."""
    line = f'points_file = "{points_file}"'
    rendered, n = _POINTS_LINE.subn(lambda m: line.ljust(len(m.group(0))), text(name), count=1)
    assert n == 1, f"template {name} has no points_file line"
    return rendered


def points_header() -> str:
    """The empty point list: its header row, with the byte order mark and line end of a
    spreadsheet's "CSV UTF-8", so that Excel opens it as UTF-8."""
    return "\ufeff" + ",".join(POINT_COLUMNS) + "\r\n"
