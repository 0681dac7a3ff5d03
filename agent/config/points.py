"""Point lists (位号表) from CSV: ``[agent] points_file``. Each row is one [[tags]] table — the
columns are [[tags]] keys, nested tables flattened to ``TABLE.KEY`` columns, the limit alarms as
the flat columns ``hh h l ll`` — and rows add to the TOML file's [[tags]].

A row becomes the same dict TOML gives, and goes through the same reader (``read_tags``), so
every check of a [[tags]] table applies unchanged; ``Sheet.relocate`` then turns the paths of
its problems (``tags[212] (CW.PI01).alarms.hh``) into the place in the file where a spreadsheet
user finds it (``points.csv:214: column hh``). ``write`` is the inverse: [[tags]] tables as the
same CSV, which reads back into the same tags.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.schema import Problems, did_you_mean, item
from agent.config.tags import TAG_KEYS, FamilyRoles

#: the limit family's table, whose four limits are flat columns of their own
LIMITS_KEY = "alarms"
LIMITS = ("hh", "h", "l", "ll")
#: what separates the items of a list in one cell (`ewma;cusum`, `-50;400`); `,` is read too
LIST_SEP = ";"
TRUE, FALSE = ("true", "yes", "1", "是"), ("false", "no", "0", "否")

_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INDEX = re.compile(r"\[\d+\]")
_TAG = re.compile(r"tags\[(\d+)\]")


@dataclass(frozen=True)
class Column:
    """Where a column's cells go in the [[tags]] table (``("alarms", "hh")``) and how a cell
    converts: a Key kind of the tag keys, ``number`` (an option of a detector family), or
    ``any`` (a driver's key: a number when it reads as one, else text)."""

    path: tuple[str, ...]
    kind: str


def vocabulary(roles: FamilyRoles, driver_keys: Iterable[str] = ()) -> dict[str, Column]:
    """Every column a points file may have, in the order ``write`` puts them."""
    cols: dict[str, Column] = {}
    for k, spec in TAG_KEYS.items():
        cols[k] = Column((k,), "int" if spec.kind == "int|table" else spec.kind)
        if k == "priority":
            cols.update({f"priority.{n}": Column(("priority", n), "int") for n in roles.priority_names()})
    for tag_key, fam in roles.keyed.items():
        for opt, o in fam.options.items():
            flat = tag_key == LIMITS_KEY and opt in LIMITS
            cols[opt if flat else f"{tag_key}.{opt}"] = Column((tag_key, opt), _option_kind(o.default))
    for name, fam in roles.statistical.items():
        cols.update({f"{name}.{opt}": Column((name, opt), _option_kind(o.default)) for opt, o in fam.options.items()})
    for k in sorted(set(driver_keys)):
        cols.setdefault(k, Column((k,), "any"))
    return cols


def _option_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, str):
        return "str"
    return "number" if default is None or isinstance(default, (int, float)) else "any"


def required_columns() -> list[str]:
    """The columns every points file needs: the [[tags]] keys declared required."""
    return [k for k, spec in TAG_KEYS.items() if spec.required]


# --- cells -------------------------------------------------------------------------------------


def convert(kind: str, text: str) -> tuple[Any, str | None]:
    """A cell's value as the key's kind wants it, or (None, what is wrong)."""
    if kind in ("str", "path"):
        return text, None
    if kind in ("float", "number"):
        return (_number(text), None) if _NUMBER.fullmatch(text) else (None, f"must be a number, not {text!r}")
    if kind == "int":
        if _NUMBER.fullmatch(text) and float(text) == int(float(text)):
            return int(float(text)), None
        return None, f"must be a whole number, not {text!r}"
    if kind == "bool":
        low = text.lower()
        if low in TRUE or low in FALSE:
            return low in TRUE, None
        return None, f"must be true or false (or 1/0, yes/no, 是/否), not {text!r}"
    if kind.startswith("list["):
        items = [x.strip() for x in re.split("[;,]", text) if x.strip()]
        if kind == "list[float]":
            if not all(_NUMBER.fullmatch(x) for x in items):
                return None, f"must be numbers separated by '{LIST_SEP}', e.g. '-50{LIST_SEP}400', not {text!r}"
            return [float(x) for x in items], None
        return items, None
    if _NUMBER.fullmatch(text):  # any: a driver's key
        return _number(text), None
    return (text.lower() in TRUE, None) if text.lower() in ("true", "false") else (text, None)


def _number(text: str) -> int | float:
    return int(text) if _INT.fullmatch(text) else float(text)


