"""`plantwatch replay --report`: one self-contained HTML file, and the progress bars of replay and
train (on a terminal only)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np

from agent.report import envelope
from tests.conftest import config_dict
from tests.test_replay import correlated_csv, pca_config, plantwatch, reactor_csv


class Doc(HTMLParser):
    """What the tests look at: every tag with its attributes, the text under h3, table cells."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._h3: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = []
        elif tag == "h3":
            self._h3 = []

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None:
            self._row.append("".join(self._cell or []))
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "h3" and self._h3 is not None:
            self.headings.append("".join(self._h3).strip())
            self._h3 = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._h3 is not None:
            self._h3.append(data)


def alarm_episodes(jsonl: str) -> list[tuple[str, str]]:
    """(id, first level) of every activation, from the replay's own messages."""
    active, out = set(), []
    for m in map(json.loads, jsonl.splitlines()):
        if m["state"] == "active" and m["id"] not in active:
            active.add(m["id"])
            out.append((m["id"], m["level"]))
        elif m["state"] == "cleared":
            active.discard(m["id"])
    return out


def external(doc: Doc) -> list[str]:
    bad = []
    for tag, attrs in doc.tags:
        for key in ("src", "href", "xlink:href", "action", "data"):
            v = attrs.get(key) or ""
            if re.match(r"\s*(https?:)?//", v):
                bad.append(f"<{tag} {key}={v}>")
        if tag in ("script", "link", "iframe", "img", "object"):
            bad.append(f"<{tag}>")
    return bad


def test_report_has_trends_alarms_with_delays_and_the_printed_scores(write_config, tmp_path):
    labels = [0] * 20 + [1] * 15 + [0] * 25 + [1] * 10 + [0] * 30
    temps = [120.0] * 20 + [120.0] * 3 + [185.0] * 12 + [120.0] * 25 + [170.0] * 10 + [120.0] * 30
    csv = reactor_csv(tmp_path / "l.csv", temps, labels=labels)
    out, report = tmp_path / "a.jsonl", tmp_path / "r" / "report.html"
    report.parent.mkdir()
    result = plantwatch("replay", str(write_config(config_dict())), "--csv", str(csv), "--labels", "anomaly",
                        "--out", str(out), "--report", str(report))
    assert result.returncode == 0, result.stderr
    doc = Doc(report.read_text(encoding="utf-8"))
    assert external(doc) == []
    # the tags' trends: an svg with a polyline for each; the alarmed tag first, its limits drawn
    assert doc.headings[0].startswith("R101.TI01")
    assert "R101.PI01" in " ".join(doc.headings)
    svgs = [a for t, a in doc.tags if t == "svg"]
    assert len(svgs) >= 2
    assert sum(1 for t, a in doc.tags if t == "polyline") == len(svgs)
    assert sum(1 for t, a in doc.tags if t == "line" and a.get("class") == "limit") >= 2  # H and HH of TI01
    # the alarms table: one row per alarm of the replay, in order, with the delay from the label onset
    rows = doc.tables["alarms"]
    episodes = alarm_episodes(out.read_text())
    assert [(r[0], r[1].split("/")[0]) for r in rows] == episodes
    assert len(rows) == 2
    assert rows[0][1] == "HH" and rows[1][1] == "H"
    assert rows[0][6] == "3.0"  # label from row 20, 185 from row 23
    assert rows[1][6] == "0.0"
    assert [r[2] for r in doc.tables["anomalies"]] == ["3.0", "0.0"]
    # the scores are the ones replay printed
    printed = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert any(line.startswith("F1") for line in printed) and any(line.startswith("NAB") for line in printed)
    table = doc.tables["scores"]
    assert len(table) == len(printed)
    for (name, value), line in zip(table, printed, strict=True):
        assert line.startswith(name) and line.endswith(value), (name, value, line)
        assert re.sub(r"\s+", " ", line) == f"{name} {value}"


def test_report_plots_the_model_statistics_against_their_limits(write_config, tmp_path):
    config = pca_config(write_config, tmp_path)
    trained = plantwatch("train", str(config), "--csv", str(correlated_csv(tmp_path / "n.csv", 600, 1)), "--model", "reactor")
    assert trained.returncode == 0, trained.stderr
    report = tmp_path / "pca.html"
    result = plantwatch("replay", str(config), "--csv", str(correlated_csv(tmp_path / "f.csv", 300, 2, break_at=150)),
                        "--out", str(tmp_path / "pca.jsonl"), "--report", str(report))
    assert result.returncode == 0, result.stderr
    doc = Doc(report.read_text(encoding="utf-8"))
    assert external(doc) == []
    assert "reactor: T²" in doc.headings and "reactor: SPE" in doc.headings
    assert any(r[0] == "reactor/pca" for r in doc.tables["alarms"])
    # the model alarm names PI01 first: its trend comes before the others
    trends = [h for h in doc.headings if not h.startswith("reactor:")]
    assert trends[0].startswith("R101.PI01")
    assert "scores" not in doc.tables  # no labels, no scores


