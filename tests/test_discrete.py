"""Discrete alarms: a bool state that alarms (with delays, words and priority), a command whose
feedback disagrees for too long, their config checks, and replay equal to the live pipeline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import ConfigError, load, parse
from agent.pipeline import Pipeline, build_engine, build_manager
from agent.replay import read_table, replay
from drivers.base import SampleBatch
from tests.conftest import config_dict
from tests.helpers import NumberingSink

T0 = 1_800_000_000.0

SPARK = {"name": "DC1.SPARK", "device": "r1-plc", "address": "di:0", "type": "bool",
         "desc": "火花探测 spark detector", "alarm_on": True, "alarm_text": "火花 spark detected", "priority": 1}
VALVE = [
    {"name": "XV101.CMD", "device": "r1-plc", "address": "co:0", "type": "bool", "desc": "XV101 快速切断阀",
     "feedback": "XV101.ZSO", "mismatch_s": 10.0},
    {"name": "XV101.ZSO", "device": "r1-plc", "address": "di:1", "type": "bool", "desc": "XV101 开到位"},
]


def config(*tags):
    data = config_dict()
    data["tags"] += [dict(t) for t in tags]
    return parse(data)


def run(cfg, rows):
    """Feed rows of {tag name: value} at 1 s ticks through a live Pipeline; the alarm messages."""
    sink, index = NumberingSink(), cfg.tag_index()
    pipeline = Pipeline(cfg, sink)
    for i, row in enumerate(rows):
        names = list(row)
        pipeline.process(SampleBatch.build("r1-plc", [index[n] for n in names], [float(row[n]) for n in names],
                                           T0 + i, 0), T0 + i)
    return sink.messages


def when(messages):
    from agent.payloads import parse_rfc3339

    return [(parse_rfc3339(m["ts"]) - T0, m["id"], m["state"], m["level"]) for m in messages]


def test_a_bool_state_alarms_with_its_words_and_priority():
    cfg = config(SPARK)
    engine = build_engine(cfg)
    assert "discrete" in [f.name for f in engine.families]
    assert build_manager(cfg).describe["discrete"] is not None
    msgs = run(cfg, [{"DC1.SPARK": v} for v in [0, 0, 1, 1, 0, 0]])
    assert when(msgs) == [(2.0, "DC1.SPARK/discrete", "active", "ON"), (4.0, "DC1.SPARK/discrete", "cleared", "ON")]
    active = msgs[0]
    assert active["message"] == "火花探测 spark detector 报警状态 alarm state: 火花 spark detected"
    assert active["priority"] == 1 and active["kind"] == "discrete"
    assert "cleared" in msgs[1]["message"]


def test_the_delays_hold_and_restart_when_the_state_flips_back():
    tag = {**SPARK, "on_delay_s": 3.0, "off_delay_s": 2.0}
    # 1 at t=1..2 is shorter than the on-delay; the delay restarts at t=4 and expires at t=7;
    # the return at t=8 flips back at t=9, and the off-delay restarts at t=10, clearing at t=12
    values = [0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0]
    msgs = run(config(tag), [{"DC1.SPARK": v} for v in values])
    assert when(msgs) == [(7.0, "DC1.SPARK/discrete", "active", "ON"), (12.0, "DC1.SPARK/discrete", "cleared", "ON")]


def test_alarm_on_false_alarms_while_the_value_is_zero():
    tag = {**SPARK, "name": "DC1.VENT", "alarm_on": False, "alarm_text": "泄爆片未就位 vent panel open",
           "priority": 3}
    msgs = run(config(tag), [{"DC1.VENT": v} for v in [1, 1, 0, 0, 1]])
    assert when(msgs) == [(2.0, "DC1.VENT/discrete", "active", "OFF"), (4.0, "DC1.VENT/discrete", "cleared", "OFF")]
    assert msgs[0]["priority"] == 3
    assert msgs[0]["message"].endswith("报警状态 alarm state: 泄爆片未就位 vent panel open")


def test_without_text_the_message_names_the_state():
    tag = {k: v for k, v in SPARK.items() if k != "alarm_text"}
    (active,) = run(config(tag), [{"DC1.SPARK": 1}])
    assert active["message"] == "火花探测 spark detector 报警状态 alarm state: on"


def test_bad_and_nan_samples_leave_the_state_alone():
    cfg, sink = config(SPARK), NumberingSink()
    pipeline, i = Pipeline(cfg, sink), cfg.tag_index()["DC1.SPARK"]
    pipeline.process(SampleBatch.build("r1-plc", [i], [1.0], T0, 2), T0)
    assert [m for m in sink.messages if m["kind"] == "discrete"] == []


def test_a_command_whose_feedback_disagrees_too_long_alarms():
    cfg = config(*VALVE)
    assert "mismatch" in [f.name for f in build_engine(cfg).families]
    rows = ([{"XV101.CMD": 0, "XV101.ZSO": 0}] * 2 + [{"XV101.CMD": 1, "XV101.ZSO": 0}] * 5
            + [{"XV101.CMD": 1, "XV101.ZSO": 1}] * 2 + [{"XV101.CMD": 1, "XV101.ZSO": 0}] * 12
            + [{"XV101.CMD": 0, "XV101.ZSO": 0}] * 2)
    msgs = run(cfg, rows)
    # the first disagreement (t=2..6) lasts 5 s < 10 s; the second starts at t=9, alarms at t=19
    assert when(msgs) == [(19.0, "XV101.CMD/mismatch", "active", "MISMATCH"),
                          (21.0, "XV101.CMD/mismatch", "cleared", "MISMATCH")]
    assert msgs[0]["message"].startswith("XV101 快速切断阀 指令与反馈不一致 command/feedback mismatch: command 1")


def test_command_and_feedback_may_arrive_in_separate_batches():
    cfg, sink = config(*VALVE), NumberingSink()
    pipeline, index = Pipeline(cfg, sink), cfg.tag_index()
    for i in range(15):
        t = T0 + i
        pipeline.process(SampleBatch.build("r1-plc", [index["XV101.CMD"]], [1.0], t, 0), t)
        pipeline.process(SampleBatch.build("r1-plc", [index["XV101.ZSO"]], [0.0], t + 0.5, 0), t + 0.5)
    assert [(m["id"], m["state"]) for m in sink.messages] == [("XV101.CMD/mismatch", "active")]


def test_a_restored_mismatch_alarm_waits_for_mismatch_s():
    from agent.alarms import Alarm
    from agent.pipeline import restore_grace

    cfg = config(*VALVE)
    alarm = Alarm(id="XV101.CMD/mismatch", kind="mismatch", tag="XV101.CMD", device="r1-plc", active=True)
    assert restore_grace(cfg, alarm) == 10.0 + 3 * cfg.devices[0].interval_s + 2.0


def problems(*tags):
    with pytest.raises(ConfigError) as exc:
        config(*tags)
    return exc.value.problems


def test_a_discrete_alarm_on_a_float_tag_is_a_path_precise_error():
    (problem,) = problems({**SPARK, "address": "hr:10", "type": "float32"})
    assert problem == 'tags[2] (DC1.SPARK).alarm_on: a discrete alarm needs a bool tag (type = "bool"), not type \'float32\''



@pytest.mark.parametrize("change, path, words", [
    ({"feedback": "XV101.ZS0"}, ".feedback", "unknown tag 'XV101.ZS0' (did you mean 'XV101.ZSO'?)"),
    ({"feedback": "R101.TI01"}, ".feedback", "not a bool tag"),
    ({"feedback": "XV101.CMD"}, ".feedback", "the tag itself"),
    ({"mismatch_s": 0.0}, ".mismatch_s", "must be > 0"),
    ({"mismatch_s": -5.0}, ".mismatch_s", "must be > 0"),
    ({"type": "uint16", "address": "hr:10"}, ".feedback", "bool command tag"),
])
def test_feedback_checks(change, path, words):
    found = problems({**VALVE[0], **change}, VALVE[1])
    assert any(p.startswith("tags[2]") and path + ":" in p and words in p for p in found), found


def test_delays_without_alarm_on_and_feedback_without_mismatch_s():
    no_delay = {k: v for k, v in VALVE[0].items() if k != "mismatch_s"}
    found = problems({"name": "X", "device": "r1-plc", "address": "di:2", "type": "bool", "on_delay_s": 2.0},
                     no_delay, VALVE[1])
    assert any(p.startswith("tags[2]") and ".on_delay_s: only with alarm_on" in p for p in found), found
    assert any(p.startswith("tags[3]") and ".mismatch_s: required with feedback" in p for p in found), found


def test_check_exits_2_naming_the_path(write_config):
    data = config_dict()
    data["tags"].append({**SPARK, "address": "hr:10", "type": "float32"})
    result = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(write_config(data))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "tags[2]" in result.stderr + result.stdout and "alarm_on" in result.stderr + result.stdout


def test_the_shipped_dust_collector_alarms_on_a_spark():
    cfg = load("configs/dust-collector.toml")
    spark = next(t for t in cfg.tags if t.name == "DC1.SPARK")
    assert spark.families["discrete"]["alarm_on"] is True


def test_replay_of_a_csv_gives_the_live_alarms(write_config, tmp_path):
    data = config_dict()
    data["tags"] += [{**SPARK, "on_delay_s": 2.0, "off_delay_s": 1.0}, *VALVE]
    cfg = load(write_config(data))
    spark = [0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0] * 30
    cmd = ([0] * 7 + [1] * 20 + [0] * 13) * 9
    zso = ([0] * 20 + [1] * 14 + [0] * 6) * 9
    n = len(spark)
    rows = [{"DC1.SPARK": spark[i], "XV101.CMD": cmd[i], "XV101.ZSO": zso[i]} for i in range(n)]
    lines = ["ts,DC1.SPARK,XV101.CMD,XV101.ZSO"] + [f"{T0 + i:.0f},{spark[i]},{cmd[i]},{zso[i]}" for i in range(n)]
    csv = tmp_path / "states.csv"
    csv.write_text("\n".join(lines) + "\n")
    table = read_table(csv, ["DC1.SPARK", "XV101.CMD", "XV101.ZSO"], None, None, None)
    replayed = replay(cfg, table).messages
    live = run(cfg, rows)
    kinds = {m["kind"] for m in live}
    assert kinds == {"discrete", "mismatch"} and len(live) > 20
    # the same messages; replay names its own numbering (epoch "replay"), the stand-in outbox none
    assert {m.pop("epoch") for m in replayed} == {"replay"}
    assert replayed == live
