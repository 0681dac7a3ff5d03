"""Profile ``provincial``: the same events in a province's own field format.

Provincial platforms (安全风险监测预警系统) each publish an access specification: enterprise
code, gateway code, point codes, local time as ``yyyy-MM-dd HH:mm:ss``, values as
fixed-decimal strings, numeric alarm codes, alarms repeated while active, a normal-state data
data message, and often an encrypted payload inside an envelope. Every field name and code here
is configuration (``[provincial]`` in the config) with a documented default, so a new province
is a config change, not a code change.

On the wire a document is JSON, then the province's cipher and encoding (``agent.ciphers``),
then, when the spec wraps it, the envelope: a JSON template such as
``{"appid":"{appid}","data":"{payload}"}`` whose ``{payload}`` string receives the ciphertext.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from agent.ciphers import CipherError, PayloadCipher
from agent.payloads import parse_rfc3339
from agent.templates import PLACEHOLDER, render, unknown

DEFAULT_FIELDS = {
    "enterprise": "qybm",  # 企业编码
    "gateway": "wgbm",  # 网关编码
    "type": "lx",  # 消息类型
    "seq": "xh",  # 序号
    # the sequence epoch (agent.outbox): not in the province's messages unless named here
    "epoch": "",
    # marks an alarm sent from memory, without a seq (agent.unnumbered): such alarms go to the
    # province only when named here
    "unnumbered": "",
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
SYSTEM_CODES = {"comm": "10", "storage": "11", "gateway": "14"}
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
    cipher: PayloadCipher = field(default_factory=PayloadCipher)
    envelope: str = ""  # a JSON template around the payload; "" = the payload alone
    appid: str = ""
    appsecret: str = field(default="", repr=False)  # for the transport's headers, never in a payload
    district_code: str = ""
    service_id: str = ""
    fields: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    codes: dict[str, str] = field(default_factory=lambda: {**LEVEL_CODES, **SYSTEM_CODES})
    states: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STATES))
    quality: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_QUALITY))
    types: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TYPES))
    points: dict[str, str] = field(default_factory=dict)  # tag name -> point code
    hazard_code: str = ""  # 重大危险源编码 of the points whose tag names none
    decimals_of: dict[str, int] = field(default_factory=dict)  # tag name -> its own decimals
    switches: frozenset[str] = frozenset()  # bool tags: values are "0" / "1"
    late_after_s: float = 300.0  # a data message sent this long after its time carries the 补传 mark

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
        """A json-profile alarm document in the province's fields: with its seq, or, unnumbered
        (sent from memory), with the ``unnumbered`` field "1" in place of the seq."""
        f = self.fields
        return {
            f["enterprise"]: self.enterprise_code,
            f["gateway"]: self.gateway_code,
            f["type"]: self.types["alarm"],
            **({f["unnumbered"]: "1"} if doc.get("unnumbered") else {f["seq"]: doc["seq"]}),
            **({f["epoch"]: doc["epoch"]} if f.get("epoch") else {}),
            f["point"]: self.point(doc["tag"], doc["device"]),
            f["time"]: self.local_time(parse_rfc3339(doc["ts"])),
            f["value"]: self.value(doc["tag"], doc["value"]),
            f["limit"]: self.value(doc["tag"], doc["limit"]),
            f["unit"]: doc["unit"],
            f["alarm_code"]: self.code(doc),
            f["state"]: self.states["repeat" if repeat else doc["state"]] if (repeat or doc["state"] in self.states) else doc["state"],
            f["message"]: doc["message"],
        }

    def head(self, kind: str, ts: float) -> dict[str, Any]:
        """What every message but an alarm begins with: enterprise, gateway, message type
        (``types[kind]``) and the message time."""
        f = self.fields
        return {f["enterprise"]: self.enterprise_code, f["gateway"]: self.gateway_code, f["type"]: self.types[kind],
                f["time"]: self.local_time(ts)}

    def data(self, ts: float, samples: Iterable[tuple], late: bool = False) -> dict[str, Any]:
        """The normal-state data message, made from the telemetry snapshot every ``[uplink]
        telemetry_interval_s``. ``samples`` are (tag name, value, quality name, sample time):
        each point carries its own sample time; a sample without one (a 3-tuple, or None) takes
        ``ts``, the message time. ``late`` is the 补传 mark (see ``mark_late``)."""
        f = self.fields
        return {
            **self.head("data", ts),
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
        row (after an outage, the backlog: ``late_after_s`` after the message's time); the core
        only writes the mark."""
        f = self.fields
        if doc.get(f["type"]) != self.types["data"]:
            return doc
        return {**doc, f["late"]: "1" if late else "0"}

    def status(self, ts: float, online: bool) -> dict[str, Any]:
        return {**self.head("status", ts), self.fields["online"]: "1" if online else "0"}

    def describe(self) -> str:
        """One line for ``plantwatch check``: how payloads are sent, without the key, IV or secret."""
        c = self.cipher
        how = "JSON as it is" if c.name == "none" else (
            f"{c.name} ({'random IV in front' if c.random_iv else 'fixed IV' if c.iv else 'no IV'}), {c.encoding}")
        parts = [f"provincial {self.enterprise_code}/{self.gateway_code}: payload {how}",
                 f"envelope {self.envelope}" if self.envelope else "no envelope"]
        if self.appid:
            parts.append(f"appid {self.appid}")
        if self.appsecret:
            parts.append("appsecret set")
        return ", ".join(parts)

    # --- the wire ---------------------------------------------------------------------------------

    def encode(self, doc: dict[str, Any], *, now: float | None = None, message_id: str | None = None) -> bytes:
        """A profile document as the platform takes it: JSON, then the cipher and its encoding,
        then the envelope. ``now`` and ``message_id`` are the envelope's {time} and {uuid}
        (default: the document's own time, a fresh UUID)."""
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        text = self.cipher.encrypt(raw)
        if not self.envelope:
            return text.encode()
        values = {**self.envelope_values(doc, now=now, message_id=message_id), "payload": text}
        # every placeholder sits inside a JSON string (checked with the config): escape for one
        return render(self.envelope, {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in values.items()}).encode()

    def decode(self, payload: bytes) -> dict[str, Any]:
        """What the platform does: open the envelope, decode, decrypt, parse. ProvincialError
        says which step failed."""
        _, text = self.unwrap(payload)
        try:
            raw = self.cipher.decrypt(text)
        except CipherError as exc:
            raise ProvincialError(f"payload: {exc}") from None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProvincialError(f"decrypted payload is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ProvincialError(f"decrypted payload is JSON but not an object: {type(doc).__name__}")
        return doc

    def unwrap(self, payload: bytes | str) -> tuple[dict[str, Any], str]:
        """The envelope's fields (empty without an envelope) and the payload text inside it."""
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
        if not self.envelope:
            return {}, text
        try:
            outer = json.loads(text)
        except ValueError as exc:
            raise ProvincialError(f"envelope: not JSON: {exc}") from None
        inner: Any = outer
        for step in self.payload_path:
            try:
                inner = inner[step]
            except (KeyError, IndexError, TypeError):
                where = ".".join(str(s) for s in self.payload_path)
                raise ProvincialError(f"envelope: no payload at {where}") from None
        if not isinstance(inner, str):
            raise ProvincialError(f"envelope: the payload is {type(inner).__name__}, not a string")
        return (outer if isinstance(outer, dict) else {}), inner

    @cached_property
    def payload_path(self) -> tuple[str | int, ...]:
        """Where the envelope holds the payload: the keys (and list indexes) down to the string
        "{payload}" of the template."""
        path = payload_path(self.envelope)
        if path is None:
            raise ProvincialError('envelope: no "{payload}" string value')
        return path

    def envelope_values(self, doc: dict[str, Any], *, now: float | None = None,
                        message_id: str | None = None) -> dict[str, str]:
        """The values of the envelope's placeholders (all but {payload}) for ``doc``; the
        transport's header templates are rendered from the same values. Without ``now``, {time14}
        is read back from the document's time, and is "" when time_format cannot be read back."""
        when = self.local_time(now) if now is not None else str(doc.get(self.fields["time"], ""))
        return {
            "appid": self.appid, "uuid": message_id or str(uuid.uuid4()), "time": when,
            "time14": self._time14(now, when) if when else "", "district": self.district_code, "service": self.service_id,
            "enterprise": self.enterprise_code, "gateway": self.gateway_code,
            "type": str(doc.get(self.fields["type"], "")),
        }

    def _time14(self, now: float | None, when: str) -> str:
        if now is not None:
            return datetime.fromtimestamp(now, ZoneInfo(self.timezone)).strftime(TIME14)
        try:  # the document's time, written with time_format: the config checks that it reads back
            return datetime.strptime(when, self.time_format).strftime(TIME14)  # when an envelope uses {time14}
        except ValueError:
            return ""


TIME14 = "%Y%m%d%H%M%S"  # yyyyMMddHHmmss
#: the envelope's placeholders
ENVELOPE_PLACEHOLDERS = ("payload", "appid", "uuid", "time", "time14", "district", "service", "enterprise",
                         "gateway", "type")


def payload_path(template: str) -> tuple[str | int, ...] | None:
    """The path to the string "{payload}" in a JSON envelope template, or None."""

    def find(node: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
        if node == "{payload}":
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if (found := find(v, (*path, k))) is not None:
                return found
        return None

    try:
        return find(json.loads(template), ())
    except ValueError:
        return None


def uuid_field(envelope: str) -> str | None:
    """The envelope template's top-level field that is exactly "{uuid}": the message id a TCP
    platform echoes in its answer (its dataId)."""
    try:
        outer = json.loads(envelope) if envelope else {}
    except ValueError:
        return None
    return next((k for k, v in outer.items() if v == "{uuid}"), None) if isinstance(outer, dict) else None


def envelope_problems(template: str) -> list[str]:
    """What makes an envelope template unusable, each as a message (the caller adds the path)."""
    wrong = [f"unknown placeholder {{{name}}} (known: {' '.join('{' + k + '}' for k in ENVELOPE_PLACEHOLDERS)})"
             for name in unknown(template, ENVELOPE_PLACEHOLDERS)]
    try:
        parsed = json.loads(template)
    except ValueError as exc:
        return [*wrong, f"must be JSON, with each placeholder inside a string: {exc}"]
    if not isinstance(parsed, dict):
        wrong.append("must be a JSON object")
    elif payload_path(template) is None:
        wrong.append('must hold the payload as a whole string value: "{payload}"')
    elif PLACEHOLDER.findall(template).count("payload") > 1:
        wrong.append("must name {payload} once")
    return wrong
