"""[[devices]]: the keys every device has, the driver's own keys passed through to the driver's
check, and the driver's per-device and cross-device problems placed at readable paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

import drivers
from agent.config.schema import Key, Problems, between, item, nonempty, positive
from drivers.base import DeviceSpec, TagSpec

_SPEC_DEFAULTS = {f.name: f.default for f in fields(DeviceSpec)}

DEVICE_KEYS = {
    "name": Key("str", required=True, check=nonempty, doc="unique; tags refer to it"),
    "driver": Key("str", required=True, doc="a registered driver (entry point group `plantwatch.drivers`)"),
    "url": Key("str", required=True, check=nonempty, doc="where the device is, in a scheme its driver accepts "
                                                         "(docs/DRIVERS.md)"),
    "unit": Key("int", _SPEC_DEFAULTS["unit"], check=between(0, 255), doc="unit (slave) id on the line (0–255)"),
    "interval_s": Key("float", _SPEC_DEFAULTS["interval_s"], check=positive, doc="poll interval"),
    "timeout_s": Key("float", _SPEC_DEFAULTS["timeout_s"], check=positive, doc="request timeout"),
}


def read_devices(raw: Any, p: Problems) -> tuple[list[DeviceSpec], dict[str, type], list[str]]:
    """The devices, the driver class of each (by name) and each device's path for messages."""
    devices: list[DeviceSpec] = []
    classes: dict[str, type] = {}
    paths: list[str] = []
    if not isinstance(raw, list):
        p.add("devices", "must be an array of tables ([[devices]])")
        return devices, classes, paths
    names: dict[str, str] = {}
    available = drivers.available()
    for i, entry in enumerate(raw):
        path = item("devices", i, entry)
        cls = _driver(entry, path, available, p)
        extra = cls.device_keys if cls else frozenset(entry) - frozenset(DEVICE_KEYS) if isinstance(entry, dict) \
            else frozenset()
        d = p.read(entry, path, DEVICE_KEYS, extra=extra)
        name = d["name"]
        if name:
            if name in names:
                p.add(f"{path}.name", f"duplicate device name {name!r} (also {names[name]})")
            names.setdefault(name, path)
        if cls is not None and cls.schemes and d["url"] and urlsplit(d["url"]).scheme not in cls.schemes:
            p.add(f"{path}.url", f"driver {cls.name!r} expects {' or '.join(s + '://' for s in cls.schemes)}, "
                                 f"not {d['url']!r}")
        devices.append(DeviceSpec(
            name=name or f"device{i}", driver=d["driver"] or "", url=d["url"] or "", unit=d["unit"],
            interval_s=d["interval_s"], timeout_s=d["timeout_s"], options={k: d[k] for k in extra if k in d},
        ))
        paths.append(path)
        if cls is not None and name:
            classes[name] = cls
    return devices, classes, paths


def _driver(entry: Any, path: str, available: Mapping[str, str], p: Problems) -> type | None:
    name = entry.get("driver") if isinstance(entry, dict) else None
    if not isinstance(name, str):
        return None
    if name not in available:
        p.add(f"{path}.driver", f"unknown driver {name!r} (available: {', '.join(sorted(available))})")
        return None
    try:
        return drivers.load(name)
    except Exception as exc:  # a broken plugin is a config problem, not a crash
        p.add(f"{path}.driver", f"driver {name!r} failed to load: {exc}")
        return None


def check_with_drivers(devices: Sequence[DeviceSpec], paths: Sequence[str], classes: Mapping[str, type],
                       tags: Sequence[TagSpec], tag_paths: Sequence[str], p: Problems) -> None:
    """Each driver's checks of its devices and their tags, then across its devices."""
    where = {d.name: path for d, path in zip(devices, paths, strict=True)}
    by_driver: dict[type, list[DeviceSpec]] = {}
    by_device: dict[str, list[TagSpec]] = {}
    for t in tags:
        by_device.setdefault(t.device, []).append(t)
    for d in devices:
        cls = classes.get(d.name)
        if cls is None:
            continue
        by_driver.setdefault(cls, []).append(d)
        for problem in cls.check(d, by_device.get(d.name, [])):
            table = tag_paths[problem.tag.index] if problem.tag is not None else where[d.name]
            p.extend_from(table, [problem])
    for cls, specs in by_driver.items():
        for d, problem in cls.check_devices(specs):
            p.extend_from(where[d.name], [problem])
