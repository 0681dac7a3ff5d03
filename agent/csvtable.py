"""Historian CSV exports read into float64 arrays for ``plantwatch replay`` and ``train``.

The file is streamed as bytes in chunks of lines (decoded only to check that they are UTF-8,
and split into text lines only where needed); each chunk is parsed straight into one preallocated
rows x tags float64 array by a compiled parser (``detectors._csv``: no Python object per cell;
times in epoch seconds parsed there too, ISO 8601 times without an offset by numpy). A chunk the
fast parser cannot take as it is (quoted fields, blank lines, a row with another number of
fields, a cell that is not a plain decimal number, nan or inf, a time that is not epoch seconds
or ISO 8601 without an offset) is parsed again row by row, which names the line and the column
of a bad cell; both give the same values to the bit. Empty cells are NaN (no sample).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import numpy as np

from detectors import _csv

TIME_COLUMNS = ("ts", "time", "timestamp", "datetime", "date_time", "Time", "Timestamp", "DateTime")
#: lines parsed at once
CHUNK_LINES = 8192


class ReplayError(Exception):
    """Bad input: names the file, the row or column, and the problem."""


class NoTimeColumn(ReplayError):
    """The file has none of the usual time columns and none was named."""


@dataclass
class Table:
    path: Path
    ts: np.ndarray  # float64 UTC seconds per row
    columns: dict[str, np.ndarray]  # float64 per tag column, NaN where the cell was empty
    extra: dict[str, Any]  # other columns, raw text per row (labels, ...)
    block: np.ndarray | None = None  # rows x tags: the columns, when read as one array

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """Rows x ``names``: the block itself (no copy) when it holds exactly those columns in that order."""
        if self.block is not None and self.block.shape[1] == len(names) and all(
                np.may_share_memory(self.columns[n], self.block) and self.columns[n].base is self.block.base
                and self.columns[n].__array_interface__["data"][0] == self.block[:, j:].__array_interface__["data"][0]
                for j, n in enumerate(names)):
            return self.block
        return np.column_stack([self.columns[n] for n in names]) if names else np.empty((len(self.ts), 0))


def parse_time(text: str, tz: ZoneInfo) -> float:
    text = text.strip()
    try:
        return float(text)  # epoch seconds
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:  # historian exports are usually plant-local time
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def _local_times(text: list[str], tz: ZoneInfo) -> np.ndarray | None:
    """ISO 8601 times without an offset, in the zone ``tz``, vectorised; None when numpy
    cannot read them all as such (the rows are then parsed one by one)."""
    if any(("Z" in s or "+" in s or s.count("-") > 2) for s in text):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            naive = np.array([s.strip() for s in text], dtype="datetime64[us]")
    except (ValueError, DeprecationWarning, UserWarning):
        return None
    if np.isnat(naive).any():
        return None
    wall = naive.astype(np.int64) / 1e6  # the wall-clock time as if it were UTC
    # the zone's offset is constant between its transitions, which fall on quarter hours of wall time
    quarter = np.floor(wall / 900.0)
    keys, inverse = np.unique(quarter, return_inverse=True)
    offsets = np.array([datetime.fromtimestamp(k * 900.0, ZoneInfo("UTC")).replace(tzinfo=None)
                        .replace(tzinfo=tz).utcoffset().total_seconds() for k in keys.tolist()])
    return wall - offsets[inverse]


@dataclass
class _Layout:
    path: Path
    delimiter: str
    width: int  # fields per row
    time: int | None  # the time column's index, None: rows at ``rate``
    rate: float | None
    tags: list[int]  # the tag columns' indices, in the order of ``names``
    names: list[str]
    keep: list[int]
    tz: ZoneInfo
    numeric_time: bool = True
    route: np.ndarray | None = None  # the compiled parser's ``where``, once numeric_time is known

    def routes(self) -> np.ndarray:
        """Where each field goes in the compiled parser: a tag column, the time, or nowhere."""
        out = np.full(self.width, _csv.SKIP, dtype=np.int32)
        out[self.tags] = np.arange(len(self.tags))
        if self.time is not None and self.numeric_time:
            out[self.time] = _csv.TIME_FIELD
        return out


@dataclass
class _Chunk:
    data: bytes  # CHUNK_LINES lines of the file, as they are
    rows: int  # those lines as the compiled parser counts them (ends \n, \r\n); -1: parse row by row
    text: str  # the lines decoded

    @functools.cached_property
    def lines(self) -> list[str]:
        """The lines as a text file splits them (\r alone ends one too)."""
        return io.StringIO(self.text, newline="").readlines()


def _chunks(f: BinaryIO, rest: str) -> Iterator[_Chunk]:
    """The data lines CHUNK_LINES at a time; ``rest``: what followed the header in its binary
    line (lines ended by \r alone), parsed row by row."""
    if rest:
        yield _Chunk(rest.encode(), -1, rest)
    while raw := list(itertools.islice(f, CHUNK_LINES)):
        data = b"".join(raw)
        yield _Chunk(data, len(raw), data.decode())


def _fast(chunk: _Chunk, lay: _Layout, kept: list[list[str]], values: np.ndarray, times: np.ndarray) -> bool:
    """A chunk by the compiled parser into ``values`` and ``times`` (rows x tags and rows,
    the chunk's place in the whole arrays); False: parse it row by row."""
    if chunk.rows < 0 or _csv.parse_chunk(chunk.data, chunk.rows, lay.route, ord(lay.delimiter), values, times) < 0:
        return False
    if lay.time is not None and not lay.numeric_time:
        local = _local_times([line.split(lay.delimiter, lay.time + 1)[lay.time] for line in chunk.lines], lay.tz)
        if local is None:
            return False
        times[:] = local
    if lay.keep:
        fields = [line.rstrip("\r\n").split(lay.delimiter) for line in chunk.lines]
        for out, c in zip(kept, lay.keep, strict=True):
            out.extend(f[c] for f in fields)
    return True


def _careful(lines: list[str], first_line: int, lay: _Layout, keep: list[list[str]]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk row by row: every bad cell named by its line and column. (values, times, lines)."""
    rows = [(first_line + i, r) for i, r in enumerate(csv.reader(lines, delimiter=lay.delimiter)) if r]
    values = np.full((len(rows), len(lay.tags)), np.nan)
    times = np.empty(len(rows))
    for i, (line, row) in enumerate(rows):
        if len(row) != lay.width:
            raise ReplayError(f"{lay.path}:{line}: {len(row)} fields, the header has {lay.width}")
        if lay.time is not None:
            try:
                times[i] = parse_time(row[lay.time], lay.tz)
            except ValueError:
                name = lay.names[lay.time]
                raise ReplayError(f"{lay.path}:{line}: column {name!r}: {row[lay.time]!r} is not a time") from None
        for j, c in enumerate(lay.tags):
            cell = row[c].strip()
            if cell:
                try:
                    values[i, j] = float(cell)
                except ValueError:
                    raise ReplayError(f"{lay.path}:{line}: column {lay.names[c]!r}: {cell!r} is not a number") from None
        for out, c in zip(keep, lay.keep, strict=True):
            out.append(row[c])
    return values, times, np.array([line for line, _ in rows], dtype=np.int64)


def _layout(path: Path, head: list[str], delimiter: str, tags: Sequence[str], time_col: str | None,
            rate: float | None, keep: Sequence[str], tz: ZoneInfo) -> _Layout:
    col = {name: i for i, name in enumerate(head)}
    if time_col is None and rate is None:
        time_col = next((c for c in TIME_COLUMNS if c in col), None)
        if time_col is None:
            raise NoTimeColumn(f"{path}: no time column ({', '.join(TIME_COLUMNS[:4])}); name one with --time-col or give --rate")
    if time_col is not None and time_col not in col:
        raise ReplayError(f"{path}: no column {time_col!r} (columns: {', '.join(head)})")
    for name in keep:
        if name not in col:
            raise ReplayError(f"{path}: no column {name!r} (columns: {', '.join(head)})")
    present = [t for t in tags if t in col]
    if not present:
        raise ReplayError(f"{path}: no column is named like a tag of the config (tags: {', '.join(tags[:10])})")
    return _Layout(path, delimiter, len(head), None if time_col is None else col[time_col], rate,
                   [col[t] for t in present], head, [col[k] for k in keep], tz)


# linear: open, header, then one loop over the chunks and the checks of the whole
def read_table(path: str | Path, tags: Sequence[str], time_col: str | None, rate: float | None,
               tz: ZoneInfo, keep: Sequence[str] = (), progress: Callable[[int, int], Any] | None = None) -> Table:
    """Read a CSV (',' or ';' separated) whose columns are named like the tags (``progress(done,
    rows)``, the rows estimated from the file's size until the end)."""
    path = Path(path)
    try:
        f = path.open("rb")
        size = path.stat().st_size
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        try:
            first_lines = io.StringIO(f.readline().removeprefix(codecs.BOM_UTF8).decode(), newline="").readlines()
            header = first_lines[0] if first_lines else ""
            lay = None
            if header.strip():
                delimiter = ";" if header.count(";") > header.count(",") else ","
                head = [h.strip() for h in next(csv.reader([header], delimiter=delimiter))]
                lay = _layout(path, head, delimiter, tags, time_col, rate, keep, tz)
            if lay is None:
                raise ReplayError(f"{path}: empty file")
            kept: list[list[str]] = [[] for _ in lay.keep]
            block = np.empty((0, len(lay.tags)))
            ts = np.empty(0)
            n, line_no, first = 0, 2, True
            for chunk in _chunks(f, "".join(first_lines[1:])):
                count = chunk.rows if chunk.rows >= 0 else len(chunk.lines)
                if first:  # the file's size over the first chunk's bytes per line: the expected rows
                    per_line = max(1.0, len(chunk.data) / max(1, count))
                    expected = int(size / per_line * 1.02) + CHUNK_LINES
                    block, ts = np.empty((expected, len(lay.tags))), np.empty(expected)
                    where = np.empty(expected, dtype=np.int32)  # each row's line in the file
                    if lay.time is not None:
                        lay.numeric_time = _numeric(chunk.lines[0], lay)
                    lay.route = lay.routes()
                    first = False
                if n + count > len(block):
                    grow = max(n + count, int(len(block) * 1.25))
                    block, ts, where = _grown(block, grow), np.resize(ts, grow), np.resize(where, grow)
                if _fast(chunk, lay, kept, block[n:n + count], ts[n:n + count]):
                    k = count
                    where[n:n + k] = line_no + np.arange(k)
                else:
                    values, times, at = _careful(chunk.lines, line_no, lay, kept)
                    k, count = len(values), len(chunk.lines)
                    block[n:n + k], ts[n:n + k], where[n:n + k] = values, times, at
                if lay.time is None:
                    ts[n:n + k] = (n + np.arange(k)) * lay.rate
                n += k
                line_no += count
                if progress is not None:
                    progress(n, max(n, int(size / per_line)))
        except UnicodeDecodeError as exc:
            raise ReplayError(f"{path}: not UTF-8 text: {exc}") from None
    if n == 0:
        raise ReplayError(f"{path}: no data rows")
    block, ts = block[:n], ts[:n]
    back = np.flatnonzero(np.diff(ts) < 0)
    if len(back):
        raise ReplayError(f"{path}:{int(where[back[0] + 1])}: time goes backwards")
    names = [lay.names[c] for c in lay.tags]
    columns = {name: block[:, j] for j, name in enumerate(names)}
    return Table(path, ts, columns, {name: k for name, k in zip(keep, kept, strict=True)}, block)


def _numeric(line: str, lay: _Layout) -> bool:
    row = next(csv.reader([line], delimiter=lay.delimiter), [])
    try:
        float(row[lay.time])
        return True
    except (ValueError, IndexError):
        return False


def _grown(block: np.ndarray, rows: int) -> np.ndarray:
    out = np.empty((rows, block.shape[1]))
    out[: len(block)] = block
    return out
