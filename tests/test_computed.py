"""Computed tags: the expression grammar and compiler, the evaluation kernel against numpy
worked by hand, windows over irregular time, quality and its reason, the config's errors at
`plantwatch check`, discrete alarms on a computed bool, and replay equal to the live pipeline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agent.config import parse
from agent.expressions import ExprError, compile_expr
from agent.expressions import parse as parse_expr
from agent.payloads import parse_rfc3339
from agent.pipeline import Pipeline
from agent.replay import computed_columns, read_table, replay
from detectors.expr import Evaluator
from drivers.base import BAD, COMM_FAIL, GOOD, UNCERTAIN, SampleBatch, frozen_tags
from tests.conftest import config_dict, to_toml
from tests.helpers import NumberingSink

T0 = 1_800_000_000.0
NAMES = {"CW.FI01": 0, "CW.FI02": 1, "C": 2, "tag A-1": 3}


def run(exprs: list[str], rows: np.ndarray, ts: np.ndarray | None = None, quality=None) -> np.ndarray:
    """Evaluate the expressions (tags 4, 5, ...) over rows of the four inputs at 1 s ticks, one
    batch per tick; their values per row (NaN where one wrote nothing)."""
    index = {**NAMES, **{f"X{i}": 4 + i for i in range(len(exprs))}}
    programs = [compile_expr(parse_expr(e), index, 4 + i) for i, e in enumerate(exprs)]
    ev = Evaluator(len(index), programs)
    ts = T0 + np.arange(len(rows), dtype=float) if ts is None else ts
    out = np.full((len(rows), len(exprs)), np.nan)
    for r, row in enumerate(rows):
        q = np.full(4, GOOD if quality is None else quality[r], dtype=np.uint8)
        got = ev.evaluate(np.arange(4, dtype=np.int32), row, np.full(4, ts[r]), q)
        if got is not None:
            assert (got[2] == ts[r]).all() and (got[4] == 4).all()
            out[r, got[0] - 4] = got[1]
    return out


@pytest.fixture
def rows():
    rng = np.random.default_rng(7)
    x = rng.normal(5.0, 3.0, size=(40, 4)).round(1)
    x[5, 1] = x[5, 0]  # one tie for == and !=
    x[7, 2] = 0.0  # one zero for and/or/not
    return x


def test_every_operator_and_function_against_numpy(rows):
    a, b, c, d = rows.T
    with np.errstate(divide="ignore"):
        ratio = (a + b) / c  # c is 0 in row 7: infinite, which makes the sample BAD and NaN
    cases = {
        "CW.FI01 - CW.FI02": a - b, "CW.FI01 + CW.FI02 * C": a + b * c, "(CW.FI01 + CW.FI02) / C": np.where(np.isfinite(ratio), ratio, np.nan),
        "-CW.FI01 + +C": -a + c, "abs(CW.FI01 - 5)": np.abs(a - 5), "min(CW.FI01, CW.FI02, C)": np.minimum.reduce([a, b, c]),
        "max(CW.FI01, 2.5e0)": np.maximum(a, 2.5), "sum(CW.FI01, CW.FI02, C, tag(\"tag A-1\"))": a + b + c + d,
        "mean(CW.FI01, CW.FI02)": (a + b) / 2, "CW.FI01 < CW.FI02": a < b, "CW.FI01 <= CW.FI02": a <= b,
        "CW.FI01 > CW.FI02": a > b, "CW.FI01 >= CW.FI02": a >= b, "CW.FI01 == CW.FI02": a == b,
        "CW.FI01 != CW.FI02": a != b, "C and CW.FI01 > 5": (c != 0) & (a > 5), "C or CW.FI01 > 5": (c != 0) | (a > 5),
        "not C": c == 0, "not CW.FI01 > 5 or C < 2 and CW.FI02 >= 0": ~(a > 5) | ((c < 2) & (b >= 0)),
        "2 * .5 - 1e-1": np.full(len(a), 0.9),  # constants alone never run: see test_config_errors
    }
    exprs = [e for e in cases if e != "2 * .5 - 1e-1"] + ["CW.FI01 * 0 + 2 * .5 - 1e-1"]
    got = run(exprs, rows)
    for i, (e, want) in enumerate(cases.items()):
        np.testing.assert_allclose(got[:, i], np.asarray(want, dtype=float), rtol=1e-12, err_msg=e)


def test_windows_over_irregular_time(rows):
    rng = np.random.default_rng(3)
    ts = T0 + np.cumsum(rng.uniform(0.2, 3.0, size=len(rows)))
    a = rows[:, 0]
    exprs = ["rate(CW.FI01, 10)", "rolling_mean(CW.FI01, 10)", "rolling_median(CW.FI01, 10)",
             "rolling_max(CW.FI01, 7.5)", "rolling_min(CW.FI01 - CW.FI02, 10)", "rolling_median(CW.FI01, 1e9)"]
    got = run(exprs, rows, ts)
    for r in range(len(rows)):
        w10 = (ts <= ts[r]) & (ts >= ts[r] - 10)
        first = np.flatnonzero(w10)[0]
        rate = (a[r] - a[first]) / (ts[r] - ts[first]) if first < r else np.nan
        want = [rate, a[w10].mean(), np.median(a[w10]), a[(ts <= ts[r]) & (ts >= ts[r] - 7.5)].max(),
                (a - rows[:, 1])[w10].min(), np.median(a[: r + 1])]
        np.testing.assert_allclose(got[r], want, rtol=1e-12, err_msg=f"row {r}")
    assert np.isnan(got[0, 0])  # one sample: no rate yet, and no sample written


def test_a_window_grows_past_its_first_capacity():
    index = {"A": 0, "M": 1}
    ev = Evaluator(2, [compile_expr(parse_expr("rolling_median(A, 1000)"), index, 1)], intervals=[100.0])
    vals = np.random.default_rng(1).normal(size=600)
    for i, v in enumerate(vals):
        out = ev.evaluate(np.array([0], np.int32), np.array([v]), np.array([T0 + i]), np.zeros(1, np.uint8))
    assert ev.kernel.window_samples() == [600]
    assert out[1][0] == pytest.approx(np.median(vals), rel=1e-12)


def test_quality_of_the_worst_input_and_nothing_before_every_input_was_seen():
    q = [[GOOD] * 4, [UNCERTAIN, GOOD, GOOD, GOOD], [GOOD, BAD, GOOD, GOOD], [COMM_FAIL, BAD, GOOD, GOOD]]
    index = {**NAMES, "X": 4, "Y": 5}
    ev = Evaluator(6, [compile_expr(parse_expr("CW.FI01 - CW.FI02"), index, 4),
                       compile_expr(parse_expr("X * 2"), index, 5)])
    assert ev.evaluate(np.array([0], np.int32), np.array([1.0]), np.array([T0]), np.zeros(1, np.uint8)) is None
    seen = []
    for i, qs in enumerate(q):
        out = ev.evaluate(np.arange(4, dtype=np.int32), np.array([5.0, 2.0, 0, 0]), np.full(4, T0 + i),
                          np.array(qs, np.uint8))
        seen.append((out[1].tolist(), out[3].tolist()))
    assert seen[0] == ([3.0, 6.0], [GOOD, GOOD])
    assert seen[1] == ([3.0, 6.0], [UNCERTAIN, UNCERTAIN])
    assert np.isnan(seen[2][0]).all() and seen[2][1] == [BAD, BAD]
    assert np.isnan(seen[3][0]).all() and seen[3][1] == [COMM_FAIL, COMM_FAIL]


def test_a_division_by_zero_is_bad_and_nan_writes_nothing():
    got = run(["CW.FI01 / CW.FI02", "CW.FI02 / CW.FI02"], np.array([[1.0, 0.0, 0, 0], [1.0, 2.0, 0, 0]]))
    assert np.isnan(got[0]).all() and got[1].tolist() == [0.5, 1.0]


@pytest.mark.parametrize(("text", "message"), [
    ("CW.FI01 -", "syntax error at position 10: unexpected end of expression"),
    ("CW.FI01 ** 2", "syntax error at position 10: unexpected '*'"),
    ("(CW.FI01", "syntax error at position 9: unexpected end of expression (expected ')')"),
    ("1 < CW.FI01 < 3", "syntax error at position 13: unexpected '<' (combine comparisons with and)"),
    ("CW.FI01 # 2", "syntax error at position 9: unexpected '#'"),
    ("rate(CW.FI01, -5)", "rate() at position 1: the window (seconds) must be a positive number"),
    ("rolling_mean(CW.FI01, C)", "rolling_mean() at position 1: the window (seconds) must be a positive number"),
    ("abs(CW.FI01, 2)", "abs() at position 1 takes 1 argument, not 2"),
    ("rolling_mean(CW.FI01)", "rolling_mean() at position 1 takes 2 arguments, not 1"),
    ("2 + avg(CW.FI01)", "unknown function 'avg' at position 5"),
    ("tag(CW.FI01)", 'syntax error at position 5: unexpected \'CW.FI01\' (tag("name") takes the name in quotes)'),
])
def test_parse_errors_say_where(text, message):
    with pytest.raises(ExprError) as exc:
        parse_expr(text)
    assert str(exc.value).startswith(message)


def flow_config(*computed: dict, **extra) -> dict:
    data = config_dict()
    data["tags"] = [
        {"name": "CW.FI01", "device": "r1-plc", "address": "hr:100", "unit": "m3/h"},
        {"name": "CW.FI02", "device": "r1-plc", "address": "hr:102", "unit": "m3/h"},
        *computed,
    ]
    data.update(extra)
    return data


DIFF = {"name": "CW.DF01", "expr": "CW.FI01 - CW.FI02", "unit": "m3/h", "desc": "回水流量差 flow difference",
        "alarms": {"h": 5.0}}


def check(tmp_path, data) -> subprocess.CompletedProcess:
    path = tmp_path / "plantwatch.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_check_shows_the_computed_tags_in_evaluation_order(tmp_path):
    late = {"name": "CW.ALM", "expr": "CW.DF01 > 5 and CW.FI01 > 1", "alarm_on": True}
    r = check(tmp_path, flow_config(late, DIFF))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("  computed: 2 tags, evaluated each tick in this order\n"
            "    CW.DF01 = CW.FI01 - CW.FI02\n"
            "    CW.ALM = CW.DF01 > 5 and CW.FI01 > 1 (bool)\n") in r.stdout
    assert "device r1-plc: modbus tcp://127.0.0.1:5020 unit=1 every 0.2 s, timeout 0.5 s, 2 tags" in r.stdout


@pytest.mark.parametrize(("computed", "lines"), [
    ([{"name": "A", "expr": "A + 1"}], ["tags[2] (A).expr: refers to itself"]),
    ([{"name": "A", "expr": "B + CW.FI01"}, {"name": "B", "expr": "A * 2"}],
     ["tags[2] (A).expr: cycle A -> B -> A"]),
    ([{"name": "A", "expr": "CW.FI03 - CW.FI01"}], ["tags[2] (A).expr: unknown tag 'CW.FI03' (did you mean 'CW.FI02'?)"]),
    ([{"name": "A", "expr": "CW.FI01 +"}], ["tags[2] (A).expr: syntax error at position 10: unexpected end of expression"]),
    ([{"name": "A", "expr": "median(CW.FI01)"}],
     ["tags[2] (A).expr: unknown function 'median' at position 1 (did you mean 'mean'?) (functions: abs, min, "
      "max, sum, mean, rate, rolling_mean, rolling_median, rolling_max, rolling_min)"]),
    ([{"name": "A", "expr": "rate(CW.FI01, 0)"}],
     ["tags[2] (A).expr: rate() at position 1: the window (seconds) must be a positive number, not an expression or "
      "a value <= 0"]),
    ([{"name": "A", "expr": "2 * 3"}],
     ["tags[2] (A).expr: refers to no tag: a computed tag is evaluated when one of its inputs has a sample"]),
    ([{"name": "A", "expr": "CW.FI01", "device": "r1-plc", "address": "hr:4", "scale": 2.0}],
     ["tags[2] (A).device: not with expr: a computed tag is read from no device",
      "tags[2] (A).address: not with expr: a computed tag is read from no device",
      "tags[2] (A).scale: not with expr: a computed tag is read from no device"]),
    ([{"name": "A", "expr": "CW.FI01", "type": "int16"}], ["tags[2] (A).type: a computed tag is \"float64\" or "
                                                           "\"bool\", not 'int16'"]),
    ([{"name": "A"}], ["tags[2] (A).device: is required (or `expr` for a computed tag)",
                       "tags[2] (A).address: is required (or `expr` for a computed tag)"]),
    ([{"name": "A", "expr": "CW.FI01 * 2", "alarm_on": True}],
     ["tags[2] (A).alarm_on: a discrete alarm needs a bool tag (type = \"bool\"), not type 'float64'"]),
])
def test_config_errors_exit_2_with_the_path(tmp_path, computed, lines):
    r = check(tmp_path, flow_config(*computed))
    assert r.returncode == 2, r.stdout
    assert "Traceback" not in r.stderr
    got = [line.strip() for line in (r.stdout + r.stderr).splitlines()[1:]]
    assert got == lines


def test_a_cycle_behind_a_chain_is_reported_once_and_a_reader_of_it_not_again(tmp_path):
    r = check(tmp_path, flow_config({"name": "A", "expr": "B"}, {"name": "B", "expr": "C2 + 1"},
                                    {"name": "C2", "expr": "B - CW.FI01"}, {"name": "D", "expr": "A + 1"}))
    assert r.returncode == 2
    assert [x.strip() for x in (r.stdout + r.stderr).splitlines()[1:]] == ["tags[3] (B).expr: cycle B -> C2 -> B"]


def live(cfg, rows, quality=None, frozen=False):
    """Rows of {tag: value} at 1 s ticks through a live Pipeline, one device batch per row;
    ``frozen``: the tags as one frozen array per set of names, as a driver's read plan."""
    sink, index = NumberingSink(), cfg.tag_index()
    pipeline = Pipeline(cfg, sink)
    plans = {}
    for i, row in enumerate(rows):
        names = tuple(row)
        q = 0 if quality is None else quality[i]
        batch = SampleBatch.build("r1-plc", [index[n] for n in names], [float(row[n]) for n in names], T0 + i, q)
        if frozen:
            batch.tag = plans.setdefault(names, frozen_tags(batch.tag))
        pipeline.process(batch, T0 + i)
    return sink.messages, pipeline


