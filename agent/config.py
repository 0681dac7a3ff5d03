"""Load a plantwatch TOML file into typed, validated objects, reporting every problem at once.

Every problem is a ``path.to.key: message`` line (``tags[3].alarms.hh: must be above h
(160.0)``). Unknown keys are errors, so a typo such as ``deadbnd`` is caught. Drivers and
detector families validate their own parts through their contracts; this module only composes.
"""

from __future__ import annotations

import math
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import detectors
import drivers
from agent.alarms import GAS_DEFAULTS, GAS_PRESET
from agent.provincial import (
    DEFAULT_CODES,
    DEFAULT_FIELDS,
    DEFAULT_QUALITY,
    DEFAULT_STATES,
    DEFAULT_TYPES,
    Profile,
    ProvincialError,
    read_sm4_key,
)
from drivers.base import BYTE_ORDERS, VALUE_TYPES, DeviceSpec, TagSpec


class ConfigError(Exception):
    """The config has problems; ``problems`` holds every ``path: message`` line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class AgentSection:
    plant: str
    name: str = ""
    data_dir: Path = Path("/var/lib/plantwatch")
    timezone: str = "Asia/Shanghai"
    log_level: str = "INFO"


@dataclass(frozen=True)
class UplinkSection:
    url: str = "mqtt://127.0.0.1:1883"
    profile: str = "json"
    topic_prefix: str = "plantwatch"
    client_id: str = ""
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    mqtt_version: int = 3
    keepalive_s: float = 30.0
    heartbeat_s: float = 60.0
    telemetry_interval_s: float = 60.0
    inflight: int = 100
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    session_expiry_s: float = 0.0
    telemetry_expiry_s: float = 3600.0
    telemetry_change_s: float = 0.0
    telemetry_deadband: float = 0.0
    max_outbox_mb: float = 512.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


@dataclass(frozen=True)
class AlarmSystemSection:
    """Alarm-system health rules (EEMUA 191 / ISA-18.2) and how operators reach the alarms."""

    chatter_count: int = 3
    chatter_window_s: float = 60.0
    chatter_shelve_s: float = 0.0
    flood_count: int = 10
    flood_window_s: float = 600.0
    stale_s: float = 86400.0
    max_shelve_s: float = 86400.0
    commands: bool = False
    api_port: int = 8787


@dataclass(frozen=True)
class TagConfig:
    """A [[tags]] entry: what the driver needs (``spec``) plus what alarms and payloads need."""

    spec: TagSpec
    unit: str = ""
    desc: str = ""
    range: tuple[float, float] | None = None
    priority: int | Mapping[str, int] = 2
    families: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # family -> params
    latch: bool = False
    preset: str = ""
    point: str = ""
    telemetry_deadband: float | None = None  # None: [uplink] telemetry_deadband

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def device(self) -> str:
        return self.spec.device


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kind: str
    tags: tuple[str, ...]
    file: Path
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path | None
    agent: AgentSection
    uplink: UplinkSection
    devices: tuple[DeviceSpec, ...]
    tags: tuple[TagConfig, ...]
    detectors: Mapping[str, Mapping[str, Any]]
    models: tuple[ModelConfig, ...]
    alarm_system: AlarmSystemSection = AlarmSystemSection()
    provincial: Profile | None = None

    def device_tags(self, device: str) -> list[TagConfig]:
        return [t for t in self.tags if t.device == device]

    def tag_index(self) -> dict[str, int]:
        return {t.name: t.index for t in self.tags}


# --- the generic table reader ------------------------------------------------------------------

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Key:
    kind: str  # str int float bool table list[str] list[float] any
    default: Any = None
    required: bool = False
    check: Check | None = None


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, dict)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list[float]":
        return isinstance(value, list) and all(_kind_ok("float", v) for v in value)
    if kind == "int|table":
        return _kind_ok("int", value) or _kind_ok("table", value)
    raise ValueError(kind)


_KIND_TEXT = {
    "str": "a string",
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "table": "a table",
    "list[str]": "a list of strings",
    "list[float]": "a list of numbers",
    "int|table": "an integer or a table",
}


class Problems(list):
    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}")

    def read(self, data: Any, path: str, keys: Mapping[str, Key], extra: frozenset[str] = frozenset()) -> dict:
        """Typed values for ``keys`` from table ``data``; unknown keys (not in keys or extra) are
        problems. Keys in ``extra`` are passed through unchecked for a plugin to validate."""
        if not isinstance(data, dict):
            self.add(path, "must be a table")
            return {k: spec.default for k, spec in keys.items()}
        out: dict[str, Any] = {}
        for k in data:
            if k not in keys and k not in extra:
                close = [c for c in keys if _similar(c, k)]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.add(f"{path}.{k}", f"unknown key{hint}")
        for k, spec in keys.items():
            if k not in data:
                if spec.required:
                    self.add(f"{path}.{k}", "is required")
                out[k] = spec.default
                continue
            value = data[k]
            if not _kind_ok(spec.kind, value):
                self.add(f"{path}.{k}", f"must be {_KIND_TEXT[spec.kind]}, not {value!r}")
                out[k] = spec.default
                continue
            if spec.check is not None and (msg := spec.check(value)):
                self.add(f"{path}.{k}", msg)
                out[k] = spec.default
                continue
            out[k] = float(value) if spec.kind == "float" else value
        for k in extra:
            if k in data:
                out[k] = data[k]
        return out


def _similar(a: str, b: str) -> bool:
    """Close enough to suggest: one edit apart, or same letters in another order."""
    if sorted(a) == sorted(b):
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, not {v!r}"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, not {v!r}"


def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}, not {v!r}"

    return check


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _plant(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) else "must be 1-64 letters, digits, '_', '.' or '-' (it is part of MQTT topics)"


def _timezone(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {v!r}"
    return None


def _mqtt_url(v: str) -> str | None:
    parts = urlsplit(v)
    if parts.scheme not in ("mqtt", "mqtts"):
        return f"must start with mqtt:// or mqtts://, not {v!r}"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"bad port: {exc}"
    return None if parts.hostname else f"has no host: {v!r}"


def _topic_prefix(v: str) -> str | None:
    return None if v and not set(v) & set("#+") and not v.startswith("/") else "must be a non-empty topic level without '#', '+' or a leading '/'"


AGENT_KEYS = {
    "plant": Key("str", required=True, check=_plant),
    "name": Key("str", ""),
    "data_dir": Key("str", "/var/lib/plantwatch", check=_nonempty),
    "timezone": Key("str", "Asia/Shanghai", check=_timezone),
    "log_level": Key("str", "INFO", check=one_of("DEBUG", "INFO", "WARNING", "ERROR")),
}

UPLINK_KEYS = {
    "url": Key("str", "mqtt://127.0.0.1:1883", check=_mqtt_url),
    "profile": Key("str", "json", check=one_of("json", "provincial")),
    "topic_prefix": Key("str", "plantwatch", check=_topic_prefix),
    "client_id": Key("str", ""),
    "username": Key("str", ""),
    "password_file": Key("str"),
    "ca_file": Key("str"),
    "cert_file": Key("str"),
    "key_file": Key("str"),
    "mqtt_version": Key("int", 3, check=one_of(3, 5)),
    "keepalive_s": Key("float", 30.0, check=positive),
    "heartbeat_s": Key("float", 60.0, check=positive),
    "telemetry_interval_s": Key("float", 60.0, check=non_negative),
    "inflight": Key("int", 100, check=lambda v: None if 1 <= v <= 65535 else "must be 1..65535"),
    "backoff_initial_s": Key("float", 0.5, check=positive),
    "backoff_max_s": Key("float", 30.0, check=positive),
    "session_expiry_s": Key("float", 0.0, check=lambda v: None if 0 <= v <= 4294967295 else "must be 0..4294967295 s"),
    "telemetry_expiry_s": Key("float", 3600.0, check=non_negative),
    "telemetry_change_s": Key("float", 0.0, check=non_negative),
    "telemetry_deadband": Key("float", 0.0, check=non_negative),
    "max_outbox_mb": Key("float", 512.0, check=lambda v: None if v >= 1 else f"must be >= 1 (MB), not {v}"),
}

DEVICE_KEYS = {
    "name": Key("str", required=True, check=_nonempty),
    "driver": Key("str", required=True),
    "url": Key("str", required=True, check=_nonempty),
    "unit": Key("int", 1, check=lambda v: None if 0 <= v <= 255 else f"must be 0..255, not {v}"),
    "interval_s": Key("float", 1.0, check=positive),
    "timeout_s": Key("float", 1.0, check=positive),
}

TAG_KEYS = {
    "name": Key("str", required=True, check=_nonempty),
    "device": Key("str", required=True),
    "address": Key("str", required=True, check=_nonempty),
    "type": Key("str", "float32", check=one_of(*VALUE_TYPES)),
    "order": Key("str", "ABCD", check=one_of(*BYTE_ORDERS)),
    "scale": Key("float", 1.0),
    "offset": Key("float", 0.0),
    "unit": Key("str", ""),
    "desc": Key("str", ""),
    "range": Key("list[float]"),
    "priority": Key("int|table", 2, check=lambda v: _priority(v)),
    "detectors": Key("list[str]", []),
    "latch": Key("bool", False),
    "preset": Key("str", "", check=one_of("", GAS_PRESET)),
    "point": Key("str", ""),
    "telemetry_deadband": Key("float", None, check=non_negative),
}


PROVINCIAL_KEYS = {
    "enterprise_code": Key("str", ""),
    "gateway_code": Key("str", ""),
    "decimals": Key("int", 3, check=lambda v: None if 0 <= v <= 9 else "must be 0..9"),
    "time_format": Key("str", "%Y-%m-%d %H:%M:%S", check=_nonempty),
    "repeat_s": Key("float", 0.0, check=non_negative),
    "sm4_key_file": Key("str"),
    "fields": Key("table", {}),
    "codes": Key("table", {}),
    "states": Key("table", {}),
    "quality": Key("table", {}),
    "types": Key("table", {}),
}


def _priority(v: Any) -> str | None:
    values = v.values() if isinstance(v, dict) else [v]
    for x in values:
        if not (isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4):
            return f"priorities must be 1 (highest) .. 4, not {x!r}"
    return None


ALARM_SYSTEM_KEYS = {
    "chatter_count": Key("int", 3, check=lambda v: None if v >= 2 else "must be >= 2"),
    "chatter_window_s": Key("float", 60.0, check=positive),
    "chatter_shelve_s": Key("float", 0.0, check=non_negative),
    "flood_count": Key("int", 10, check=lambda v: None if v >= 1 else "must be >= 1"),
    "flood_window_s": Key("float", 600.0, check=positive),
    "stale_s": Key("float", 86400.0, check=positive),
    "max_shelve_s": Key("float", 86400.0, check=positive),
    "commands": Key("bool", False),
    "api_port": Key("int", 8787, check=lambda v: None if 0 <= v <= 65535 else "must be 0 (off) .. 65535"),
}

MODEL_KEYS = {
    "name": Key("str", required=True, check=_nonempty),
    "kind": Key("str", "pca", check=one_of("pca")),
    "tags": Key("list[str]", required=True),
    "file": Key("str", required=True, check=_nonempty),
    "confidence": Key("float", 0.99, check=lambda v: None if 0.5 <= v < 1 else f"must be in [0.5, 1), not {v}"),
    "variance": Key("float", 0.9, check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], not {v}"),
    "components": Key("int", 0, check=lambda v: None if v >= 0 else f"must be >= 0 (0 = chosen by variance), not {v}"),
    "on_delay_s": Key("float", 0.0, check=non_negative),
    "off_delay_s": Key("float", 0.0, check=non_negative),
    "top": Key("int", 3, check=lambda v: None if v >= 1 else f"must be >= 1, not {v}"),
}
MODEL_KINDS = ("pca",)


def load(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse(data, base=path.parent, path=path)


def parse(data: Mapping[str, Any], base: Path = Path("."), path: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against ``base``."""
    p = Problems()
    for k in data:
        if k not in ("agent", "uplink", "devices", "tags", "detectors", "models", "alarm_system", "provincial"):
            p.add(k, "unknown section")

    a = p.read(data.get("agent", {}), "agent", AGENT_KEYS)
    if "agent" not in data:
        p.add("agent", "section is required")
    data_dir = base / (a["data_dir"] or ".")
    agent = AgentSection(
        plant=a["plant"] or "",
        name=a["name"],
        data_dir=data_dir,
        timezone=a["timezone"],
        log_level=a["log_level"],
    )

    u = p.read(data.get("uplink", {}), "uplink", UPLINK_KEYS)
    for k in ("password_file", "ca_file", "cert_file", "key_file"):
        if u[k] is not None:
            u[k] = base / u[k]
            if not u[k].is_file():
                p.add(f"uplink.{k}", f"no such file: {u[k]}")
    if (u["cert_file"] is None) != (u["key_file"] is None):
        p.add("uplink.key_file" if u["key_file"] is None else "uplink.cert_file", "cert_file and key_file go together")
    if u["url"] and urlsplit(u["url"]).scheme != "mqtts" and any(u[k] for k in ("ca_file", "cert_file")):
        p.add("uplink.url", "ca_file/cert_file are set but the url is not mqtts://")
    if u["backoff_max_s"] < u["backoff_initial_s"]:
        p.add("uplink.backoff_max_s", f"must be >= backoff_initial_s ({u['backoff_initial_s']})")
    uplink = UplinkSection(**u)

    alarm_system = AlarmSystemSection(**p.read(data.get("alarm_system", {}), "alarm_system", ALARM_SYSTEM_KEYS))
    if alarm_system.chatter_shelve_s > alarm_system.max_shelve_s:
        p.add("alarm_system.chatter_shelve_s", f"must not exceed max_shelve_s ({alarm_system.max_shelve_s:g})")

    devices, device_drivers = _devices(data.get("devices", []), p)
    families = _families()
    detector_params = _detector_tables(data.get("detectors", {}), families, p)
    tags = _tags(data.get("tags", []), devices, device_drivers, families, detector_params, p)

    position = {d.name: i for i, d in enumerate(devices)}
    by_driver: dict[type, list[DeviceSpec]] = {}
    for i, d in enumerate(devices):
        cls = device_drivers.get(d.name)
        if cls is None:
            continue
        by_driver.setdefault(cls, []).append(d)
        specs = [t.spec for t in tags if t.device == d.name]
        for problem in cls.check(d, specs):
            where = f"tags[{problem.tag.index}]" if problem.tag is not None else f"devices[{i}]"
            p.add(f"{where}.{problem.key}", problem.message)
    for cls, specs in by_driver.items():
        for d, problem in cls.check_devices(specs):
            p.add(f"devices[{position[d.name]}].{problem.key}", problem.message)

    models = _models(data.get("models", []), tags, base / (a["data_dir"] or "."), p)
    provincial = _provincial(data, agent, uplink, tags, base, p)
    if p:
        raise ConfigError(list(p))
    return Config(path, agent, uplink, tuple(devices), tuple(tags), detector_params, tuple(models), alarm_system,
                  provincial)


