"""The reference receiver against hostile input, through a real broker: whatever arrives is taken
or refused with one clear line and a count, and the subscriber goes on."""

from __future__ import annotations

import json
import subprocess
import sys

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.broker import Mosquitto
from agent.config import parse
from agent.payloads import STATUS_SCHEMA, dumps
from agent.receiver import MAX_DEPTH, MAX_SEQ, Receiver, connect
from agent.seqtrack import MAX_GAPS, PlantTrack
from tests.conftest import config_dict
from tests.helpers import PLANT
from tests.test_receiver import alarm

OTHER = "640100000002"
TOPIC = f"plantwatch/{PLANT}"


class Publisher:
    """One MQTT client publishing QoS 1 (in order) to the test's broker."""

    def __init__(self, port: int):
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def send(self, items: list[tuple[str, bytes]]) -> None:
        for t, payload in items:
            self.client.publish(t, payload, qos=1).wait_for_publish(5)
            self.sent += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Rig:
    """A mosquitto, a receiver subscribed to it and a publisher."""

    def __init__(self, tmp_path, **receiver_args):
        self.lines: list[str] = []
        self.broker = Mosquitto(workdir=tmp_path / "mosquitto").start()
        self.receiver = Receiver(**{"emit": self.lines.append, **receiver_args})
        self.client = connect(self.receiver, self.broker.url, None)
        self.pub = Publisher(self.broker.port)

    def send(self, items: list[tuple[str, bytes]]) -> Receiver:
        self.pub.send(items)
        assert self.receiver.wait(lambda r: r.handled >= self.pub.sent, 10), (self.receiver.handled, self.pub.sent)
        return self.receiver

    def close(self) -> None:
        self.pub.close()
        self.client.loop_stop()
        self.client.disconnect()
        self.broker.close()


def with_rig(tmp_path, body, **receiver_args) -> Rig:
    rig = Rig(tmp_path, **receiver_args)
    try:
        body(rig)
    finally:
        rig.close()
    return rig


def one_line_refusals(rig: Rig) -> None:
    """Every refusal is one INVALID line; the counts add up; nothing of ours failed."""
    r = rig.receiver
    invalid = [line for line in rig.lines if line.startswith("INVALID ")]
    assert r.errors == 0, [line for line in rig.lines if line.startswith("ERROR")]
    assert len(invalid) == sum(r.refused.values())
    assert not any("\n" in line or "Traceback" in line for line in rig.lines)


# --- fuzz ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=16,
)
VALID = json.loads(alarm(1))


def _wrong_type(key_value) -> bytes:
    doc = dict(VALID)
    key, value = key_value
    doc[key] = value
    return json.dumps(doc, ensure_ascii=False).encode()


def _huge(digits_exponent) -> bytes:
    digits, exponent = digits_exponent
    doc = json.dumps({**VALID, "seq": 0, "value": 0}).encode()
    return doc.replace(b'"seq": 0', b'"seq": ' + b"9" * digits).replace(b'"value": 0', b'"value": 1e' + exponent.encode())


payloads = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity included
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 3000).map(lambda n: b'{"schema":' + b"[" * n + b"]" * n + b"}"),
    st.tuples(st.integers(1, 6000), st.sampled_from(["0", "308", "309", "999", "-999"])).map(_huge),
    st.tuples(st.sampled_from(sorted(VALID)), json_values).map(_wrong_type),
    st.binary(max_size=64),
    st.text(max_size=8).map(lambda plant: json.dumps({**VALID, "plant": plant}).encode()),
)
messages = st.tuples(st.sampled_from(["alarm", "status", "telemetry"]), payloads)


def test_fuzzed_messages_are_taken_or_refused_never_fatal(tmp_path):
    def body(rig: Rig) -> None:
        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(messages, min_size=1, max_size=6))
        def fuzz(batch):
            rig.send([(f"{TOPIC}/{kind}", payload) for kind, payload in batch])
            one_line_refusals(rig)

        fuzz()
        # the subscriber is alive and takes a good message after all that
        r = rig.send([(f"plantwatch/{OTHER}/alarm", json.dumps({**VALID, "plant": OTHER}).encode())])
        assert r.plants[OTHER].received == 1
        assert r.refused["not JSON"] and r.refused["too deep"] and r.refused["schema"]

    with_rig(tmp_path, body)


