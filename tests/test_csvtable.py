"""The streaming CSV reader (agent/csvtable.py): numpy's parser for plain chunks, the careful
row-by-row parser for the others, the same values either way, bad cells named by line."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import agent.csvtable as csvtable
from agent.csvtable import ReplayError, parse_time, read_table

BERLIN = ZoneInfo("Europe/Berlin")


def write(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(csvtable, "CHUNK_LINES", 7)


def test_local_iso_times_empty_cells_and_labels_as_row_by_row(tmp_path, small_chunks):
    # wall-clock times across the end of summer time (2026-10-25 03:00 -> 02:00 in Berlin)
    start = dt.datetime(2026, 10, 25, 0, 0)
    times = [(start + dt.timedelta(minutes=13 * i)).isoformat(sep=" ") for i in range(40)]
    rows = [f"{t};{i}.25;{'' if i % 5 == 0 else -i};{i % 2}" for i, t in enumerate(times)]
    path = write(tmp_path / "a.csv", "time;A;B;label", rows)
    table = read_table(path, ["B", "A"], None, None, BERLIN, keep=["label"])
    assert np.array_equal(table.ts, [parse_time(t, BERLIN) for t in times])
    assert np.array_equal(table.columns["A"], np.arange(40) + 0.25)
    assert np.isnan(table.columns["B"]).sum() == 8 and table.columns["B"][1] == -1.0
    assert table.extra["label"] == [str(i % 2) for i in range(40)]
    assert table.matrix(["B", "A"]) is table.block  # train and replay take it as it is (the tags' order)
    assert np.array_equal(table.matrix(["A", "B"]), table.block[:, ::-1], equal_nan=True)
    # a chunk numpy's parser cannot take (a quoted cell, a blank line) is read row by row, alike
    rows[9] = rows[9].replace(";9.25;", ';"9.25";')
    rows.insert(20, "")
    again = read_table(write(tmp_path / "b.csv", "time;A;B;label", rows), ["B", "A"], None, None, BERLIN,
                       keep=["label"])
    assert np.array_equal(again.block, table.block, equal_nan=True) and np.array_equal(again.ts, table.ts)
    assert again.extra == table.extra


@pytest.mark.parametrize("change,message", [
    (lambda rows: rows.__setitem__(30, "31,1.5,x7"), ":32: column 'B': 'x7' is not a number"),
    (lambda rows: rows.__setitem__(30, "31,1.5"), ":32: 2 fields, the header has 3"),
    (lambda rows: rows.__setitem__(30, "yesterday,1.5,2"), ":32: column 'ts': 'yesterday' is not a time"),
    (lambda rows: rows.__setitem__(30, "3,1.5,2"), ":32: time goes backwards"),
])
def test_a_bad_row_past_the_first_chunk_is_named_by_its_line(tmp_path, small_chunks, change, message):
    rows = [f"{i},{i}.5,{2 * i}" for i in range(50)]
    change(rows)
    path = write(tmp_path / "bad.csv", "ts,A,B", rows)
    with pytest.raises(ReplayError) as err:
        read_table(path, ["A", "B"], None, None, BERLIN)
    assert str(err.value) == f"{path}{message}"


def test_rows_at_a_rate_and_a_file_larger_than_its_first_guess(tmp_path, small_chunks):
    # short first lines, long later ones: the array grows past the size guessed from the start
    rows = [f"{i},1" for i in range(10)] + [f"{i}.123456789,{i}.987654321" for i in range(10, 200)]
    table = read_table(write(tmp_path / "r.csv", "A,B", rows), ["A", "B"], None, 0.5, BERLIN)
    assert np.array_equal(table.ts, 0.5 * np.arange(200)) and table.columns["A"][150] == 150.123456789