def _families() -> dict[str, type]:
    out = {}
    for name in detectors.available():
        try:
            out[name] = detectors.load(name)
        except Exception:  # a broken plugin must not hide the config's own problems
            continue
    return out


def _devices(raw: Any, p: Problems) -> tuple[list[DeviceSpec], dict[str, type]]:
    devices: list[DeviceSpec] = []
    classes: dict[str, type] = {}
    if not isinstance(raw, list):
        p.add("devices", "must be an array of tables ([[devices]])")
        return devices, classes
    names: dict[str, int] = {}
    available = drivers.available()
    for i, entry in enumerate(raw):
        path = f"devices[{i}]"
        driver_name = entry.get("driver") if isinstance(entry, dict) else None
        cls = None
        if isinstance(driver_name, str):
            if driver_name not in available:
                p.add(f"{path}.driver", f"unknown driver {driver_name!r} (available: {', '.join(sorted(available))})")
            else:
                try:
                    cls = drivers.load(driver_name)
                except Exception as exc:
                    p.add(f"{path}.driver", f"driver {driver_name!r} failed to load: {exc}")
        extra = cls.device_keys if cls else frozenset(entry) - frozenset(DEVICE_KEYS) if isinstance(entry, dict) else frozenset()
        d = p.read(entry, path, DEVICE_KEYS, extra=frozenset(extra))
        name = d["name"]
        if name:
            if name in names:
                p.add(f"{path}.name", f"duplicate device name {name!r} (also devices[{names[name]}])")
            names[name] = i
        if cls is not None and cls.schemes and d["url"] and urlsplit(d["url"]).scheme not in cls.schemes:
            p.add(f"{path}.url", f"driver {cls.name!r} expects {' or '.join(s + '://' for s in cls.schemes)}, not {d['url']!r}")
        options = {k: d[k] for k in extra if k in d}
        spec = DeviceSpec(
            name=name or f"device{i}",
            driver=driver_name or "",
            url=d["url"] or "",
            unit=d["unit"],
            interval_s=d["interval_s"],
            timeout_s=d["timeout_s"],
            options=options,
        )
        devices.append(spec)
        if cls is not None and name:
            classes[name] = cls
    return devices, classes


