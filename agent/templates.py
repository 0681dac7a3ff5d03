"""Templates a province's spec dictates: an envelope around the payload, HTTP headers, a point
code composed of other codes. ``{name}`` is a placeholder; every other brace is literal, so a
JSON envelope such as ``{"appid":"{appid}","data":"{payload}"}`` is written as the spec shows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> list[str]:
    """The placeholder names a template uses, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def unknown(template: str, known: Iterable[str]) -> list[str]:
    """The placeholders of ``template`` that are not among ``known`` (a config problem)."""
    names = set(known)
    return [n for n in placeholders(template) if n not in names]


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value. A placeholder without a value
    is a KeyError: templates are checked against the known names when the config is read."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
