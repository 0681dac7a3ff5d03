"""Profile ``provincial``: the same events in a province's own field format.

Provincial platforms (安全风险监测预警系统) each publish an access specification: enterprise
code, gateway code, point codes, local time as ``yyyy-MM-dd HH:mm:ss``, values as
fixed-decimal strings, numeric alarm codes, alarms repeated while active, a normal-state data
data message, and sometimes SM4-CBC encryption of the payload. Every field name and code here is
configuration (``[provincial]`` in the config) with a documented default, so a new province
is a config change, not a code change.

Encrypted payloads are ``base64(iv || SM4-CBC(PKCS#7(json)))`` with a fresh random 16-byte IV
per message; the key (16 bytes) comes from ``sm4_key_file`` as 32 hex characters.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.payloads import parse_rfc3339

DEFAULT_FIELDS = {
    "enterprise": "qybm",  # 企业编码
    "gateway": "wgbm",  # 网关编码
    "type": "lx",  # 消息类型
    "seq": "xh",  # 序号
    "point": "cdbm",  # 测点编码
    "time": "cjsj",  # 采集时间
    "value": "cdz",  # 测点值
    "limit": "bjyz",  # 报警阈值
    "unit": "dw",  # 单位
    "alarm_code": "bjlx",  # 报警类型
    "state": "bjzt",  # 报警状态
    "message": "bjms",  # 报警描述
    "quality": "zt",  # 数据状态
    "datas": "datas",  # 测点数据
    "online": "zxzt",  # 在线状态
    "late": "bc",  # 补传标志: a data message sent after an outage
    # the point registry (基础数据)
    "hazard": "wxybm",  # 重大危险源编码
    "equipment": "sbbm",  # 设备编码
    "indicator": "zbbm",  # 指标编码
    "position": "wh",  # 位号
    "desc": "cdmc",  # 测点名称
    "range_lo": "lcxx",  # 量程下限
    "range_hi": "lcsx",  # 量程上限
    "limit_ll": "ddbjz",  # 低低报警值
    "limit_l": "dbjz",  # 低报警值
    "limit_h": "gbjz",  # 高报警值
    "limit_hh": "ggbjz",  # 高高报警值
    "in_service": "sfty",  # 是否投用
}
#: limit level -> alarm type code; a detector family declares its kind's code (``alarm_code``)
LEVEL_CODES = {"HH": "1", "H": "2", "L": "3", "LL": "4"}
#: the agent's own alarm kinds -> alarm type code
SYSTEM_CODES = {"comm": "10", "storage": "11"}
DEFAULT_STATES = {  # message state -> code
    "active": "1", "cleared": "0", "repeat": "1", "acked": "2", "shelved": "3", "unshelved": "4",
    "suppressed": "5", "unsuppressed": "6", "out_of_service": "7", "in_service": "8",
}
DEFAULT_QUALITY = {"good": "0", "uncertain": "1", "bad": "2", "comm_fail": "3"}
DEFAULT_TYPES = {"alarm": "alarm", "data": "data", "status": "status", "registry": "registry"}


class ProvincialError(ValueError):
    pass


def default_codes(families: Iterable[Any]) -> dict[str, str]:
    """Level or kind -> alarm type code: the limit levels, each family's declared code, then the
    agent's own kinds."""
    return {**LEVEL_CODES, **{f.name: f.alarm_code for f in families if f.alarm_code}, **SYSTEM_CODES}


