"""Trends: the ring of every tag and model statistic (agent.trend_ring), the read-only JSON routes
``GET /trend`` and ``/trend/models`` of a running agent reading a simulated PLC, ranges older than
the ring read from the history, and the answers to bad input (an unknown tag or model, a range
beyond the ring without history, an ack of an alarm that has cleared): 4xx with a clear message,
never a server error."""

from __future__ import annotations

import json
import signal
import time
from urllib.parse import quote

import numpy as np
import pytest

from agent.broker import free_port
from agent.config.loader import parse
from agent.trend_ring import BYTES_PER_SLOT, Ring, ring_resolution, ring_slots
from agent.trends import Trends
from tests.conftest import config_dict
from tests.helpers import AgentProcess
from tests.modbus.server import start_server
from tests.test_console import wait_for_port
from tests.test_operators import http

TOKEN = "scada-" + "7f3c9a1e5b2d4c6f8a0e1d3b5c7a9f2e"
ID = "R101.TI01/limit"


def test_a_bucket_keeps_the_lowest_highest_and_last_value_and_old_buckets_are_emptied():
    ring = Ring(2, 6, 10.0)
    ring.add(np.array([0, 1, 0, 0]), np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 2.0]))
    ring.add(np.array([0, 0]), np.array([15.0, 41.0]), np.array([1.0, np.nan]))  # NaN is not kept
    assert ring.series(0, 0, 60).rows() == [[5.0, 2.0, 7.0, 2.0], [15.0, 1.0, 1.0, 1.0]]
    assert ring.series(1, 0, 60).rows() == [[5.0, 6.0, 6.0, 6.0]]
    assert ring.start() == 1.0
    ring.add(np.array([0]), np.array([95.0]), np.array([9.0]))  # 6 buckets on: [40, 100) is kept
    assert ring.series(0, 0, 100).rows() == [[95.0, 9.0, 9.0, 9.0]] and ring.start() == 40.0
    ring.add(np.array([1]), np.array([12.0]), np.array([3.0]))  # older than the ring: dropped
    assert len(ring.series(1, 0, 100)) == 0


def test_a_polls_batch_with_one_time_for_all_fills_the_ring_as_samples_with_their_own_times():
    # a driver's batch has one time for all its samples (a broadcast scalar, or an array of equal
    # times as SampleBatch.build makes it): the ring writes it through one bucket's row; the
    # result must be the general path's, NaNs, late samples and repeated tags included
    rng = np.random.default_rng(7)
    one, equal, each = Ring(300, 5, 10.0), Ring(300, 5, 10.0), Ring(300, 5, 10.0)
    for i in range(200):
        t = 1_000.0 + i * 3.7 - (60.0 if i % 17 == 0 else 0.0)  # now and then older than the ring
        rows = rng.integers(0, 300, 40)  # repeats among them
        values = rng.normal(100.0, 5.0, 40)
        values[rng.random(40) < 0.1] = np.nan
        shared = np.broadcast_to(np.float64(t), (40,))
        assert shared.strides == (0,)
        one.add(rows, shared, values)
        equal.add(rows, np.full(40, t), values)
        each._add_each(rows, np.full(40, t), values)  # the path of samples with times of their own
    for ring in (one, equal):
        for a, b in ((ring.low, each.low), (ring.high, each.high), (ring.last, each.last)):
            assert np.array_equal(a, b, equal_nan=True)
        assert (ring.head, ring.first) == (each.head, each.first) and np.isfinite(ring.low).sum() > 300


def test_a_batch_whose_times_differ_anywhere_goes_to_each_samples_bucket():
    ring = Ring(3, 4, 10.0)
    ts = np.array([5.0, 15.0, 5.0])  # first and last equal, the middle not
    ring.add(np.array([0, 1, 2]), ts, np.array([1.0, 2.0, 3.0]))
    assert ring.series(1, 0, 40).ts.tolist() == [15.0] and ring.series(0, 0, 40).ts.tolist() == [5.0]


def test_the_tags_ring_stays_under_its_memory_cap_by_widening_its_buckets():
    assert ring_slots(3600, 10, 1000, 32 * 2**20) == 360  # fits: the resolution asked for
    slots = ring_slots(3600, 10, 10_000, 32 * 2**20)
    assert slots * BYTES_PER_SLOT * 10_000 <= 32 * 2**20 and slots == 279
    assert ring_resolution(3600, 10, slots) == pytest.approx(12.903, abs=1e-3)
    ring = Ring(10_000, slots, ring_resolution(3600, 10, slots))
    assert ring.nbytes == 10_000 * slots * BYTES_PER_SLOT


def test_a_trend_section_with_a_bucket_wider_than_half_its_window_is_refused():
    from agent.config.schema import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse(config_dict(trend={"window_s": 600.0, "resolution_s": 400.0}))
    assert "trend.resolution_s: must be at most half of window_s (600 s), not 400" in str(exc.value)


