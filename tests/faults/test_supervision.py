"""Supervision and the systemd watchdog, with the agent run as systemd runs it.

A driver that raises out of ``batches()`` puts its device in comm failure (the ``comm`` alarm
reaches the platform), is restarted after a backoff and reads again (the alarm clears). An
event loop blocked by a driver stops the ``WATCHDOG=1`` pings until it runs again: the test is
the service manager, listening on a datagram socket of its own as ``NOTIFY_SOCKET``.

The misbehaving drivers (tests/faults/faulty_drivers.py) are registered for the agent's child
process only, by an entry point in a dist-info put on its PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

from agent.config import UplinkSection
from agent.receiver import Receiver, connect
from agent.supervise import Notifier
from agent.uplink import Uplink
from tests.conftest import config_dict
from tests.faults.helpers import Burst, status_doc, wait_for
from tests.helpers import PLANT, AgentProcess

ROOT = Path(__file__).resolve().parents[2]


def plugin_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The agent's environment with the faulty drivers registered."""
    site = tmp_path / "plugins"
    dist = site / "pw_faulty-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pw-faulty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[plantwatch.drivers]\ncrashy = tests.faults.faulty_drivers:Crashy\n"
                                           "blocking = tests.faults.faulty_drivers:Blocking\n")
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", **extra}


def faulty_config(broker_url: str, driver: str, **device) -> dict:
    data = config_dict()
    data["uplink"].update(url=broker_url, heartbeat_s=2.0, backoff_initial_s=0.1, backoff_max_s=1.0)
    data["devices"] = [{"name": driver, "driver": driver, "url": f"{driver}://local", "interval_s": 0.1, **device}]
    data["tags"] = [{"name": "X.PI01", "device": driver, "address": "0", "unit": "MPa"}]
    return data


def test_driver_raising_in_batches_gives_a_comm_alarm_and_recovers(tmp_path, mosquitto, write_config):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    config = write_config(faulty_config(mosquitto.url, "crashy"))
    agent = AgentProcess(config, tmp_path / "agent.log", env=plugin_env(tmp_path)).start()
    try:
        comm = lambda r: [a for a in r.alarms if a["id"] == "crashy/comm"]  # noqa: E731
        assert receiver.wait(lambda r: len(comm(r)) >= 2, 30), agent.output()
        assert agent.signal(signal.SIGTERM) == 0, agent.output()
    finally:
        agent.kill()
        sub.loop_stop()
    raised, cleared = comm(receiver)[:2]
    assert (raised["state"], raised["kind"], raised["active"]) == ("active", "comm", True)
    assert raised["context"]["error"] == \
        "driver failed, restarting: RuntimeError: driver bug: index out of range in the read plan"
    assert (cleared["state"], cleared["active"]) == ("cleared", False)  # the restarted driver reads again
    out = agent.output()
    assert "device:crashy failed (RuntimeError: driver bug" in out and "Traceback" in out
    assert "device:crashy: restarting" in out
    assert receiver.status[PLANT]["restarts"] == {"device:crashy": 1}
    assert receiver.invalid == []


class NotifyListener(threading.Thread):
    """The service manager's end of NOTIFY_SOCKET: every datagram, in arrival order."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.done.set()
        self.join(5)
        self.sock.close()


def test_blocked_event_loop_stops_the_watchdog_pings(tmp_path, mosquitto, write_config):
    listener = NotifyListener(tmp_path / "notify.sock")
    listener.start()
    env = plugin_env(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000")
    config = write_config(faulty_config(mosquitto.url, "blocking", block_s=2.0))
    agent = AgentProcess(config, tmp_path / "agent.log", env=env).start()
    pings_after = lambda: listener.messages[listener.messages.index("X-TEST=block-end"):].count("WATCHDOG=1")  # noqa: E731
    try:
        assert wait_for(lambda: "X-TEST=block-end" in listener.messages and pings_after() >= 3, 30), \
            (listener.messages, agent.output())
        assert agent.signal(signal.SIGTERM) == 0, agent.output()
        assert wait_for(lambda: "STOPPING=1" in listener.messages, 5), listener.messages
    finally:
        agent.kill()
        listener.close()
    got = listener.messages
    assert got[0].startswith("READY=1\nSTATUS=running: 1 devices"), got
    start, end, stopping = got.index("X-TEST=block-start"), got.index("X-TEST=block-end"), got.index("STOPPING=1")
    assert got[1:start].count("WATCHDOG=1") >= 1, got  # pinging while the loop ran
    assert got[start + 1:end] == [], got  # not one ping while it was blocked
    assert got[end + 1:stopping].count("WATCHDOG=1") >= 3, got  # and again once it runs
    assert set(got[1:]) <= {"WATCHDOG=1", "X-TEST=block-start", "X-TEST=block-end", "STOPPING=1"}, got


def test_uplink_thread_that_raises_is_reported_and_restarted(tmp_path, mosquitto):
    """An exception out of the uplink's thread (here from the status callback, as a bad
    certificate or a password file that is not UTF-8 would from the client's set-up) is reported
    (the agent raises the ``gateway`` alarm) and the thread starts again: alarms still go out."""
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=5, batch=5, pause=0.0).run()
    calls = []

    def status(online: bool) -> dict:
        calls.append(online)
        if len(calls) == 1:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return status_doc(online)

    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    faults: list[tuple[str, BaseException | None]] = []
    up = Uplink(UplinkSection(url=mosquitto.url, heartbeat_s=5.0), PLANT, path, status)
    up.on_fault = lambda name, exc: faults.append((name, exc))
    up.start()
    try:
        assert receiver.wait(lambda r: len(r.alarms) >= 5, 20), receiver.summary()
    finally:
        up.stop(2.0)
        sub.loop_stop()
    assert [(name, type(exc)) for name, exc in faults] == [("uplink default", UnicodeDecodeError)]
    assert [a["seq"] for a in receiver.alarms] == [1, 2, 3, 4, 5]


def test_notify_socket_in_the_abstract_namespace_and_a_watchdog_for_another_pid():
    """systemd may name an abstract socket (``@name``); WATCHDOG_PID of another process means the
    watchdog is not this one's to ping."""
    name = f"plantwatch-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_s == 2.0
        notifier.ready("up")
        notifier.stopping()
        assert [sock.recv(100), sock.recv(100)] == [b"READY=1\nSTATUS=up", b"STOPPING=1"]
        notifier.close()
    other = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None
    assert Notifier({}).address == "" and Notifier({}).watchdog_s is None
