"""The streaming CSV reader (agent/csvtable.py): the compiled parser (detectors._csv) for plain chunks, the careful
row-by-row parser for the others, the same values either way, bad cells named by line."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import agent.csvtable as csvtable
from agent.csvtable import ReplayError, parse_time, read_table
from detectors import _csv

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
    # a chunk the compiled parser does not take (a quoted cell, a blank line) is read row by row, alike
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


def cell(rng, kind: int) -> str:
    """A number as a historian might write it, or an empty, blank or NaN cell."""
    x = float(rng.normal() * 10.0 ** rng.integers(-30, 30))
    return [f"{x:.17g}", f"{x:e}", f"{x:.3E}", f"{x:.6f}", repr(x), f"{-abs(x):.9g}", "", "  ", "nan", "NaN",
            "-inf", "+Infinity", f" {x:.4f}\t", f"{x:.25e}", "1e-320", "-1E400", "-0", ".5", "5.", "+3",
            "0.000000000000000000000000123", "12345678901234567890123", "9007199254740993", "1e22", "1e23",
            "-0.0000", "00012.5e-0003", "-nan", "+NAN", "-Infinity"][kind]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_compiled_parser_and_the_row_by_row_one_give_the_same_bits(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 30, size=(300, 4))
    lines = [f"{1000 + i},{cell(rng, a)},{cell(rng, b)},label {i},{cell(rng, c)},{cell(rng, d)}"
             for i, (a, b, c, d) in enumerate(kinds)]
    # a UTF-8 BOM, CRLF line ends and a last line without one
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["ts,A,B,note,C,D", *lines]).encode())
    monkeypatch.setattr(csvtable, "CHUNK_LINES", 64)
    fast_chunks = []
    parse = csvtable._fast
    monkeypatch.setattr(csvtable, "_fast", lambda *args: fast_chunks.append(parse(*args)) or fast_chunks[-1])
    fast = read_table(path, ["D", "A", "C", "B"], None, None, BERLIN, keep=["note"])
    assert fast_chunks == [True] * 5  # every chunk by the compiled parser
    monkeypatch.setattr(csvtable, "_fast", lambda *args: False)
    careful = read_table(path, ["D", "A", "C", "B"], None, None, BERLIN, keep=["note"])
    assert np.array_equal(fast.block.view(np.uint64), careful.block.view(np.uint64))
    assert np.array_equal(fast.ts, careful.ts) and fast.extra == careful.extra
    expected = np.array([[float(f[c]) if f[c].strip() else np.nan for c in (5, 1, 4, 2)]
                         for f in (line.split(",") for line in lines)])
    assert np.array_equal(fast.block.view(np.uint64), expected.view(np.uint64))


def test_the_compiled_parser_takes_plain_chunks_and_refuses_the_others():
    route = np.array([_csv.TIME_FIELD, 0, _csv.SKIP, 1], dtype=np.int32)
    values, times = np.zeros((3, 2)), np.zeros(3)
    assert _csv.parse_chunk(b"1,2.5,x,-3e2\r\n2,,y, 4\n3,nan,z,1E-2", 3, route, ord(","), values, times) == 3
    assert np.array_equal(values, [[2.5, -300.0], [np.nan, 4.0], [np.nan, 0.01]], equal_nan=True)
    assert times.tolist() == [1.0, 2.0, 3.0]
    for chunk in [b'1,2,"x",3\n', b"1,2,x\n", b"1,2,x,3,4\n", b"1,2e,x,3\n", b"1,0x1p3,x,3\n", b",2,x,3\n",
                  b"1,1_0,x,3\n", b"1,2,x,3\n\n", b"1,-,x,3\n", b"1,.,x,3\n", b"1,e5,x,3\n", b"1,2.5.1,x,3\n"]:
        assert _csv.parse_chunk(chunk, 1, route, ord(","), values, times) == -1, chunk


@pytest.mark.parametrize("row,message", [
    (130, ":132: column 'B': '1e' is not a number"),
    (75, ":77: 4 fields, the header has 3"),
])
def test_a_bad_row_in_a_crlf_file_with_a_bom_is_named_by_its_line(tmp_path, row, message):
    rows = [f"{i},{i}.5e-1,{-2 * i}" for i in range(200)]
    rows[row] = f"{row},1.5,1e" if "number" in message else f"{row},1.5,2,3"
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["ts,A,B", *rows]).encode())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csvtable, "CHUNK_LINES", 32)
        with pytest.raises(ReplayError) as err:
            read_table(path, ["A", "B"], None, None, BERLIN)
    assert str(err.value) == f"{path}{message}"


def test_lines_ended_by_cr_alone_and_a_file_that_is_not_utf8(tmp_path, small_chunks):
    rows = [f"{i},{i}.5,{-2 * i}" for i in range(30)]
    lf = read_table(write(tmp_path / "lf.csv", "ts,A,B", rows), ["A", "B"], None, None, BERLIN)
    path = tmp_path / "cr.csv"
    path.write_bytes("\r".join(["ts,A,B", *rows]).encode())  # an old Mac export: no \n at all
    cr = read_table(path, ["A", "B"], None, None, BERLIN)
    assert np.array_equal(cr.block, lf.block) and np.array_equal(cr.ts, lf.ts)
    rows[20] = "20,1.5,x\xe9"
    path.write_bytes("\n".join(["ts,A,B", *rows]).encode("latin-1"))
    with pytest.raises(ReplayError, match="not UTF-8 text"):
        read_table(path, ["A", "B"], None, None, BERLIN)
    rows[20] = "20,1.5,x7"
    path.write_bytes("\r".join(["ts,A,B", *rows]).encode())
    with pytest.raises(ReplayError, match=r"cr.csv:22: column 'B': 'x7' is not a number"):
        read_table(path, ["A", "B"], None, None, BERLIN)