def brief(messages):
    return [(parse_rfc3339(m["ts"]) - T0, m["id"], m["state"], m["level"], m["value"], m["device"]) for m in messages]


def test_a_flow_difference_alarms_with_a_limit_and_says_which_input_went_bad():
    cfg = parse(flow_config(DIFF))
    rows = [{"CW.FI01": 100.0, "CW.FI02": 99.0}, {"CW.FI01": 100.0, "CW.FI02": 93.0},
            {"CW.FI01": 100.0, "CW.FI02": 99.5}, {"CW.FI01": 100.0, "CW.FI02": 99.5}]
    messages, pipeline = live(cfg, rows, quality=[GOOD, GOOD, GOOD, np.array([GOOD, BAD])])
    got = brief(messages)
    assert got[:2] == [(1.0, "CW.DF01/limit", "active", "H", 7.0, ""), (2.0, "CW.DF01/limit", "cleared", "H", 0.5, "")]
    bad = [m for m in messages if m["id"] == "CW.DF01/sensor"]
    assert len(bad) == 1 and bad[0]["level"] == "BAD" and bad[0]["context"]["inputs"] == {"CW.FI02": "BAD"}
    assert pipeline.derived.tag.tolist() == [2] and pipeline.derived.quality.tolist() == [BAD]


