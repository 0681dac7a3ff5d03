"""The HTTP uplink against a real HTTPS platform of the test's own: ordered delivery across an
outage, error answers (5xx and 408 retried, 4xx dead-lettered with a storage alarm), a platform
that never answers, TLS verification, two uplinks with one down, and batching."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

from agent.config import parse
from agent.outbox import ALARM, TELEMETRY, Outbox
from agent.payloads import STATUS_SCHEMA, dumps
from agent.runtime import Agent
from agent.uplinks import Uplinks, build
from tests.conftest import config_dict
from tests.faults.certs import CertificateAuthority
from tests.faults.helpers import PLANT, Burst, status_doc, wait_for
from tests.helpers import run_agent_until
from tests.http_platform import Platform

SUCCESS = {"status": 200, "field": "code", "equals": "200"}


def http_config(tmp_path, url: str, ca_file=None, **uplink):
    """A config whose one uplink POSTs to ``url`` with the spec's success rule."""
    data = config_dict()
    data["uplink"] = {"url": url, "profile": "provincial", "backoff_initial_s": 0.05, "backoff_max_s": 0.3,
                      "timeout_s": 2.0, **({"ca_file": str(ca_file)} if ca_file else {}), **uplink}
    data["provincial"] = {"gateway_code": "GW-1", "success": SUCCESS, "headers": {"X-Request": "{uuid}"}}
    return data


def json_uplink(tmp_path, platform: Platform, **uplink):
    """The config's uplink to ``platform``, speaking the json profile (bodies are the stored
    documents, so the test reads seqs) under the spec's success rule."""
    cfg = parse(http_config(tmp_path, platform.url, platform.ca.path, **uplink), base=tmp_path)
    return cfg, replace(cfg.uplink, profile="json")


def start(cfg, u, path, refused=None):
    up = build(cfg, u, path, status_doc, on_refused=refused)
    up.start()
    return up


def test_alarms_reach_the_platform_in_seq_order_across_an_outage_and_restart(tmp_path):
    platform = Platform(tmp_path).start()
    cfg, u = json_uplink(tmp_path, platform)
    path = tmp_path / "outbox.db"
    up = start(cfg, u, path)
    burst = Burst(path, up.wake, total=400, batch=20, pause=0.01)
    burst.start()
    try:
        assert platform.wait(lambda p: len(p.seqs()) >= 60, 30)
        platform.stop()  # the platform goes away mid-burst: connections refused
        time.sleep(1.0)
        platform.start()
        burst.join(60)
        assert burst.error is None
        assert platform.wait(lambda p: len(set(p.seqs())) >= 400, 60), len(platform.seqs())
    finally:
        up.stop(2.0)
        platform.stop()
    seqs = platform.seqs()
    first = list(dict.fromkeys(seqs))
    assert first == list(range(1, 401))  # none lost, first arrivals in order
    assert Outbox(path).depth() == {"alarm": 0, "telemetry": 0, "status": 0}


def test_5xx_and_408_and_a_2xx_without_the_success_mark_are_retried_in_order(tmp_path):
    platform = Platform(tmp_path).start()
    platform.script.extend(["5xx", "5xx", "408", "wrong", "429"])
    cfg, u = json_uplink(tmp_path, platform)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=10, batch=10, pause=0.0).run()
    up = start(cfg, u, path)
    try:
        assert platform.wait(lambda p: len(p.seqs()) >= 10, 30)
    finally:
        up.stop(2.0)
        platform.stop()
    answers = [a for a, _, _ in platform.requests]
    assert answers[:6] == ["5xx", "5xx", "408", "wrong", "429", "ok"]
    # the refused attempts were all of seq 1: nothing behind it went first
    assert {json.loads(b)["seq"] for _, _, b in platform.requests[:6]} == {1}
    assert platform.seqs() == list(range(1, 11))
    outbox = Outbox(path)
    assert outbox.dead_letters() == [] and outbox.depth()["alarm"] == 0


def test_a_4xx_is_dead_lettered_and_the_rows_behind_it_go_on(tmp_path):
    platform = Platform(tmp_path).start()
    platform.script.extend(["ok", "4xx"])
    cfg, u = json_uplink(tmp_path, platform)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=5, batch=5, pause=0.0).run()
    refused = []
    up = start(cfg, u, path, refused=lambda name, reason: refused.append((name, reason)))
    try:
        assert platform.wait(lambda p: len(p.seqs()) >= 4, 30)
    finally:
        up.stop(2.0)
        platform.stop()
    assert platform.seqs() == [1, 3, 4, 5]
    outbox = Outbox(path)
    dead = outbox.dead_letters()
    assert [(d["uplink"], d["seq"], d["lane"]) for d in dead] == [("default", 2, ALARM)]
    assert dead[0]["reason"].startswith("HTTP 400") and json.loads(dead[0]["payload"])["seq"] == 2
    assert refused and refused[0][0] == "default"
    assert outbox.depth()["alarm"] == 0 and up.dead_letters == 1


