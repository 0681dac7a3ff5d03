"""[[tags]]: the core keys, the alarm preset a tag names, and the detector families that watch
it — each family's table validated against the options the family declares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from agent.config.computed import EXPR_DOC, check_entry
from agent.config.discrete import DISCRETE_KEYS, check_discrete, link_feedback
from agent.config.schema import (
    Key,
    Problems,
    between,
    did_you_mean,
    item,
    key,
    keys_of,
    non_negative,
    nonempty,
    positive,
)
from agent.presets import GASES, GRADE_WORDS, PRESETS, Preset
from detectors.base import shared
from drivers.base import BYTE_ORDERS, VALUE_TYPES, DeviceSpec, TagSpec

#: the agent's own alarm kinds, which a tag's priority table may also name
SYSTEM_KINDS = ("comm", "storage", "gateway")


def _priority(v: Any) -> str | None:
    for x in v.values() if isinstance(v, dict) else [v]:
        if not (isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4):
            return f"priorities must be 1 (highest) .. 4, not {x!r}"
    return None


def _preset_doc() -> str:
    def one(p: Preset) -> str:
        if p.toxic:
            limits = ", ".join(f"{k} {f * 100:g} % OEL" for k, f in p.oel_factors.items())
            unit = " or ".join(f"`{u}`" for u in p.units[:2])
        else:
            limits = ", ".join(f"{k} {v:g}" for k, v in p.alarms.items())
            unit = f"`{p.unit}`"
        priority = " / ".join(f"{k} {v}" for k, v in p.priority.items())
        return f"`{p.name}`: {p.standard} — alarms {limits}, unit {unit}, priority {priority}"

    return ("; ".join(one(p) for p in PRESETS.values()) + "; a tag's own `alarms`, `unit` and `priority` override "
            "them, its limits at most the preset's (see “Gas presets” below)")


def _gas(v: str) -> str | None:
    if v in ("", *GASES):
        return None
    same = [g for g in GASES if g.lower() == v.lower()]
    hint = f" (did you mean '{same[0]}'?)" if same else did_you_mean(v, GASES)
    return f"unknown gas {v!r}{hint}; the table has {', '.join(GASES)}"


_SPEC_DEFAULTS = {f.name: f.default for f in fields(TagSpec)}

#: what the driver needs (TagSpec), in the order the docs show
SPEC_KEYS = {
    "name": Key("str", required=True, check=nonempty, doc="unique; also the column name in replay CSVs"),
    "device": Key("str", doc="a `[[devices]]` name; required unless `expr`"),
    "address": Key("str", check=nonempty,
                   doc="where the driver reads the value, in its driver's syntax (docs/DRIVERS.md); required "
                       "unless `expr`"),
    "type": Key("str", _SPEC_DEFAULTS["type"], choices=VALUE_TYPES,
                doc="value type; without it a tag at a single-bit address (a coil, discrete input or register "
                    "bit) is `bool`, every other read tag `float32`; a computed tag is `float64`, or `bool` when its "
                    "expression is a comparison or and/or/not",
                shown="`float32`, `bool` at a bit address"),
    "order": Key("str", _SPEC_DEFAULTS["order"], choices=BYTE_ORDERS, doc="word/byte order of multi-register values"),
    "scale": Key("float", _SPEC_DEFAULTS["scale"], doc="engineering value = raw × scale + offset"),
    "offset": Key("float", _SPEC_DEFAULTS["offset"], doc="see `scale`"),
}


@dataclass(frozen=True, slots=True)
class TagSettings:
    """The settings of a [[tags]] entry that tags commonly share: one object for every tag whose
    settings are equal (at 100,000 tags, a few objects instead of 16 references per tag).
    Read them through the TagConfig, which has each of them as an attribute."""

    expr: str = key("", EXPR_DOC, shown="none")
    unit: str = key("", "engineering unit, copied into alarms")
    range: tuple[float, float] | None = key(
        None, "[low, high]: physically valid range; families that judge plausibility use it (see below)",
        kind="list[float]")
    priority: int | Mapping[str, int] = key(
        2, "1 (highest) … 4; a number gives HH and LL one step more urgent; a table sets each level or kind, "
        "e.g. `{ HH = 1, H = 2, roc = 3 }`", kind="int|table", check=_priority)
    families: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # family -> params
    latch: bool = key(False, "a latching alarm whose condition clears before it is acknowledged stays `latched` "
                             "until acknowledged")
    preset: str = key("", _preset_doc(), choices=("", *PRESETS), shown="none")
    gas: str = key("", "with `preset = \"gb50493-toxic\"`: the gas whose occupational exposure limit (GBZ 2.1-2019 "
                       "table under “Gas presets” below) sets the limits", check=_gas, shown="none")
    oel: float | None = key(None, "with `preset = \"gb50493-toxic\"` instead of `gas`: the occupational exposure "
                                  "limit in mg/m³ (the tag's unit then must be mg/m³)", kind="float", check=positive,
                            shown="none")
    hazard_code: str = key("", "重大危险源编码: the major hazard installation the point belongs to",
                           shown="`[provincial] hazard_code`")
    equipment_code: str = key("", "设备编码 of the equipment the point is on")
    indicator_code: str = key("", "指标编码: what the point measures, in the province's indicator list")
    in_service: bool = key(True, "the point is in service (投用); the point registry carries the flag")
    decimals: int | None = key(None, "decimals of this tag's values in the provincial profile", kind="int",
                               check=between(0, 9, "must be 0..9"), shown="`[provincial] decimals`")
    telemetry_deadband: float | None = key(
        None, "on-change telemetry: how far this tag must move (engineering units) to be sent between snapshots",
        kind="float", check=non_negative, shown="`[uplink] telemetry_deadband`")
    history_deviation: float | None = key(
        None, "the history's error bound for this tag, engineering units", kind="float", check=non_negative,
        shown="`[history] deviation` or `deviation_pct` of the range")


_SETTINGS = tuple(f.name for f in fields(TagSettings))


@dataclass(frozen=True, slots=True)
class TagConfig:
    """A [[tags]] entry: what the driver needs (``spec``), the tag's own texts, and its
    settings (``settings``, shared by the tags whose settings are equal; each is also an
    attribute of the TagConfig: ``tag.unit``, ``tag.families``, …)."""

    spec: TagSpec
    desc: str = key("", "description; the alarm message text starts with it")
    point: str = key("", "point code in the provincial profile (测点编码); without it `[provincial] point_code` "
                         "composes one", shown="the tag name")
    position: str = key("", "位号, the plant's own tag number, in the point registry", shown="the tag name")
    settings: TagSettings = field(default_factory=TagSettings)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def device(self) -> str:
        return self.spec.device

    if TYPE_CHECKING:  # the settings, read through the tag (set below)
        expr: str
        unit: str
        range: tuple[float, float] | None
        priority: int | Mapping[str, int]
        families: Mapping[str, Mapping[str, Any]]
        latch: bool
        preset: str
        gas: str
        oel: float | None
        hazard_code: str
        equipment_code: str
        indicator_code: str
        in_service: bool
        decimals: int | None
        telemetry_deadband: float | None
        history_deviation: float | None


for _name in _SETTINGS:
    setattr(TagConfig, _name, property(attrgetter(f"settings.{_name}"), doc=f"``settings.{_name}``"))

#: the TagConfig keys of a [[tags]] entry, in the order the docs show them
_TAG_CONFIG_KEYS = {**keys_of(TagSettings), **keys_of(TagConfig)}
_TAG_CONFIG_KEYS = {k: _TAG_CONFIG_KEYS[k] for k in (
    "expr", "unit", "desc", "range", "priority", "latch", "preset", "gas", "oel", "point", "position", "hazard_code",
    "equipment_code", "indicator_code", "in_service", "decimals", "telemetry_deadband", "history_deviation")}
assert len(_TAG_CONFIG_KEYS) == len(keys_of(TagSettings)) + len(keys_of(TagConfig))

_OWN_KEYS = tuple(_TAG_CONFIG_KEYS)

DETECTORS_KEY = Key("list[str]", [], doc="statistical detectors by name; parameters in `[detectors.NAME]`, per tag "
                                         "in a table named like the detector, e.g. `ewma = { lambda_ = 0.1 }`")

#: every core [[tags]] key; detector families and drivers add theirs
TAG_KEYS = {**SPEC_KEYS, **_TAG_CONFIG_KEYS, "detectors": DETECTORS_KEY, **DISCRETE_KEYS}


@dataclass(frozen=True)
class FamilyRoles:
    """The registered detector families by how a tag reaches them."""

    keyed: Mapping[str, type]  # tag key -> family configured by a table under that key
    statistical: Mapping[str, type]  # name -> family enabled by listing it in `detectors`
    all: Mapping[str, type]

    @classmethod
    def of(cls, families: Mapping[str, type]) -> FamilyRoles:
        keyed = {f.tag_key: f for f in families.values() if f.tag_key and f.tag_key not in TAG_KEYS}
        statistical = {n: f for n, f in families.items() if not f.tag_key and not f.model_options}
        return cls(keyed, statistical, families)

    def priority_names(self) -> list[str]:
        names = [lv for f in self.all.values() for lv in f.levels] + list(self.all) + list(SYSTEM_KINDS)
        return list(dict.fromkeys(names))


def read_tags(raw: Any, devices: Sequence[DeviceSpec], driver_of: Mapping[str, type], roles: FamilyRoles,
              detector_params: Mapping[str, Mapping], p: Problems,
              tuned: Any = None) -> tuple[list[TagConfig], Sequence[str]]:
    """The tags and each tag's path for messages."""
    tags: list[TagConfig] = []
    if not isinstance(raw, list):
        p.add("tags", "must be an array of tables ([[tags]])")
        return tags, []
    paths = TagPaths(raw)
    device_names = {d.name for d in devices}
    names: dict[str, int] = {}
    seen: dict[tuple, dict] = {}  # a family table shared by the tags that have the same one
    one = _Shared()  # and each tag's other equal values and containers: 100,000 tags repeat a few
    for i, entry in enumerate(raw):
        path = item("tags", i, entry)
        dev = entry.get("device") if isinstance(entry, dict) else None
        cls = driver_of.get(dev) if isinstance(dev, str) else None
        extra = frozenset(roles.keyed) | frozenset(roles.statistical) | (cls.tag_keys if cls else frozenset())
        t = p.read(entry, path, TAG_KEYS, extra=extra)
        if t["name"]:
            if t["name"] in names:
                p.add(f"{path}.name", f"duplicate tag name {t['name']!r} (also {paths[names[t['name']]]})")
            names.setdefault(t["name"], i)
        if isinstance(dev, str) and dev not in device_names:
            p.add(f"{path}.device", f"unknown device {dev!r} (devices: {', '.join(sorted(device_names)) or 'none'})")
        if cls is not None and isinstance(entry, dict) and "type" not in entry and t["address"]:
            t["type"] = cls.default_type(t["address"]) or t["type"]  # e.g. bool at a coil
        t["range"] = _range(t["range"], path, p)
        check_entry(t, entry, path, p)
        check_discrete(t, entry, path, p)
        if isinstance(t["priority"], dict):
            t["priority"] = p.names(t["priority"], f"{path}.priority", roles.priority_names(), lambda v: None)
        _apply_preset(t, entry, path, p)
        families = one.families({k: shared(v, seen) for k, v in _families(t, path, roles, detector_params, p,
                                                                          tuned).items()})
        spec = TagSpec(
            index=i, name=t["name"] or f"tag{i}", device=one.text(dev if isinstance(dev, str) else ""),
            address=t["address"] or "", type=one.text(t["type"]), order=one.text(t["order"]), scale=t["scale"],
            offset=t["offset"], options=one.table({k: t[k] for k in (cls.tag_keys if cls else ()) if k in t}),
        )
        tags.append(one.tag(spec, t, families))
    link_feedback(raw, tags, paths, p)
    return tags, paths


