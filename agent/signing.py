"""Signed operator commands on the MQTT command topic: envelope, signature, replay window, nonce
cache and rate limit. Functional core: no clock (``now`` is passed in), no I/O but the key files.

The payload on ``{prefix}/{plant}/cmd`` is an envelope::

    {"alg": "hmac-sha256" | "ed25519", "command": "<the command document as JSON text>", "sig": "<base64>"}

The signature covers the exact UTF-8 bytes of ``command`` (no canonical form to agree on). The
command document is a ``plantwatch.cmd/1`` document with ``ts`` (RFC 3339, the signer's clock)
and ``nonce`` (16-128 characters, never reused). A command is refused, counted by reason and
logged without its signature when it is: retained (``retained``), beyond ``command_rate_per_min``
in the last minute (``rate``), not an envelope (``malformed``), unsigned or signed with an
algorithm whose key is not configured (``unsigned``), badly signed (``signature``), outside
``command_window_s`` of the gateway's clock or older than the agent (``stale``), or a nonce seen
before (``replay``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import heapq
import hmac
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# cryptography is imported where an Ed25519 key is read or used, not with this module: every
# config loads it, few configure Ed25519, and the import costs ~7 MB of RSS

MAX_ENVELOPE = 8 * 1024
MIN_HMAC_KEY = 32
ALGORITHMS = ("hmac-sha256", "ed25519")


class Refused(ValueError):
    """A command refused before it reached the alarms; ``reason`` is the metric label."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True)
class Keys:
    hmac: bytes | None = None
    ed25519: Ed25519PublicKey | None = None


def load_keys(hmac_file: Path | None, public_file: Path | None) -> Keys:
    """The configured verification keys; ValueError naming the file and the problem."""
    key = None
    if hmac_file is not None:
        key = hmac_file.read_bytes()
        key = key[:-1] if key.endswith(b"\n") else key
        if len(key) < MIN_HMAC_KEY:
            raise ValueError(f"{hmac_file}: an HMAC key needs at least {MIN_HMAC_KEY} bytes, this one has {len(key)}")
    public = None
    if public_file is not None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            loaded = serialization.load_pem_public_key(public_file.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{public_file}: not a PEM public key ({exc})") from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise ValueError(f"{public_file}: not an Ed25519 public key")
        public = loaded
    return Keys(key, public)


def sign(command: dict[str, Any], alg: str, key: bytes | Ed25519PrivateKey) -> bytes:
    """The envelope of ``command`` (which carries ts and nonce), as the platform publishes it."""
    text = json.dumps(command, ensure_ascii=False, separators=(",", ":"))
    data = text.encode()
    if alg == "hmac-sha256":
        assert isinstance(key, bytes)
        sig = hmac.new(key, data, hashlib.sha256).digest()
    else:
        assert not isinstance(key, bytes)  # an Ed25519PrivateKey
        sig = key.sign(data)
    return json.dumps({"alg": alg, "command": text, "sig": base64.b64encode(sig).decode()}).encode()


def _verify(alg: str, keys: Keys, data: bytes, sig: bytes) -> None:
    if alg == "hmac-sha256" and keys.hmac is not None:
        if not hmac.compare_digest(hmac.new(keys.hmac, data, hashlib.sha256).digest(), sig):
            raise Refused("signature", "bad HMAC-SHA256 signature")
        return
    if alg == "ed25519" and keys.ed25519 is not None:
        from cryptography.exceptions import InvalidSignature

        try:
            keys.ed25519.verify(sig, data)
        except InvalidSignature:
            raise Refused("signature", "bad Ed25519 signature") from None
        return
    raise Refused("unsigned", f"alg {alg!r}: no key configured for it")


def _timestamp(value: Any) -> float:
    if not isinstance(value, str):
        raise Refused("stale", "ts (RFC 3339) is required")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Refused("stale", f"ts {value!r} is not RFC 3339") from None
    if t.tzinfo is None:
        raise Refused("stale", f"ts {value!r} has no time zone")
    return t.timestamp()


class Gate:
    """What a command passes before it is parsed as a command: rate, envelope, signature, time,
    nonce. The nonce cache holds the nonces of the accepted commands of the last
    2 × ``window_s``; it is bounded because at most ``rate_per_min`` commands a minute get that far."""

    def __init__(self, keys: Keys, window_s: float, rate_per_min: int, started: float):
        self.keys, self.window_s, self.rate_per_min, self.started = keys, window_s, rate_per_min, started
        self.recent: deque[float] = deque()  # arrival times of the last minute
        self.nonces: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # (forget after, nonce), a heap
        self.capacity = rate_per_min * (int(2 * window_s / 60.0) + 2)

    def admit(self, payload: bytes, retained: bool, now: float) -> tuple[str, dict[str, Any]]:
        """The signature's algorithm and the signed command document, or Refused."""
        if retained:
            raise Refused("retained", "retained command: a command is applied once, when it is sent")
        while self.recent and self.recent[0] <= now - 60.0:
            self.recent.popleft()
        if len(self.recent) >= self.rate_per_min:
            raise Refused("rate", f"more than {self.rate_per_min} commands in a minute")
        self.recent.append(now)
        text, sig, alg = self._envelope(payload)
        _verify(alg, self.keys, text.encode(), sig)
        try:
            doc = json.loads(text)
        except ValueError:
            raise Refused("malformed", "command is not JSON") from None
        if not isinstance(doc, dict):
            raise Refused("malformed", "command is not a JSON object")
        ts = _timestamp(doc.get("ts"))
        if abs(now - ts) > self.window_s:
            raise Refused("stale", f"ts {doc['ts']} is {now - ts:+.0f} s from the gateway's clock "
                          f"(window {self.window_s:g} s)")
        if ts < self.started - 1.0:
            raise Refused("stale", f"ts {doc['ts']} is before the agent started")
        nonce = doc.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise Refused("malformed", "nonce (16-128 characters) is required")
        self._forget(now)
        if nonce in self.nonces:
            raise Refused("replay", f"nonce {nonce[:8]}… was used before")
        if len(self.nonces) >= self.capacity:
            raise Refused("rate", "too many recent commands to remember")
        self.nonces.add(nonce)
        heapq.heappush(self._expiry, (ts + 2 * self.window_s, nonce))
        return alg, doc

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            self.nonces.discard(heapq.heappop(self._expiry)[1])

    @staticmethod
    def _envelope(payload: bytes) -> tuple[str, bytes, str]:
        if len(payload) > MAX_ENVELOPE:
            raise Refused("malformed", f"larger than {MAX_ENVELOPE} bytes")
        try:
            env = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise Refused("malformed", "not JSON") from None
        if not isinstance(env, dict):
            raise Refused("malformed", "not a JSON object")
        if "sig" not in env or "command" not in env:
            raise Refused("unsigned", "not a signed envelope {alg, command, sig}")
        alg, text, sig = env.get("alg"), env.get("command"), env.get("sig")
        if alg not in ALGORITHMS:
            raise Refused("unsigned", f"alg must be one of {', '.join(ALGORITHMS)}")
        if not isinstance(text, str) or not isinstance(sig, str):
            raise Refused("malformed", "command and sig must be strings")
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("signature", "sig is not base64") from None
        return text, raw, alg
