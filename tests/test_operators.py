"""Operators act on alarms of a running agent: the operator socket (the OS user is the author),
the API port (read-only; state changes with a bearer token; Host, Origin and proxies checked),
the CLI (no proxies, only the agent's socket)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
from http.client import HTTPConnection

import pytest

from agent.broker import free_port
from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.helpers import PLANT, AgentProcess, messages_of, wait_message
from tests.modbus.server import start_server

ID = "R101.TI01/limit"
PATH = f"/alarms/{ID.replace('/', '%2F')}"
TOKEN = "scada-" + "7f3c9a1e5b2d4c6f8a0e1d3b5c7a9f2e"
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def running(tmp_path, write_config, mosquitto):
    """An agent with the API port (token file) and the socket, a PLC with the temperature in H, a receiver."""
    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        data = config_dict()
        port = free_port()
        (tmp_path / "api.token").write_text(f"# name token\nscada {TOKEN}\n")
        data["alarm_system"] = {"api_port": port, "api_token_file": "api.token", "max_suppress_s": 3600.0}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 20), agent.output()
            plc.set_value(100, 170.0, type="float32")
            wait_message(receiver, ID, "active")
            wait_for_socket(tmp_path / "data" / "api.sock")
            yield config, port, receiver, agent
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()


def wait_for_socket(path, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no socket at {path}"
        time.sleep(0.05)


def plantwatch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         host: str | None = None) -> tuple[int, bytes]:
    """A raw HTTP request (http.client: no proxy, every header as given)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metric(port: int, line: str) -> str:
    status, body = http(port, "GET", "/metrics")
    assert status == 200
    return next((m for m in body.decode().splitlines() if m.startswith(line)), "")


def test_the_cli_acts_through_the_socket_and_the_os_user_is_the_author(running):
    config, port, receiver, agent = running
    listed = plantwatch("alarms", str(config))
    assert listed.returncode == 0, listed.stderr
    assert ID in listed.stdout and "UNACKED" in listed.stdout

    acked = plantwatch("ack", str(config), ID, "--user", "张工", "--comment", "现场确认")
    assert acked.returncode == 0, acked.stderr
    ack = wait_message(receiver, ID, "acked")
    ctx = ack["context"]
    assert ack["acked"] is True and ack["seq"] > messages_of(receiver, ID, "active")[0]["seq"]
    assert (ctx["user"], ctx["via"], ctx["claimed_user"], ctx["comment"]) == (ME, "socket", "张工", "现场确认")
    assert ack["message"].endswith(f"acked by {ME}: 现场确认")

    again = plantwatch("ack", str(config), ID)
    assert again.returncode == 1 and "already acknowledged" in again.stderr

    shelved = plantwatch("shelve", str(config), ID, "--for", "600")
    assert shelved.returncode == 0, shelved.stderr
    too_long = plantwatch("shelve", str(config), ID, "--for", "999999")
    assert too_long.returncode == 1 and "duration_s must be in" in too_long.stderr
    no_reason = plantwatch("suppress", str(config), ID, "--for", "600")
    assert no_reason.returncode == 1 and "suppress needs a reason" in no_reason.stderr
    no_end = plantwatch("out-of-service", str(config), ID, "--reason", "sensor swap")
    assert no_end.returncode == 1 and "out_of_service needs duration_s" in no_end.stderr
    over = plantwatch("suppress", str(config), ID, "--reason", "start-up", "--for", "7200")
    assert over.returncode == 1 and "(0, 3600]" in over.stderr
    suppressed = plantwatch("suppress", str(config), ID, "--reason", "start-up", "--for", "600")
    assert suppressed.returncode == 0, suppressed.stderr
    oos = plantwatch("out-of-service", str(config), ID, "--reason", "sensor swap", "--for", "600")
    assert oos.returncode == 0, oos.stderr
    unknown = plantwatch("ack", str(config), "R999/limit")
    assert unknown.returncode == 1 and "no alarm 'R999/limit'" in unknown.stderr
    wait_message(receiver, ID, "out_of_service")
    mine = messages_of(receiver, ID)  # the alarm's own messages, numbered in order among all of them
    assert [a["state"] for a in mine] == ["active", "acked", "shelved", "suppressed", "out_of_service"]
    assert [a["seq"] for a in mine] == sorted({a["seq"] for a in mine})
    assert [a["seq"] for a in receiver.alarms] == list(range(1, len(receiver.alarms) + 1))
    assert mine[3]["context"]["comment"] == "start-up" and "suppressed_until" in mine[3]["context"]
    assert all(a["context"]["user"] == ME for a in mine[1:])