class TagPaths(Sequence[str]):
    """Each [[tags]] table's path for messages (``tags[212] (CW.PI01)``), made when a message
    needs it rather than kept for every tag."""

    def __init__(self, raw: Sequence[Any]):
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return item("tags", range(len(self._raw))[i], self._raw[i])


class _Shared:
    """One object for equal per-tag values met while reading the tags: the text of the keys a
    point list repeats (devices, units, types), ranges, priority tables, driver options and the
    tag's table of families (whose tables ``shared`` already shares). Every container handed out
    is read-only to whoever holds it, as the tags' are."""

    _TEXT = frozenset(("unit", "desc", "preset", "gas", "hazard_code", "equipment_code", "indicator_code"))

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._tables: dict[tuple, dict] = {}
        self._families: dict[tuple, dict] = {}
        self._settings: dict[tuple, TagSettings] = {}

    def text(self, value: str) -> str:
        return self._values.setdefault(value, value)

    def table(self, value: dict[str, Any]) -> dict[str, Any]:
        return shared(value, self._tables)

    def families(self, value: dict[str, dict]) -> dict[str, dict]:
        """The same dict for tags whose families' tables are the same objects."""
        return self._families.setdefault(tuple((k, id(v)) for k, v in value.items()), value)

    def own(self, t: dict[str, Any]) -> dict[str, Any]:
        """The TagConfig keys of ``t``, repeated values as one object."""
        out = {k: t[k] for k in _OWN_KEYS}
        for k in self._TEXT:
            out[k] = self.text(out[k])
        if out["range"] is not None:
            out["range"] = self._values.setdefault(("range", out["range"]), out["range"])
        if isinstance(out["priority"], dict):
            out["priority"] = self.table(out["priority"])
        return out

    def tag(self, spec: TagSpec, t: dict[str, Any], families: dict[str, dict]) -> TagConfig:
        """The TagConfig of ``t``, its settings one object with every tag's whose settings are
        equal (the same values of the same types; tables and families the same objects)."""
        own = self.own(t)
        values = {k: own[k] for k in _SETTINGS if k != "families"}
        ident = tuple((type(v), id(v) if isinstance(v, (dict, list)) else v) for v in values.values())
        settings = self._settings.get((ident, id(families)))
        if settings is None:
            settings = self._settings[(ident, id(families))] = TagSettings(**values, families=families)
        return TagConfig(spec, desc=own["desc"], point=own["point"], position=own["position"], settings=settings)


