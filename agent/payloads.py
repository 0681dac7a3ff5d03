"""The json-profile wire format: topics, timestamps and the alarm/status/telemetry documents.

Schemas live in docs/schemas/ and are shipped inside the package (agent/schemas/) so the
receiver validates against exactly what is documented.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

ALARM_SCHEMA = "plantwatch.alarm/2"
STATUS_SCHEMA = "plantwatch.status/1"
TELEMETRY_SCHEMA = "plantwatch.telemetry/1"


def topic(prefix: str, plant: str, kind: str) -> str:
    """``{prefix}/{plant}/{kind}`` with kind one of alarm, telemetry, status, cmd: the one place
    topics are spelled. In a subscription ``plant`` may be ``+``, any plant."""
    return f"{prefix}/{plant}/{kind}"


def rfc3339(ts: float) -> str:
    """UTC seconds -> ``2026-11-28T23:40:00.123Z`` (RFC 3339, UTC, milliseconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def number(x: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if x is None or not math.isfinite(x) else float(x)


def clean(obj: Any) -> Any:
    """A JSON-safe copy: numpy scalars to Python, non-finite floats to null."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float):
        return number(obj)
    return obj


def dumps(doc: dict[str, Any], safe: bool = False) -> bytes:
    """Compact UTF-8 JSON; ``safe`` for a document already JSON-safe (no numpy, no NaN)."""
    return json.dumps(doc if safe else clean(doc), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (alarm, status, telemetry) shipped with the package."""
    text = resources.files("agent").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def validator(name: str):
    import jsonschema

    s = schema(name)
    cls = jsonschema.validators.validator_for(s)
    cls.check_schema(s)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def unnumbered(doc: dict[str, Any], epoch: str) -> dict[str, Any]:
    """The alarm message ``doc`` as sent from memory while the outbox cannot store it: no seq,
    ``unnumbered: true``, the epoch of the outbox that will number it. The numbered record
    (same id, state and ts) follows once stored; a receiver never books this one in the sequence."""
    out = {k: v for k, v in doc.items() if k != "seq"}
    out.update(epoch=epoch, unnumbered=True)
    return out


def batch_body(payloads: list[bytes]) -> bytes:
    """Several messages in one request body (an HTTP batch): a JSON array of them, each message
    that is JSON itself as it is, one that is not (a bare ciphertext) as a JSON string."""
    items = [p if p.lstrip()[:1] in (b"{", b"[") else json.dumps(p.decode("ascii")).encode() for p in payloads]
    return b"[" + b",".join(items) + b"]"


def split_body(body: bytes) -> list[bytes]:
    """A request body as its messages, the inverse of ``batch_body``: a JSON array is a batch
    whose items come back byte for byte (a string item as its text); anything else is one message."""
    try:
        text = body.decode("utf-8")
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return [body]
    if not isinstance(parsed, list):
        return [body]
    decoder, out = json.JSONDecoder(), []
    i = text.index("[") + 1
    for _ in parsed:
        while text[i] in " \t\r\n,":
            i += 1
        item, end = decoder.raw_decode(text, i)
        out.append(item.encode() if isinstance(item, str) else text[i:end].encode())
        i = end
    return out
