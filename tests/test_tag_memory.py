"""A point list of many tags with the same settings holds each setting once: the tags share their
families' tables, their table of families, driver options, ranges and repeated text, and the
detector families keep a table number per tag, not a dict each. What the agent holds per tag
after start-up does not grow with containers per tag."""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

from agent.config import load
from agent.pipeline import build_engine, build_manager
from tests.conftest import config_dict

HEADER = "name,device,address,type,unit,desc,range,hh,h,l,alarms.deadband,detectors"


def plant(tmp_path: Path, write_config, rows: int) -> Path:
    """The test config with a points file of ``rows`` float tags, all with the same settings."""
    lines = [HEADER] + [f"U{i // 1000:02d}.TI{i % 1000:03d},r1-plc,hr:{2 * i},float32,°C,反应釜温度,0;500,180,160,"
                        f"20,1,ewma;cusum;flatline" for i in range(rows)]
    (tmp_path / "points.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")
    data = config_dict()
    data["agent"]["points_file"] = "points.csv"
    return write_config(data, f"plant{rows}.toml")


def test_tags_with_the_same_settings_share_every_container_and_text(tmp_path, write_config):
    cfg = load(plant(tmp_path, write_config, 300))
    rows = cfg.tags[2:]
    assert len(rows) == 300
    for attr in ("families", "range", "unit", "desc"):
        assert len({id(getattr(t, attr)) for t in rows}) == 1, attr
    for attr in ("options", "device", "type", "order"):
        assert len({id(getattr(t.spec, attr)) for t in rows}) == 1, attr
    assert set(rows[0].families) >= {"limit", "ewma", "cusum", "flatline"}
    assert rows[0].range == (0.0, 500.0) and rows[0].families["limit"]["h"] == 160.0
    engine = build_engine(cfg)
    for family in engine.families:
        watched = [t.index for t in rows if family.name in t.families]
        assert not isinstance(family.params, dict), family.name
        assert len({id(family.params[i]) for i in watched}) == 1, family.name
        assert list(family.params) == sorted(family.params) and len(family.params) >= len(watched)


def test_an_alarm_manager_holds_the_configs_tags_not_a_copy_of_each(tmp_path, write_config):
    cfg = load(plant(tmp_path, write_config, 50))
    manager = build_manager(cfg)
    assert all(m is t for m, t in zip(manager.tags, cfg.tags, strict=True))


def _held(path: Path) -> tuple[Counter, object]:
    """gc-tracked objects by type that a loaded config with its engine and alarm manager adds."""
    gc.collect()
    before = Counter(type(o).__name__ for o in gc.get_objects())
    cfg = load(path)
    held = (cfg, build_engine(cfg), build_manager(cfg))
    gc.collect()
    after = Counter(type(o).__name__ for o in gc.get_objects())
    after.subtract(before)
    return after, held


def test_containers_held_per_tag_do_not_grow_with_the_tags(tmp_path, write_config):
    small, large = 400, 2400
    few, kept = _held(plant(tmp_path, write_config, small))
    del kept
    many, kept = _held(plant(tmp_path, write_config, large))
    per_tag = {k: (many[k] - few[k]) / (large - small) for k in ("dict", "list", "tuple", "TagConfig", "TagSpec")}
    assert per_tag["TagConfig"] == 1 and per_tag["TagSpec"] == 1, per_tag
    # a tag's own dicts, lists and tuples (families tables, options, ranges, parameter tables,
    # a second object per tag for the alarm manager) would make these 1 or more
    assert per_tag["dict"] < 0.05 and per_tag["list"] < 0.05 and per_tag["tuple"] < 0.05, per_tag


def test_tags_share_one_settings_object_until_a_setting_differs(tmp_path, write_config):
    lines = [HEADER + ",telemetry_deadband"]
    for i in range(6):
        deadband = "0.5" if i == 4 else ""  # one tag differs in one setting
        unit = "bar" if i == 5 else "°C"  # another in its unit
        lines.append(f"T{i},r1-plc,hr:{2 * i},float32,{unit},tag {i},0;500,180,160,20,1,ewma,{deadband}")
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = config_dict()
    data["agent"]["points_file"] = "points.csv"
    cfg = load(write_config(data, "plant.toml"))
    tags = {t.name: t for t in cfg.tags}
    same = [tags[f"T{i}"] for i in range(4)]
    assert len({id(t.settings) for t in same}) == 1
    assert tags["T4"].settings is not same[0].settings and tags["T4"].telemetry_deadband == 0.5
    assert tags["T5"].settings is not same[0].settings and tags["T5"].unit == "bar"
    assert [t.desc for t in same] == ["tag 0", "tag 1", "tag 2", "tag 3"]  # each tag's own text
    assert same[0].telemetry_deadband is None and same[0].unit == "°C" and same[0].families["limit"]["h"] == 160.0
    # a setting is an attribute of the tag, read from its settings; the tag has no slot for it
    assert not hasattr(same[0], "__dict__")
    assert type(same[0]).__slots__ == ("spec", "desc", "point", "position", "settings")