def test_a_platform_refusing_for_good_raises_a_storage_alarm_in_the_agent(tmp_path):
    """Through the whole agent: the dead PLC's comm alarm is refused (400), kept in the dead-letter
    table, and a storage alarm about the uplink is committed."""
    platform = Platform(tmp_path).start()
    platform.answer = "4xx"
    data = http_config(tmp_path, platform.url, platform.ca.path)
    data["devices"][0]["url"] = "tcp://127.0.0.1:1"  # nobody there: a comm alarm
    cfg = parse(data, base=tmp_path)
    agent = Agent(cfg)
    try:
        run_agent_until(agent, lambda: agent.pipeline.manager.alarms.get("uplink.default/storage") is not None)
    finally:
        platform.stop()
    storage = agent.pipeline.manager.alarms["uplink.default/storage"]
    assert storage.active and storage.kind == "storage"
    outbox = Outbox(cfg.agent.data_dir / "outbox.db")
    assert any(d["lane"] == ALARM for d in outbox.dead_letters())
    stored = outbox.alarms()
    assert any(a["kind"] == "storage" and a["device"] == "uplink.default" and a["state"] == "active" for a in stored)
    # the provincial body went out, with the header template rendered
    _, headers, body = platform.requests[0]
    assert json.loads(body)["qybm"] == PLANT and len(headers["X-Request"]) == 36


def test_a_platform_that_accepts_and_never_answers_times_out_and_nothing_is_marked_sent(tmp_path):
    platform = Platform(tmp_path).start()
    platform.answer = "stall"
    cfg, u = json_uplink(tmp_path, platform, timeout_s=0.5)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    up = start(cfg, u, path)
    try:
        assert platform.wait(lambda p: len(p.requests) >= 3, 30)  # tried, timed out, tried again
        assert Outbox(path).depth()["alarm"] == 3 and up.sent_count == 0
        assert "timed out" in up.last_error
        platform.answer = "ok"
        platform.release.set()
        assert platform.wait(lambda p: len(p.seqs()) >= 3, 30)
    finally:
        up.stop(2.0)
        platform.stop()
    assert {json.loads(b)["seq"] for _, _, b in platform.requests[:3]} == {1}
    assert list(dict.fromkeys(platform.seqs())) == [1, 2, 3]


def test_tls_verification_refuses_a_platform_certificate_from_an_unknown_ca(tmp_path):
    platform = Platform(tmp_path).start()
    stranger = CertificateAuthority(tmp_path / "other-ca", name="someone else")
    cfg, u = json_uplink(tmp_path, platform)
    u = replace(u, ca_file=stranger.path)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=2, batch=2, pause=0.0).run()
    up = start(cfg, u, path)
    try:
        assert wait_for(lambda: up.connect_failures >= 2, 20)
    finally:
        up.stop(1.0)
        platform.stop()
    assert platform.requests == []  # not one byte of payload reached it
    assert "CERTIFICATE_VERIFY_FAILED" in up.last_error
    assert Outbox(path).depth()["alarm"] == 2


