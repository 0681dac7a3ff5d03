"""Protocol drivers behind one contract (drivers.base) and the plugin registry."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from drivers.base import Driver

GROUP = "plantwatch.drivers"

log = logging.getLogger(__name__)


@cache
def available() -> dict[str, str]:
    """Driver name -> 'module:Class' for every registered driver (built-ins included)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


@cache
def load(name: str) -> type[Driver]:
    """The driver class registered under ``name``; KeyError when none is. Looked up once per
    name (reading the entry points costs milliseconds; a config names a driver per device)."""
    for ep in entry_points(group=GROUP, name=name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise TypeError(f"entry point {GROUP}:{name} is not a drivers.base.Driver subclass")
        return cls
    raise KeyError(name)


def loadable() -> list[type[Driver]]:
    """Every registered driver class that loads, by name. A plugin that fails to load is left
    out with a warning: one broken package must not take the command line down with it
    (``plantwatch check`` reports it for the devices that name it)."""
    out = []
    for name in sorted(available()):
        try:
            out.append(load(name))
        except Exception as exc:
            log.warning("driver %r failed to load: %s", name, exc)
    return out


def for_url(url: str) -> type[Driver]:
    """The registered driver whose ``schemes`` contain the URL's scheme; ValueError naming the
    known schemes when there is none."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    classes = loadable()
    for cls in classes:
        if scheme and scheme in cls.schemes:
            return cls
    known = ", ".join(f"{s}://" for cls in classes for s in cls.schemes)
    shown = f"{scheme}:// URLs" if scheme else f"{url!r} (no scheme://)"
    raise ValueError(f"no driver for {shown}; known: {known}")
