"""The reference platform on real sockets: the provincial profile over MQTT (SM4-CBC, fixed IV,
upper-case hex, the 工贸 envelope), the HTTPS listener's answers and fault modes, the TCP and
TLS listeners with both framings and the dataId echoed, and `plantwatch receive` doing each."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.alarms import AlarmManager, TagInfo
from agent.config import load
from agent.payloads import batch_body, split_body
from agent.platform import Platform, wrong_answer
from agent.provincial import Profile
from agent.receiver import Receiver, connect
from detectors.base import ConditionChange
from tests.conftest import config_dict, to_toml
from tests.faults.certs import CertificateAuthority
from tests.helpers import GONGMAO, IV_HEX, KEY_HEX, PLANT, TCP_ENVELOPE, wrong_key

NOW = 1_800_000_000.0


def write_config(tmp_path: Path, uplink: dict | None = None, device: dict | None = None, **section) -> Path:
    """A provincial config with its key (and IV) files; ``uplink`` and ``device`` update those
    of the base config. Returns its path."""
    (tmp_path / "payload.key").write_text(KEY_HEX + "\n")
    (tmp_path / "payload.iv").write_text(IV_HEX + "\n")
    data = config_dict()
    data["uplink"].update(profile="provincial", **(uplink or {}))
    data["devices"][0].update(device or {})
    data["provincial"] = {"gateway_code": "GW-640100-01", "key_file": "payload.key", **section}
    data["tags"][0]["point"] = "640100000001-R101-TI01"
    path = tmp_path / "platform.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def gongmao(tmp_path: Path) -> tuple[Path, Profile]:
    path = write_config(tmp_path, cipher="sm4-cbc", iv_file="payload.iv", encoding="HEX", envelope=GONGMAO,
                        appid="GM-0001")
    return path, load(path).provincial


def tcp_profile(tmp_path: Path) -> tuple[Path, Profile]:
    path = write_config(tmp_path, cipher="aes-128-cbc", encoding="base64", envelope=TCP_ENVELOPE, appid="HG-0001",
                        service_id="realtime", district_code="640100")
    return path, load(path).provincial


def alarm(profile: Profile, seq: int) -> dict:
    m = AlarmManager(PLANT, [TagInfo("R101.TI01", "r1-plc", "°C", "1#反应釜温度")])
    doc = m.on_changes([ConditionChange(0, "limit", "H", True, 161.0, 160.0, NOW)])[0]
    doc["epoch"], doc["seq"] = "0123456789abcdef", seq
    return profile.alarm(doc)


# --- MQTT ---------------------------------------------------------------------------------------


def publish(port: int, items: list[tuple[str, bytes]], auth: tuple[str, str] | None = None) -> None:
    p = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    if auth:
        p.username_pw_set(*auth)
    p.connect("127.0.0.1", port)
    p.loop_start()
    for topic, payload in items:
        p.publish(topic, payload, qos=1).wait_for_publish(5)
    p.loop_stop()
    p.disconnect()


def test_mqtt_provincial_messages_decoded_deduplicated_gaps_and_presence(mosquitto, tmp_path):
    from agent import registry

    _, profile = gongmao(tmp_path)
    cfg = load(tmp_path / "platform.toml")
    lines: list[str] = []
    r = Receiver(emit=lines.append, profile=profile)
    client = connect(r, mosquitto.url, None)
    t = f"plantwatch/{PLANT}"
    try:
        publish(mosquitto.port, [
            (f"{t}/status", profile.encode(profile.status(NOW, True))),
            (f"{t}/registry", profile.encode(registry.message(profile, NOW, registry.points(cfg.tags, profile)))),
            *[(f"{t}/alarm", profile.encode(alarm(profile, seq))) for seq in (1, 2, 4, 2)],
            (f"{t}/alarm", wrong_key(profile).encode(alarm(profile, 3))),
            (f"{t}/telemetry", profile.encode(profile.data(NOW, [("R101.TI01", 20.5, "good", NOW)], late=True))),
            (f"{t}/status", profile.encode(profile.status(NOW + 1, False))),
        ])
        assert r.wait(lambda r: r.telemetry == 1 and r.plants[PLANT].online is False, 10), lines
    finally:
        client.loop_stop()
        client.disconnect()
    track = r.plants[PLANT]
    assert [a["xh"] for a in r.alarms] == [1, 2, 4]
    assert r.arrivals == [1, 2, 4, 2]
    assert track.duplicates == 1 and track.missing() == [3]
    assert r.late == 1 and len(r.registries) == 1
    assert len(r.invalid) == 1 and "padding" in r.invalid[0], r.invalid
    assert f"REGISTRY {PLANT} 2 points at 2027-01-15 16:00:00" in lines
    assert any(line.startswith(f"GAP {PLANT}: seq 3..3 missing before seq=4") for line in lines)
    assert any(line.startswith(f"ALARM {PLANT} seq=1 2027-01-15 16:00:00 640100000001-R101-TI01 active code=2 "
                               "value=161.000 °C |") for line in lines), lines
    assert [line.split()[2] for line in lines if line.startswith("STATUS")] == ["ONLINE", "OFFLINE"]


def test_a_running_agents_provincial_messages_read_by_the_receiver(mosquitto, tmp_path):
    """`plantwatch run` with SM4-CBC, the issued IV, upper-case hex and the 工贸 envelope, read
    back by the receiver with the same config: registry, status, alarm, data, then offline."""
    import signal

    from tests.helpers import AgentProcess
    from tests.modbus.server import start_server

    with start_server() as plc:
        plc.set_value(100, 120.0, type="float32")
        path = write_config(tmp_path, uplink={"url": mosquitto.url, "telemetry_interval_s": 0.5},
                            device={"url": plc.url, "interval_s": 0.1}, cipher="sm4-cbc", iv_file="payload.iv",
                            encoding="HEX", envelope=GONGMAO, appid="GM-0001")
        profile = load(path).provincial
        lines: list[str] = []
        r = Receiver(emit=lines.append, profile=profile)
        client = connect(r, mosquitto.url, PLANT)
        agent = AgentProcess(path, tmp_path / "agent.log").start()
        try:
            assert r.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online and r.registries, 20), \
                (lines, agent.output())
            plc.set_value(100, 185.0, type="float32")
            assert r.wait(lambda r: r.alarms and r.telemetry, 20), (lines, agent.output())
            assert agent.signal(signal.SIGTERM) == 0
            assert r.wait(lambda r: r.plants[PLANT].online is False, 10), lines
        finally:
            agent.kill()
            client.loop_stop()
            client.disconnect()
    assert r.invalid == []
    assert r.alarms[0]["xh"] == 1 and r.alarms[0]["cdbm"] == "640100000001-R101-TI01"
    assert r.plants[PLANT].missing() == []
    assert any(line.startswith(f"REGISTRY {PLANT} 2 points") for line in lines)


def test_receive_cli_decodes_the_profile_with_the_brokers_user_and_password_file(tmp_path):
    from agent.broker import Mosquitto, free_port

    path, profile = gongmao(tmp_path)
    passwd, secret = tmp_path / "mosquitto.passwd", "pw-platform-7d1c"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "platform", secret], check=True, capture_output=True)
    (tmp_path / "platform.pw").write_text(secret + "\n")
    port = free_port()
    broker = Mosquitto(port=port, extra=f"listener {port} 127.0.0.1\npassword_file {passwd}\nallow_anonymous false\n",
                       workdir=tmp_path / "mosquitto").start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "receive", "--broker", broker.url, "--config", str(path),
             "--username", "platform", "--password-file", str(tmp_path / "platform.pw"),
             "--strict", "--seconds", "20", "--count", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = proc.stdout.readline()
        assert first.startswith("receiving from"), first + proc.stdout.read()
        time.sleep(0.3)
        publish(port, [(f"plantwatch/{PLANT}/alarm", profile.encode(alarm(profile, s))) for s in (1, 2, 4)],
                auth=("platform", secret))
        output, _ = proc.communicate(timeout=30)
    finally:
        broker.close()
    assert proc.returncode == 1, output  # seq 3 is missing
    assert f"ALARM {PLANT} seq=4 2027-01-15 16:00:00" in output
    assert "MISSING [3]" in output
    assert secret not in output


# --- HTTP -----------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    return ca, ca.issue("platform", server=True)


def post(platform: Platform, body: bytes, ctx: ssl.SSLContext | None, path: str = "/api/push",
         timeout: float = 5.0) -> tuple[int, dict]:
    conn = (http.client.HTTPSConnection("127.0.0.1", platform.port, context=ctx, timeout=timeout) if ctx
            else http.client.HTTPConnection("127.0.0.1", platform.port, timeout=timeout))
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_https_platform_answers_success_errors_and_stall(tmp_path, pki):
    ca, server = pki
    _, profile = gongmao(tmp_path)
    lines: list[str] = []
    r = Receiver(emit=lines.append, profile=profile)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ok = {"code": "200", "msg": "ok"}
    with Platform(r, "https://127.0.0.1:0/api/push", cert_file=str(server.cert), key_file=str(server.key)) as p:
        assert p.url == f"https://127.0.0.1:{p.port}/api/push"
        assert post(p, profile.encode(alarm(profile, 1)), ctx) == (200, ok)
        batch = b"[" + b",".join(profile.encode(alarm(profile, s)) for s in (2, 5)) + b"]"
        assert post(p, batch, ctx) == (200, ok)
        assert post(p, profile.encode(alarm(profile, 2)), ctx) == (200, ok)  # a resend: taken, not booked twice
        p.mode = "error:503"
        assert post(p, profile.encode(alarm(profile, 3)), ctx) == (503, {"code": "503", "msg": "error"})
        p.mode = "error:400"
        assert post(p, profile.encode(alarm(profile, 3)), ctx)[0] == 400
        p.mode = "wrong"
        status, doc = post(p, profile.encode(alarm(profile, 3)), ctx)
        assert status == 200 and doc["code"] != "200"
        assert r.plants[PLANT].missing() == [3, 4]  # no fault mode took seq 3
        p.mode = "stall"
        with pytest.raises(TimeoutError):
            post(p, profile.encode(alarm(profile, 3)), ctx, timeout=0.5)
        assert p.stalled == 1
        p.mode = "ok"
        assert post(p, profile.encode(alarm(profile, 3)), ctx) == (200, ok)
        status, doc = post(p, wrong_key(profile).encode(alarm(profile, 4)), ctx)
        assert status == 400 and doc["code"] == "400" and "padding" in doc["msg"]
        assert post(p, profile.encode(alarm(profile, 4)), ctx, path="/other")[0] == 404
        assert (p.requests, p.taken, p.refused) == (9, 5, 3)  # the 404 is not a platform request
    track = r.plants[PLANT]
    assert [a["xh"] for a in r.alarms] == [1, 2, 5, 3]
    assert track.duplicates == 1 and track.missing() == [4]
    assert len(r.invalid) == 1 and r.invalid[0].startswith("https POST: payload:")
    assert any(line.startswith(f"late {PLANT} seq=3 fills a gap") for line in lines)


def test_http_platform_restarts_on_its_port_and_drops_connections_when_closed(tmp_path):
    _, profile = gongmao(tmp_path)
    r = Receiver(emit=lambda line: None, profile=profile)
    p = Platform(r, "http://127.0.0.1:0/push").start()
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    conn.request("POST", "/push", body=profile.encode(alarm(profile, 1)))
    assert conn.getresponse().read() == b'{"code": "200", "msg": "ok"}'
    p.close()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):  # the kept-alive connection is gone
        conn.request("POST", "/push", body=profile.encode(alarm(profile, 2)))
        conn.getresponse()
    conn.close()
    p.start()
    assert post(p, profile.encode(alarm(profile, 2)), None, path="/push")[0] == 200
    p.close()
    assert [a["xh"] for a in r.alarms] == [1, 2]


def test_a_body_is_one_message_or_a_json_array_of_them():
    assert split_body(b'{"appid":"A","data":"00"}') == [b'{"appid":"A","data":"00"}']
    assert split_body(b"76D39D0D") == [b"76D39D0D"]
    assert split_body(b'[{"appid":"A","data":"00"},"76D3"]') == [b'{"appid":"A","data":"00"}', b"76D3"]
    # the HTTP transport's batch is read back as the very messages it was made of
    sent = [b'{"appid":"A","data":"0A"}', b'{"b": [1, 2.50, "\xe5\x8f\x8d"]}', b"76D39D0D", b"dGVzdA=="]
    assert split_body(batch_body(sent)) == sent
    assert split_body(batch_body(sent[:1])) == sent[:1]
    assert wrong_answer({"code": "200", "msg": "ok"})["code"] != "200"
    assert wrong_answer({"status": "500"})["status"] != "500"


# --- TCP ------------------------------------------------------------------------------------------


class FramedClient:
    def __init__(self, sock: socket.socket, framing: str):
        self.sock, self.framing, self.buf = sock, framing, b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(data)) + data if self.framing == "length" else data + b"\n")

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def answer(self) -> dict:
        if self.framing == "length":
            self._need(4)
            (size,) = struct.unpack(">I", self.buf[:4])
            self._need(4 + size)
            frame, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
        else:
            while b"\n" not in self.buf:
                self._need(len(self.buf) + 1)
            frame, _, self.buf = self.buf.partition(b"\n")
        return json.loads(frame)


@pytest.mark.parametrize(("scheme", "framing"), [("tcp", "delimiter"), ("tcp", "length"), ("tls", "length")])
def test_tcp_platform_echoes_the_data_id_on_a_persistent_connection(tmp_path, pki, scheme, framing):
    ca, server = pki
    _, profile = tcp_profile(tmp_path)
    r = Receiver(emit=lambda line: None, profile=profile)
    with Platform(r, f"{scheme}://127.0.0.1:0", framing=framing, cert_file=str(server.cert),
                  key_file=str(server.key)) as p:
        sock = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        if scheme == "tls":
            sock = ssl.create_default_context(cafile=str(ca.path)).wrap_socket(sock, server_hostname="127.0.0.1")
        c = FramedClient(sock, framing)
        ids = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(8)]
        for seq in (1, 2, 2):
            c.send(profile.encode(alarm(profile, seq), message_id=ids[seq]))
        assert [c.answer() for _ in range(3)] == [{"dataId": ids[s], "code": "200", "msg": "ok"} for s in (1, 2, 2)]
        c.send(wrong_key(profile).encode(alarm(profile, 3), message_id=ids[3]))
        bad = c.answer()
        assert bad["dataId"] == ids[3] and bad["code"] == "400" and "padding" in bad["msg"]
        p.mode = "error:503"
        c.send(profile.encode(alarm(profile, 3), message_id=ids[4]))
        assert c.answer() == {"dataId": ids[4], "code": "503", "msg": "error"}
        p.mode = "wrong"
        c.send(profile.encode(alarm(profile, 3), message_id=ids[5]))
        answer = c.answer()
        assert answer["dataId"] == ids[5] and answer["code"] != "200"
        p.mode = "stall"
        c.send(profile.encode(alarm(profile, 3), message_id=ids[6]))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.answer()
        assert p.stalled == 1
        sock.close()
    assert [a["xh"] for a in r.alarms] == [1, 2]
    assert r.plants[PLANT].duplicates == 1
    assert len(r.invalid) == 1 and r.invalid[0].startswith(f"{scheme} frame: payload:")
    assert (p.requests, p.taken, p.refused) == (7, 3, 2)


def test_receive_cli_listens_as_http_and_tcp_platform(tmp_path):
    path, profile = tcp_profile(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "receive", "--config", str(path), "--listen", "http://127.0.0.1:0/push",
         "--listen", "tcp://127.0.0.1:0", "--framing", "length", "--success", '{"code":"0","msg":"成功"}',
         "--seconds", "20", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls = [proc.stdout.readline().split()[2] for _ in range(2)]
    assert urls[0].startswith("http://127.0.0.1:") and urls[1].startswith("tcp://127.0.0.1:"), urls
    http_port, tcp_port = (int(u.split(":")[2].split("/")[0]) for u in urls)
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
    conn.request("POST", "/push", body=profile.encode(alarm(profile, 1)))
    assert json.loads(conn.getresponse().read()) == {"code": "0", "msg": "成功"}
    conn.close()
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as sock:
        c = FramedClient(sock, "length")
        c.send(profile.encode(alarm(profile, 3), message_id="d-3"))
        assert c.answer() == {"dataId": "d-3", "code": "0", "msg": "成功"}
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"GAP {PLANT}: seq 2..2 missing before seq=3" in output
    assert f"plant {PLANT}: 2 alarms, seq 1..3, MISSING [2]" in output


def test_receive_cli_refuses_a_listener_without_the_profile_and_a_bad_answer_mode(tmp_path):
    path, _ = tcp_profile(tmp_path)
    for extra in (["--listen", "tcp://127.0.0.1:0"], ["--config", str(path), "--listen", "tcp://127.0.0.1:0",
                                                       "--answer", "error:99"], []):
        done = subprocess.run([sys.executable, "-m", "agent.cli", "receive", *extra], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("receive: "), done.stderr