def _detector_tables(raw: Any, families: Mapping[str, type], p: Problems) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not isinstance(raw, dict):
        p.add("detectors", "must be a table of [detectors.NAME] tables")
        return out
    for name, params in raw.items():
        path = f"detectors.{name}"
        fam = families.get(name)
        if fam is None:
            p.add(path, f"unknown detector (available: {', '.join(sorted(families))})")
            continue
        if not isinstance(params, dict):
            p.add(path, "must be a table")
            continue
        for key, msg in fam.check(params):
            p.add(f"{path}.{key}", msg)
        out[name] = dict(params)
    return out


def _tags(
    raw: Any,
    devices: list[DeviceSpec],
    device_drivers: Mapping[str, type],
    families: Mapping[str, type],
    detector_params: Mapping[str, Mapping],
    p: Problems,
) -> list[TagConfig]:
    tags: list[TagConfig] = []
    if not isinstance(raw, list):
        p.add("tags", "must be an array of tables ([[tags]])")
        return tags
    device_names = {d.name for d in devices}
    # families configured by a table of their own; `range` (sensor) is a core tag key handled below
    keyed = {f.tag_key: f for f in families.values() if f.tag_key and f.tag_key not in TAG_KEYS}
    # model families (pca) are configured by [[models]], not per tag
    statistical = {n: f for n, f in families.items() if not f.tag_key and n not in MODEL_KINDS}
    names: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"tags[{i}]"
        dev = entry.get("device") if isinstance(entry, dict) else None
        cls = device_drivers.get(dev) if isinstance(dev, str) else None
        extra = frozenset(keyed) | frozenset(statistical) | (cls.tag_keys if cls else frozenset())
        t = p.read(entry, path, TAG_KEYS, extra=extra)
        name = t["name"]
        if name:
            if name in names:
                p.add(f"{path}.name", f"duplicate tag name {name!r} (also tags[{names[name]}])")
            names[name] = i
        if dev is not None and isinstance(dev, str) and dev not in device_names:
            p.add(f"{path}.device", f"unknown device {dev!r} (devices: {', '.join(sorted(device_names)) or 'none'})")
        rng = t["range"]
        if rng is not None:
            if len(rng) != 2:
                p.add(f"{path}.range", f"must be [low, high], not {rng!r}")
                rng = None
            elif not rng[0] < rng[1]:
                p.add(f"{path}.range", f"low must be below high, not {rng!r}")
                rng = None
            else:
                rng = (float(rng[0]), float(rng[1]))
        fam_params: dict[str, dict] = {}
        if t["preset"] == GAS_PRESET:
            # GB/T 50493 combustible gas: 一级 (H) and 二级 (HH) alarms unless the tag sets its own
            t["alarms"] = {**GAS_DEFAULTS, **(t.get("alarms") or {})}
            t["unit"] = t["unit"] or "%LEL"
            if "priority" not in entry:
                t["priority"] = {"HH": 1, "H": 2}
        for key, fam in keyed.items():
            if key not in t:
                continue
            params = t[key]
            if not isinstance(params, dict):
                p.add(f"{path}.{key}", "must be a table")
                continue
            for k, msg in fam.check(params):
                p.add(f"{path}.{key}.{k}", msg)
            fam_params[fam.name] = params
        for j, det in enumerate(t["detectors"] or []):
            fam = statistical.get(det)
            if fam is None:
                hint = " (it is configured with its own key)" if det in families else ""
                p.add(f"{path}.detectors[{j}]", f"unknown detector {det!r}{hint} (available: {', '.join(sorted(statistical))})")
                continue
            override = t.get(det, {})
            if not isinstance(override, dict):
                p.add(f"{path}.{det}", "must be a table")
                continue
            for k, msg in fam.check(override):
                p.add(f"{path}.{det}.{k}", msg)
            fam_params[det] = {**detector_params.get(det, {}), **override}
        for det in statistical:
            if det in t and det not in (t["detectors"] or []):
                p.add(f"{path}.{det}", f"parameters for {det!r}, which is not in this tag's detectors")
        # the sensor family watches every tag: range (if any) and BAD quality
        if "sensor" in families and "sensor" not in fam_params:
            fam_params["sensor"] = {"lo": rng[0], "hi": rng[1]} if rng else {}
        options = {k: t[k] for k in (cls.tag_keys if cls else ()) if k in t}
        spec = TagSpec(
            index=i,
            name=name or f"tag{i}",
            device=dev if isinstance(dev, str) else "",
            address=t["address"] or "",
            type=t["type"],
            order=t["order"],
            scale=t["scale"],
            offset=t["offset"],
            options=options,
        )
        tags.append(TagConfig(spec, t["unit"], t["desc"], rng, t["priority"], fam_params, t["latch"], t["preset"],
                              t["point"], t["telemetry_deadband"]))
    return tags