def _range(rng: list[float] | None, path: str, p: Problems) -> tuple[float, float] | None:
    if rng is None:
        return None
    if len(rng) != 2:
        p.add(f"{path}.range", f"must be [low, high], not {rng!r}")
        return None
    if not rng[0] < rng[1]:
        p.add(f"{path}.range", f"low must be below high, not {rng!r}")
        return None
    return float(rng[0]), float(rng[1])


def _apply_preset(t: dict[str, Any], entry: Any, path: str, p: Problems) -> None:
    """A standard's limits, unit and priorities, under whatever the tag sets itself, and the
    tag's own limits held to the standard's maxima."""
    preset = PRESETS.get(t["preset"])
    given = {k for k in ("gas", "oel") if isinstance(entry, dict) and k in entry}
    if preset is None or not preset.toxic:
        for k in sorted(given):
            p.add(f"{path}.{k}", 'only with a toxic gas preset (preset = "gb50493-toxic")')
    if preset is None:
        return
    unit = t["unit"] or preset.unit
    _preset_unit(preset, unit, path, p)
    if preset.toxic:
        _oel_source(preset, given, unit, path, p)
    own = t.get("alarms") if isinstance(t.get("alarms"), dict) else {}
    defaults, maxima = preset.limits(unit, t["gas"], t["oel"])
    t["alarms"] = {**defaults, **own}
    t["unit"] = unit
    if "priority" not in entry and preset.priority:
        t["priority"] = dict(preset.priority)
    for k, top in maxima.items():
        v = own.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > top * (1 + 1e-9):
            basis = f" = {preset.oel_factors[k] * 100:g} % OEL" if preset.toxic else ""
            of = f" of {t['gas']}" if preset.toxic and t["gas"] else ""
            p.add(f"{path}.alarms.{k}",
                  f"above {preset.standard}'s {GRADE_WORDS.get(k, k)} maximum ({top:g} {unit}{basis}{of})")


