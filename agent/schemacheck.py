"""The published JSON Schemas as plain Python predicates: the receiver's fast path.

``jsonschema`` walks a schema anew for every document (a validator object per keyword and
subschema); at a platform's message rates that walk is most of a receiver's CPU. ``compile_schema``
turns a schema into nested closures once, for the keywords plantwatch's schemas use (type, const,
enum, pattern, minLength, maxLength, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
required, properties, additionalProperties, if/then/else, not). Each closure answers exactly what
draft 2020-12 answers for a JSON value (what ``json.loads`` returns: dict, list, str, int, float,
bool, None); a schema with any other keyword compiles to None and the caller validates with
jsonschema only.

The receiver takes a document the predicate accepts and asks jsonschema about any other one, so
what it refuses, and the words it refuses it with, are jsonschema's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from agent.payloads import schema

Check = Callable[[Any], bool]
DRAFT = "https://json-schema.org/draft/2020-12/schema"

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated",
                         "readOnly", "writeOnly"})
TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    # draft 2020-12: a float with no fractional part is an integer too
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


class Unsupported(Exception):
    """A keyword (or a form of one) the compiler does not translate."""


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same(value: Any) -> Check:
    """Equality as JSON Schema means it for const and enum, for the scalar ``value``."""
    if isinstance(value, str):
        return lambda v: isinstance(v, str) and v == value
    if value is None or isinstance(value, bool):
        return lambda v: v is value
    if _is_number(value):
        return lambda v: _is_number(v) and v == value
    raise Unsupported("const/enum of an object or array")


def _type(types: Any) -> Check:
    names = [types] if isinstance(types, str) else types
    if not isinstance(names, list) or any(n not in TYPES for n in names):
        raise Unsupported(f"type {types!r}")
    checks = [TYPES[n] for n in names]
    return checks[0] if len(checks) == 1 else (lambda v: any(c(v) for c in checks))


def _string(keyword: str, arg: Any) -> Check:
    if keyword == "pattern":
        search = re.compile(arg).search
        return lambda v: not isinstance(v, str) or search(v) is not None
    if keyword == "minLength":
        return lambda v: not isinstance(v, str) or len(v) >= arg
    return lambda v: not isinstance(v, str) or len(v) <= arg  # maxLength


def _number(keyword: str, arg: Any) -> Check:
    if not _is_number(arg):
        raise Unsupported(f"{keyword} {arg!r}")
    test: Callable[[Any], bool] = {
        "minimum": lambda v: v >= arg, "maximum": lambda v: v <= arg,
        "exclusiveMinimum": lambda v: v > arg, "exclusiveMaximum": lambda v: v < arg}[keyword]
    return lambda v: not _is_number(v) or test(v)


def _object(node: dict[str, Any]) -> Check | None:
    """properties, additionalProperties and required of one schema node, as one check."""
    props = {k: compile_schema(s) for k, s in node.get("properties", {}).items()}
    extra = node.get("additionalProperties", True)
    other = None if extra is True else compile_schema(extra)
    required = tuple(node.get("required", ()))
    if not props and other is None and not required:
        return None

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name in required:
            if name not in v:
                return False
        for key, value in v.items():
            sub = props.get(key, other)
            if sub is not None and not sub(value):
                return False
        return True

    return check


def _conditional(node: dict[str, Any]) -> Check:
    test = compile_schema(node["if"])
    then = compile_schema(node.get("then", True))
    other = compile_schema(node.get("else", True))
    return lambda v: then(v) if test(v) else other(v)


def _keyword(keyword: str, arg: Any, node: dict[str, Any]) -> Check:
    if keyword == "type":
        return _type(arg)
    if keyword == "const":
        return _same(arg)
    if keyword == "enum":
        sames = [_same(a) for a in arg]
        return lambda v: any(s(v) for s in sames)
    if keyword in ("pattern", "minLength", "maxLength"):
        return _string(keyword, arg)
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return _number(keyword, arg)
    if keyword == "not":
        inner = compile_schema(arg)
        return lambda v: not inner(v)
    if keyword == "if":
        return _conditional(node)
    raise Unsupported(keyword)


def compile_schema(node: Any) -> Check:
    """A predicate that is true exactly when the JSON value is valid under ``node``; Unsupported
    when ``node`` uses a keyword (or a form of one) not translated here."""
    if node is True:
        return lambda v: True
    if node is False:
        return lambda v: False
    if not isinstance(node, dict):
        raise Unsupported(f"a schema of type {type(node).__name__}")
    checks: list[Check] = []
    for keyword, arg in node.items():
        # then and else say nothing without an if, and are read with it
        if keyword in ANNOTATIONS or keyword in ("properties", "additionalProperties", "required", "then", "else"):
            continue
        checks.append(_keyword(keyword, arg, node))
    whole = _object(node)
    if whole is not None:
        checks.append(whole)
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


@cache
def checker(name: str) -> Check | None:
    """The compiled check of the shipped schema ``name``; None when it cannot be compiled (a
    keyword not translated, or a draft other than 2020-12)."""
    s = schema(name)
    if s.get("$schema") != DRAFT:
        return None
    try:
        return compile_schema(s)
    except Unsupported:
        return None