def test_another_os_user_on_the_socket_is_recorded_and_one_outside_its_group_is_refused(tmp_path, write_config,
                                                                                        mosquitto):
    """The author is whoever the kernel says is at the other end: a process running as `daemon`
    (in api_socket_group) is recorded as daemon; `nobody` cannot connect at all."""
    import tempfile

    sock_dir = tempfile.mkdtemp(prefix="pw-op-")
    os.chmod(sock_dir, 0o755)  # others may reach the socket; the socket itself is 0660 root:daemon
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        data["alarm_system"] = {"api_port": 0, "api_socket": f"{sock_dir}/api.sock", "api_socket_group": "daemon"}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            wait_message(receiver, ID, "active")
            wait_for_socket(__import__("pathlib").Path(sock_dir) / "api.sock")
            st = os.stat(f"{sock_dir}/api.sock")
            assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o660", pwd.getpwnam("daemon").pw_gid)
            refused = as_user("nobody", config, "shelve", {"duration_s": 60})
            assert refused.startswith("ConnectionError:") and "permission denied" in refused
            applied = as_user("daemon", config, "ack", {"user": "值班长"})
            assert applied.startswith("200"), applied
            ack = wait_message(receiver, ID, "acked")
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()
            import shutil

            shutil.rmtree(sock_dir, ignore_errors=True)
    assert [a["state"] for a in messages_of(receiver, ID)] == ["active", "acked"]
    ctx = ack["context"]
    assert (ctx["user"], ctx["via"], ctx["claimed_user"]) == ("daemon", "socket", "值班长")