def test_fuzzed_provincial_messages_are_taken_or_refused_never_fatal(tmp_path):
    profile = parse(config_dict(uplink={"url": "mqtt://127.0.0.1:1883", "profile": "provincial"},
                                provincial={"gateway_code": "GW01"}), base=tmp_path).provincial
    f = profile.fields
    codes = st.sampled_from([*profile.types.values(), *profile.states.values(), "1", "0", PLANT])
    docs = st.dictionaries(st.sampled_from(sorted(f.values())), json_values | codes, max_size=12)
    provincial = st.one_of(payloads, docs.map(lambda d: profile.encode({f["enterprise"]: PLANT, **d})))

    def body(rig: Rig) -> None:
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(st.tuples(st.sampled_from(["alarm", "status", "telemetry", "registry"]), provincial),
                        min_size=1, max_size=6))
        def fuzz(batch):
            rig.send([(f"{TOPIC}/{kind}", payload) for kind, payload in batch])
            one_line_refusals(rig)

        fuzz()
        before = rig.receiver.handled
        r = rig.send([(f"{TOPIC}/alarm", profile.encode(profile.alarm(VALID)))])  # still subscribed, reading
        assert r.handled == before + 1 and r.errors == 0
        assert r.refused["unreadable"] and r.refused["too deep"]

    with_rig(tmp_path, body, profile=profile)


# --- each rule ----------------------------------------------------------------------------------


def test_a_gateway_cannot_speak_for_another_plant(tmp_path):
    other = json.dumps({**VALID, "plant": OTHER}).encode()
    status = dumps({"schema": STATUS_SCHEMA, "plant": OTHER, "online": True, "ts": "2026-11-28T00:00:00.000Z",
                    "version": "1"})
    rig = with_rig(tmp_path, lambda rig: rig.send([(f"{TOPIC}/alarm", other), (f"{TOPIC}/status", status),
                                                    (f"{TOPIC}/alarm", alarm(1))]))
    r = rig.receiver
    assert r.refused == {"plant mismatch": 2}
    assert OTHER not in r.plants and OTHER not in r.status
    assert [a["seq"] for a in r.alarms] == [1]  # the plant's own message is taken
    assert f"INVALID {TOPIC}/alarm: the message is for plant '{OTHER}', its topic for '{PLANT}'" in rig.lines


def test_provincial_payload_plant_must_match_its_topic(tmp_path):
    profile = parse(config_dict(uplink={"url": "mqtt://127.0.0.1:1883", "profile": "provincial"},
                                provincial={"gateway_code": "GW01"}), base=tmp_path).provincial
    r = Receiver(emit=lambda line: None, profile=profile)
    payload = profile.encode(profile.alarm(json.loads(alarm(1))))
    r.feed(f"plantwatch/{OTHER}/alarm", payload)
    r.feed(f"{TOPIC}/alarm", payload)
    assert r.refused == {"plant mismatch": 1} and r.accepted == 1
    assert r.feed_payload(payload, "http POST") is None  # a listener has no topic: the duplicate is booked
    assert r.plants[PLANT].duplicates == 1


def test_provincial_enterprise_code_is_the_plant_of_its_gateway(tmp_path):
    """A platform's enterprise code is not the gateway's plant name: the receiver told which plant
    speaks for the code takes it on that plant's topic only."""
    profile = parse(config_dict(uplink={"url": "mqtt://127.0.0.1:1883", "profile": "provincial"},
                                provincial={"gateway_code": "GW01", "enterprise_code": "640100000009"}),
                    base=tmp_path).provincial
    payload = profile.encode(profile.alarm(json.loads(alarm(1))))
    unaware = Receiver(emit=lambda line: None, profile=profile)
    unaware.feed(f"{TOPIC}/alarm", payload)
    assert unaware.refused == {"plant mismatch": 1}
    r = Receiver(emit=lambda line: None, profile=profile, plant=PLANT)
    r.feed(f"plantwatch/{OTHER}/alarm", payload)
    r.feed(f"{TOPIC}/alarm", payload)
    assert r.refused == {"plant mismatch": 1} and r.accepted == 1
    assert r.plants["640100000009"].received == 1


def test_oversized_payload_is_refused_and_counted(tmp_path):
    big = json.dumps({**VALID, "message": "x" * 5000}).encode()
    rig = with_rig(tmp_path, lambda rig: rig.send([(f"{TOPIC}/alarm", big), (f"{TOPIC}/alarm", alarm(1))]),
                   max_payload=4096)
    assert rig.receiver.refused == {"too large": 1}
    assert f"INVALID {TOPIC}/alarm: {len(big)} bytes, over the maximum of 4096" in rig.lines
    assert rig.receiver.accepted == 1


def test_deep_nesting_is_a_clear_refusal_not_a_recursion_error(tmp_path):
    deep = [b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"[" * 200_000 + b"]" * 200_000,
            b'{"a":' * 100_000 + b"1" + b"}" * 100_000]
    rig = with_rig(tmp_path, lambda rig: rig.send([(f"{TOPIC}/alarm", d) for d in deep] + [(f"{TOPIC}/alarm", alarm(1))]))
    assert rig.receiver.refused == {"too deep": 3} and rig.receiver.accepted == 1
    assert rig.lines.count(f"INVALID {TOPIC}/alarm: nested more than {MAX_DEPTH} deep") == 3
    one_line_refusals(rig)


