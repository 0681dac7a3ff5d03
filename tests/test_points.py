"""Point lists (位号表) from CSV: `[agent] points_file` rows add to [[tags]], every problem of a
row is reported at its line and column, and `plantwatch export-points` writes the same format
back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load
from tests.conftest import config_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "points-example.csv"
HEADER = "name,device,address,type,unit,desc,hh,h,l,ll\r\n"


def reactor_with_points(tmp_path: Path) -> Path:
    """configs/chemical-reactor.toml (9 [[tags]]) with the example point list (and the platform's CA
    certificate the example names) beside it."""
    shutil.copy(EXAMPLE, tmp_path / "points.csv")
    shutil.copytree(ROOT / "configs" / "keys", tmp_path / "keys")
    text = (ROOT / "configs" / "chemical-reactor.toml").read_text(encoding="utf-8")
    text = text.replace('data_dir = "/var/lib/plantwatch"', 'data_dir = "data"\npoints_file = "points.csv"')
    path = tmp_path / "plant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def points_config(tmp_path: Path, write_config, csv: str | bytes, **agent) -> Path:
    """The test config (tags R101.TI01, R101.PI01 on r1-plc) with points.csv holding ``csv``."""
    data = config_dict()
    data["agent"].update({"points_file": "points.csv", **agent})
    (tmp_path / "points.csv").write_bytes(csv if isinstance(csv, bytes) else csv.encode("utf-8-sig"))
    return write_config(data)


def check(path: Path, capsys) -> tuple[int, list[str]]:
    """`plantwatch check` as typed: its exit code and the problem lines it printed."""
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    return code, [line.strip() for line in err.splitlines()[1:]]


def test_the_example_point_list_loads_with_its_bom_chinese_text_and_every_kind_of_column(tmp_path):
    assert EXAMPLE.read_bytes().startswith(b"\xef\xbb\xbf")  # as Excel's "CSV UTF-8" writes it
    cfg = load(reactor_with_points(tmp_path))
    tags = {t.name: t for t in cfg.tags}
    assert [t.name for t in cfg.tags[:10]] == ["R101.TI01", "R101.PI01", "R101.FI01", "R101.LI01", "R101.AGITATOR",
                                              "R101.TI01.RATE", "R101.COOLING.LOSS", "GD101.LEL", "GD102.H2S",
                                              "CW.PI01"]  # TOML tags first, then the rows
    assert [t.index for t in cfg.tags] == list(range(16))
    pi = tags["CW.PI01"]
    assert (pi.spec.device, pi.spec.address, pi.unit, pi.range) == ("r1-plc", "hr:200", "MPa", (0.0, 1.6))
    assert pi.desc == "循环水供水压力 cooling water supply pressure"
    assert pi.priority == {"HH": 1} and pi.position == "PI-2001"
    assert pi.families["limit"] == {"hh": 0.6, "h": 0.55, "l": 0.25, "ll": 0.2, "deadband": 0.01, "on_delay_s": 2,
                                    "off_delay_s": 5}
    assert pi.families["ewma"]["lambda_"] == 0.1
    assert tags["CW.TI01"].priority == 2 and set(tags["CW.TI01"].families) >= {"ewma", "cusum", "limit"}
    assert tags["CW.FI01"].spec.order == "CDAB"
    assert tags["CW.LI01"].desc == "循环水池液位\r\ncooling water basin level"  # a cell over two lines
    assert tags["CW.LI01"].spec.scale == 0.1 and "flatline" in tags["CW.LI01"].families
    run = tags["CW.P101.RUN"]
    assert run.spec.type == "bool" and run.in_service is True
    assert run.families["discrete"]["alarm_on"] is False and run.families["discrete"]["text"] == "停泵"
    lel = tags["GD201.LEL"]  # the preset's hh under the row's own h
    assert (lel.families["limit"]["h"], lel.families["limit"]["hh"], lel.unit) == (20, 50.0, "%LEL")
    nh3 = tags["GD202.NH3"]
    assert nh3.in_service is False and nh3.families["limit"]["h"] > 0  # from NH3's OEL


def test_check_counts_the_rows_with_the_toml_tags_and_plans_their_reads(tmp_path, capsys):
    code = main(["check", str(reactor_with_points(tmp_path))])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 devices, 16 tags, 0 models" in out
    assert "device r1-plc: modbus tcp://192.168.10.21:502 unit=1 every 1 s, timeout 1 s, 10 tags" in out
    assert "hr 200-220 (21 regs, 5 tags)" in out


def test_tags_file_is_the_other_name_of_points_file_and_the_path_is_relative_to_the_config(tmp_path, write_config):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "p.csv").write_text("name,device,address\nCW.PI01,r1-plc,hr:200\n", encoding="utf-8")
    data = config_dict()
    data["agent"]["tags_file"] = "lists/p.csv"
    cfg = load(write_config(data))
    assert [t.name for t in cfg.tags] == ["R101.TI01", "R101.PI01", "CW.PI01"]
    assert cfg.agent.points_file == tmp_path / "lists" / "p.csv"
    data["agent"]["points_file"] = "lists/p.csv"
    with pytest.raises(ConfigError) as info:
        load(write_config(data))
    assert info.value.problems == ["agent.tags_file: is the other name of points_file: set only one"]


def test_a_semicolon_separated_file_and_spreadsheet_friendly_cells_are_read(tmp_path, write_config):
    csv = ("name;device;address;in_service;range;detectors;decimals;priority\n"
           'CW.PI01;r1-plc;hr:200; 否 ;0,1.6;ewma, cusum;2.0;1\n'
           ";;;;;;;\n"  # an empty row (Excel writes them) is no tag
           'CW.PI02;r1-plc;hr:202;YES;"-1;1";;;\n')
    cfg = load(points_config(tmp_path, write_config, csv))
    pi1, pi2 = cfg.tags[2], cfg.tags[3]
    assert (pi1.in_service, pi1.range, pi1.decimals, pi1.priority) == (False, (0.0, 1.6), 2, 1)
    assert set(pi1.families) >= {"ewma", "cusum"} and pi2.in_service is True


BAD = [
    ("missing required column", "name,device,unit\r\nCW.PI01,r1-plc,MPa\r\nCW.PI02,r1-plc,MPa\r\n",
     ["points.csv:1: column address: is required (or `expr` for a computed tag): the header has no such column "
      "(rows at lines 2, 3)"]),
    ("missing name column", "device,address\r\nr1-plc,hr:200\r\n",
     ["points.csv:1: column name: is required: the header has no such column"]),
    ("an empty required cell, told once", "name,device,address\r\nCW.PI01,r1-plc,hr:200\r\nCW.PI02,r1-plc,\r\n",
     ["points.csv:3: column address: is required (or `expr` for a computed tag)"]),
    ("duplicate tag in the file", HEADER + "CW.PI01,r1-plc,hr:200,,,,,,,\r\nCW.PI01,r1-plc,hr:202,,,,,,,\r\n",
     ["points.csv:3: column name: duplicate tag name 'CW.PI01' (also points.csv:2)"]),
    ("duplicate of a [[tags]] entry", HEADER + "CW.PI01,r1-plc,hr:200,,,,,,,\r\nR101.PI01,r1-plc,hr:202,,,,,,,\r\n",
     ["points.csv:3: column name: duplicate tag name 'R101.PI01' (also tags[1] (R101.PI01))"]),
    ("bad number", "name,device,address,scale\r\nCW.PI01,r1-plc,hr:200,x\r\n",
     ["points.csv:2: column scale: must be a number, not 'x'"]),
    ("hh below h", HEADER + "CW.PI01,r1-plc,hr:200,float32,MPa,供水压力,150,160,,\r\n",
     ["points.csv:2: column hh: must be above h (160.0)"]),
    ("unknown columns, with hints", "name,device,address,alrams.deadband,HH\r\nCW.PI01,r1-plc,hr:200,1,2\r\n",
     ["points.csv:1: column alrams.deadband: unknown column (did you mean 'alarms.deadband'?)",
      "points.csv:1: column HH: unknown column (did you mean 'hh'?)"]),
    ("unknown device", HEADER + "CW.PI01,r2-plc,hr:200,,,,,,,\r\n",
     ["points.csv:2: column device: unknown device 'r2-plc' (devices: r1-plc)"]),
    ("not UTF-8", ("name,device,address,desc\r\nCW.PI01,r1-plc,hr:200,循环水压力\r\n").encode("gbk"),
     ['points.csv:2: not UTF-8 (byte 0xbb; an older Excel saves GBK): save the sheet as "CSV UTF-8 (逗号分隔)"']),
    ("lines counted as in the file, a quoted cell over two lines",
     HEADER + 'CW.PI01,r1-plc,hr:200,,,"供水\r\n压力",,,,\r\nCW.PI02,r1-plc,hr:202,,,,,,1,2\r\n',
     ["points.csv:4: column l: must be above ll (2.0)"]),
    ("bad bool and bad range", "name,device,address,in_service,range\r\nCW.PI01,r1-plc,hr:200,maybe,0;x\r\n",
     ["points.csv:2: column in_service: must be true or false (or 1/0, yes/no, 是/否), not 'maybe'",
      "points.csv:2: column range: must be numbers separated by ';', e.g. '-50;400', not '0;x'"]),
    ("a check of the rows' keys together", "name,device,address,range\r\nCW.PI01,r1-plc,hr:200,100;0\r\n",
     ["points.csv:2: column range: low must be below high, not [100.0, 0.0]"]),
    ("a family's table in columns", "name,device,address,ewma.lambda_,roc.window_s\r\nCW.PI01,r1-plc,hr:200,0.2,1\r\n",
     ["points.csv:2: column roc.max_per_s: required (units per second)",
      "points.csv:2: column ewma.lambda_: parameters for 'ewma', which is not in this tag's detectors"]),
    ("a value and a table of the same key", "name,device,address,priority,priority.HH\r\nCW.PI01,r1-plc,hr:200,2,1\r\n",
     ["points.csv:2: column priority.HH: give priority or priority.NAME columns in a row, not both"]),
    ("a value in a column without a name", "name,device,address\r\nCW.PI01,r1-plc,hr:200,3\r\n",
     ["points.csv:2: a value in column 4, which the header does not name: '3'"]),
    ("the driver's check of an address", "name,device,address\r\nCW.PI01,r1-plc,hr:x\r\n",
     ["points.csv:2: column address: 'hr:x' is not a Modbus address: expected co:N, di:N, ir:N, hr:N or hr:N.B "
      "(0-based), or a Modicon reference such as 40001 (= hr:0) or 400001"]),
]


@pytest.mark.parametrize(("csv", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_problem_of_a_point_list_is_reported_at_its_line_and_column(tmp_path, write_config, capsys, csv,
                                                                          expected):
    code, problems = check(points_config(tmp_path, write_config, csv), capsys)
    assert code == 2
    assert problems == expected


def test_a_missing_points_file_is_a_problem_of_the_key_that_names_it(tmp_path, write_config, capsys):
    data = config_dict()
    data["agent"]["points_file"] = "nowhere.csv"
    code, problems = check(write_config(data), capsys)
    assert (code, problems) == (2, [f"agent.points_file: no such file: {tmp_path / 'nowhere.csv'}"])


def test_run_with_a_bad_point_list_exits_2_and_starts_nothing(tmp_path, write_config):
    path = points_config(tmp_path, write_config, HEADER + "CW.PI01,r1-plc,hr:200,float32,MPa,,150,160,,\r\n")
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", str(path)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == ["  points.csv:2: column hh: must be above h (160.0)"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # no outbox, no history: nothing started


def test_export_points_reads_back_into_the_same_tags(tmp_path, capsys):
    original = load(reactor_with_points(tmp_path))
    assert main(["export-points", str(tmp_path / "plant.toml"), "--out", str(tmp_path / "all.csv")]) == 0
    data = (tmp_path / "all.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # Excel opens it as UTF-8
    header, *rows = data.decode("utf-8-sig").split("\r\n")
    assert header.startswith("name,device,address,type,order,scale,expr,unit,desc,range,priority,priority.HH,preset")
    assert "hh,h,l,ll,alarms.deadband" in header and header.endswith("ewma.lambda_")
    nh3 = next(r for r in rows if r.startswith("GD202.NH3,"))
    assert nh3.split(",")[header.split(",").index("hh")] == ""  # the preset's limits stay the preset's
    text = (tmp_path / "plant.toml").read_text(encoding="utf-8")
    head = text[:text.index("[[tags]]")].replace('points_file = "points.csv"', 'points_file = "all.csv"')
    (tmp_path / "again.toml").write_text(head, encoding="utf-8")
    again = load(tmp_path / "again.toml")
    assert again.tags == original.tags
    assert main(["export-points", str(tmp_path / "again.toml")]) == 0
    assert capsys.readouterr().out.encode("utf-8") == data  # stdout: the same bytes (the BOM decodes to U+FEFF)


def test_ten_thousand_rows_load(tmp_path, write_config):
    lines = ["name,device,address,type,unit,desc,range,hh,h,l,alarms.deadband,detectors"]
    lines += [f"U{i // 1000:02d}.TI{i % 1000:03d},r1-plc,hr:{2 * i},float32,°C,{i}#反应釜温度,0;500,180,160,20,1,"
              + ("ewma" if i % 4 == 0 else "") for i in range(10_000)]
    cfg = load(points_config(tmp_path, write_config, "\r\n".join(lines) + "\r\n"))
    assert len(cfg.tags) == 10_002
    last = cfg.tags[-1]
    assert (last.name, last.index, last.spec.address, last.desc) == ("U09.TI999", 10_001, "hr:19998", "9999#反应釜温度")
    assert sum("ewma" in t.families for t in cfg.tags) == 2_500
    assert len(cfg.device_tags("r1-plc")) == 10_002


def test_a_drivers_own_tag_keys_are_columns_of_the_configs_drivers(tmp_path, write_config):
    data = config_dict()
    data["devices"].append({"name": "scada", "driver": "opcua", "url": "opc.tcp://127.0.0.1:4840/plant"})
    data["agent"]["points_file"] = "points.csv"
    (tmp_path / "points.csv").write_text("name,device,address,sampling_interval_ms,deadband_abs\n"
                                         "CW.PI01,scada,ns=2;s=CW.PI01,500,0.5\n"
                                         "CW.PI02,scada,ns=2;s=CW.PI02,,\n", encoding="utf-8")
    cfg = load(write_config(data))
    assert cfg.tags[2].spec.options == {"sampling_interval_ms": 500, "deadband_abs": 0.5}
    assert cfg.tags[3].spec.options == {} and cfg.tags[3].spec.address == "ns=2;s=CW.PI02"


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("float", "-1.5e3", -1500.0), ("float", "nan", None), ("float", "1_000", None), ("float", "inf", None),
    ("int", "3", 3), ("int", "3.0", 3), ("int", "3.5", None), ("bool", "是", True), ("bool", "No", False),
    ("bool", "2", None), ("list[float]", "-50; 400", [-50.0, 400.0]), ("list[str]", "ewma;;cusum", ["ewma", "cusum"]),
    ("str", "0012", "0012"), ("number", "30", 30), ("any", "500", 500), ("any", "true", True), ("any", "ns=2", "ns=2"),
])
def test_a_cell_converts_by_its_keys_type(kind, text, value):
    from agent.config.points import cell, convert

    got, error = convert(kind, text)
    assert got == value and type(got) is type(value)
    assert (error is None) == (value is not None)
    if value is not None and kind != "str":
        assert convert(kind, cell(got))[0] == got  # what export-points writes reads back


def test_computed_tags_are_rows_too_and_need_no_device_or_address_columns(tmp_path, write_config, capsys):
    path = points_config(tmp_path, write_config, "name,expr,unit,desc,h\r\n"
                                                 "R101.DT,R101.TI01 - 20,°C,温差 temperature difference,30\r\n"
                                                 'R101.HOT,R101.TI01 > 150,,"过热 overheated",\r\n')
    cfg = load(path)
    dt, hot = cfg.tags[2], cfg.tags[3]
    assert (dt.expr, dt.spec.type, dt.families["limit"]) == ("R101.TI01 - 20", "float64", {"h": 30})
    assert (hot.expr, hot.spec.type) == ("R101.TI01 > 150", "bool")
    (tmp_path / "points.csv").write_text("name,expr,address\nR101.DT,R101.TI01 - 20,hr:9\nR101.X,R101.NOPE + 1,\n",
                                         encoding="utf-8")
    code, problems = check(path, capsys)
    assert code == 2
    assert problems[0] == "points.csv:2: column address: not with expr: a computed tag is read from no device"
    assert problems[1].startswith("points.csv:3: column expr: ") and "R101.NOPE" in problems[1]
