"""The check every comparing benchmark makes before it prints a figure: each side did the work
the run was sized for. A side that fell short (a starved server, a subscription that started
late, samples lost) makes its CPU per unit of work meaningless, and a ratio of two such figures
a lie; the run is refused instead, naming the short side.

    from bench.expect import refuse_short
    refuse_short({"bare client": (received, expected), "driver": (received, expected)})
"""

from __future__ import annotations

import sys
from collections.abc import Mapping


def shortfalls(sides: Mapping[str, tuple[float, float]], why: Mapping[str, str] | None = None) -> list[str]:
    """``sides``: name -> (work done, work expected). The ones short, as text, each followed by
    ``why[name]`` when given (what the run knows about the cause)."""
    why = why or {}
    return [f"{name} did {done:,.0f} of the {expected:,.0f} expected" + (f" ({why[name]})" if name in why else "")
            for name, (done, expected) in sides.items() if not done >= expected]


def refuse_short(sides: Mapping[str, tuple[float, float]], what: str = "work",
                 why: Mapping[str, str] | None = None) -> None:
    """Exit 1, with a message naming every short side, unless each side did its expected work."""
    short = shortfalls(sides, why)
    if short:
        print(f"refused: a side fell short of the expected {what}, no figure printed: " + "; ".join(short),
              file=sys.stderr, flush=True)
        raise SystemExit(1)