def test_the_model_kinds_hand_over_the_statistics_of_their_last_batch_with_their_limits():
    """What the engine collects for the model trends: each tick's T2 and SPE as the model scores
    it, against the limit the family judges with; a batch without the model's ticks has none."""
    from detectors import cva_model
    from detectors.cva import CvaFamily
    from detectors.engine import Engine
    from tests.detectors.dynamic_plant import NAMES, batches, plant

    X = plant(400, seed=3)
    model = cva_model.fit(plant(3000, seed=1), NAMES, lags=3)
    engine = Engine(5, [CvaFamily.for_model(5, model, [0, 1, 2, 3], t2_factor=2.0)])
    tag, value, ts, quality = next(iter(batches(X, [0, 1, 2, 3], 1_800_000_000.0, 100)))
    engine.process(tag, value, ts, quality)
    t2, spe = engine.statistics()
    t2_want, q_want = model.score(X[:100])
    assert (t2.source, t2.name, spe.name) == ("cva", "T2", "SPE") and len(t2.ts) == 98  # the first full past: tick 3
    # the monitor scores in float32: within its precision of the float64 scoring
    assert t2.value == pytest.approx(t2_want, rel=1e-5) and spe.value == pytest.approx(q_want, rel=1e-5)
    assert t2.limit == 2.0 * model.t2_limit and spe.limit == model.q_limit
    assert np.array_equal(t2.ts, 1_800_000_000.0 + np.arange(2, 100))
    engine.process(np.array([4], dtype=np.int32), np.array([1.0]), np.array([1_800_000_200.0]), np.zeros(1, np.uint8))
    assert engine.statistics() == []  # another tag's batch: no tick of the model


def test_bad_requests_are_answered_4xx_with_a_code_and_the_reason():
    trends = Trends(parse(config_dict(history={"enabled": False})))
    now = 1_800_000_000.0
    cases = {
        "tag=R101.TI02": (404, "unknown_tag", "unknown tag 'R101.TI02' (did you mean 'R101.TI01'?)"),
        "model=reactor": (404, "unknown_model", "unknown model 'reactor' (no [[models]] configured)"),
        "seconds=-5&tag=R101.TI01": (400, "bad_range", "the range must start before it ends"),
        "from=yesterday&tag=R101.TI01": (400, "bad_range", "'yesterday' is not a time"),
        "from=2026-01-01&to=2026-03-01&tag=R101.TI01": (400, "bad_range", "a trend spans at most 7 days"),
        "seconds=60": (400, "no_series", "name a tag (?tag=NAME) or a model (?model=NAME)"),
        f"from={now - 7200}&to={now - 3700}&tag=R101.TI01": (400, "beyond_ring", "[history] is disabled"),
    }
    cases.update({q: (400, "bad_range", words) for q, words in (
        ("seconds=nan&tag=R101.TI01", "between 1970 and 2100"), ("seconds=1e400&tag=R101.TI01", "between 1970 and 2100"),
        ("from=1e15&to=1000000000000001&tag=R101.TI01", "between 1970 and 2100"),
        ("from=-5&tag=R101.TI01", "between 1970 and 2100"), ("seconds=abc&model=m", "bad time range"))})
    for query, (status, code, words) in cases.items():
        got, ctype, body = trends.get("/trend", query, now)
        doc = json.loads(body)
        assert (got, ctype, doc["ok"], doc["code"]) == (status, "application/json", False, code), query
        assert words in doc["error"], (query, doc["error"])


@pytest.fixture
def plant(tmp_path, write_config, mosquitto):
    """A running agent (API port, token), a PLC serving R101.TI01 = 120 and R101.PI01 = 0.5."""
    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        plc.set_value(102, 0.5, type="float32")
        port = free_port()
        (tmp_path / "api.token").write_text(f"scada {TOKEN}\n")
        data = config_dict(history={"enabled": False}, trend={"window_s": 600.0, "resolution_s": 1.0})
        data["alarm_system"] = {"api_port": port, "api_token_file": "api.token"}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            wait_for_port(port, agent)
            yield plc, port, agent
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()


def trend(port: int, query: str) -> tuple[int, dict]:
    status, body = http(port, "GET", f"/trend?{query}")
    return status, json.loads(body)


def wait_trend(port: int, query: str, done, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, doc = trend(port, query)
        if status == 200 and done(doc):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)


def test_a_tags_trend_holds_what_the_plc_served_with_its_alarm_limits(plant):
    plc, port, agent = plant
    doc = wait_trend(port, "tag=R101.TI01&seconds=600", lambda d: len(d["points"]) >= 2)
    assert {p[3] for p in doc["points"]} == {120.0} and doc["unit"] == "°C" and doc["resolution_s"] == 1.0
    assert doc["limits"] == {"HH": 180.0, "H": 160.0, "L": 20.0, "LL": 10.0}
    assert [s["source"] for s in doc["sources"]] == ["ring"]
    plc.set_value(100, 150.5, type="float32")
    doc = wait_trend(port, "tag=R101.TI01&seconds=600", lambda d: d["points"][-1][3] == 150.5)
    assert {p[3] for p in doc["points"]} == {120.0, 150.5}
    assert all(p[1] <= p[3] <= p[2] for p in doc["points"])  # the last value within the bucket's low..high
    status, doc = trend(port, "tag=R101.PI01&seconds=60")
    assert status == 200 and {p[3] for p in doc["points"]} == {0.5} and doc["limits"] == {}
    status, body = http(port, "GET", "/trend/models")
    assert status == 200 and json.loads(body) == {"ok": True, "models": []}


