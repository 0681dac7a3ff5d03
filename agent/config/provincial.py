"""[provincial]: the province's field names, codes, cipher, key files and envelope, read into a
Profile when ``[uplink] profile = "provincial"``. No problem message holds a key, an IV or the
appsecret."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import ciphers
from agent.config.schema import Key, Problems, between, did_you_mean, item, non_negative, nonempty
from agent.config.sections import AgentSection, UplinkSection
from agent.config.tags import TagConfig
from agent.provincial import (
    DEFAULT_FIELDS,
    DEFAULT_QUALITY,
    DEFAULT_STATES,
    DEFAULT_TYPES,
    TIME14,
    Profile,
    default_codes,
    envelope_problems,
)
from agent.registry import CODE_PARTS, PART_KEYS, code_parts
from agent.templates import placeholders, render, unknown

PROVINCIAL_KEYS = {
    "enterprise_code": Key("str", "", shown="`agent.plant`", doc="企业编码"),
    "gateway_code": Key("str", "", shown="required", doc="网关编码"),
    "decimals": Key("int", 3, check=between(0, 9, "must be 0..9"), doc="values as fixed-decimal strings"),
    "time_format": Key("str", "%Y-%m-%d %H:%M:%S", check=nonempty, doc="in `agent.timezone` (local time)"),
    "late_after_s": Key("float", 300.0, check=non_negative,
                        doc="a data message sent this long after its time (the backlog after an outage) carries "
                            "the 补传 mark (`fields.late`)"),
    "repeat_s": Key("float", 0.0, check=non_negative,
                    doc="every active alarm is sent again this often (same content and `seq`); 0 = off"),
    "sm4_key_file": Key("path", doc="the older name of `key_file` with `cipher = \"sm4-cbc\"`: payloads become "
                                    "`base64(iv ‖ SM4-CBC(PKCS#7(json)))`, fresh IV per message"),
    "cipher": Key("str", "none", choices=ciphers.CIPHERS, shown="`none` (`sm4-cbc` with `sm4_key_file`)",
                  doc="the payload cipher (PKCS#7 padding; docs/PROVINCES.md)"),
    "key_file": Key("path", doc="the cipher's 16-byte key as 32 hex characters"),
    "iv_file": Key("path", doc="a fixed 16-byte IV (盐) as 32 hex characters, CBC only; absent: a random IV per "
                               "message, sent in front of the ciphertext"),
    "encoding": Key("str", "base64", choices=ciphers.ENCODINGS,
                    doc="the ciphertext as text: `base64`, `hex` (lower case) or `HEX` (upper case)"),
    "envelope": Key("str", "", doc="a JSON template around the payload, e.g. `{\"appid\":\"{appid}\",\"data\":"
                                   "\"{payload}\"}` (placeholders: docs/PROVINCES.md); empty: the payload alone"),
    "appid": Key("str", "", doc="the platform's appid: the envelope's `{appid}`"),
    "appsecret_file": Key("path", doc="a file holding the appsecret, for the transport's headers; never printed"),
    "district_code": Key("str", "", doc="行政区划代码: the envelope's `{district}`"),
    "service_id": Key("str", "", doc="the platform's service id: the envelope's `{service}`"),
    "fields": Key("table", {}, doc="our name → the province's field name (docs/PAYLOADS.md)"),
    "codes": Key("table", {}, doc="alarm type codes by limit level or detector kind"),
    "states": Key("table", {}, doc="alarm state codes"),
    "quality": Key("table", {}, doc="data quality codes"),
    "types": Key("table", {}, doc="message type values"),
    "point_code": Key("str", "", shown="none",
                      doc="template of the point codes of the tags without `point`: placeholders "
                          + " ".join(f"`{{{n}}}`" for n in CODE_PARTS)
                          + ", e.g. `{enterprise}{hazard}{equipment}{indicator}`; none: the tag name"),
    "require_points": Key("bool", False, doc="every tag must have a point code: its `point`, or all the codes "
                                             "`point_code` names"),
    "hazard_code": Key("str", "", doc="重大危险源编码 of the tags that name no `hazard_code`"),
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
    named = [name for name in merged["fields"].values() if name]  # "": not sent (epoch, unnumbered)
    if len(set(named)) != len(named):
        p.add("provincial.fields", "two fields have the same name")
    codes = default_codes(families.values())
    # `limit` is the fallback code of every limit level
    codes.update(p.names(v["codes"], "provincial.codes", [*codes, "limit"], _string))
    enterprise = v["enterprise_code"] or agent.plant
    tags = list(tags)
    return Profile(
        enterprise_code=enterprise, gateway_code=v["gateway_code"], timezone=agent.timezone,
        decimals=v["decimals"], time_format=v["time_format"], repeat_s=v["repeat_s"], late_after_s=v["late_after_s"],
        fields=merged["fields"], codes=codes, states=merged["states"],
        quality=merged["quality"], types=merged["types"], points=_point_codes(tags, v, enterprise, p),
        hazard_code=v["hazard_code"], decimals_of={t.name: t.decimals for t in tags if t.decimals is not None},
        switches=frozenset(t.name for t in tags if t.spec.type == "bool"),
        cipher=_cipher(raw if isinstance(raw, dict) else {}, v, base, p), envelope=_envelope(v, p), appid=v["appid"],
        appsecret=_secret(v["appsecret_file"], base, p), district_code=v["district_code"], service_id=v["service_id"],
    )


def _point_codes(tags: list[TagConfig], v: dict[str, Any], enterprise: str, p: Problems) -> dict[str, str]:
    """tag name -> point code: the tag's own `point`, else `point_code` composed from its codes.
    A tag whose code cannot be made keeps its name, unless `require_points` refuses it."""
    template = v["point_code"]
    if bad := unknown(template, CODE_PARTS):
        hints = "".join(did_you_mean(n, CODE_PARTS) for n in bad)
        p.add("provincial.point_code", f"unknown placeholder {', '.join('{' + n + '}' for n in bad)}{hints}; "
                                       f"known: {' '.join('{' + n + '}' for n in CODE_PARTS)}")
        template = ""
    codes: dict[str, str] = {}
    owner: dict[str, str] = {}
    for t in tags:
        path = item("tags", t.index, {"name": t.name})
        code, missing = t.point, []
        if not code and template:
            parts = code_parts(t, enterprise, v["hazard_code"])
            missing = [n for n in placeholders(template) if not parts[n]]
            code = "" if missing else render(template, parts)
        if code:
            if code in owner:
                p.add(f"{path}.point", f"point code {code!r} is also {owner[code]}'s")
            owner.setdefault(code, path)
            codes[t.name] = code
        elif v["require_points"]:
            why = f"; or set {', '.join(PART_KEYS[n] for n in missing)} for provincial.point_code" if template else ""
            p.add(f"{path}.point", f"required (provincial.require_points): this tag has no point code{why}")
    return codes


def _cipher(raw: Mapping[str, Any], v: Mapping[str, Any], base: Path, p: Problems) -> ciphers.PayloadCipher:
    """The payload cipher; ``sm4_key_file`` is ``key_file`` with SM4-CBC, as before there was a choice."""
    name, key_name = v["cipher"], "key_file"
    if v["sm4_key_file"] is not None:
        if v["key_file"] is not None:
            p.add("provincial.sm4_key_file", "is the older name of key_file: set only key_file")
        elif "cipher" in raw and name != "sm4-cbc":
            p.add("provincial.sm4_key_file", f'is an SM4-CBC key: with cipher = "{name}" name the key in key_file')
            return ciphers.PayloadCipher()
        else:
            name, key_name = "sm4-cbc", "sm4_key_file"
    found = len(p)
    key = _hex_file(v[key_name], f"provincial.{key_name}", base, p)
    iv = _hex_file(v["iv_file"], "provincial.iv_file", base, p)
    if "encoding" in raw and name == "none":
        p.add("provincial.encoding", 'has no use with cipher = "none": the payload is the JSON text itself')
    # a file that could not be read is reported once: the checks below see a well-formed stand-in
    stand_in = bytes(ciphers.KEY_BYTES)
    key = stand_in if key is None and v[key_name] is not None else key
    iv = stand_in if iv is None and v["iv_file"] is not None else iv
    paths = {"key": f"provincial.{key_name}", "iv": "provincial.iv_file", "cipher": "provincial.cipher"}
    for role, message in ciphers.problems(name, key, iv):
        p.add(paths[role], message)
    if len(p) > found:
        return ciphers.PayloadCipher()
    return ciphers.PayloadCipher(name, key, iv, v["encoding"])


def _hex_file(name: str | None, path: str, base: Path, p: Problems) -> bytes | None:
    if name is None:
        return None
    file = base / name
    try:
        return ciphers.read_hex(file)
    except OSError as exc:
        p.add(path, f"cannot read {file}: {exc.strerror or exc}")
    except ciphers.CipherError as exc:
        p.add(path, f"{file}: {exc}")  # never the content
    return None


def _envelope(v: Mapping[str, Any], p: Problems) -> str:
    template = v["envelope"]
    if not template:
        return ""
    for message in envelope_problems(template):
        p.add("provincial.envelope", message)
    used = placeholders(template)
    for name, key in (("appid", "appid"), ("district", "district_code"), ("service", "service_id")):
        if name in used and not v[key]:
            p.add(f"provincial.{key}", f"is required: the envelope names {{{name}}}")
    if "time14" in used:
        fmt = v["time_format"]
        try:
            datetime.strptime(datetime(2026, 1, 2, 3, 4, 5).strftime(fmt), fmt).strftime(TIME14)
        except ValueError:
            p.add("provincial.time_format", "must read back as a time for the envelope's {time14}")
    return template


def _secret(name: str | None, base: Path, p: Problems) -> str:
    if name is None:
        return ""
    file = base / name
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        p.add("provincial.appsecret_file", f"cannot read {file}: {exc.strerror or exc}")
        return ""
    except UnicodeDecodeError:
        p.add("provincial.appsecret_file", f"{file} is not UTF-8 text")  # the error would show a byte of it
        return ""
    if not secret:
        p.add("provincial.appsecret_file", f"{file} is empty")
    return secret
