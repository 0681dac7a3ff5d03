"""The config vocabulary's machinery: a key declared once (type, default, one-line doc, check),
the reader that applies those declarations to a TOML table, and problems as (path, message).

A section is a frozen dataclass whose fields are declared with ``key(...)``: the dataclass
default, the reader's default and check, and the row in docs/CONFIG.md all come from that one
declaration.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Check = Callable[[Any], str | None]

KIND_TEXT = {
    "str": "a string",
    "path": "a file path",
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "table": "a table",
    "list[str]": "a list of strings",
    "list[float]": "a list of numbers",
    "int|table": "an integer or a table",
}


class ConfigError(Exception):
    """The config has problems; ``problems`` holds every ``path: message`` line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def __reduce__(self) -> tuple:
        # made again from its problems (the default passes the joined text as ``problems``),
        # e.g. when a config loaded in a child process sends it back (agent.config_apart)
        return type(self), (self.problems,), self.__dict__


@dataclass(frozen=True)
class Key:
    """One config key: its type (a KIND_TEXT name), default, one-line doc and check.

    ``shown`` is the default as the docs show it when it is not the literal value (e.g. "the
    tag name"); ``choices`` are the accepted values when they are a closed list."""

    kind: str
    default: Any = None
    doc: str = ""
    required: bool = False
    check: Check | None = None
    choices: tuple[Any, ...] = ()
    shown: str | None = None


def key(default: Any = dataclasses.MISSING, doc: str = "", *, kind: str | None = None, check: Check | None = None,
        choices: Iterable[Any] = (), shown: str | None = None) -> Any:
    """A dataclass field that is also a config key (see Key); no default means required."""
    required = default is dataclasses.MISSING
    spec = Key(kind or kind_of(default), None if required else default, doc, required, check, tuple(choices), shown)
    if required:
        return dataclasses.field(metadata={"key": spec})
    return dataclasses.field(default=default, metadata={"key": spec})


def kind_of(default: Any) -> str:
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (Path, "path")):
        if isinstance(default, t):
            return name
    raise TypeError(f"give the kind of a key whose default is {default!r}")


def keys_of(cls: type) -> dict[str, Key]:
    """The config keys a section dataclass declares, in declaration order."""
    return {f.name: f.metadata["key"] for f in dataclasses.fields(cls) if "key" in f.metadata}


def kind_ok(kind: str, value: Any) -> bool:
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, dict)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list[float]":
        return isinstance(value, list) and all(kind_ok("float", v) for v in value)
    if kind == "int|table":
        return kind_ok("int", value) or kind_ok("table", value)
    raise ValueError(kind)


# --- checks ------------------------------------------------------------------------------------


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, not {v!r}"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, not {v!r}"


def at_least(low: float, note: str = "") -> Check:
    return lambda v: None if v >= low else f"must be >= {low}{note}, not {v!r}"


def between(low: float, high: float, text: str | None = None) -> Check:
    return lambda v: None if low <= v <= high else (text or f"must be {low}..{high}, not {v!r}")


def nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def one_of(*choices: Any) -> Check:
    """The value is one of ``choices``; the message lists them (never an empty one) and names
    the closest when the value looks like a misspelling."""

    def check(v: Any) -> str | None:
        if v in choices:
            return None
        shown = ", ".join(str(c) for c in choices if c != "") or "none available"
        return f"must be one of {shown}, not {v!r}{did_you_mean(v, choices)}"

    return check


def did_you_mean(word: Any, known: Iterable[Any]) -> str:
    names = [str(k) for k in known if str(k)]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6) if isinstance(word, str) else []
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- paths and problems ------------------------------------------------------------------------


def item(array: str, i: int, entry: Any) -> str:
    """The path of entry i of an array of tables, with its name when it has one, so that a
    message about tag 212 of 300 says which tag: ``tags[212] (CW.PI01)``."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{array}[{i}] ({name})" if isinstance(name, str) and name else f"{array}[{i}]"


class Problems(list):
    """Every problem found, as ``path: message`` lines, in the order found."""

    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}")

    def extend_from(self, path: str, problems: Iterable[Any]) -> None:
        """Problems a plugin reported as (path, message), relative to the table at ``path``."""
        for problem in problems:
            sub, message = (problem.path, problem.message) if hasattr(problem, "path") else problem
            self.add(f"{path}.{sub}" if sub else path, message)

    def unknown(self, data: Mapping[str, Any], path: str, known: Iterable[str], what: str = "key") -> None:
        """Every key of ``data`` not in ``known``, with the closest known one as a hint."""
        known = list(known)
        for k in data:
            if k not in known:
                self.add(f"{path}.{k}" if path else k, f"unknown {what}{did_you_mean(k, known)}")

    def names(self, table: Any, path: str, known: Iterable[str], value: Callable[[Any], str | None]) -> dict:
        """A table keyed by names (levels, kinds, fields): unknown names are refused like
        unknown keys, each value passes ``value`` (a check). Returns the good entries."""
        if not isinstance(table, dict):
            self.add(path, "must be a table")
            return {}
        known = list(known)
        self.unknown(table, path, known)
        out = {}
        for k, v in table.items():
            if k in known:
                if (msg := value(v)) is None:
                    out[k] = v
                else:
                    self.add(f"{path}.{k}", msg)
        return out

    def read(self, data: Any, path: str, keys: Mapping[str, Key], extra: Iterable[str] = ()) -> dict:
        """Typed values for ``keys`` from table ``data``; unknown keys (not in keys or extra)
        are problems. Keys in ``extra`` are passed through unchecked for a plugin to validate."""
        extra = frozenset(extra)
        if not isinstance(data, dict):
            self.add(path, "must be a table")
            return {k: spec.default for k, spec in keys.items()}
        self.unknown(data, path, [*keys, *sorted(extra)])
        out: dict[str, Any] = {k: self.value(data, path, k, spec) for k, spec in keys.items()}
        out.update({k: data[k] for k in extra if k in data})
        return out

    def value(self, data: Mapping[str, Any], path: str, k: str, spec: Key) -> Any:
        if k not in data:
            if spec.required:
                self.add(f"{path}.{k}", "is required")
            return spec.default
        v = data[k]
        if not kind_ok(spec.kind, v):
            self.add(f"{path}.{k}", f"must be {KIND_TEXT[spec.kind]}, not {v!r}")
            return spec.default
        for check in (one_of(*spec.choices) if spec.choices else None, spec.check):
            if check is not None and (msg := check(v)):
                self.add(f"{path}.{k}", msg)
                return spec.default
        return float(v) if spec.kind == "float" else v