def test_envelope_keeps_every_extreme_and_time_order():
    rng = np.random.default_rng(3)
    x = np.arange(100_000, dtype=float)
    y = rng.normal(0, 1, x.size)
    y[77_777] = 50.0
    y[12_345] = -40.0
    xs, ys = envelope(x, y, 0.0, x[-1], 800)
    assert len(xs) <= 2 * 800 + 2
    assert ys.max() == 50.0 and ys.min() == -40.0
    assert np.all(np.diff(xs) >= 0)
    small = np.array([1.0, 2.0, np.nan, 3.0])
    assert envelope(np.arange(4.0), small, 0.0, 3.0, 800)[1].tolist() == [1.0, 2.0, 3.0]


def _run_on_pty(args: list[str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal and stdout on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = proc.communicate(timeout=120)[0]
    os.close(master)
    return proc.returncode, out.decode(), err.decode()


def test_progress_on_a_terminal_only_and_rows_per_second(write_config, tmp_path):
    config = pca_config(write_config, tmp_path)
    normal = str(correlated_csv(tmp_path / "n.csv", 3000, 1))
    args = ["replay", str(config), "--csv", normal, "--out", str(tmp_path / "a.jsonl")]
    assert plantwatch("train", str(config), "--csv", normal, "--model", "reactor").returncode == 0
    code, out, err = _run_on_pty(args)
    assert code == 0, err
    assert "replay [" in err and "100.0 % 3000/3000 rows" in err and "read   [" in err
    assert "\r" in err
    assert re.search(r"replayed in [0-9.]+ s: [0-9,]+ rows/s", out)
    piped = plantwatch(*args)
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: no bar
    assert re.search(r"rows/s", piped.stdout)
    code, out, err = _run_on_pty(["train", str(config), "--csv", normal, "--model", "reactor"])
    assert code == 0 and "read   [" in err and "3000/3000 rows" in err, err
    trained = plantwatch("train", str(config), "--csv", normal, "--model", "reactor")
    assert trained.returncode == 0 and trained.stderr == ""


def test_train_detectors_shows_its_progress_per_tag(write_config, tmp_path):
    from bench.flood import config_data
    from tests.detectors.test_tune import _csv, _series

    config = write_config(config_data(["daily", "white"]))
    ts, columns = _series(3, 1, 1_800_000_000.0)
    csv = str(_csv(tmp_path / "normal.csv", ts, {"daily": columns["daily"], "white": columns["white"]}))
    code, out, err = _run_on_pty(["train", str(config), "--csv", csv, "--detectors"])
    assert code == 0, err
    assert "calibrate [" in err and "2/2 tags" in err and "white: no cycle" in out
    piped = plantwatch("train", str(config), "--csv", csv, "--detectors")
    assert piped.returncode == 0 and piped.stderr == ""


def test_report_plots_a_cva_models_statistics(write_config, tmp_path):
    from tests.test_cva import COLUMNS, plant, plant_csv

    data = config_dict(models=[{"name": "loop", "kind": "cva", "tags": COLUMNS, "file": "models/loop.npz", "past": 3}])
    data["tags"] += [{"name": "R101.FI01", "device": "r1-plc", "address": "hr:104"},
                     {"name": "R101.LI01", "device": "r1-plc", "address": "hr:106"}]
    config = write_config(data)
    trained = plantwatch("train", str(config), "--csv", str(plant_csv(tmp_path / "n.csv", plant(3000, seed=1))),
                         "--model", "loop")
    assert trained.returncode == 0, trained.stderr
    report = tmp_path / "cva.html"
    result = plantwatch("replay", str(config), "--csv", str(plant_csv(tmp_path / "f.csv", plant(1000, seed=3, bias_at=500))),
                        "--out", str(tmp_path / "a.jsonl"), "--report", str(report))
    assert result.returncode == 0, result.stderr
    doc = Doc(report.read_text(encoding="utf-8"))
    assert external(doc) == []
    assert "loop: T²" in doc.headings and "loop: SPE" in doc.headings
    assert any(r[0] == "loop/cva" for r in doc.tables["alarms"])
    assert [(r[0], r[1].split("/")[0]) for r in doc.tables["alarms"]] == alarm_episodes((tmp_path / "a.jsonl").read_text())