def _models(raw: Any, tags: list[TagConfig], data_dir: Path, p: Problems) -> list[ModelConfig]:
    out: list[ModelConfig] = []
    if not isinstance(raw, list):
        p.add("models", "must be an array of tables ([[models]])")
        return out
    known = {t.name for t in tags}
    seen: set[str] = set()
    in_model: dict[str, str] = {}
    for i, entry in enumerate(raw):
        path = f"models[{i}]"
        m = p.read(entry, path, MODEL_KEYS)
        if m["name"] in seen:
            p.add(f"{path}.name", f"duplicate model name {m['name']!r}")
        seen.add(m["name"])
        for j, tag in enumerate(m["tags"] or []):
            if tag not in known:
                p.add(f"{path}.tags[{j}]", f"unknown tag {tag!r}")
            elif tag in in_model:
                p.add(f"{path}.tags[{j}]", f"tag {tag!r} is already in model {in_model[tag]!r} (a tag belongs to one model)")
            else:
                in_model[tag] = m["name"]
        if m["tags"] is not None and len(m["tags"]) < 2:
            p.add(f"{path}.tags", "a multivariate model needs at least 2 tags")
        options = {k: m[k] for k in MODEL_KEYS if k not in ("name", "kind", "tags", "file")}
        out.append(ModelConfig(m["name"] or "", m["kind"], tuple(m["tags"] or ()), data_dir / (m["file"] or ""), options))
    return out


