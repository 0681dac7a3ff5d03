"""The cost of checking a signed MQTT command, and of an operator request on the socket.

1. gate: ``agent.signing.Gate.admit`` on valid HMAC-SHA256 and Ed25519 commands (each with a
   fresh nonce, within the window) and on refused ones (bad signature, replay): microseconds
   per command, the CPU the agent spends per command it is sent (a flood beyond
   ``command_rate_per_min`` is refused before any of this).
2. socket: GET /alarms over the operator socket (SO_PEERCRED, HTTP, the alarm list) of a
   ``SocketApi`` serving a manager with 100 alarms, in this process: milliseconds per request.

    .venv/bin/python bench/commands_bench.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.signing import Gate, Keys, Refused, sign


def commands(n: int, now: float) -> list[dict]:
    ts = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
    return [{"schema": "plantwatch.cmd/1", "plant": "640100000001", "op": "ack", "id": f"T{i}/limit", "ts": ts,
             "nonce": secrets.token_hex(16)} for i in range(n)]


def gate_bench(n: int) -> None:
    key, private = secrets.token_bytes(32), Ed25519PrivateKey.generate()
    now = time.time()
    for alg, signer in (("hmac-sha256", key), ("ed25519", private)):
        payloads = [sign(c, alg, signer) for c in commands(n, now)]
        gate = Gate(Keys(key, private.public_key()), 300.0, 10 * n, now - 60)
        t0 = time.perf_counter()
        for p in payloads:
            gate.admit(p, False, now)
        valid = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        refused = 0
        for p in payloads:  # every one a replay now
            try:
                gate.admit(p, False, now)
            except Refused:
                refused += 1
        replay = (time.perf_counter() - t0) / n * 1e6
        assert refused == n
        print(f"gate {alg:12} valid {valid:7.1f} us/command   replayed {replay:7.1f} us/command  (n={n})")


async def socket_bench(n: int) -> None:
    from agent.api import SocketApi
    from agent.operator_cli import _UnixConnection
    from agent.payloads import dumps

    alarms = [{"id": f"T{i}/limit", "active": True, "acked": False, "level": "H"} for i in range(100)]
    with tempfile.TemporaryDirectory() as d:
        api = SocketApi(Path(d) / "api.sock", "", lambda path: (200, "application/json", dumps({"alarms": alarms})),
                        lambda *a: (200, {}))
        await api.start()

        def requests() -> float:
            import socket

            t0 = time.perf_counter()
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(api.path))
                conn = _UnixConnection(s)
                conn.request("GET", "/alarms")
                conn.getresponse().read()
                conn.close()
            return (time.perf_counter() - t0) / n * 1e3

        ms = await asyncio.to_thread(requests)
        await api.close()
    print(f"socket GET /alarms (100 alarms) {ms:.2f} ms/request  (n={n}, client and server in one process)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()} Python {sys.version.split()[0]}")
    gate_bench(args.n)
    asyncio.run(socket_bench(min(args.n, 500)))


if __name__ == "__main__":
    main()