def test_a_comm_fail_input_makes_the_computed_sample_comm_fail_without_an_alarm_of_its_own():
    cfg = parse(flow_config(DIFF))
    pipeline = Pipeline(cfg, NumberingSink())
    pipeline.process(SampleBatch.build("r1-plc", [0, 1], [10.0, 2.0], T0, 0), T0)
    assert pipeline.derived.value.tolist() == [8.0]
    messages = pipeline.process(SampleBatch.failed("r1-plc", [0, 1], T0 + 1, "timeout"), T0 + 1)
    assert [(m["id"], m["state"]) for m in messages] == [("r1-plc/comm", "active")]
    assert pipeline.derived.quality.tolist() == [COMM_FAIL] and np.isnan(pipeline.derived.value).all()


def test_a_computed_bool_raises_a_discrete_alarm_with_its_delay():
    cfg = parse(flow_config({"name": "CW.LEAK", "expr": "CW.FI01 - CW.FI02 > 5 and CW.FI01 > 10", "alarm_on": True,
                             "on_delay_s": 2.0, "desc": "回水泄漏 leak", "alarm_text": "泄漏 leak"}))
    assert cfg.tags[2].spec.type == "bool"
    rows = [{"CW.FI01": 100.0, "CW.FI02": 99.0}] + [{"CW.FI01": 100.0, "CW.FI02": 90.0}] * 4 + \
           [{"CW.FI01": 100.0, "CW.FI02": 99.0}] * 2
    got = [g[:4] for g in brief(live(cfg, rows)[0])]
    assert got == [(3.0, "CW.LEAK/discrete", "active", "ON"), (5.0, "CW.LEAK/discrete", "cleared", "ON")]