def _preset_unit(preset: Preset, unit: str, path: str, p: Problems) -> None:
    accepted = preset.units or (preset.unit,)
    if unit not in accepted:
        wanted = " or ".join(repr(u) for u in accepted[:2])
        shown = f"{unit!r}" if unit else "none set"
        p.add(f"{path}.unit", f"unit mismatch: preset {preset.name!r} needs unit {wanted}, not {shown}")


def _oel_source(preset: Preset, given: set[str], unit: str, path: str, p: Problems) -> None:
    """A toxic preset's OEL comes from exactly one of `gas` and `oel`; an explicit OEL is in
    mg/m³, which converts to ppm only with a known gas's molar mass."""
    if not given:
        p.add(f"{path}.preset", f"{preset.name!r} needs `gas` (one of {', '.join(GASES)}) or `oel` (mg/m³)")
    elif len(given) == 2:
        p.add(f"{path}.oel", "give `gas` or `oel`, not both")
    elif given == {"oel"} and unit == "ppm":
        p.add(f"{path}.oel", 'an explicit oel is in mg/m³: with unit = "ppm" name the `gas` instead, or set '
                             'unit = "mg/m³"')


def _families(t: dict[str, Any], path: str, roles: FamilyRoles, detector_params: Mapping[str, Mapping],
              p: Problems, tuned: Any = None) -> dict[str, dict]:
    """family name -> this tag's parameters, for every family that watches the tag: the tag's own
    keys over the calibration of ``plantwatch train --detectors`` (``tuned``) over [detectors.NAME]."""
    mine = tuned.params.get(t["name"], {}) if tuned is not None else {}
    out: dict[str, dict] = {}
    for tag_key, fam in roles.keyed.items():
        if tag_key in t:
            params = family_table(fam, t[tag_key], f"{path}.{tag_key}", p)
            if params is not None:
                out[fam.name] = params
    listed = t["detectors"] or []
    for j, det in enumerate(listed):
        fam = roles.statistical.get(det)
        if fam is None:
            hint = " (it is configured with its own key)" if det in roles.all else ""
            p.add(f"{path}.detectors[{j}]",
                  f"unknown detector {det!r}{hint} (available: {', '.join(sorted(roles.statistical))})")
            continue
        override = family_table(fam, t.get(det, {}), f"{path}.{det}", p)
        calibrated = family_table(fam, mine[det], f"{tuned.path}: tags.{t['name']}.params.{det}", p) \
            if det in mine else {}
        if override is not None:
            out[det] = {**detector_params.get(det, {}), **(calibrated or {}), **override}
    for det in roles.statistical:
        if det in t and det not in listed:
            p.add(f"{path}.{det}", f"parameters for {det!r}, which is not in this tag's detectors")
    core = {k: t[k] for k in TAG_KEYS}
    for name, fam in roles.all.items():
        if name not in out and (params := fam.default_params(core)) is not None:
            out[name] = dict(params)
    return out


def family_table(fam: type, params: Any, path: str, p: Problems) -> dict | None:
    """One family's table: unknown keys refused with a hint, the rest checked by the family."""
    if not isinstance(params, dict):
        p.add(path, "must be a table")
        return None
    p.unknown(params, path, fam.options)
    known = {k: v for k, v in params.items() if k in fam.options}
    p.extend_from(path, _checked(fam, known))
    return known


_CHECKED: dict[tuple, list] = {}  # (family, parameters) -> its problems: a point list repeats a few tables


def _checked(fam: type, known: dict[str, Any]) -> list:
    """``fam.check(known)``, once per distinct table (100,000 tags share a handful)."""
    key = (fam, *((k, type(v), v) for k, v in known.items()))
    try:
        found = _CHECKED.get(key)
    except TypeError:  # a list or table among the values: checked every time
        return fam.check(known)
    if found is None:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        found = _CHECKED[key] = list(fam.check(known))
    return found