def _provincial(data: Mapping[str, Any], agent: AgentSection, uplink: UplinkSection, tags: list[TagConfig],
                base: Path, p: Problems) -> Profile | None:
    """The provincial profile: field names, codes and the SM4 key, when profile = "provincial"."""
    raw = data.get("provincial")
    if uplink.profile != "provincial":
        if raw is not None:
            p.add("provincial", 'is set but uplink.profile is not "provincial"')
        return None
    v = p.read(raw if raw is not None else {}, "provincial", PROVINCIAL_KEYS)
    if not v["gateway_code"]:
        p.add("provincial.gateway_code", 'is required with uplink.profile = "provincial"')
    try:
        time.strftime(v["time_format"])
    except ValueError as exc:
        p.add("provincial.time_format", f"not a strftime format: {exc}")
    tables = {"fields": DEFAULT_FIELDS, "states": DEFAULT_STATES, "quality": DEFAULT_QUALITY, "types": DEFAULT_TYPES}
    merged: dict[str, dict[str, str]] = {}
    for name, defaults in tables.items():
        table = v[name] or {}
        for k, val in table.items():
            if k not in defaults:
                p.add(f"provincial.{name}.{k}", f"unknown key (expected one of: {', '.join(defaults)})")
            elif not isinstance(val, str) or not val:
                p.add(f"provincial.{name}.{k}", f"must be a non-empty string, not {val!r}")
        merged[name] = {**defaults, **{k: val for k, val in table.items() if isinstance(val, str)}}
    if len(set(merged["fields"].values())) != len(merged["fields"]):
        p.add("provincial.fields", "two fields have the same name")
    codes = dict(DEFAULT_CODES)
    for k, val in (v["codes"] or {}).items():
        if not isinstance(val, str):
            p.add(f"provincial.codes.{k}", f"must be a string, not {val!r}")
        else:
            codes[k] = val
    key = None
    if v["sm4_key_file"] is not None:
        key_path = base / v["sm4_key_file"]
        try:
            key = read_sm4_key(key_path)
        except OSError as exc:
            p.add("provincial.sm4_key_file", f"cannot read {key_path}: {exc.strerror or exc}")
        except ProvincialError as exc:
            p.add("provincial.sm4_key_file", f"{key_path}: {exc}")  # never the key itself
    points = {t.name: t.point for t in tags if t.point}
    return Profile(
        enterprise_code=v["enterprise_code"] or agent.plant, gateway_code=v["gateway_code"], timezone=agent.timezone,
        decimals=v["decimals"], time_format=v["time_format"], repeat_s=v["repeat_s"],
        sm4_key=key, fields=merged["fields"], codes=codes, states=merged["states"], quality=merged["quality"],
        types=merged["types"], points=points,
    )