def test_telemetry_is_batched_into_a_json_array_and_alarms_go_one_per_request(tmp_path):
    platform = Platform(tmp_path).start()
    cfg, u = json_uplink(tmp_path, platform, batch_max=4)
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    for i in range(10):
        outbox.append(f"plantwatch/{PLANT}/telemetry", dumps({"i": i}), lane=TELEMETRY)
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    up = start(cfg, u, path)
    try:
        assert platform.wait(lambda p: len(p.accepted) >= 7, 30)
    finally:
        up.stop(2.0)
        platform.stop()
    bodies = [json.loads(b) for b in platform.accepted]
    # the status message (heartbeat) after the alarm backlog, online; the last one, at the stop, offline
    status = [i for i, b in enumerate(bodies) if isinstance(b, dict) and b.get("schema") == STATUS_SCHEMA]
    assert status == [3, len(bodies) - 1] and [bodies[i]["online"] for i in status] == [True, False]
    assert up.heartbeats == 2
    bodies = [b for i, b in enumerate(bodies) if i not in status]
    assert [b["seq"] for b in bodies[:3]] == [1, 2, 3]  # alarms first, one each
    assert [[d["i"] for d in b] for b in bodies[3:]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_two_uplinks_one_down_the_other_delivers_and_rows_stay_until_both_have_them(tmp_path, mosquitto):
    from agent.receiver import Receiver, connect

    platform = Platform(tmp_path).start()
    data = config_dict()
    data.pop("uplink")
    data["uplinks"] = [
        {"name": "park", "url": mosquitto.url, "heartbeat_s": 5.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        {"name": "province", "url": platform.url, "ca_file": str(platform.ca.path), "backoff_initial_s": 0.05,
         "backoff_max_s": 0.3, "timeout_s": 2.0},
    ]
    cfg = parse(data, base=tmp_path)
    path = tmp_path / "outbox.db"
    Outbox(path).set_uplinks([u.name for u in cfg.uplinks])
    receiver = Receiver(emit=lambda line: None)
    client = connect(receiver, mosquitto.url, PLANT, "plantwatch")
    platform.stop()  # the province is down from the start
    uplinks = Uplinks([build(cfg, u, path, status_doc) for u in cfg.uplinks])
    uplinks.start()
    burst = Burst(path, uplinks.wake, total=100, batch=10, pause=0.0)
    try:
        burst.run()
        assert receiver.wait(lambda r: len(r.alarms) >= 100, 30), receiver.summary()  # the park has them all
        outbox = Outbox(path)
        assert wait_for(lambda: outbox.depth("park")["alarm"] == 0, 10)  # the last PUBACKs marked
        assert outbox.depth()["alarm"] == 100  # not sent: the province lacks them
        assert outbox.depth("province")["alarm"] == 100
        platform.start()
        assert platform.wait(lambda p: len(set(p.seqs())) >= 100, 30)
        assert wait_for(lambda: Outbox(path).depth()["alarm"] == 0, 10)
    finally:
        uplinks.stop(2.0)
        client.loop_stop()
        client.disconnect()
        platform.stop()
    assert [a["seq"] for a in receiver.alarms] == list(range(1, 101))
    assert list(dict.fromkeys(platform.seqs())) == list(range(1, 101))
    assert receiver.invalid == []


def test_a_thread_safe_wake_reaches_every_uplink(tmp_path):
    """Uplinks.wake is what the pipeline calls from the loop; it must not block on a slow platform."""
    platform = Platform(tmp_path).start()
    platform.answer = "stall"
    cfg, u = json_uplink(tmp_path, platform, timeout_s=5.0)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=1, batch=1, pause=0.0).run()
    group = Uplinks([start(cfg, u, path)])
    try:
        assert platform.wait(lambda p: len(p.requests) >= 1, 10)
        t0 = time.monotonic()
        woke = threading.Thread(target=group.wake)
        woke.start()
        woke.join(1.0)
        assert not woke.is_alive() and time.monotonic() - t0 < 1.0
    finally:
        platform.release.set()
        group.stop(0.5)
        platform.stop()


def test_the_dead_letter_alarm_is_one_alarm_per_uplink_and_clears_when_the_table_is_emptied(tmp_path):
    cfg = parse(http_config(tmp_path, "https://127.0.0.1:9/x"), base=tmp_path)
    agent = Agent(cfg)
    housekeeping, outbox = agent.housekeeping, agent.outbox
    housekeeping.dead_letter_alarms({"default": 2})
    housekeeping.dead_letter_alarms({"default": 3})  # more refused rows: still the one alarm
    housekeeping.dead_letter_alarms({})
    states = [(a["id"], a["state"], a["value"]) for a in outbox.alarms()]
    assert states == [("uplink.default/storage", "active", 2.0), ("uplink.default/storage", "cleared", 0.0)]
    outbox.close()


def test_a_row_the_profile_cannot_encode_is_dead_lettered_and_the_uplink_goes_on(tmp_path):
    platform = Platform(tmp_path).start()
    cfg = parse(http_config(tmp_path, platform.url, platform.ca.path), base=tmp_path)  # provincial
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.append(f"plantwatch/{PLANT}/telemetry", b'{"schema":"plantwatch.telemetry/1"}', lane=TELEMETRY)
    outbox.append(f"plantwatch/{PLANT}/telemetry", dumps({"schema": "plantwatch.telemetry/1", "plant": PLANT,
                  "ts": "2026-01-01T00:00:00.000Z", "tags": {"T1": {"v": 1.0, "q": "good"}}}), lane=TELEMETRY)
    up = start(cfg, cfg.uplink, path)
    try:
        assert platform.wait(lambda p: any(b'"datas"' in b for b in p.accepted), 20)
    finally:
        up.stop(1.0)
        platform.stop()
    data = [json.loads(b) for b in platform.accepted if b'"datas"' in b]
    assert data[0]["datas"][0]["cdbm"] == "T1"
    dead = outbox.dead_letters()
    assert len(dead) == 1 and dead[0]["reason"].startswith("cannot encode: KeyError")


# --- against the reference platform (agent.platform) ---------------------------------------------


def gongmao_uplink(tmp_path, **uplink):
    """A 工贸-style HTTP uplink: SM4-CBC with a fixed IV, upper-case hex, the appid/data envelope."""
    from tests.test_platform import GONGMAO, IV_HEX, KEY_HEX

    (tmp_path / "payload.key").write_text(KEY_HEX + "\n")
    (tmp_path / "payload.iv").write_text(IV_HEX + "\n")
    data = http_config(tmp_path, "http://127.0.0.1:1/api/push", **uplink)
    data["provincial"].update(key_file="payload.key", iv_file="payload.iv", cipher="sm4-cbc", encoding="HEX",
                              envelope=GONGMAO, appid="GM-0001")
    return parse(data, base=tmp_path)


def reference_platform(profile, path="/api/push"):
    from agent.platform import Platform as Reference
    from agent.receiver import Receiver

    r = Receiver(emit=lambda line: None, profile=profile)
    return Reference(r, f"http://127.0.0.1:0{path}").start(), r


def test_the_reference_platform_reads_the_uplinks_batches_alarms_and_heartbeats(tmp_path):
    cfg = gongmao_uplink(tmp_path, batch_max=4)
    platform, r = reference_platform(cfg.provincial)
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    for i in range(10):
        outbox.append(f"plantwatch/{PLANT}/telemetry", dumps({
            "schema": "plantwatch.telemetry/1", "plant": PLANT, "ts": "2026-01-01T00:00:00.000Z",
            "tags": {"T1": {"v": float(i), "q": "good"}}}), lane=TELEMETRY)
    Burst(path, lambda: None, total=3, batch=3, pause=0.0).run()
    up = start(cfg, replace(cfg.uplink, url=platform.url), path)
    try:
        assert r.wait(lambda r: r.telemetry >= 10, 20), r.summary()
    finally:
        up.stop(2.0)
        platform.close()
    assert [int(a[cfg.provincial.fields["seq"]]) for a in r.alarms] == [1, 2, 3] and r.invalid == []
    assert r.late == 10  # sent long after their time: the 补传 mark
    assert not r.plants[PLANT].online  # the heartbeat said online, the stop offline
    assert up.heartbeats == 2
    # 3 alarms, 2 status messages, 10 data rows in 3 requests of up to 4
    assert (platform.requests, platform.taken) == (8, 15)
    assert Outbox(path).depth() == {"alarm": 0, "telemetry": 0, "status": 0}


def test_a_wrong_key_at_the_reference_platform_is_never_marked_sent(tmp_path):
    cfg = gongmao_uplink(tmp_path)
    c = cfg.provincial.cipher
    from agent.ciphers import PayloadCipher

    other = replace(cfg.provincial, cipher=PayloadCipher(c.name, key=bytes(16), iv=c.iv, encoding=c.encoding))
    platform, r = reference_platform(other)
    path = tmp_path / "outbox.db"
    Burst(path, lambda: None, total=2, batch=2, pause=0.0).run()
    refused: list[str] = []
    up = start(cfg, replace(cfg.uplink, url=platform.url, heartbeat_s=3600.0), path,
               lambda name, why: refused.append(why))
    try:
        assert wait_for(lambda: up.dead_letters == 2, 15)
    finally:
        up.stop(1.0)
        platform.close()
    assert r.alarms == [] and up.sent_count == 0 and len(refused) == 2
    dead = Outbox(path).dead_letters()
    assert len(dead) == 2 and all(d["reason"].startswith("HTTP 400:") for d in dead)


def test_announce_sends_the_status_message_now_not_at_the_next_heartbeat(tmp_path):
    """A storage fault's start and end make the uplink send the status at once (the heartbeat is
    an hour away here); only the count of status messages the platform took is looked at."""
    cfg = gongmao_uplink(tmp_path, heartbeat_s=3600.0)
    platform, r = reference_platform(cfg.provincial)
    up = start(cfg, replace(cfg.uplink, url=platform.url), tmp_path / "outbox.db")
    try:
        assert wait_for(lambda: up.heartbeats == 1, 20)  # the first, once the (empty) backlog is out
        up.announce()
        assert wait_for(lambda: up.heartbeats == 2, 20)
        up.announce()
        assert wait_for(lambda: up.heartbeats == 3, 20)
    finally:
        up.stop(2.0)
        platform.close()
    assert r.invalid == []
