"""The whole document: read the TOML file, read every section, let the drivers and detector
families judge their parts, and raise one ConfigError listing every problem."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import detectors
from agent.config import points, sections, tuning
from agent.config.computed import read_computed
from agent.config.devices import check_with_drivers, read_devices
from agent.config.http import HttpRules, read_http
from agent.config.models import ModelConfig, model_kinds, read_models
from agent.config.provincial import read_provincial
from agent.config.schema import ConfigError, Problems, did_you_mean
from agent.config.secrets import permission_warnings, secret_files
from agent.config.sections import (
    AgentSection,
    AlarmSystemSection,
    HistorySection,
    TrendSection,
    UplinkSection,
)
from agent.config.tags import FamilyRoles, TagConfig, family_table, read_tags
from agent.config.tuning import Tuning
from agent.expressions import Plan
from agent.provincial import Profile, uuid_field
from drivers.base import DeviceSpec

SECTIONS = ("agent", "uplink", "uplinks", "devices", "tags", "detectors", "models", "alarm_system", "provincial",
            "history", "trend")


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
    uplinks: tuple[UplinkSection, ...] = ()  # every uplink; ``uplink`` is the first (its settings are the agent's)
    http: HttpRules = HttpRules()
    computed: Plan = Plan()  # the computed tags ([[tags]] with expr), compiled in dependency order
    history: HistorySection = HistorySection()
    warnings: tuple[str, ...] = ()  # not problems: the agent starts, logs them; `check` prints them
    tuning: Tuning | None = None  # the per-tag detector calibration of `plantwatch train --detectors`
    trend: TrendSection = TrendSection()

    def __post_init__(self) -> None:
        if not self.uplinks:
            object.__setattr__(self, "uplinks", (self.uplink,))

    def device_tags(self, device: str) -> list[TagConfig]:
        """The tags a device reads (never a computed tag)."""
        return list(self._by_device.get(device, ()))

    @cached_property
    def _by_device(self) -> dict[str, list[TagConfig]]:
        """The tags each device reads, grouped once (a scan of every tag per device is quadratic)."""
        out: dict[str, list[TagConfig]] = {}
        for t in self.tags:
            if not t.expr:
                out.setdefault(t.device, []).append(t)
        return out

    def interval_of(self, tag: TagConfig) -> float:
        """How often the tag has a new sample: its device's interval; a computed tag's is its
        fastest input's."""
        if tag.expr:
            i = next((k for k, p in enumerate(self.computed.programs) if p.out == tag.index), None)
            return self.computed.intervals[i] if i is not None else 1.0
        device = next((d for d in self.devices if d.name == tag.device), None)
        return device.interval_s if device else 1.0

    def tag_index(self) -> dict[str, int]:
        return dict(self._tag_index)

    @property
    def tag_positions(self) -> Mapping[str, int]:
        """Tag name -> its index (its position in ``tags``), read-only: one dict for the config."""
        return MappingProxyType(self._tag_index)

    @cached_property
    def _tag_index(self) -> dict[str, int]:
        return {t.name: t.index for t in self.tags}

    @cached_property
    def families_in_use(self) -> tuple[str, ...]:
        """The names of the detector families some tag or model uses (what family_params has
        keys for, without building it)."""
        names = dict.fromkeys(f for tag in self.tags for f in tag.families)
        names.update(dict.fromkeys(m.kind for m in self.models if m.tags))
        return tuple(names)

    def family_params(self) -> dict[str, dict[int, dict[str, Any]]]:
        """family name -> {tag index: parameters} for every family in use: the tags' own
        families and each model's kind over the model's tags."""
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for tag in self.tags:
            for fam, params in tag.families.items():
                out.setdefault(fam, {})[tag.index] = params  # read-only: tags share their tables
        index = self.tag_positions
        for m in self.models:
            for name in m.tags:
                out.setdefault(m.kind, {})[index[name]] = m.params(name)
        return out


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
        if k not in SECTIONS:
            p.add(k, f"unknown section{did_you_mean(k, SECTIONS)}")
    if "agent" not in data:
        p.add("agent", "section is required")
    agent = sections.agent(data.get("agent", {}), base, p)
    uplinks = sections.uplinks(data.get("uplink"), data.get("uplinks"), base, p)
    uplink = uplinks[0]
    alarm_system = sections.alarm_system(data.get("alarm_system", {}), base, p)
    history = sections.history(data.get("history", {}), base, p)
    trend = sections.trend(data.get("trend", {}), base, p)

    families = registered_families()
    roles = FamilyRoles.of(families)
    devices, driver_of, device_paths = read_devices(data.get("devices", []), p)
    detector_params = _detector_tables(data.get("detectors", {}), roles, p)
    raw_tags, sheet = tag_tables(data, agent, roles, driver_of, p)
    names = {e.get("name") for e in raw_tags if isinstance(e, dict)} if isinstance(raw_tags, list) else set()
    tuned = tuning.read(agent.data_dir / agent.detectors_file, names, p) if agent.detectors_file else None
    tags, tag_paths = read_tags(raw_tags, devices, driver_of, roles, detector_params, p, tuned)
    check_with_drivers(devices, device_paths, driver_of, [t.spec for t in tags], tag_paths, p)
    computed = read_computed(raw_tags if isinstance(raw_tags, list) else [], tags, tag_paths, devices, p)
    models = read_models(data.get("models", []), [t.name for t in tags], agent.data_dir, model_kinds(families), p)
    # one [provincial] table serves every uplink whose profile is provincial
    speaks = next((u for u in uplinks if u.profile == "provincial"), uplink)
    provincial = read_provincial(data.get("provincial"), agent, speaks, tags, families, base, p)
    http = read_http(data.get("provincial"), p) if provincial is not None else HttpRules()
    _tcp_uplinks(uplinks, "uplinks" in data, provincial, p)
    if p:
        raise ConfigError(sheet.relocate(p) if sheet is not None else list(p))
    warnings = tuple(permission_warnings(secret_files(data, base)))
    return Config(path, agent, uplink, tuple(devices), tuple(tags), detector_params, tuple(models), alarm_system,
                  provincial, uplinks, http, computed, history, warnings, tuned, trend)