def test_replay_computes_from_the_inputs_like_the_live_pipeline(tmp_path):
    cfg = parse(flow_config(DIFF, {"name": "CW.DR", "expr": "rate(CW.DF01, 3)", "alarms": {"h": 0.8}},
                            {"name": "CW.MED", "expr": "rolling_median(CW.FI02, 5) < 96", "alarm_on": True},
                            {"name": "CW.SUM", "expr": "CW.FI01 + CW.FI02", "detectors": ["cusum"],
                             "cusum": {"mean": 199.0, "sigma": 0.5, "k": 0.5, "h": 5.0}}),
                base=tmp_path)
    rng = np.random.default_rng(5)
    fi2 = 99 - np.clip(np.cumsum(rng.normal(0.3, 1.0, 60)), 0, None)
    rows = [{"CW.FI01": 100.0, "CW.FI02": round(float(v), 3)} for v in fi2]
    want = brief(live(cfg, rows)[0])
    assert {g[1] for g in want} >= {"CW.DF01/limit", "CW.DR/limit", "CW.MED/discrete", "CW.SUM/cusum"}
    messages, pipeline = live(cfg, rows, frozen=True)
    assert brief(messages) == want
    assert len(pipeline._plans) == 1  # the read plan with its computed samples, kept frozen
    csv = tmp_path / "h.csv"
    lines = ["ts,CW.FI01,CW.FI02,CW.DF01"] + [f"{T0 + i},{r['CW.FI01']},{r['CW.FI02']},999" for i, r in enumerate(rows)]
    csv.write_text("\n".join(lines) + "\n")
    table = read_table(csv, [t.name for t in cfg.tags], None, None, None)
    assert brief(replay(cfg, table).messages) == want  # the CW.DF01 column is ignored
    np.testing.assert_allclose(computed_columns(cfg, table)["CW.DF01"], 100.0 - fi2.round(3))


