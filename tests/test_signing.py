"""The gate of signed MQTT commands (agent.signing): each refusal by its reason, the replay
window, the nonce cache's bound and the rate limit. Time is passed in, as the agent does."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.signing import Gate, Keys, Refused, load_keys, sign

KEY = secrets.token_bytes(32)
T0 = 1_800_000_000.0


def ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def command(t: float = T0, nonce: str | None = None, **extra) -> dict:
    return {"schema": "plantwatch.cmd/1", "plant": "640100000001", "op": "ack", "id": "R101.TI01/limit",
            "ts": ts(t), "nonce": nonce or secrets.token_hex(16), **extra}


def gate(rate: int = 1000, window: float = 300.0, **keys) -> Gate:
    return Gate(Keys(**({"hmac": KEY} | keys)), window, rate, started=T0 - 3600)


def refused(g: Gate, payload: bytes, now: float = T0, retained: bool = False) -> str:
    with pytest.raises(Refused) as exc:
        g.admit(payload, retained, now)
    return exc.value.reason


def test_a_signed_command_passes_once():
    g = gate()
    payload = sign(command(), "hmac-sha256", KEY)
    alg, doc = g.admit(payload, False, T0 + 1)
    assert (alg, doc["op"], doc["id"]) == ("hmac-sha256", "ack", "R101.TI01/limit")
    assert refused(g, payload, T0 + 2) == "replay"


def test_every_kind_of_bad_command_is_refused_by_its_reason():
    g = gate()
    good = command()
    env = json.loads(sign(good, "hmac-sha256", KEY))
    tampered = {**env, "command": env["command"].replace('"ack"', '"out_of_service"')}
    assert refused(g, json.dumps(tampered).encode()) == "signature"
    assert refused(g, sign(good, "hmac-sha256", secrets.token_bytes(32))) == "signature"  # another key
    assert refused(g, json.dumps({**env, "sig": "!!"}).encode()) == "signature"
    assert refused(g, json.dumps(good).encode()) == "unsigned"  # a bare command document
    assert refused(g, json.dumps({**env, "alg": "none"}).encode()) == "unsigned"
    assert refused(g, sign(good, "ed25519", Ed25519PrivateKey.generate())) == "unsigned"  # no Ed25519 key here
    assert refused(g, b"not json") == "malformed"
    assert refused(g, b"[1, 2]") == "malformed"
    assert refused(g, b"{" * 100_000) == "malformed"
    assert refused(g, sign(command(T0 - 301), "hmac-sha256", KEY)) == "stale"
    assert refused(g, sign(command(T0 + 301), "hmac-sha256", KEY)) == "stale"
    assert refused(g, sign({**good, "ts": "yesterday"}, "hmac-sha256", KEY)) == "stale"
    assert refused(g, sign({**good, "ts": "2027-01-15T08:00:00"}, "hmac-sha256", KEY)) == "stale"  # no offset
    assert refused(g, sign({k: v for k, v in good.items() if k != "ts"}, "hmac-sha256", KEY)) == "stale"
    assert refused(g, sign({**good, "nonce": "short"}, "hmac-sha256", KEY)) == "malformed"
    assert refused(g, sign(good, "hmac-sha256", KEY), retained=True) == "retained"
    # none of the above used up the good command's nonce
    assert g.admit(sign(good, "hmac-sha256", KEY), False, T0)[1]["nonce"] == good["nonce"]


def test_commands_signed_before_the_agent_started_are_refused():
    g = Gate(Keys(hmac=KEY), 300.0, 100, started=T0)
    assert refused(g, sign(command(T0 - 10), "hmac-sha256", KEY), now=T0 + 5) == "stale"


def test_ed25519_with_the_public_key_from_a_file(tmp_path):
    private = Ed25519PrivateKey.generate()
    pem = tmp_path / "cmd.pub"
    pem.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    g = Gate(load_keys(None, pem), 300.0, 100, started=T0 - 60)
    assert g.admit(sign(command(), "ed25519", private), False, T0)[0] == "ed25519"
    assert refused(g, sign(command(), "ed25519", Ed25519PrivateKey.generate())) == "signature"
    assert refused(g, sign(command(), "hmac-sha256", KEY)) == "unsigned"  # no HMAC key here


def test_key_files_are_checked(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(ValueError, match="at least 32 bytes, this one has 31"):
        load_keys(short, None)
    rsa_pub = tmp_path / "rsa.pub"
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pub.write_bytes(rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_keys(None, rsa_pub)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_keys(None, garbage)


def test_the_rate_limit_counts_every_command_of_the_last_minute():
    g = gate(rate=5)
    for i in range(5):
        refused(g, b"junk", now=T0 + i)  # refused ones count too: the limit protects the verification
    assert refused(g, sign(command(T0 + 5), "hmac-sha256", KEY), now=T0 + 5) == "rate"
    assert g.admit(sign(command(T0 + 61), "hmac-sha256", KEY), False, T0 + 61)[0] == "hmac-sha256"


def test_the_nonce_cache_is_bounded_and_forgets_only_what_the_window_refuses_anyway():
    g = gate(rate=10, window=60.0)
    seen = []
    for minute in range(30):
        for i in range(10):
            now = T0 + minute * 60 + i
            c = command(now)
            g.admit(sign(c, "hmac-sha256", KEY), False, now)
            seen.append((now, c))
        assert len(g.nonces) <= g.capacity
    # a nonce still inside the window is remembered; an old one is refused by its time
    now = T0 + 29 * 60 + 61  # the last command is 52 s old: inside the window, and the rate allows more
    _, recent = seen[-1]
    assert refused(g, sign(recent, "hmac-sha256", KEY), now=now) == "replay"
    _, old = seen[0]
    assert refused(g, sign(old, "hmac-sha256", KEY), now=now) == "stale"


def test_the_signature_covers_the_exact_bytes():
    env = json.loads(sign(command(), "hmac-sha256", KEY))
    reformatted = json.dumps(json.loads(env["command"]), indent=1)  # same document, other bytes
    assert refused(gate(), json.dumps({**env, "command": reformatted}).encode()) == "signature"
    assert base64.b64decode(env["sig"])  # base64, 32 bytes of HMAC-SHA256
