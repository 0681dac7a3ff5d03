"""Benchmarks refuse a run in which a side fell short of the work it was sized for, naming the
side and, for the OPC-UA benchmark, whether samples were lost or the server fell behind."""

from __future__ import annotations

import pytest

from bench.expect import refuse_short, shortfalls
from bench.opcua_bench import check_work


def test_a_short_side_ends_the_run_with_its_name_and_no_figure(capsys):
    with pytest.raises(SystemExit) as stop:
        refuse_short({"raw pymodbus": (2400, 2320), "driver, pymodbus": (2146, 2320)}, "device polls")
    assert stop.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == ("refused: a side fell short of the expected device polls, no figure printed: "
                           "driver, pymodbus did 2,146 of the 2,320 expected")


def test_sides_that_did_their_work_pass_silently(capsys):
    refuse_short({"a": (10, 10), "b": (11, 10)})
    assert capsys.readouterr() == ("", "")
    assert shortfalls({"a": (float("nan"), 1.0)}) == ["a did nan of the 1 expected"]


def _result(client: str, samples: int, changes: int, holes: int = 0, missed: int = 0) -> dict:
    return {"client": client, "samples": samples, "server_changes": changes, "holes": holes,
            "missed_messages": missed, "server_overflows": 0, "client_overflows": 0}


def test_the_opcua_runs_of_the_issue_are_refused_with_their_cause(capsys):
    # 13 of 15 cycles with every change received: the server fell behind, the driver lost nothing
    results = {"bare": _result("bare asyncua", 150_000, 150_000),
               "driver": _result("plantwatch driver", 130_000, 130_000)}
    with pytest.raises(SystemExit):
        check_work(results, 10_000, 15)
    err = capsys.readouterr().err
    assert "plantwatch driver did 130,000 of the 140,000 expected (none lost: the server changed only 130,000" in err
    assert "bare asyncua" not in err
    # a bare client that received nothing at all
    results = {"bare": _result("bare asyncua", 0, 0), "driver": _result("plantwatch driver", 150_000, 150_000)}
    with pytest.raises(SystemExit):
        check_work(results, 10_000, 15)
    err = capsys.readouterr().err
    assert "bare asyncua did 0 of the 140,000 expected (no notification arrived" in err
    # samples lost on the way are named as such
    results["bare"] = _result("bare asyncua", 139_000, 140_000, holes=1_000)
    with pytest.raises(SystemExit):
        check_work(results, 10_000, 15)
    assert "samples lost: 1,000 holes" in capsys.readouterr().err


def test_a_full_opcua_run_passes_the_check():
    results = {"bare": _result("bare asyncua", 150_000, 150_000),
               "driver": _result("plantwatch driver", 150_000, 150_000)}
    assert check_work(results, 10_000, 15) is None
