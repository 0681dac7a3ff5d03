"""The trend view in a real browser (headless Chromium, tests/webdriver.py) against a running agent
reading a simulated PLC: a tag's trend opened from the tag table and from an alarm row shows dots
at the values the PLC served and the alarm limits as bands; a model's T² and SPE against their
limits; bad input (an unknown tag, a range beyond the ring without history, an ack of an alarm
that has cleared) gives a clear message in the page. Screenshots go where tests/test_console.py
puts its own (CONSOLE_ARTEFACTS, else the test's tmp dir)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from agent.broker import free_port
from detectors.pca_model import PcaModel, fit
from tests.conftest import config_dict
from tests.helpers import AgentProcess
from tests.modbus.server import start_server
from tests.test_console import shots, wait_for_port  # noqa: F401 - the screenshots' fixture
from tests.test_operators import http
from tests.test_trends import TOKEN, plant, wait_alarm, wait_trend  # noqa: F401 - the running plant
from tests.webdriver import Browser

ROW = '#alarms tr[data-id="{}"]'
DOTS = "return [...document.querySelectorAll('#trend-charts {} circle')].map(c => Number(c.dataset.v))"
#: the same, as an expression to go on with
VALUES = DOTS.removeprefix("return ")
LIMITS = "return [...document.querySelectorAll('#trend-charts line.limit')].map(l => [l.dataset.level, Number(l.dataset.v)])"


def open_console(b: Browser, port: int) -> None:
    b.get(f"http://127.0.0.1:{port}/")
    b.wait("return document.getElementById('conn').className === 'ok'")
    b.click("#lang")  # English: the messages the tests read


def test_a_tags_trend_from_the_tag_table_and_from_an_alarm_shows_what_the_plc_served(plant, shots, tmp_path):  # noqa: F811
    plc, port, agent = plant
    with Browser(tmp_path / "browser") as b:
        open_console(b, port)
        b.click('nav button[data-view="tags"]')
        b.wait("return document.querySelector('#tag-rows .tagrow[data-tag=\"R101.TI01\"] .value')?.textContent === '120'")
        plc.set_value(100, 150.5, type="float32")
        b.wait("return document.querySelector('#tag-rows .tagrow[data-tag=\"R101.TI01\"] .value').textContent === '150.5'")
        b.click('#tag-rows .tagrow[data-tag="R101.TI01"]')
        b.wait("return !document.getElementById('view-trend').hidden")
        b.wait(DOTS.format("") + ".includes(150.5)")
        assert set(b.js(DOTS.format(""))) == {120.0, 150.5}  # nothing the PLC did not serve
        assert sorted(b.js(LIMITS)) == [["H", 160.0], ["HH", 180.0], ["L", 20.0], ["LL", 10.0]]
        assert b.js("return document.querySelectorAll('#trend-charts rect.band').length") == 4
        # the page draws what the route answers: one dot per bucket, at its last value
        route = json.loads(http(port, "GET", "/trend?tag=R101.TI01&seconds=3600")[1])
        drawn = b.js("return window.plantwatchTrend.state.doc.points")
        assert [p[3] for p in drawn] == b.js(DOTS.format("")) and drawn == route["points"][: len(drawn)]
        assert "R101.TI01" in b.text("#trend-info") and "°C" in b.text("#trend-info")
        b.screenshot(shots / "10-trend-tag.png")

        # a bucket that ended at 150.5 (the open one may yet end at 170, one second later)
        wait_trend(port, "tag=R101.TI01&seconds=600", lambda d: [p[3] for p in d["points"]].count(150.5) >= 2)
        plc.set_value(100, 170.0, type="float32")  # over H: an alarm, whose row opens the trend
        b.click('nav button[data-view="alarms"]')
        row = ROW.format("R101.TI01/limit")
        b.wait(f"return document.querySelector('{row}')?.dataset.state === 'UNACK_ACTIVE'")
        b.click(f"{row} .trend-btn")
        b.wait("return !document.getElementById('view-trend').hidden && " + VALUES.format("") + ".includes(170)")
        assert set(b.js(DOTS.format(""))) == {120.0, 150.5, 170.0}
        b.screenshot(shots / "11-trend-from-alarm.png")


def test_bad_input_gives_a_clear_message_in_the_page(plant, shots, tmp_path):  # noqa: F811
    plc, port, agent = plant
    msg = "return document.getElementById('trend-msg')"
    with Browser(tmp_path / "browser") as b:
        open_console(b, port)
        b.click('nav button[data-view="trend"]')
        b.type("#trend-tag", "R101.TI0X")
        b.click("#trend-show")
        b.wait(f"{msg}.dataset.code === 'unknown_tag'")
        assert b.text("#trend-msg") == "404 unknown tag: unknown tag 'R101.TI0X' (did you mean 'R101.TI01'?)"
        assert b.js(f"{msg}.className") == "err" and b.js("return document.querySelector('#trend-charts svg')") is None
        b.screenshot(shots / "12-trend-unknown-tag.png")

        b.type("#trend-tag", "R101.TI01")
        b.type("#trend-from", "2020-01-01 08:00")
        b.type("#trend-to", "2020-01-01 09:00")
        b.click("#trend-show")
        b.wait(f"{msg}.dataset.code === 'beyond_ring'")
        text = b.text("#trend-msg")
        assert text.startswith("400 beyond the in-memory trend, and no history is kept: the range ends at 2020-01-01T01:00:00")
        assert "[history] is disabled" in text
        b.click("#lang")
        b.click("#trend-show")
        b.wait(f"{msg}.textContent.startsWith('400 超出内存趋势范围')")
        b.screenshot(shots / "13-trend-beyond-ring-zh.png")
        b.click("#lang")

        # an alarm that cleared and that another operator acknowledged meanwhile
        plc.set_value(100, 170.0, type="float32")
        wait_alarm(port, lambda a: a.get("R101.TI01/limit", {}).get("active"))
        plc.set_value(100, 120.0, type="float32")
        wait_alarm(port, lambda a: not a["R101.TI01/limit"]["active"])
        b.click('nav button[data-view="alarms"]')
        row = ROW.format("R101.TI01/limit")
        b.wait(f"return document.querySelector('{row}')?.dataset.state === 'RTN_UNACK'")
        b.js(f"document.querySelector('{row}').click()")
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        assert http(port, "POST", "/alarms/R101.TI01%2Flimit/ack", b'{"comment": "elsewhere"}', headers)[0] == 200
        b.type("#token", TOKEN)
        b.click("#token-save")
        b.click("#btn-ack")
        b.wait("return document.getElementById('action-msg').className === 'err'")
        assert b.text("#action-msg") == ("409: R101.TI01/limit has cleared (returned to normal) and is already "
                                         "acknowledged: nothing to acknowledge")
        b.screenshot(shots / "14-ack-of-a-cleared-alarm.png")
        # a trend button only where there is a trend: the tag's alarm, not the agent's own (outbox/gateway)
        assert b.js("return [...document.querySelectorAll('#alarms tr')].filter(r => r.querySelector('.trend-btn'))"
                    ".map(r => r.dataset.id)") == ["R101.TI01/limit"]
    assert "Traceback" not in agent.output()


@pytest.fixture
def model_plant(tmp_path, write_config, mosquitto):
    """A running agent watching a PCA model of R101.TI01 and R101.PI01 (PI01 follows TI01), the PLC
    serving a normal operating point."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=2000)
    X = np.column_stack([120 + 5 * base + 0.3 * rng.normal(size=2000), 0.5 + 0.02 * base + 0.002 * rng.normal(size=2000)])
    (tmp_path / "data").mkdir()
    fit(X, ["R101.TI01", "R101.PI01"]).save(tmp_path / "data" / "m.npz")
    model = PcaModel.load(tmp_path / "data" / "m.npz")
    with start_server() as plc:
        plc.set_value(100, 121.0, type="float32")
        plc.set_value(102, 0.504, type="float32")
        port = free_port()
        data = config_dict(history={"enabled": False}, trend={"window_s": 600.0, "resolution_s": 1.0},
                           # the centre of the training rows (no moving centre): the statistics of the
                           # constant operating point are then constant, model.score's
                           models=[{"name": "reactor-pca", "kind": "pca", "tags": ["R101.TI01", "R101.PI01"],
                                    "file": "m.npz", "refit": "none"}])
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            wait_for_port(port, agent)
            yield plc, port, agent, model
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()