def test_long_windows_in_one_batch_of_many_ticks_keep_at_most_the_documented_samples():
    from detectors.expr import MAX_WINDOW_SAMPLES

    index = {"A": 0, "M": 1, "X": 2, "N": 3}
    programs = [compile_expr(parse_expr(e), index, i + 1)
                for i, e in enumerate(["rolling_mean(A, 1e9)", "rolling_max(A, 1e9)", "rolling_min(A, 5000)"])]
    ev = Evaluator(4, programs, intervals=[1.0] * 3)
    n = MAX_WINDOW_SAMPLES + 4000
    vals = np.random.default_rng(2).normal(size=n)
    vals[10] = 99.0  # the maximum, dropped from the full window later
    out = ev.evaluate(np.zeros(n, np.int32), vals, T0 + np.arange(n, dtype=float), np.zeros(n, np.uint8))
    assert ev.kernel.window_samples() == [MAX_WINDOW_SAMPLES, MAX_WINDOW_SAMPLES, 5001]
    by = {t: (out[1][out[0] == t], out[4][out[0] == t]) for t in (1, 2, 3)}
    assert (by[1][1] == np.arange(1, n + 1)).all()  # each at the end of its tick
    last = vals[-MAX_WINDOW_SAMPLES:]
    assert by[1][0][-1] == pytest.approx(last.mean(), rel=1e-9, abs=1e-12)
    assert by[1][0][4095] == pytest.approx(vals[:4096].mean(), rel=1e-9, abs=1e-12)
    assert by[2][0][MAX_WINDOW_SAMPLES - 1] == 99.0 and by[2][0][-1] == last.max()
    assert by[3][0][-1] == vals[-5001:].min()