def cell(value: Any) -> str:
    """A value as ``convert`` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return LIST_SEP.join(cell(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Sheet:
    """The rows of a points file as [[tags]] tables, and where each came from: rows[i] is
    tags[first + i] of the config, found at line ``lines[i]`` of the file."""

    shown: str  # the file as the config names it
    first: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # "alarms.hh" -> "hh" where the column is named otherwise
    given: set[str] = field(default_factory=set)  # the keys the header has a column for ("alarms.hh")
    missing: frozenset[str] = frozenset()  # required columns the header lacks (reported once, not per row)
    header_line: int = 1

    def relocate(self, problems: Iterable[str]) -> list[str]:
        """The problems, those of this file's rows at ``FILE:LINE: column C`` instead of
        ``tags[i] (NAME).key``, and rows named in messages by ``FILE:LINE``."""
        others, here = [], []
        absent: dict[tuple[str, str], list[int]] = {}  # (column, message) -> the lines of the rows it is about
        unset: set[tuple[int, str]] = set()  # (row, key) required and not given: no further problems of it
        for text in problems:
            moved = self._moved(text, absent, unset)
            if moved is None:
                continue
            line = moved[len(self.shown) + 1:].split(":", 1)[0] if moved.startswith(f"{self.shown}:") else ""
            if line.isdigit():
                here.append((int(line), moved))
            else:
                others.append(moved)
        for (column, message), lines in absent.items():
            shown = ", ".join(map(str, lines[:5])) + (f" … ({len(lines)} rows)" if len(lines) > 5 else "")
            here.append((self.header_line, f"{self.shown}:{self.header_line}: column {column}: {message}: the header "
                                           f"has no such column (rows at lines {shown})"))
        return others + [text for _, text in sorted(here, key=lambda x: x[0])]

    def _moved(self, text: str, absent: dict[tuple[str, str], list[int]], unset: set[tuple[int, str]]) -> str | None:
        """The problem at its place in the file; None when it is told once for every row (a key
        required of some rows, ``device`` unless ``expr``, whose column the header lacks) or
        follows from a required key not given (the driver's "'' is not an address")."""
        m = _TAG.match(text)
        i = int(m[1]) - self.first if m else -1
        prefix = item("tags", self.first + i, self.rows[i]) if 0 <= i < len(self.rows) else None
        rest = text[len(prefix):] if prefix and text.startswith(prefix) else ""
        if not rest.startswith((": ", ".")):
            return self._mention(text)
        where = f"{self.shown}:{self.lines[i]}"
        if rest.startswith(": "):
            return f"{where}: {self._mention(rest[2:])}"
        key, _, message = rest[1:].partition(": ")
        key = _INDEX.sub("", key)
        if key in self.missing or (i, key) in unset:  # reported once, at the header; or follows from it
            return None
        if message.startswith("is required"):
            unset.add((i, key))
            if key not in self.given:
                absent.setdefault((key, message), []).append(self.lines[i])
                return None
        table = self.rows[i].get(key)
        names = [f"{key}.{sub}" for sub in table] if isinstance(table, dict) and "." not in key else [key]
        column = ", ".join(self.headers.get(n, n) for n in names)
        return f"{where}: column {column}: {self._mention(message)}"

    def _mention(self, text: str) -> str:
        """``text`` with each of this file's rows it names (``tags[7] (X)``) as ``FILE:LINE``."""
        out, pos = [], 0
        for m in _TAG.finditer(text):
            i = int(m[1]) - self.first
            if m.start() < pos or not 0 <= i < len(self.rows):
                continue
            path = item("tags", self.first + i, self.rows[i])
            if text.startswith(path, m.start()):
                out += [text[pos:m.start()], f"{self.shown}:{self.lines[i]}"]
                pos = m.start() + len(path)
        return "".join(out) + text[pos:]


def read(path: Path, shown: str, where: str, first: int, cols: Mapping[str, Column], p: Problems) -> Sheet | None:
    """The points file at ``path`` (``shown`` as the config names it, ``where`` the key that
    names it), its rows to become tags[first], tags[first + 1] ..."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        p.add(where, f"no such file: {path}")
        return None
    except OSError as exc:
        p.add(where, f"cannot read {path}: {exc.strerror or exc}")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        p.add(f"{shown}:{line}", f"not UTF-8 (byte 0x{data[exc.start]:02x}; an older Excel saves GBK): save the "
                                 'sheet as "CSV UTF-8 (逗号分隔)"')
        return None
    return parse(text, shown, first, cols, p)


def delimiter(text: str) -> str:
    """The header line's separator: `,` (Excel's "CSV UTF-8"), else `;` or a tab when the
    header has those and no comma (column names contain none of them)."""
    header = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=lambda d: (header.count(d), d == ","))


def parse(text: str, shown: str, first: int, cols: Mapping[str, Column], p: Problems) -> Sheet | None:
    """The rows of CSV ``text``; a problem of a cell or of the header is reported at its line."""
    sheet = Sheet(shown, first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
    try:
        header = next((r for r in reader if any(c.strip() for c in r)), None)
        if header is None:
            p.add(shown, "empty: the first line names the columns ([[tags]] keys)")
            return None
        sheet.header_line = reader.line_num
        columns = _header(header, sheet, reader.line_num, cols, p)
        end = reader.line_num
        cells_of: list[dict[str, tuple[Any, str | None]]] = [{} for _ in header]
        for cells in reader:
            line, end = end + 1, reader.line_num
            if any(c.strip() for c in cells):
                sheet.rows.append(_row(cells, header, columns, f"{shown}:{line}", p, cells_of))
                sheet.lines.append(line)
    except csv.Error as exc:
        p.add(f"{shown}:{reader.line_num}", f"not readable as CSV: {exc}")
        return None
    return sheet


def _header(header: Sequence[str], sheet: Sheet, line: int, cols: Mapping[str, Column],
            p: Problems) -> list[Column | None]:
    out: list[Column | None] = []
    seen: dict[tuple[str, ...], str] = {}
    for raw in header:
        name = raw.strip()
        col = cols.get(name)
        if name and col is None:
            same = [c for c in cols if c.lower() == name.lower()]
            hint = f" (did you mean '{same[0]}'?)" if same else did_you_mean(name, cols)
            p.add(f"{sheet.shown}:{line}: column {name}", f"unknown column{hint}")
        elif col is not None and col.path in seen:
            p.add(f"{sheet.shown}:{line}: column {name}", f"the same key as column {seen[col.path]}")
            col = None
        elif col is not None:
            seen[col.path] = name
            sheet.given.add(".".join(col.path))
            if name != ".".join(col.path):
                sheet.headers[".".join(col.path)] = name
        out.append(col)
    sheet.missing = frozenset(k for k in required_columns() if (k,) not in seen)
    for k in sorted(sheet.missing, key=required_columns().index):
        p.add(f"{sheet.shown}:{line}: column {k}", "is required: the header has no such column")
    return out


#: distinct cells of a column converted once: a column with more (names, addresses) is converted cell by cell
SAME_CELLS = 4096


def _row(cells: Sequence[str], header: Sequence[str], columns: Sequence[Column | None], where: str,
         p: Problems, cells_of: list[dict[str, tuple[Any, str | None]]]) -> dict[str, Any]:
    """One row's table; ``cells_of[j]``: column j's cells converted so far, so that rows repeating
    a cell (a device, a unit, a limit) hold one object for it."""
    row: dict[str, Any] = {}
    for j, raw in enumerate(cells):
        text = raw.strip()
        if not text:
            continue
        if j >= len(header) or not header[j].strip():
            p.add(where, f"a value in column {j + 1}, which the header does not name: {text!r}")
            continue
        col = columns[j]
        if col is None:  # an unknown column, reported once at the header
            continue
        known = cells_of[j] if j < len(cells_of) else {}
        value, error = known.get(text) or convert(col.kind, text)
        if len(known) < SAME_CELLS:
            known.setdefault(text, (value, error))
        if error is None:
            error = _put(row, col.path, value)
        if error is not None:
            p.add(f"{where}: column {header[j].strip()}", error)
    return row


def _put(row: dict[str, Any], path: tuple[str, ...], value: Any) -> str | None:
    if len(path) == 1:
        if isinstance(row.get(path[0]), dict):
            return f"give {path[0]} or {path[0]}.NAME columns in a row, not both"
        row[path[0]] = value
        return None
    table = row.setdefault(path[0], {})
    if not isinstance(table, dict):
        return f"give {path[0]} or {path[0]}.NAME columns in a row, not both"
    table[path[1]] = value
    return None


# --- writing -----------------------------------------------------------------------------------


def columns_of(entry: Mapping[str, Any], names: Mapping[tuple[str, ...], str]) -> dict[str, str]:
    """One [[tags]] table as column -> cell (``names``: key path -> column name)."""
    out: dict[str, str] = {}
    for k, v in entry.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out[names.get((k, sub), f"{k}.{sub}")] = cell(x)
        else:
            out[names.get((k,), k)] = cell(v)
    return out


def write(entries: Sequence[Mapping[str, Any]], cols: Mapping[str, Column]) -> str:
    """[[tags]] tables as a points file: the required columns and those some tag uses, in the
    vocabulary's order, a header line, one row per tag, `\\r\\n` line ends (RFC 4180)."""
    names = {c.path: name for name, c in cols.items()}
    rows = [columns_of(e, names) for e in entries]
    used = set(required_columns()).union(*rows)
    header = [c for c in cols if c in used] + sorted(used - set(cols))
    buf = io.StringIO(newline="")
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(header)
    out.writerows([r.get(c, "") for c in header] for r in rows)
    return buf.getvalue()