def as_user(user: str, config, op: str, body: dict) -> str:
    """In a child process running as ``user``: the CLI's own request over the operator socket
    (the config is read before the switch: the test's files are private to root)."""
    from agent.config import load
    from agent.operator_cli import request

    cfg = load(config)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, ask, report, leave
        try:
            os.close(r)
            entry = pwd.getpwnam(user)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            try:
                status, doc = request(cfg, "POST", f"{PATH}/{op}", body)
                out = f"{status} {json.dumps(doc)}"
            except ConnectionError as exc:
                out = f"ConnectionError: {exc}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_the_port_is_read_only_without_the_token_and_refuses_foreign_hosts_origins_and_proxies(running):
    config, port, receiver, agent = running
    ack = f"{PATH}/ack"
    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    attempts = [  # (headers, host, target, body) -> (status, error text, reason)
        ({}, None, ack, b"{}", 401, b"need Authorization: Bearer", "no_token"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, None, ack, b"{}", 401, b"not one of", "bad_token"),
        ({"Authorization": f"Basic {TOKEN}"}, None, ack, b"{}", 401, b"need Authorization", "no_token"),
        (bearer, f"evil.example:{port}", ack, b"{}", 403, b"is not this API", "host"),
        (bearer, None, ack, b"{}", 403, b"is not this API", "host"),  # no Host at all (host="")
        ({**bearer, "Origin": "http://evil.example"}, None, ack, b"{}", 403, b"is another site", "origin"),
        ({**bearer, "Origin": "null"}, None, ack, b"{}", 403, b"is another site", "origin"),
        ({**bearer, "Via": "1.1 squid"}, None, ack, b"{}", 403, b"through a proxy", "proxy"),
        ({**bearer, "X-Forwarded-For": "10.0.0.9"}, None, ack, b"{}", 403, b"through a proxy", "proxy"),
        (bearer, None, f"http://127.0.0.1:{port}{ack}", b"{}", 403, b"through a proxy", "proxy"),
        (bearer, None, ack, b'{"op": "out_of_service"}', 400, b"op: given by the URL", "body_fields"),
        (bearer, None, f"{PATH.replace('R101', 'R102')}/ack", b'{"id": "R101.TI01/limit"}', 400, b"id: given by",
         "body_fields"),
    ]
    for n, (headers, host, target, body, status, text, _) in enumerate(attempts):
        got, answer = http(port, "POST", target, body, headers, host="" if n == 4 else host)
        assert (got, text in answer) == (status, True), (n, got, answer)
    # a foreign Host or Origin is refused for reads too (DNS rebinding reads /alarms otherwise)
    assert http(port, "GET", "/alarms", host=f"rebind.example:{port}")[0] == 403
    assert http(port, "GET", "/alarms", headers={"Origin": "https://evil.example"})[0] == 403
    assert http(port, "GET", "/metrics", host=f"localhost:{port}")[0] == 200
    expected: dict[str, int] = {}
    for *_, reason in attempts:
        expected[reason] = expected.get(reason, 0) + 1
    expected["host"] += 1
    expected["origin"] += 1
    for reason, n in expected.items():
        assert metric(port, f'plantwatch_api_refused_total{{reason="{reason}"}}').endswith(f" {n}"), reason
    # nothing changed: the alarm is still unacknowledged, and only its activation was sent
    status, body = http(port, "GET", "/alarms")
    alarm = next(a for a in json.loads(body)["alarms"] if a["id"] == ID)
    assert (alarm["acked"], alarm["out_of_service"]) == (False, False)
    assert len(messages_of(receiver, ID)) == 1
    # the token works, and the author is the token's name; the typed name is only claimed
    status, body = http(port, "POST", ack, json.dumps({"user": "李工", "comment": "SCADA ack"}).encode(), bearer)
    assert status == 200, body
    ctx = wait_message(receiver, ID, "acked")["context"]
    assert (ctx["user"], ctx["via"], ctx["claimed_user"]) == ("token:scada", "token", "李工")
    log = agent.output()
    assert TOKEN not in log and "refused (bad_token)" in log and "Traceback" not in log