def test_bad_input_over_http_is_a_4xx_with_its_reason_never_a_server_error(plant):
    plc, port, agent = plant
    wait_trend(port, "tag=R101.TI01", lambda d: d["points"])
    status, doc = trend(port, "tag=" + quote("R101.TI0X"))
    assert (status, doc["code"]) == (404, "unknown_tag") and "did you mean 'R101.TI01'" in doc["error"]
    now = time.time()
    status, doc = trend(port, f"tag=R101.TI01&from={now - 7200:.0f}&to={now - 3600:.0f}")
    assert (status, doc["code"]) == (400, "beyond_ring"), doc
    assert "[history] is disabled" in doc["error"] and "at most the last 600 s" in doc["error"]
    status, doc = trend(port, "tag=R101.TI01&from=" + quote("2026-13-45 25:00"))
    assert (status, doc["code"]) == (400, "bad_range")
    odd = ["/trend", "/trend?tag", "/trend?&&=&", "/trend?tag=%00", "/trend?tag=%FF%FE", "/trend?tag=R101.TI01&seconds=0",
           "/trend?tag=R101.TI01&from=&to=", "/trend?model=", "/trend?tag=R101.TI01&from=2030-01-01", "/trend/x",
           "/trend?tag=" + "A" * 5000, "/trend?tag=R101.TI01&from=2026-11-29T00:00:00%2B25:00"]
    for target in odd:
        status, body = http(port, "GET", target)
        assert 400 <= status < 500 and json.loads(body)["error"], (target, status, body)
    # the last hour on an agent up for seconds: what the ring has, not an error
    status, doc = trend(port, "tag=R101.TI01&seconds=3600")
    assert status == 200 and doc["points"] and doc["ring_from"] > now - 120

    # an ack of an alarm that has cleared and been acknowledged: 409 and why
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    ack = f"/alarms/{ID.replace('/', '%2F')}/ack"
    plc.set_value(100, 170.0, type="float32")
    wait_alarm(port, lambda a: a.get(ID, {}).get("active"))
    plc.set_value(100, 120.0, type="float32")
    wait_alarm(port, lambda a: not a[ID]["active"])
    assert http(port, "POST", ack, b'{"comment": "first"}', headers)[0] == 200  # RTN_UNACK: acknowledged
    status, body = http(port, "POST", ack, b'{"comment": "second"}', headers)
    assert status == 409 and "has cleared (returned to normal) and is already acknowledged" in json.loads(body)["error"]
    assert "Traceback" not in agent.output()


def wait_alarm(port: int, done, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        alarms = {a["id"]: a for a in json.loads(http(port, "GET", "/alarms")[1])["alarms"]}
        if done(alarms):
            return alarms
        assert time.monotonic() < deadline, alarms
        time.sleep(0.1)


def test_a_range_older_than_the_ring_is_read_from_the_history(tmp_path, write_config, mosquitto):
    """A first run records 130 into the history; after a restart the ring starts afresh (140) and
    the range of the first run is answered from the history, the last minute from both."""
    with start_server() as plc:
        plc.set_value(100, 130.0, type="float32")
        port = free_port()
        data = config_dict(history={"flush_s": 0.5, "deviation": 0.01}, trend={"window_s": 600.0, "resolution_s": 1.0})
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        config = write_config(data)
        first = AgentProcess(config, tmp_path / "agent1.log").start()
        try:
            wait_for_port(port, first)
            wait_trend(port, "tag=R101.TI01&seconds=60", lambda d: len(d["points"]) >= 3)
            assert first.signal(signal.SIGTERM) == 0, first.output()
        finally:
            first.kill()
        stopped = time.time()
        plc.set_value(100, 140.0, type="float32")
        time.sleep(1.0)
        second = AgentProcess(config, tmp_path / "agent2.log").start()
        try:
            wait_for_port(port, second)
            doc = wait_trend(port, "tag=R101.TI01&seconds=60", lambda d: 140.0 in {p[3] for p in d["points"]})
            assert [s["source"] for s in doc["sources"]] == ["history", "ring"]
            assert {p[3] for p in doc["points"]} == {130.0, 140.0}
            status, doc = trend(port, f"tag=R101.TI01&from={stopped - 30:.3f}&to={stopped:.3f}")
            assert status == 200 and [s["source"] for s in doc["sources"]] == ["history"], doc
            assert {p[3] for p in doc["points"]} == {130.0}
            assert second.signal(signal.SIGTERM) == 0, second.output()
        finally:
            second.kill()