def test_huge_numbers_are_refused_with_the_reason(tmp_path):
    raw = json.dumps({**VALID, "seq": 0}).encode()
    items = [raw.replace(b'"seq": 0', b'"seq": ' + b"9" * 5000),  # past Python's int limit
             raw.replace(b'"seq": 0', b'"seq": ' + str(MAX_SEQ + 1).encode()),
             json.dumps({**VALID, "seq": 2, "value": 0}).encode().replace(b'"value": 0', b'"value": 1e999'),
             json.dumps({**VALID, "seq": 3, "value": float("nan")}).encode()]
    rig = with_rig(tmp_path, lambda rig: rig.send([(f"{TOPIC}/alarm", p) for p in items]))
    r = rig.receiver
    assert r.refused == {"not JSON": 3, "seq out of range": 1} and r.accepted == 0
    text = "\n".join(rig.lines)
    assert "Exceeds the limit (4300 digits)" in text and "number out of range: 1e999" in text
    assert "NaN is not a JSON number" in text and f"is over {MAX_SEQ}" in text
    one_line_refusals(rig)


def test_seq_tracking_is_ranges_of_bounded_count():
    t = PlantTrack()
    assert [t.take(s) for s in (1, 10**18, 5, 5, 2)] == ["new", "gap", "late", "duplicate", "late"]
    assert t.gaps == [[3, 4], [6, 10**18 - 1]] and t.missing(4) == [3, 4, 6, 7]
    assert t.missing_count() == 2 + 10**18 - 6
    t = PlantTrack()
    for s in range(1, 2 * (MAX_GAPS + 6), 2):  # every other seq missing: one range per alarm
        t.take(s)
    assert len(t.gaps) == MAX_GAPS and t.forgotten == 5
    assert t.gaps[0] == [12, 12]
    assert t.take(2) == "duplicate"  # forgotten: it can no longer be told from one already seen
    assert t.take(12) == "late" and len(t.gaps) == MAX_GAPS - 1


def test_a_failing_handler_is_counted_and_logged_and_the_receiver_goes_on(tmp_path, caplog):
    def emit(line: str) -> None:
        if "seq=2 " in line and line.startswith("ALARM"):
            raise OSError("disk full")  # where the receiver's output goes failed
        lines.append(line)

    lines: list[str] = []
    rig = Rig(tmp_path, emit=emit)
    try:
        rig.send([(f"{TOPIC}/alarm", alarm(s)) for s in (1, 2, 3)])
    finally:
        rig.close()
    r = rig.receiver
    assert r.errors == 1 and r.refused == {"receiver error": 1}
    assert r.accepted == 3 and r.alarms[-1]["seq"] == 3  # the next message after the failure is taken
    assert [line.split()[2] for line in lines if line.startswith("ALARM")] == ["seq=1", "seq=3"]
    assert f"ERROR {TOPIC}/alarm: OSError: disk full (message dropped; the receiver goes on)" in lines
    assert any("message dropped: OSError: disk full" in rec.getMessage() for rec in caplog.records)


def test_receive_command_prints_refusals_and_counts_never_a_traceback(tmp_path):
    broker = Mosquitto(workdir=tmp_path / "mosquitto").start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "receive", "--broker", broker.url, "--strict", "--seconds", "20",
             "--count", "1", "--max-payload", "2000"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout.readline().startswith("receiving from")
        pub = Publisher(broker.port)
        pub.send([(f"{TOPIC}/alarm", b"[" * 1000), (f"{TOPIC}/alarm", b"x" * 3000),
                  (f"{TOPIC}/alarm", json.dumps({**VALID, "plant": OTHER}).encode()), (f"{TOPIC}/alarm", alarm(1))])
        pub.close()
        output, _ = proc.communicate(timeout=30)
    finally:
        broker.close()
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert "3 messages refused (1 plant mismatch, 1 too deep, 1 too large)" in output
    assert f"plant {PLANT}: 1 alarms, seq 1..1, no gaps, 0 duplicates, unknown" in output


def test_a_failing_output_on_a_listener_is_an_error_of_ours_not_an_unreadable_message(tmp_path):
    profile = parse(config_dict(uplink={"url": "mqtt://127.0.0.1:1883", "profile": "provincial"},
                                provincial={"gateway_code": "GW01"}), base=tmp_path).provincial
    out = open(tmp_path / "alarms.jsonl", "w")  # noqa: SIM115 - closed at once: writing to it fails
    out.close()
    r = Receiver(emit=lambda line: None, profile=profile, out=out)
    why = r.feed_payload(profile.encode(profile.alarm(json.loads(alarm(1)))), "http POST")
    assert why == "receiver error: ValueError"
    assert r.errors == 1 and r.refused == {"receiver error": 1}  # not counted as the sender's fault
    r.out = None
    assert r.feed_payload(profile.encode(profile.alarm(json.loads(alarm(2)))), "http POST") is None
