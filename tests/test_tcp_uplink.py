"""The TCP uplink against the reference platform on real sockets: ordered delivery across a
platform outage and restart in both framings, TLS with a private CA and an untrusted
certificate refused, a platform that stalls, error answers retried, a wrong key dead-lettered
(never marked sent), answers for another dataId skipped, the heartbeat, and two uplinks (MQTT to
the park, TCP to the province) with the province down."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace

import pytest

from agent.config import parse
from agent.outbox import ALARM, Outbox
from agent.platform import Platform
from agent.receiver import Receiver, connect
from agent.runtime import Agent
from agent.uplinks import Uplinks, build
from tests.conftest import config_dict
from tests.faults.certs import CertificateAuthority
from tests.faults.helpers import PLANT, Burst, status_doc, wait_for
from tests.helpers import KEY_HEX, TCP_ENVELOPE, run_agent_until, wrong_key


def provincial_config(tmp_path, uplinks: list[dict] | None = None, device_url: str | None = None, **uplink):
    """A config whose uplink (or ``uplinks``) speaks the TCP envelope with AES-128-CBC."""
    (tmp_path / "payload.key").write_text(KEY_HEX + "\n")
    data = config_dict()
    if device_url:
        data["devices"][0]["url"] = device_url
    fast = {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "timeout_s": 1.0}
    if uplinks is None:
        data["uplink"] = {"url": "tcp://127.0.0.1:1", "profile": "provincial", **fast, **uplink}
    else:
        data.pop("uplink")
        data["uplinks"] = [{**fast, **u} for u in uplinks]
    data["provincial"] = {"gateway_code": "GW-640100-01", "key_file": "payload.key", "cipher": "aes-128-cbc",
                          "encoding": "base64", "envelope": TCP_ENVELOPE, "appid": "HG-0001",
                          "service_id": "realtime", "district_code": "640100"}
    return parse(data, base=tmp_path)


def platform_for(cfg, scheme: str = "tcp", **kw) -> tuple[Platform, Receiver]:
    receiver = Receiver(emit=lambda line: None, profile=cfg.provincial)
    return Platform(receiver, f"{scheme}://127.0.0.1:0", **kw).start(), receiver


def seqs(cfg, receiver: Receiver) -> list[int]:
    """The alarm seqs the platform took, first arrivals in order."""
    return [int(a[cfg.provincial.fields["seq"]]) for a in receiver.alarms]


def start(cfg, u, path, refused=None):
    up = build(cfg, u, path, status_doc, on_refused=refused)
    up.start()
    return up


@pytest.mark.parametrize("framing", ["delimiter", "length"])
def test_alarms_reach_the_platform_in_seq_order_across_an_outage_and_restart(tmp_path, framing):
    cfg = provincial_config(tmp_path, framing=framing)
    platform, r = platform_for(cfg, framing=framing)
    u = replace(cfg.uplink, url=platform.url)
    path = tmp_path / "outbox.db"
    up = start(cfg, u, path)
    burst = Burst(path, up.wake, total=300, batch=20, pause=0.01)
    burst.start()
    try:
        assert r.wait(lambda r: len(r.alarms) >= 60, 30)
        platform.close()  # the platform goes away mid-burst: connections dropped, then refused
        assert wait_for(lambda: not up.connected.is_set(), 10)
        platform.start()  # on the same port
        burst.join(60)
        assert burst.error is None
        assert r.wait(lambda r: len(r.alarms) >= 300, 60), r.summary()
    finally:
        up.stop(2.0)
        platform.close()
    assert seqs(cfg, r) == list(range(1, 301))  # none lost, first arrivals in order
    assert r.plants[PLANT].missing() == [] and r.invalid == []
    assert Outbox(path).depth() == {"alarm": 0, "telemetry": 0, "status": 0}
    assert up.connect_failures >= 1 and up.dead_letters == 0


def test_tls_with_a_private_ca_delivers_and_an_untrusted_certificate_is_refused(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("platform", server=True)
    other = CertificateAuthority(tmp_path / "other", name="someone else")
    cfg = provincial_config(tmp_path, url="tls://127.0.0.1:1", ca_file=str(other.path))
    platform, r = platform_for(cfg, "tls", framing="length", cert_file=str(server.cert), key_file=str(server.key))
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=5, batch=5, pause=0.0).run()
    untrusted = start(cfg, replace(cfg.uplink, url=platform.url, framing="length"), path)
    try:
        assert wait_for(lambda: untrusted.connect_failures >= 2, 10)
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.last_error
    finally:
        untrusted.stop(0.5)
    assert platform.requests == 0 and Outbox(path).depth()["alarm"] == 5  # not one message reached it
    trusted = start(cfg, replace(cfg.uplink, url=platform.url, framing="length", ca_file=ca.path), path)
    try:
        assert r.wait(lambda r: len(r.alarms) >= 5, 20)
    finally:
        trusted.stop(2.0)
        platform.close()
    assert seqs(cfg, r) == [1, 2, 3, 4, 5]


def test_a_stalled_platform_marks_nothing_sent_and_the_rows_go_when_it_answers_again(tmp_path):
    cfg = provincial_config(tmp_path, timeout_s=0.5)
    platform, r = platform_for(cfg)
    platform.mode = "stall"
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    up = start(cfg, replace(cfg.uplink, url=platform.url), path)
    try:
        assert wait_for(lambda: platform.stalled >= 2, 15)  # asked, timed out, asked again on a new connection
        assert Outbox(path).depth()["alarm"] == 3 and up.sent_count == 0 and not up.connected.is_set()
        assert "no answer within 0.5 s" in up.last_error
        platform.mode = "ok"
        assert r.wait(lambda r: len(r.alarms) >= 3, 20)
        assert wait_for(lambda: Outbox(path).depth()["alarm"] == 0, 10)
    finally:
        up.stop(2.0)
        platform.close()
    assert seqs(cfg, r) == [1, 2, 3]


def test_error_answers_are_retried_in_order_and_refused_codes_are_dead_lettered(tmp_path):
    cfg = provincial_config(tmp_path)
    platform, r = platform_for(cfg)
    platform.mode = "error:503"
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=4, batch=4, pause=0.0).run()
    up = start(cfg, replace(cfg.uplink, url=platform.url), path)
    try:
        assert wait_for(lambda: platform.refused >= 3, 10)
        assert Outbox(path).depth()["alarm"] == 4 and up.dead_letters == 0  # 503 is not in refused_codes
        platform.mode = "wrong"
        assert wait_for(lambda: platform.refused >= 6, 10)
        assert Outbox(path).depth()["alarm"] == 4 and up.dead_letters == 0
        platform.mode = "ok"
        assert r.wait(lambda r: len(r.alarms) >= 4, 20)
    finally:
        up.stop(2.0)
        platform.close()
    assert seqs(cfg, r) == [1, 2, 3, 4]
    # a code the uplink was told means "never": dead-lettered, the rows behind go on
    path2 = tmp_path / "outbox2.db"
    Burst(path2, lambda: None, total=2, batch=2, pause=0.0).run()
    platform.start()
    platform.mode = "error:503"
    refused: list[tuple[str, str]] = []
    up = start(cfg, replace(cfg.uplink, url=platform.url, refused_codes=("503",)), path2,
               lambda name, why: refused.append((name, why)))
    try:
        assert wait_for(lambda: up.dead_letters == 2, 10)
    finally:
        up.stop(1.0)
        platform.close()
    assert len(Outbox(path2).dead_letters()) == 2 and "refused with code 503" in Outbox(path2).dead_letters()[0]["reason"]


def test_a_wrong_key_is_never_marked_sent_it_is_dead_lettered_with_a_storage_alarm(tmp_path):
    cfg = provincial_config(tmp_path)
    r = Receiver(emit=lambda line: None, profile=wrong_key(cfg.provincial))  # the platform holds another key
    platform = Platform(r, "tcp://127.0.0.1:0").start()
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    refused: list[tuple[str, str]] = []
    up = build(cfg, replace(cfg.uplink, url=platform.url), path, status_doc,
               on_refused=lambda name, why: refused.append((name, why)))
    up.start()
    try:
        assert wait_for(lambda: up.dead_letters == 3, 15)
    finally:
        up.stop(1.0)
        platform.close()
    assert r.alarms == [] and up.sent_count == 0
    dead = Outbox(path).dead_letters()
    assert [d["reason"][:22] for d in dead] == ["refused with code 400:"] * 3
    assert len(refused) == 3 and refused[0][0] == "default"  # told once per refusal: the agent's storage alarm
    assert Outbox(path).depth()["alarm"] == 0  # not pending and not sent: kept in the dead-letter table


def test_a_running_agent_whose_platform_holds_another_key_raises_the_storage_alarm(tmp_path):
    cfg = provincial_config(tmp_path)
    r = Receiver(emit=lambda line: None, profile=wrong_key(cfg.provincial))
    platform = Platform(r, "tcp://127.0.0.1:0").start()
    cfg = provincial_config(tmp_path, url=platform.url, device_url="tcp://127.0.0.1:1")  # a comm alarm
    agent = Agent(cfg)
    try:
        run_agent_until(agent, lambda: agent.pipeline.manager.alarms.get("uplink.default/storage") is not None)
    finally:
        platform.close()
    storage = agent.pipeline.manager.alarms["uplink.default/storage"]
    assert storage.active and storage.kind == "storage"
    outbox = Outbox(cfg.agent.data_dir / "outbox.db")
    dead = outbox.dead_letters()
    assert any(d["lane"] == ALARM for d in dead) and all(d["reason"].startswith("refused with code 400") for d in dead)
    assert r.alarms == [] and platform.taken == 0 and platform.requests >= 1


def test_an_answer_for_another_data_id_is_skipped_and_the_heartbeat_goes_online_then_offline(tmp_path):
    cfg = provincial_config(tmp_path, heartbeat_s=0.3)
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[dict] = []

    def serve() -> None:  # answers each frame twice: first for a message it never got
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                envelope = json.loads(line)
                got.append(envelope)
                conn.sendall(b'{"dataId":"not-yours","code":"400"}\n')
                conn.sendall(json.dumps({"dataId": envelope["dataId"], "code": "200"}).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=2, batch=2, pause=0.0).run()
    up = start(cfg, replace(cfg.uplink, url=f"tcp://127.0.0.1:{listener.getsockname()[1]}"), path)
    try:
        assert wait_for(lambda: up.heartbeats >= 3, 10)
    finally:
        up.stop(1.0)
        listener.close()
    assert up.sent_count == 2 and up.dead_letters == 0
    docs = [cfg.provincial.decode(json.dumps(e).encode()) for e in got]
    f, types = cfg.provincial.fields, cfg.provincial.types
    kinds = [d[f["type"]] for d in docs]
    assert kinds[:2] == [types["alarm"]] * 2  # the alarms before the first heartbeat
    assert set(kinds[2:]) == {types["status"]} and len(kinds) >= 5
    assert [d[f["online"]] for d in docs[2:]] == ["1"] * (len(docs) - 3) + ["0"]  # offline at the stop
    assert len({e["dataId"] for e in got}) == len(got)  # a fresh dataId for every message


def test_two_uplinks_the_province_down_while_the_park_delivers_then_catching_up_in_order(tmp_path, mosquitto):
    cfg = provincial_config(tmp_path, uplinks=[
        {"name": "park", "url": mosquitto.url, "heartbeat_s": 5.0},
        {"name": "province", "url": "tcp://127.0.0.1:1", "profile": "provincial"}])
    platform, r = platform_for(cfg)
    platform.close()  # the province is down from the start
    u = [cfg.uplinks[0], replace(cfg.uplinks[1], url=platform.url)]
    path = tmp_path / "outbox.db"
    Outbox(path).set_uplinks([x.name for x in u])
    park = Receiver(emit=lambda line: None)
    client = connect(park, mosquitto.url, PLANT, "plantwatch")
    uplinks = Uplinks([build(cfg, x, path, status_doc) for x in u])
    uplinks.start()
    try:
        Burst(path, uplinks.wake, total=100, batch=10, pause=0.0).run()
        assert park.wait(lambda p: len(p.alarms) >= 100, 30), park.summary()
        outbox = Outbox(path)
        assert wait_for(lambda: outbox.depth("park")["alarm"] == 0, 10)
        assert outbox.depth("province")["alarm"] == 100 and r.alarms == []
        platform.start()
        assert r.wait(lambda r: len(r.alarms) >= 100, 30), r.summary()
        assert wait_for(lambda: Outbox(path).depth()["alarm"] == 0, 10)
    finally:
        uplinks.stop(2.0)
        client.loop_stop()
        client.disconnect()
        platform.close()
    assert [a["seq"] for a in park.alarms] == list(range(1, 101))
    assert seqs(cfg, r) == list(range(1, 101)) and r.invalid == []
