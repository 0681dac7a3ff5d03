"""Detection: detector families over struct-of-arrays state, the batched engine, models.

Knows no protocol, broker or clock: it takes arrays (tag indices, values, times, quality) and
returns condition changes, so replay and the live agent share it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "plantwatch.detectors"


def available() -> dict[str, str]:
    """Family name -> 'module:Class' for every registered detector family (built-ins included)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(name: str):
    """The detector family class registered under ``name``; KeyError when none is."""
    from detectors.base import Family

    for ep in entry_points(group=GROUP, name=name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Family)):
            raise TypeError(f"entry point {GROUP}:{name} is not a detectors.base.Family subclass")
        return cls
    raise KeyError(name)
