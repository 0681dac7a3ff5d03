"""The console on the LAN: HTTPS only, every view behind a login, sessions kept by the agent.

Real TLS connections throughout (a certificate made in the test with ``cryptography``): the
config check refusing a LAN address without TLS, logins with a right and a wrong password, a
forged and an expired session, a foreign Origin, a missing CSRF token; then the running agent,
where an operator signs in in Chromium and acknowledges an alarm that reaches the broker as
``login:NAME``."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.client import HTTPSConnection
from pathlib import Path

import pytest

from agent.broker import free_port
from agent.lan import COOKIE, LanApi, tls_context
from agent.passwords import add_user, check_login, read_users
from agent.receiver import Receiver, connect
from tests.conftest import config_dict
from tests.faults.certs import CertificateAuthority
from tests.helpers import PLANT, AgentProcess, wait_message
from tests.modbus.server import start_server
from tests.test_console import shots  # noqa: F401 - fixture
from tests.webdriver import Browser

PASSWORD = "correct horse battery"
TOKEN = "scada-" + "7f3c9a1e5b2d4c6f8a0e1d3b5c7a9f2e"
ID = "R101.TI01/limit"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA, server certificate, server key) for 127.0.0.1/localhost."""
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    issued = ca.issue("console", server=True)
    return ca.path, issued.cert, issued.key