def tag_tables(data: Mapping[str, Any], agent: AgentSection, roles: FamilyRoles, driver_of: Mapping[str, type],
               p: Problems) -> tuple[Any, points.Sheet | None]:
    """The [[tags]] tables as written: the TOML file's, then a row of the points file each."""
    raw = data.get("tags", [])
    if agent.points_file is None or not isinstance(raw, list):
        return raw, None
    given = data.get("agent", {})
    where = "points_file" if "points_file" in given else "tags_file"
    sheet = points.read(agent.points_file, str(given[where]), f"agent.{where}", len(raw), _columns(roles, driver_of), p)
    return (raw, None) if sheet is None else ([*raw, *sheet.rows], sheet)


def export_points(cfg: Config) -> str:
    """A loaded config's tags, TOML ones and points file rows, as one points file: the tables
    as written (a preset's limits not filled in), so that it reads back into the same tags."""
    assert cfg.path is not None
    data = tomllib.loads(cfg.path.read_text(encoding="utf-8"))
    p = Problems()
    roles = FamilyRoles.of(registered_families())
    _, driver_of, _ = read_devices(data.get("devices", []), p)
    raw, _ = tag_tables(data, cfg.agent, roles, driver_of, p)
    if p:
        raise ConfigError(list(p))
    return points.write(raw, _columns(roles, driver_of))


def _columns(roles: FamilyRoles, driver_of: Mapping[str, type]) -> dict[str, points.Column]:
    """The columns of a points file: the tag keys, the families' and the drivers' in use."""
    return points.vocabulary(roles, (k for cls in set(driver_of.values()) for k in cls.tag_keys))


def _tcp_uplinks(uplinks: tuple[UplinkSection, ...], array: bool, provincial: Any, p: Problems) -> None:
    """A TCP platform answers each message with its dataId: the envelope's top-level "{uuid}"
    field, which a tcp:// uplink matches the answers by."""
    for i, u in enumerate(uplinks):
        if u.transport != "tcp":
            continue
        path = f"uplinks[{i}] ({u.name})" if array else "uplink"
        if u.profile != "provincial":
            p.add(f"{path}.profile", f'must be "provincial" for a {u.url.split(":")[0]}:// uplink: its envelope '
                  "carries the message id the platform answers with")
        elif provincial is not None and uuid_field(provincial.envelope) is None:
            p.add("provincial.envelope", f'{path} is a {u.url.split(":")[0]}:// uplink: the envelope needs a '
                  'top-level field "{uuid}" (the message id the platform answers with, e.g. "dataId":"{uuid}")')


def registered_families() -> dict[str, type]:
    """Every detector family that loads, by name."""
    out = {}
    for name in detectors.available():
        try:
            out[name] = detectors.load(name)
        except Exception:  # a broken plugin must not hide the config's own problems
            continue
    return out


def _detector_tables(raw: Any, roles: FamilyRoles, p: Problems) -> dict[str, dict]:
    """[detectors.NAME]: the parameters a statistical family uses for every tag listing it."""
    out: dict[str, dict] = {}
    if not isinstance(raw, dict):
        p.add("detectors", "must be a table of [detectors.NAME] tables")
        return out
    for name, params in raw.items():
        path = f"detectors.{name}"
        fam = roles.all.get(name)
        if fam is None:
            p.add(path, f"unknown detector{did_you_mean(name, roles.all)} (available: {', '.join(sorted(roles.all))})")
            continue
        table = family_table(fam, params, path, p)
        if table is not None:
            out[name] = table
    return out
