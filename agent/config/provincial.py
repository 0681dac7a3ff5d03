"""[provincial]: the province's field names, codes and SM4 key file, read into a Profile when
``[uplink] profile = "provincial"``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.config.schema import Key, Problems, between, non_negative, nonempty
from agent.config.sections import AgentSection, UplinkSection
from agent.config.tags import TagConfig
from agent.provincial import (
    DEFAULT_FIELDS,
    DEFAULT_QUALITY,
    DEFAULT_STATES,
    DEFAULT_TYPES,
    Profile,
    ProvincialError,
    default_codes,
    read_sm4_key,
)

PROVINCIAL_KEYS = {
    "enterprise_code": Key("str", "", shown="`agent.plant`", doc="企业编码"),
    "gateway_code": Key("str", "", shown="required", doc="网关编码"),
    "decimals": Key("int", 3, check=between(0, 9, "must be 0..9"), doc="values as fixed-decimal strings"),
    "time_format": Key("str", "%Y-%m-%d %H:%M:%S", check=nonempty, doc="in `agent.timezone` (local time)"),
    "repeat_s": Key("float", 0.0, check=non_negative,
                    doc="every active alarm is sent again this often (same content and `seq`); 0 = off"),
    "sm4_key_file": Key("path", doc="32 hex characters; payloads become `base64(iv ‖ SM4-CBC(PKCS#7(json)))`, "
                                    "fresh IV per message"),
    "fields": Key("table", {}, doc="our name → the province's field name (docs/PAYLOADS.md)"),
    "codes": Key("table", {}, doc="alarm type codes by limit level or detector kind"),
    "states": Key("table", {}, doc="alarm state codes"),
    "quality": Key("table", {}, doc="data quality codes"),
    "types": Key("table", {}, doc="message type values"),
    "headers": Key("table", {}, doc="HTTP uplinks: request headers, name → template with `{appsecret}` `{appid}` "
                                    "`{uuid}` `{time}`, e.g. `{ appsecret = \"{appsecret}\" }`"),
    "success": Key("table", {}, shown="`{ status = 200 }`",
                   doc="HTTP uplinks: the answer that means received: `status` and, optionally, a JSON `field` "
                       "(dotted path) that `equals` a value; anything else is retried, a 4xx is dead-lettered"),
}


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else f"must be a non-empty string, not {v!r}"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, not {v!r}"


def read_provincial(raw: Any, agent: AgentSection, uplink: UplinkSection, tags: Iterable[TagConfig],
                    families: Mapping[str, type], base: Path, p: Problems) -> Profile | None:
    """The provincial profile, when the uplink speaks it."""
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
    merged = {name: {**defaults, **p.names(v[name], f"provincial.{name}", defaults, _text)}
              for name, defaults in tables.items()}
    if len(set(merged["fields"].values())) != len(merged["fields"]):
        p.add("provincial.fields", "two fields have the same name")
    codes = default_codes(families.values())
    # `limit` is the fallback code of every limit level
    codes.update(p.names(v["codes"], "provincial.codes", [*codes, "limit"], _string))
    return Profile(
        enterprise_code=v["enterprise_code"] or agent.plant, gateway_code=v["gateway_code"], timezone=agent.timezone,
        decimals=v["decimals"], time_format=v["time_format"], repeat_s=v["repeat_s"],
        sm4_key=_key(v["sm4_key_file"], base, p), fields=merged["fields"], codes=codes, states=merged["states"],
        quality=merged["quality"], types=merged["types"], points={t.name: t.point for t in tags if t.point},
    )


def _key(name: str | None, base: Path, p: Problems) -> bytes | None:
    if name is None:
        return None
    path = base / name
    try:
        return read_sm4_key(path)
    except OSError as exc:
        p.add("provincial.sm4_key_file", f"cannot read {path}: {exc.strerror or exc}")
    except ProvincialError as exc:
        p.add("provincial.sm4_key_file", f"{path}: {exc}")  # never the key itself
    return None