def https(port: int, method: str, path: str, ca: Path, body: dict | None = None,
          headers: dict | None = None) -> tuple[int, dict, dict]:
    """A request over a verified TLS connection: (status, headers, JSON body or {})."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc
    finally:
        conn.close()


class Served:
    """A LanApi on its own loop in a thread, answering /alarms and recording every POST it lets through."""

    def __init__(self, pki, users: Path, session_s: float, token_file: Path | None = None):
        self.posts: list[tuple[str, str, dict]] = []
        self.loop = asyncio.new_event_loop()
        get = lambda path: (200, "application/json", b'{"alarms": []}')  # noqa: E731
        self.api = LanApi("127.0.0.1", 0, tls_context(pki[1], pki[2]), get, self.post, users_file=users,
                          token_file=token_file, session_s=session_s)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.api.start(), self.loop).result(10)
        self.port = self.api.port
        self.origin = f"https://127.0.0.1:{self.port}"

    def post(self, alarm_id: str, op: str, body: dict, actor: dict) -> tuple[int, dict]:
        self.posts.append((alarm_id, op, actor))
        return 200, {"ok": True}

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served(pki, tmp_path):
    users = tmp_path / "users"
    add_user(users, "anna", PASSWORD)
    s = Served(pki, users, session_s=3600)
    yield s
    s.close()


def sign_in(s: Served, ca: Path, password: str = PASSWORD) -> tuple[int, dict, dict]:
    return https(s.port, "POST", "/login", ca, {"user": "anna", "password": password}, {"Origin": s.origin})


def test_users_file_keeps_salted_scrypt_hashes_only(tmp_path):
    users = tmp_path / "users"
    add_user(users, "anna", PASSWORD)
    add_user(users, "ben", PASSWORD)
    text = users.read_text()
    assert PASSWORD not in text and text.count("scrypt$16384$8$1$") == 2
    assert len({line.split()[1] for line in text.splitlines()}) == 2  # same password, different salts
    stored = read_users(users)
    assert check_login(stored, "anna", PASSWORD) and not check_login(stored, "anna", PASSWORD + "x")
    assert not check_login(stored, "nobody", PASSWORD)
    assert users.stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="at least 10"):
        add_user(users, "carl", "short")
    users.write_text("anna scrypt$16384$8$1$bad\n")
    with pytest.raises(ValueError, match=r"users:1: the hash of 'anna'"):
        read_users(users)


def test_a_login_yields_a_strict_cookie_and_the_views_need_it(served, pki):
    ca = pki[0]
    status, _, doc = https(served.port, "GET", "/", ca)
    assert status == 200  # the page itself carries no plant data
    for path in ("/alarms", "/status", "/metrics", "/events"):
        assert https(served.port, "GET", path, ca)[0] == 401, path
    status, _, doc = https(served.port, "GET", "/session", ca)
    assert (status, doc["mode"], doc["user"]) == (401, "session", None)

    status, headers, doc = sign_in(served, ca, "wrong password!")
    assert status == 401 and "set-cookie" not in headers and doc["error"] == "wrong user name, password or token"
    status, headers, doc = sign_in(served, ca)
    assert status == 200 and doc["user"] == "login:anna"
    cookie = headers["set-cookie"]
    flags = {f.strip().split("=")[0] for f in cookie.split(";")}
    assert {"Secure", "HttpOnly", "SameSite", "Path"} <= flags and "SameSite=Strict" in cookie
    assert "Max-Age" not in cookie and "Expires" not in cookie  # the agent keeps the expiry
    jar = {"Cookie": cookie.split(";")[0]}
    assert https(served.port, "GET", "/alarms", ca, headers=jar)[0] == 200
    status, _, session = https(served.port, "GET", "/session", ca, headers=jar)
    assert status == 200 and session["user"] == "login:anna" and session["csrf"] == doc["csrf"]


def test_no_state_change_without_session_csrf_and_own_origin(served, pki):
    ca = pki[0]
    _, headers, doc = sign_in(served, ca)
    jar, csrf, own = {"Cookie": headers["set-cookie"].split(";")[0]}, doc["csrf"], {"Origin": served.origin}
    ack = "/alarms/R101.TI01%2Flimit/ack"
    forged = {"Cookie": f"{COOKIE}=" + "A" * 43}
    attempts = [
        ({**own}, 401),  # nobody signed in
        ({**own, **forged, "X-CSRF-Token": csrf}, 401),  # a session id the agent never gave
        ({**own, **jar}, 403),  # the cookie alone (what a cross-site form would carry)
        ({**own, **jar, "X-CSRF-Token": csrf[:-1] + "x"}, 403),  # a wrong CSRF token
        ({**jar, "X-CSRF-Token": csrf}, 403),  # no Origin
        ({**jar, "X-CSRF-Token": csrf, "Origin": "https://evil.example"}, 403),  # a foreign Origin
        ({**jar, "X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{served.port}"}, 403),  # not https
        ({**jar, "X-CSRF-Token": csrf, "Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"}, 403),
    ]
    for hdrs, want in attempts:
        assert https(served.port, "POST", ack, ca, {"comment": "x"}, hdrs)[0] == want, hdrs
    assert served.posts == []
    assert https(served.port, "POST", ack, ca, {"comment": "x"}, {**own, **jar, "X-CSRF-Token": csrf})[0] == 200
    assert served.posts == [("R101.TI01/limit", "ack", {"user": "login:anna", "via": "login"})]
    # a foreign page cannot even sign in, and signing out ends the session
    status, _, _ = https(served.port, "POST", "/login", ca, {"user": "anna", "password": PASSWORD},
                         {"Origin": "https://evil.example"})
    assert status == 403
    assert https(served.port, "POST", "/logout", ca, {}, {**own, **jar, "X-CSRF-Token": csrf})[0] == 200
    assert https(served.port, "GET", "/alarms", ca, headers=jar)[0] == 401


def test_an_operator_token_signs_in_as_its_name(pki, tmp_path):
    users, tokens = tmp_path / "users", tmp_path / "api.token"
    add_user(users, "anna", PASSWORD)
    tokens.write_text(f"scada {TOKEN}\n")
    s = Served(pki, users, session_s=3600, token_file=tokens)
    try:
        own = {"Origin": s.origin}
        assert https(s.port, "POST", "/login", pki[0], {"token": TOKEN[:-1] + "0"}, own)[0] == 401
        status, headers, doc = https(s.port, "POST", "/login", pki[0], {"token": TOKEN}, own)
        assert status == 200 and doc["user"] == "token:scada"
        jar = {"Cookie": headers["set-cookie"].split(";")[0], "X-CSRF-Token": doc["csrf"], **own}
        assert https(s.port, "POST", "/alarms/A%2Flimit/shelve", pki[0], {"duration_s": 60}, jar)[0] == 200
        assert s.posts == [("A/limit", "shelve", {"user": "token:scada", "via": "login"})]
    finally:
        s.close()


def test_an_expired_session_is_no_session(pki, tmp_path):
    users = tmp_path / "users"
    add_user(users, "anna", PASSWORD)
    s = Served(pki, users, session_s=1.0)
    try:
        _, headers, doc = sign_in(s, pki[0])
        jar = {"Cookie": headers["set-cookie"].split(";")[0]}
        assert https(s.port, "GET", "/alarms", pki[0], headers=jar)[0] == 200
        deadline = time.monotonic() + 30
        while https(s.port, "GET", "/alarms", pki[0], headers=jar)[0] == 200:
            assert time.monotonic() < deadline, "the session did not expire"
            time.sleep(0.2)
        status, _, body = https(s.port, "POST", "/alarms/x/ack", pki[0], {},
                                {**jar, "X-CSRF-Token": doc["csrf"], "Origin": s.origin})
        assert status == 401 and "expired" in body["error"] and s.posts == []
        assert s.api.sessions == {}
    finally:
        s.close()


def test_repeated_wrong_passwords_close_the_login_for_a_while(served, pki):
    for _ in range(5):
        assert sign_in(served, pki[0], "wrong password!")[0] == 401
    status, _, doc = sign_in(served, pki[0])  # even the right one, for a minute
    assert status == 429 and "wait a minute" in doc["error"]


def test_plain_http_to_the_lan_console_gets_no_answer(served):
    import socket

    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /alarms HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
    assert b"alarms" not in data and not data.startswith(b"HTTP/1.1 200")


def check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, text=True,
                          timeout=60)


def test_check_refuses_a_lan_address_without_tls(write_config, tmp_path, pki):
    (tmp_path / "api.token").write_text(f"scada {TOKEN}\n")
    (tmp_path / "api.token").chmod(0o600)
    data = config_dict()
    data["alarm_system"] = {"api_token_file": "api.token", "console_listen": "0.0.0.0:8443"}
    result = check(write_config(data))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "alarm_system.console_listen" in result.stderr and "only over TLS with a login" in result.stderr
    data["alarm_system"].update(console_cert_file=str(pki[1]), console_key_file=str(pki[0]))  # a CA cert is no key
    result = check(write_config(data))
    assert result.returncode == 2 and "does not load as a TLS pair" in result.stderr
    data["alarm_system"].update(console_key_file=str(pki[2]), console_listen="192.168.1.5")
    result = check(write_config(data))
    assert result.returncode == 2 and "is not ADDRESS:PORT" in result.stderr
    data["alarm_system"].update(console_listen="0.0.0.0:8443")
    result = check(write_config(data))
    assert result.returncode == 0, result.stderr
    assert "console https://0.0.0.0:8443 (login)" in result.stdout


def test_an_operator_signs_in_over_tls_in_the_browser_and_acknowledges(tmp_path, write_config, mosquitto, pki,
                                                                       shots):  # noqa: F811
    """The running agent: the page asks for a login, refuses a wrong password, and the ack of a
    signed-in operator reaches the broker as login:anna."""
    users = tmp_path / "users"
    add_user(users, "anna", PASSWORD)
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")  # over H (160)
        data = config_dict()
        lan = free_port()
        data["alarm_system"] = {"api_port": free_port(), "console_listen": f"127.0.0.1:{lan}",
                                "console_cert_file": str(pki[1]), "console_key_file": str(pki[2]),
                                "console_users_file": str(users)}
        data["uplink"].update(url=mosquitto.url)
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        receiver = Receiver(emit=lambda line: None)
        sub = connect(receiver, mosquitto.url, PLANT)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            wait_message(receiver, ID, "active")
            with Browser(tmp_path / "browser", insecure_certs=True) as b:
                b.get(f"https://127.0.0.1:{lan}/")
                b.wait("return !document.getElementById('login').hidden")
                assert b.js("return document.getElementById('alarms').children.length") == 0
                b.click("#lang")  # English
                b.screenshot(shots / "19-login.png")
                b.type("#login-user", "anna")
                b.type("#login-password", "not the password")
                b.click("#login-go")
                b.wait("return document.getElementById('login-msg').textContent.startsWith('401')")
                b.type("#login-password", PASSWORD)
                b.click("#login-go")
                b.wait(f"return document.querySelector('#alarms tr[data-id=\"{ID}\"]')")
                assert b.js("return document.cookie") == ""  # HttpOnly: the page's scripts never see it
                b.js("fetch('/trend/models', {credentials: 'same-origin'}).then(r => window.models = r.status)")
                assert b.wait("return window.models") == 200 and b.js("return typeof window.plantwatchTrend") == "object"
                b.js(f"document.querySelector('#alarms tr[data-id=\"{ID}\"]').click()")
                b.type("#comment", "on site")
                b.click("#btn-ack")
                b.wait("return document.getElementById('action-msg').className === 'ok'")
            ack = wait_message(receiver, ID, "acked")  # the alarm's own: a comm alarm may come between
            assert (ack["state"], ack["context"]["user"], ack["context"]["via"]) == ("acked", "login:anna", "login")
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
            sub.loop_stop()