def test_a_model_over_a_computed_tag_trains_and_alarms_in_replay(write_config, tmp_path):
    from tests.test_cli import plantwatch
    from tests.test_replay import correlated_csv

    data = config_dict(models=[{"name": "reactor", "kind": "pca", "tags": ["R101.TI01", "R101.PT", "R101.FI01"],
                                "file": "models/reactor.npz", "confidence": 0.999}])
    data["tags"] += [{"name": "R101.FI01", "device": "r1-plc", "address": "hr:104", "unit": "m³/h"},
                     {"name": "R101.PT", "expr": "R101.PI01 * 1000", "unit": "kPa"}]
    config = write_config(data)
    trained = plantwatch("train", str(config), "--csv", str(correlated_csv(tmp_path / "n.csv", 600, 1)),
                         "--model", "reactor")
    assert trained.returncode == 0, trained.stderr
    assert "model reactor: 3 tags, 600 rows (0 with empty cells dropped)" in trained.stdout
    out = tmp_path / "pca.jsonl"
    replayed = plantwatch("replay", str(config), "--csv", str(correlated_csv(tmp_path / "f.csv", 300, 2, break_at=150)),
                          "--out", str(out))
    assert replayed.returncode == 0, replayed.stderr
    import json

    pca = [json.loads(line) for line in out.read_text().splitlines() if '"kind":"pca"' in line]
    assert pca and pca[0]["state"] == "active"
    assert pca[0]["context"]["top_tags"][0] == "R101.PT"
    assert parse_rfc3339(pca[0]["ts"]) - T0 >= 150


def test_restore_grace_of_a_computed_tag_uses_its_fastest_input():
    from agent.alarms import Alarm
    from agent.pipeline import restore_grace

    data = flow_config(dict(DIFF, alarms={"h": 5.0, "on_delay_s": 4.0}))
    data["devices"].append({"name": "slow", "driver": "modbus", "url": "tcp://127.0.0.1:5021", "interval_s": 10.0})
    data["tags"][1]["device"] = "slow"
    cfg = parse(data)
    assert cfg.interval_of(cfg.tags[2]) == 0.2
    alarm = Alarm(id="CW.DF01/limit", kind="limit", tag="CW.DF01", device="")
    assert restore_grace(cfg, alarm) == pytest.approx(4.0 + 3 * 0.2 + 2.0)


def test_a_computed_tag_is_a_provincial_point_with_its_expression_in_the_registry():
    from agent import registry

    data = flow_config(DIFF, {"name": "CW.LEAK", "expr": "CW.DF01 > 5", "equipment_code": "CW1", "point": "P-LEAK"})
    data["uplink"]["profile"] = "provincial"
    data["provincial"] = {"gateway_code": "GW-01", "hazard_code": "HZ01"}
    cfg = parse(data)
    rows = [registry.entry(cfg.provincial, p) for p in registry.points(cfg.tags, cfg.provincial)]
    assert [(r["cdbm"], r["cdmc"], r["gbjz"]) for r in rows[2:]] == [
        ("CW.DF01", "回水流量差 flow difference", "5.000"), ("P-LEAK", "计算点 computed: CW.DF01 > 5", "")]
    messages, pipeline = live(cfg, [{"CW.FI01": 100.0, "CW.FI02": 93.5}])
    d = pipeline.derived
    samples = [(cfg.tags[t].name, v, "good", ts)
               for t, v, ts in zip(d.tag.tolist(), d.value.tolist(), d.ts.tolist(), strict=True)]
    doc = cfg.provincial.data(T0, samples)
    assert [(x["cdbm"], x["cdz"], x["zt"]) for x in doc["datas"]] == [("CW.DF01", "6.500", "0"), ("P-LEAK", "1", "0")]
    alarm = cfg.provincial.alarm({**messages[0], "seq": 1})
    assert (alarm["cdbm"], alarm["cdz"], alarm["bjyz"]) == ("CW.DF01", "6.500", "5.000")


def test_a_bad_computed_input_is_named_and_a_division_by_zero_says_so():
    cfg = parse(flow_config({"name": "R", "expr": "CW.FI01 / CW.FI02", "alarms": {"h": 1e6}},
                            {"name": "R2", "expr": "R * 2 + CW.FI01"}))
    messages, _ = live(cfg, [{"CW.FI01": 1.0, "CW.FI02": 2.0}, {"CW.FI01": 1.0, "CW.FI02": 0.0}])
    bad = {m["tag"]: m["context"] for m in messages if m["level"] == "BAD"}
    assert bad["R"]["reason"].startswith("the expression's value is not finite")
    assert bad["R2"]["inputs"] == {"R": "BAD"}
