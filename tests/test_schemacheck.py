"""The compiled schema checks answer what jsonschema answers, document by document.

Valid messages of every shipped schema are spoiled in every place (a key removed, a value of
every JSON type put in, a key added) and each variant is judged by both; they must agree on all.
"""

from __future__ import annotations

import copy
import json

import pytest

from agent.payloads import schema, validator
from agent.schemacheck import Unsupported, checker, compile_schema

TS = "2026-11-30T00:00:00.000Z"
ALARM = {"schema": "plantwatch.alarm/2", "plant": "650000000001", "epoch": "0123456789abcdef", "seq": 7,
         "id": "U1.TI01/limit", "tag": "U1.TI01", "device": "plc01", "kind": "limit", "level": "H", "priority": 2,
         "state": "active", "active": True, "acked": False, "shelved": False, "suppressed": False,
         "out_of_service": False, "latched": False, "value": 170.0, "limit": 160, "unit": "°C", "ts": TS,
         "message": "1#温度 高报警", "context": {"user": "plantwatch", "via": "socket", "comment": "x"}}
UNNUMBERED = {**{k: v for k, v in ALARM.items() if k != "seq"}, "unnumbered": True}
STATUS = {"schema": "plantwatch.status/1", "plant": "p-1", "online": True, "ts": TS, "version": "1.0",
          "devices": {"plc01": {"state": "ok", "reads": 3, "errors": 0, "rate_hz": 1.5, "interval_s": None,
                                "latency_ms": 2}},
          "outbox": {"free_mb": 10.5, "oldest_unsent": {"id": 1, "lane": "alarm", "seq": None, "created": TS,
                                                        "age_s": 0},
                     "storage": {"ok": True, "pending_alarms": 0, "lost_alarms": 0, "since": None}},
          "loops": {"poll": {"state": "ok", "errors": 0}}}
TELEMETRY = {"schema": "plantwatch.telemetry/1", "plant": "p_1", "ts": TS,
             "tags": {"U1.TI01": {"v": 1.5, "q": "good", "t": TS}, "U1.TI02": {"v": None, "q": "comm_fail", "t": None}}}
COMMAND = {"schema": "plantwatch.cmd/1", "plant": "p.1", "op": "shelve", "id": "U1.TI01/limit", "user": "li",
           "duration_s": 60, "ts": TS, "nonce": "0123456789abcdef"}
PROBES = [None, True, False, 0, 1, -1, 2, 4, 5, 1.0, 2.0, 0.5, -0.5, 2**64, "", "x", "active", "ok", "good",
          "650000000001", TS, "2026-11-30T00:00:00Z", "a" * 65, "a" * 201, [], [1], {}, {"state": "ok"},
          {"v": 1, "q": "bad"}]


def _places(doc, path=()):
    """Every path to a value in ``doc``."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _places(v, (*path, k))


def _variants(doc):
    """``doc`` spoiled in every place, one way at a time."""
    yield doc
    for path in _places(doc):
        if not path:
            yield from PROBES
            continue
        *up, last = path
        for probe in PROBES:
            spoiled = copy.deepcopy(doc)
            parent = spoiled
            for k in up:
                parent = parent[k]
            parent[last] = probe
            yield spoiled
        gone = copy.deepcopy(doc)
        parent = gone
        for k in up:
            parent = parent[k]
        del parent[last]
        yield gone
        if isinstance(parent, dict):
            added = copy.deepcopy(doc)
            parent = added
            for k in up:
                parent = parent[k]
            parent["zz_extra"] = 1
            yield added


@pytest.mark.parametrize(("name", "docs"), [("alarm", [ALARM, UNNUMBERED, {**ALARM, "unnumbered": False}]),
                                            ("status", [STATUS]), ("telemetry", [TELEMETRY]), ("command", [COMMAND])])
def test_the_compiled_check_agrees_with_jsonschema_on_every_spoiled_message(name, docs):
    fast, full = checker(name), validator(name)
    assert fast is not None, f"the {name} schema uses a keyword the compiler does not translate"
    valid = invalid = 0
    for doc in docs:
        assert full.is_valid(doc), doc
        for variant in _variants(doc):
            variant = json.loads(json.dumps(variant))  # as the receiver has it: what json.loads made
            expected = full.is_valid(variant)
            assert fast(variant) == expected, (name, variant)
            valid, invalid = valid + expected, invalid + (not expected)
    assert valid > 10 and invalid > 100, (valid, invalid)


def test_a_schema_with_a_keyword_not_translated_has_no_compiled_check():
    for node in ({"type": "string", "format": "date-time"}, {"$ref": "#/$defs/x"}, {"items": {"type": "integer"}},
                 {"properties": {"a": {"const": [1]}}}, {"patternProperties": {"^a": True}, "additionalProperties": False}):
        with pytest.raises(Unsupported):
            compile_schema(node)


def test_the_shipped_schemas_all_compile():
    for name in ("alarm", "status", "telemetry", "command"):
        assert checker(name) is not None, schema(name)["title"]