def test_a_models_statistics_against_their_limits(model_plant, shots, tmp_path):  # noqa: F811
    plc, port, agent, model = model_plant
    t2, spe = model.score(np.array([[np.float32(121.0), np.float32(0.504)]], dtype=np.float64))
    doc = wait_trend(port, "model=reactor-pca&seconds=600", lambda d: len(d["statistics"].get("SPE", {}).get("points", [])) >= 2)
    assert set(doc["statistics"]) == {"T2", "SPE"} and doc["kind"] == "pca"
    assert [p[3] for p in doc["statistics"]["T2"]["points"]] == pytest.approx([float(t2[0])] * len(
        doc["statistics"]["T2"]["points"]), rel=1e-6)
    assert [p[3] for p in doc["statistics"]["SPE"]["points"]] == pytest.approx([float(spe[0])] * len(
        doc["statistics"]["SPE"]["points"]), rel=1e-5, abs=1e-9)
    assert [c for _, c in doc["statistics"]["T2"]["limit"]] == pytest.approx([model.t2_limit] * len(
        doc["statistics"]["T2"]["limit"]), rel=1e-6)
    assert json.loads(http(port, "GET", "/trend/models")[1])["models"] == [
        {"name": "reactor-pca", "kind": "pca", "tags": ["R101.TI01", "R101.PI01"]}]
    with Browser(tmp_path / "browser") as b:
        open_console(b, port)
        plc.set_value(102, 0.40, type="float32")  # PI01 no longer follows TI01: SPE over its limit
        b.wait("return document.querySelector('" + ROW.format("reactor-pca/pca") + "')")
        b.click(ROW.format("reactor-pca/pca") + " .trend-btn")
        b.wait("return document.querySelectorAll('#trend-charts svg.trend').length === 2")
        titles = b.js("return [...document.querySelectorAll('#trend-charts svg.trend')].map(s => s.dataset.title)")
        assert titles == ["T²", "SPE"]
        spe_svg = "svg[data-title=\"SPE\"]"
        limit = b.js(f"return Number(document.querySelector('#trend-charts {spe_svg} polyline.limit').dataset.v)")
        assert limit == pytest.approx(model.spe_limit, rel=1e-6)
        b.wait(DOTS.format(spe_svg) + f".some(v => v > {limit})")
        assert b.js(DOTS.format(spe_svg))[0] < limit  # before the PLC moved: under the limit
        b.screenshot(shots / "15-trend-model.png")
