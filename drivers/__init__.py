"""Protocol drivers behind one contract (drivers.base) and the plugin registry."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from drivers.base import Driver

GROUP = "plantwatch.drivers"


@cache
def available() -> dict[str, str]:
    """Driver name -> 'module:Class' for every registered driver (built-ins included)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(name: str) -> type[Driver]:
    """The driver class registered under ``name``; KeyError when none is."""
    for ep in entry_points(group=GROUP, name=name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise TypeError(f"entry point {GROUP}:{name} is not a drivers.base.Driver subclass")
        return cls
    raise KeyError(name)