def test_local_api_validates_and_serves_metrics(running):
    config, port, receiver, agent = running
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, body = http(port, "POST", f"{PATH}/ack", b'{"user": 5}', bearer)
    assert status == 400 and b"user: 5 is not of type 'string'" in body
    status, body = http(port, "POST", f"{PATH}/explode", b"{}", bearer)
    assert status == 400 and b"op:" in body
    status, body = http(port, "POST", f"{PATH}/ack", b"[1]", bearer)
    assert status == 400 and b"JSON object" in body
    status, body = http(port, "GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert "plantwatch_alarms_active 1" in text
    assert "plantwatch_commands_rejected_total 2" in text
    assert 'plantwatch_device_up{device="r1-plc"} 1' in text
    assert 'plantwatch_api_up{listener="socket"} 1' in text and 'plantwatch_api_up{listener="port"} 1' in text
    status, body = http(port, "GET", "/status")
    assert status == 200 and json.loads(body)["alarms"]["active"] == 1


class RecordingProxy:
    """A listening socket standing in for a proxy: it records every connection it gets."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def test_the_cli_ignores_proxies_in_the_environment(running):
    config, port, receiver, agent = running
    proxy = RecordingProxy()
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        env = {**os.environ, "http_proxy": url, "HTTP_PROXY": url, "all_proxy": url, "ALL_PROXY": url, "no_proxy": ""}
        listed = plantwatch("alarms", str(config), env=env)
        assert listed.returncode == 0 and ID in listed.stdout, listed.stderr
        acked = plantwatch("ack", str(config), ID, env=env)
        assert acked.returncode == 0, acked.stderr
    finally:
        proxy.close()
    assert proxy.connections == 0
    # and the operator is told so, naming the variables
    assert "note: http_proxy, HTTP_PROXY, all_proxy, ALL_PROXY ignored: the agent's API is reached directly" \
        in acked.stderr


def test_the_cli_refuses_a_socket_that_is_not_the_agents(tmp_path, write_config):
    """Someone else's socket at the configured path: the CLI checks its owner and sends nothing."""
    path = tmp_path / "impostor.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.5)
    os.chown(path, 12345, 12345)
    data = config_dict()
    data["alarm_system"] = {"api_port": 0, "api_socket": str(path)}
    config = write_config(data)
    try:
        out = plantwatch("ack", str(config), ID)
        assert out.returncode == 1
        assert "is owned by uid:12345, not by the agent's user" in out.stderr and "refusing" in out.stderr
        assert "Traceback" not in out.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
        missing = plantwatch("ack", str(write_config({**data, "alarm_system": {"api_port": 0}}, "other.toml")), ID)
        assert missing.returncode == 1 and "no operator socket at" in missing.stderr
    finally:
        server.close()


def test_alarms_refuses_a_port_that_another_user_listens_on(tmp_path, write_config):
    """No socket for this user, and the loopback port held by someone else's process: the CLI
    checks who listens there and sends nothing."""
    port = free_port()
    listener = ("import socket\n"
                f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); s.settimeout(20)\n"
                "print('ready', flush=True)\n"
                "try:\n    s.accept(); print('connected', flush=True)\nexcept OSError:\n    pass\n")
    # the OS's python: another user may not run the checkout's virtualenv
    impostor = subprocess.Popen(["/usr/bin/python3", "-c", listener], stdout=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.setuid(12345), cwd="/")
    try:
        assert impostor.stdout.readline().strip() == "ready"
        data = config_dict()
        data["alarm_system"] = {"api_port": port, "api_socket": str(tmp_path / "none.sock")}
        out = plantwatch("alarms", str(write_config(data)))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert f"127.0.0.1:{port} is listened on by uid:12345, not by the agent's user" in out.stderr
        assert "refusing" in out.stderr
    finally:
        impostor.kill()
        rest, _ = impostor.communicate()
    assert "connected" not in rest  # nothing was sent to it


def test_alarm_state_survives_an_agent_restart(tmp_path, write_config, mosquitto):
    """Acknowledged before a restart, still acknowledged after it; a condition that ended
    while the agent was down is cleared once the detector had its chance to confirm it."""
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1)
        config = write_config(data)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        first = AgentProcess(config, tmp_path / "first.log").start()
        try:
            wait_message(receiver, ID, "active")
            wait_for_socket(tmp_path / "data" / "api.sock")
            assert plantwatch("ack", str(config), ID).returncode == 0
            wait_message(receiver, ID, "acked")
            assert first.signal(signal.SIGTERM) == 0

            second = AgentProcess(config, tmp_path / "second.log").start()
            assert receiver.wait(lambda r: r.plants[PLANT].online, 20), second.output()
            status, body = http_retry(port, "/alarms")
            alarm = next(a for a in json.loads(body)["alarms"] if a["id"] == ID)
            assert (alarm["active"], alarm["acked"]) == (True, True)
            assert second.signal(signal.SIGTERM) == 0

            plc.set_value(100, 120.0, type="float32")  # the condition ends while no agent runs
            third = AgentProcess(config, tmp_path / "third.log").start()
            wait_message(receiver, ID, "cleared")
            assert third.signal(signal.SIGTERM) == 0
        finally:
            for p in (first,):
                p.kill()
            sub.loop_stop()
    mine = messages_of(receiver, ID)  # the alarm's own messages (a comm alarm may come between)
    assert [(a["state"], a["acked"]) for a in mine] == [("active", False), ("acked", True), ("cleared", True)]
    assert [a["seq"] for a in mine] == sorted({a["seq"] for a in mine})  # numbered on, across the restarts
    assert mine[2]["context"]["reason"] == "not confirmed after a restart of the agent"


def http_retry(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """The API comes up a moment after the agent connects to the broker."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return http(port, "GET", path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
