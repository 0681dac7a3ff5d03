"""A trend read from the history runs off the agent's event loop: a running agent (loopback port
and the TLS console on the LAN) with a week of history written beforehand by the history's own
writer, and a trend of that week.

The test holds a lock on the day file the read begins with (a real SQLite lock: the agent's
reader waits for it, up to its busy timeout of 10 s), so the read is observed in progress: while
it is, the agent goes on polling the PLC (``plantwatch_batches_total`` grows) and answering
``/status`` (its ``ts`` advances); three more requests wait in line, a fifth is answered 429
``history_busy`` on both listeners alike. Once the lock goes, every request is answered 200 with
the answer the same code gives with the history read in the caller's thread (``Trends.get``)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.broker import free_port
from agent.config.loader import load
from agent.history_compress import Points
from agent.history_store import Store, day_name, day_of
from agent.passwords import add_user
from agent.trends import HISTORY_LINE, Trends
from drivers.base import BAD
from tests.conftest import config_dict
from tests.helpers import AgentProcess
from tests.modbus.server import start_server
from tests.test_console import wait_for_port
from tests.test_console_lan import PASSWORD, https, pki  # noqa: F401 - the certificates' fixture
from tests.test_operators import http, metric

WEEK = 7 * 86400


def seed(directory, names: list[str], t0: float, t1: float, step: float = 2.0) -> int:
    """R101.TI01 every ``step`` s over [t0, t1]: a daily wave, every 997th point BAD."""
    ts = np.arange(t0, t1 + step, step)
    value = 80.0 + 30.0 * np.sin(ts / 86400.0 * 2 * np.pi) + (np.arange(len(ts)) % 13) * 0.25
    quality = np.where(np.arange(len(ts)) % 997 == 0, BAD, 0).astype(np.uint8)
    store = Store(directory, names)
    try:
        return store.write(Points(np.zeros(len(ts), np.int32), ts, value, quality))
    finally:
        store.close()


@contextlib.contextmanager
def locked(config: Path, t: float) -> Iterator[None]:
    """The day file of ``t`` held under an exclusive SQLite lock (a write begun, rolled back at the end)."""
    cfg = load(config)
    lock = sqlite3.connect(cfg.history.path(cfg.agent.data_dir) / f"{day_name(day_of(t))}.db", isolation_level=None)
    try:
        lock.execute("PRAGMA locking_mode=EXCLUSIVE")
        lock.execute("BEGIN EXCLUSIVE")
        lock.execute("DELETE FROM points WHERE ms < 0")  # a write: the lock is taken and held
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def gauge(port: int, name: str) -> float:
    return float(metric(port, name + " ").split()[-1])


def wait_until(done, what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def week(tmp_path, write_config, mosquitto, pki):  # noqa: F811
    """(config, loopback port, LAN port, session cookie, CA, end of the seeded week, agent)."""
    users = tmp_path / "users"
    add_user(users, "anna", PASSWORD)
    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        port, lan = free_port(), free_port()
        data = config_dict(history={"flush_s": 0.5}, trend={"window_s": 600.0, "resolution_s": 1.0})
        data["alarm_system"] = {"api_port": port, "console_listen": f"127.0.0.1:{lan}", "console_cert_file": str(pki[1]),
                                "console_key_file": str(pki[2]), "console_users_file": str(users)}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        config = write_config(data)
        cfg = load(config)
        end = float(int(time.time()) - 60)
        assert seed(cfg.history.path(cfg.agent.data_dir), [t.name for t in cfg.tags], end - WEEK - 600, end) > 300_000
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            wait_for_port(port, agent)
            status, headers, _ = https(lan, "POST", "/login", pki[0], {"user": "anna", "password": PASSWORD},
                                       {"Origin": f"https://127.0.0.1:{lan}"})
            assert status == 200, agent.output()
            yield config, port, lan, {"Cookie": headers["set-cookie"].split(";")[0]}, pki[0], end, agent
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()


def test_a_weeks_history_is_read_while_the_loop_goes_on_and_the_answer_is_the_synchronous_one(week):
    config, port, lan, jar, ca, end, agent = week
    target = f"/trend?tag=R101.TI01&from={end - WEEK:.0f}&to={end:.0f}"
    answers: dict[str, tuple[int, dict]] = {}

    def ask(name: str, listener: str) -> threading.Thread:
        def run() -> None:
            if listener == "lan":
                status, _, doc = https(lan, "GET", target, ca, headers=jar)
            else:
                status, body = http(port, "GET", target)
                doc = json.loads(body)
            answers[name] = (status, doc)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    with locked(config, end - WEEK):
        threads = [ask("first", "port")]
        wait_until(lambda: gauge(port, "plantwatch_trend_history_reads") == 1, "the read never showed as under way")
        # the read waits on the lock in the reader's thread: the loop polls and answers meanwhile
        batches = gauge(port, "plantwatch_batches_total")
        wait_until(lambda: gauge(port, "plantwatch_batches_total") > batches, "no batch handled during the read")
        stamp = json.loads(http(port, "GET", "/status")[1])["ts"]
        wait_until(lambda: json.loads(http(port, "GET", "/status")[1])["ts"] > stamp, "/status stood still")
        assert "first" not in answers and gauge(port, "plantwatch_trend_history_reads") == 1
        threads += [ask("lan-1", "lan"), ask("lan-2", "lan"), ask("port-2", "port")]
        wait_until(lambda: gauge(port, "plantwatch_trend_history_reads") == HISTORY_LINE, "the line never filled")
        over_port = http(port, "GET", target)
        over_lan = https(lan, "GET", target, ca, headers=jar)
    for thread in threads:
        thread.join(60)
    refused = json.loads(over_port[1])
    assert (over_port[0], refused["code"]) == (429, "history_busy") and (over_lan[0], over_lan[2]) == (429, refused)
    assert refused["error"] == (f"{HISTORY_LINE} trend requests are on the history already (one reads, the others "
                                "wait their turn): try again in a moment")
    assert gauge(port, "plantwatch_trend_history_busy_total") == 2
    assert gauge(port, "plantwatch_trend_history_reads") == 0

    statuses = {name: status for name, (status, _) in answers.items()}
    assert statuses == {"first": 200, "lan-1": 200, "lan-2": 200, "port-2": 200}, (answers, agent.output())
    docs = [doc for _, doc in answers.values()]
    assert all(doc == docs[0] for doc in docs)  # the same answer on both listeners
    got = docs[0]
    assert [s["source"] for s in got["sources"]] == ["history"] and len(got["points"]) > 600
    assert got["ring_from"] > end
    # the answer of the same code reading the history in this thread (no ring here: all of it history)
    status, _, body = Trends(load(config)).get("/trend", target.partition("?")[2], time.time())
    want = json.loads(body)
    assert status == 200 and want["ring_from"] is None
    assert {**got, "ring_from": None} == want
    assert "Traceback" not in agent.output()


def test_requests_waiting_for_the_history_when_the_agent_stops_are_answered_503(week):
    config, port, lan, jar, ca, end, agent = week
    target = f"/trend?tag=R101.TI01&from={end - WEEK:.0f}&to={end:.0f}"
    answers: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: answers.append(http(port, "GET", target))) for _ in range(3)]
    with locked(config, end - WEEK):
        for thread in threads:
            thread.start()
        wait_until(lambda: gauge(port, "plantwatch_trend_history_reads") == 3, "the requests never lined up")
        agent.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(20)
    assert agent.wait() == 0, agent.output()  # once the read under way has ended in its thread
    want = {"ok": False, "code": "stopping", "error": "the agent is stopping: the history was not read"}
    assert [(status, json.loads(body)) for status, body in answers] == [(503, want)] * 3
    assert "plantwatch stopped" in agent.output() and "Traceback" not in agent.output()
