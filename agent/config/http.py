"""What an HTTP platform expects beyond the payload: the request headers (templates) and the
answer that means "received", both from [provincial] (``headers``, ``success``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config.schema import Problems
from agent.templates import unknown

#: what a header template may name; filled in for every request
HEADER_PLACEHOLDERS = ("appsecret", "appid", "uuid", "time")
SUCCESS_KEYS = ("status", "field", "equals")


@dataclass(frozen=True)
class SuccessRule:
    """The answer that counts as "received": this HTTP status and, when ``field`` is set, the
    JSON body's ``field`` (a dotted path for nested objects) equal to ``equals``. Values compare
    as text, so ``"code": 200`` and ``"code": "200"`` both match ``equals = "200"``."""

    status: int = 200
    field: str = ""
    equals: str = ""

    def matches(self, status: int, body: bytes) -> bool:
        if status != self.status:
            return False
        if not self.field:
            return True
        try:
            value: Any = json.loads(body)
        except ValueError:
            return False
        for part in self.field.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        if isinstance(value, bool):
            value = str(value).lower()
        return isinstance(value, (str, int, float, bool)) and str(value) == self.equals


@dataclass(frozen=True)
class HttpRules:
    headers: Mapping[str, str] = field(default_factory=dict)  # header name -> template
    success: SuccessRule = SuccessRule()


def read_http(raw: Any, p: Problems) -> HttpRules:
    """``headers`` and ``success`` of the [provincial] table ``raw`` (its other keys are read
    with the profile); their types were checked with the rest of the table."""
    table = raw if isinstance(raw, dict) else {}
    headers = _headers(table.get("headers", {}), p)
    return HttpRules(headers, _success(table.get("success", {}), p))


def _headers(raw: Any, p: Problems) -> dict[str, str]:
    out = {}
    for name, template in (raw.items() if isinstance(raw, dict) else ()):
        path = f"provincial.headers.{name}"
        if not isinstance(template, str):
            p.add(path, f"must be a string, not {template!r}")
        elif bad := unknown(template, HEADER_PLACEHOLDERS):
            p.add(path, f"unknown placeholder {{{bad[0]}}} (known: {', '.join(HEADER_PLACEHOLDERS)})")
        elif any(c in name + template for c in "\r\n"):
            p.add(path, "must not contain a line break")
        else:
            out[name] = template
    return out


def _success(raw: Any, p: Problems) -> SuccessRule:
    if not isinstance(raw, dict):
        return SuccessRule()
    p.unknown(raw, "provincial.success", SUCCESS_KEYS)
    status, fld, equals = raw.get("status", 200), raw.get("field", ""), raw.get("equals")
    rule = SuccessRule()
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        p.add("provincial.success.status", f"an HTTP status is 100..599: {status!r} can never match")
        return rule
    if not isinstance(fld, str):
        p.add("provincial.success.field", f"must be a string, not {fld!r}")
        return rule
    if fld and equals is None:
        p.add("provincial.success.equals", "is required with field")
        return rule
    if equals is not None and not fld:
        p.add("provincial.success.field", "is required with equals")
        return rule
    if isinstance(equals, (dict, list, float)):
        p.add("provincial.success.equals", f"a JSON field is compared as text: a string, integer or bool, not {equals!r}")
        return rule
    if fld and any(not part for part in fld.split(".")):
        p.add("provincial.success.field", f"not a field path: {fld!r}")
        return rule
    text = "" if equals is None else str(equals).lower() if isinstance(equals, bool) else str(equals)
    return SuccessRule(status, fld, text)