@dataclass(frozen=True)
class Profile:
    enterprise_code: str
    gateway_code: str
    timezone: str = "Asia/Shanghai"
    decimals: int = 3
    time_format: str = "%Y-%m-%d %H:%M:%S"
    repeat_s: float = 0.0
    sm4_key: bytes | None = field(default=None, repr=False)
    fields: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    codes: dict[str, str] = field(default_factory=lambda: {**LEVEL_CODES, **SYSTEM_CODES})
    states: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STATES))
    quality: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_QUALITY))
    types: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TYPES))
    points: dict[str, str] = field(default_factory=dict)  # tag name -> point code
    hazard_code: str = ""  # 重大危险源编码 of the points whose tag names none
    decimals_of: dict[str, int] = field(default_factory=dict)  # tag name -> its own decimals
    switches: frozenset[str] = frozenset()  # bool tags: values are "0" / "1"

    # --- formatting -----------------------------------------------------------------------------

    def local_time(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, ZoneInfo(self.timezone)).strftime(self.time_format)

    def fixed(self, x: float | None, decimals: int | None = None) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return ""
        return f"{x:.{self.decimals if decimals is None else decimals}f}"

    def value(self, tag: str | None, x: float | None) -> str:
        """A tag's value as the province writes it: a switch point as "0" / "1", any other with
        the tag's decimals (``[provincial] decimals`` unless the tag sets its own)."""
        if tag in self.switches and x is not None and math.isfinite(x):
            return "1" if x else "0"
        return self.fixed(x, self.decimals_of.get(tag) if tag else None)

    def point(self, tag: str | None, fallback: str) -> str:
        return self.points.get(tag, tag) if tag else fallback

    def code(self, doc: dict[str, Any]) -> str:
        if doc["kind"] == "limit":
            return self.codes.get(doc["level"], self.codes.get("limit", ""))
        return self.codes.get(doc["kind"], self.codes.get(doc["level"], ""))

    def alarm(self, doc: dict[str, Any], repeat: bool = False) -> dict[str, Any]:
        """A json-profile alarm document (with seq) in the province's fields."""
        f = self.fields
        return {
            f["enterprise"]: self.enterprise_code,
            f["gateway"]: self.gateway_code,
            f["type"]: self.types["alarm"],
            f["seq"]: doc["seq"],
            f["point"]: self.point(doc["tag"], doc["device"]),
            f["time"]: self.local_time(parse_rfc3339(doc["ts"])),
            f["value"]: self.value(doc["tag"], doc["value"]),
            f["limit"]: self.value(doc["tag"], doc["limit"]),
            f["unit"]: doc["unit"],
            f["alarm_code"]: self.code(doc),
            f["state"]: self.states["repeat" if repeat else doc["state"]] if (repeat or doc["state"] in self.states) else doc["state"],
            f["message"]: doc["message"],
        }

    def data(self, ts: float, samples: Iterable[tuple], late: bool = False) -> dict[str, Any]:
        """The normal-state data message, made from the telemetry snapshot every ``[uplink]
        telemetry_interval_s``. ``samples`` are (tag name, value, quality name, sample time):
        each point carries its own sample time; a sample without one (a 3-tuple, or None) takes
        ``ts``, the message time. ``late`` is the 补传 mark (see ``mark_late``)."""
        f = self.fields
        return {
            f["enterprise"]: self.enterprise_code,
            f["gateway"]: self.gateway_code,
            f["type"]: self.types["data"],
            f["time"]: self.local_time(ts),
            f["late"]: "1" if late else "0",
            f["datas"]: [self._sample(name, v, q, rest[0] if rest and rest[0] else ts) for name, v, q, *rest in samples],
        }

    def _sample(self, name: str, v: float | None, q: str, ts: float) -> dict[str, Any]:
        f = self.fields
        return {f["point"]: self.point(name, name), f["time"]: self.local_time(ts), f["value"]: self.value(name, v),
                f["quality"]: self.quality[q]}

    def mark_late(self, doc: dict[str, Any], late: bool = True) -> dict[str, Any]:
        """A data message with the 补传 mark set (``fields.late``, "1" late, "0" on time); any
        other message as it is. Whether a row is late is the sender's to judge when it sends the
        row (after an outage, the backlog); the core only writes the mark."""
        f = self.fields
        if doc.get(f["type"]) != self.types["data"]:
            return doc
        return {**doc, f["late"]: "1" if late else "0"}

    def mark_late_payload(self, payload: bytes, late: bool = True) -> bytes:
        """``mark_late`` on an encoded payload, as stored in the outbox."""
        return self.encode(self.mark_late(self.decode(payload), late))

    def status(self, ts: float, online: bool) -> dict[str, Any]:
        f = self.fields
        return {f["enterprise"]: self.enterprise_code, f["gateway"]: self.gateway_code, f["type"]: self.types["status"],
                f["time"]: self.local_time(ts), f["online"]: "1" if online else "0"}

    # --- the wire ---------------------------------------------------------------------------------

    def encode(self, doc: dict[str, Any]) -> bytes:
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        if self.sm4_key is None:
            return raw
        return base64.b64encode(sm4_encrypt(self.sm4_key, raw))

    def decode(self, payload: bytes) -> dict[str, Any]:
        """What the platform does: decrypt (if keyed) and parse."""
        raw = sm4_decrypt(self.sm4_key, base64.b64decode(payload, validate=True)) if self.sm4_key else payload
        return json.loads(raw)


def sm4_encrypt(key: bytes, plain: bytes, iv: bytes | None = None) -> bytes:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16) if iv is None else iv
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(data) + enc.finalize()


def sm4_decrypt(key: bytes, blob: bytes) -> bytes:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(blob) < 32 or len(blob) % 16:
        raise ProvincialError("ciphertext is not iv + whole SM4 blocks")
    dec = Cipher(algorithms.SM4(key), modes.CBC(blob[:16])).decryptor()
    data = dec.update(blob[16:]) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(data) + unpadder.finalize()
    except ValueError:
        raise ProvincialError("bad padding: wrong key or damaged message") from None


def read_sm4_key(path: Path) -> bytes:
    """16-byte SM4 key from a file holding 32 hex characters (whitespace ignored)."""
    text = "".join(path.read_text(encoding="ascii").split())
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ProvincialError("must hold 32 hexadecimal characters") from None
    if len(key) != 16:
        raise ProvincialError(f"must hold a 16-byte key (32 hex characters), not {len(key)} bytes")
    return key
