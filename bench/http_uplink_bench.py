"""HTTP uplink throughput: a backlog of alarm rows POSTed one per request to a local platform.

The outbox holds ``--backlog`` real alarm messages; the HTTP uplink (the agent's own loop and
transport, one keep-alive connection) sends them to a platform in a process of its own (the
test platform of tests/http_platform.py: http.server, TLS from a throwaway CA, answering
``{"code":"200"}``), judged by the success rule ``status = 200, field = "code", equals = "200"``.
Reported: alarm rows per second from the uplink's start until every row is marked sent, and
that the platform received every seq in order.

    .venv/bin/python bench/http_uplink_bench.py [--backlog 20000] [--scheme https|http] [--profile json|provincial]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.config import parse  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.payloads import STATUS_SCHEMA, topic  # noqa: E402
from agent.uplinks import build  # noqa: E402
from bench.expect import refuse_short  # noqa: E402
from bench.outbox_bench import PLANT, alarm_batches  # noqa: E402

TOPIC = topic("plantwatch", PLANT, "alarm")


def serve(directory: str, tls: bool) -> None:
    """The platform, in its own process: prints its url and CA, then on a line from stdin how
    many alarms it accepted and whether their seqs were in order."""
    from tests.http_platform import Platform

    p = Platform(Path(directory), tls=tls).start()
    print(p.url, p.ca.path, flush=True)
    sys.stdin.readline()
    if p.accepted[:1] and b'"seq"' in p.accepted[0]:  # the json profile: judge the alarms' order
        alarms = [m for m in map(json.loads, p.accepted) if "seq" in m]  # not the status posts
        seqs = [m["seq"] for m in alarms]
        print(len(alarms), list(dict.fromkeys(seqs)) == list(range(1, len(set(seqs)) + 1)), flush=True)
    else:
        print(len(p.accepted), "unjudged", flush=True)
    p.stop()


def bench(directory: Path, backlog: int, scheme: str, profile: str) -> tuple[float, str]:
    path = directory / "outbox.db"
    ob = Outbox(path)
    for d in alarm_batches(backlog, 1000):
        ob.append_alarms(TOPIC, d)
    ob.close()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(directory),
                             "--scheme", scheme], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    url, ca = proc.stdout.readline().split()
    data = {"agent": {"plant": PLANT, "data_dir": str(directory)},
            "uplink": {"url": url, "profile": "provincial", **({"ca_file": ca} if scheme == "https" else {})},
            "provincial": {"gateway_code": "GW-1", "success": {"status": 200, "field": "code", "equals": "200"},
                           "headers": {"X-Request": "{uuid}"}}}
    cfg = parse(data, base=directory)
    u = replace(cfg.uplink, profile=profile)
    status = lambda online: {"schema": STATUS_SCHEMA, "plant": PLANT, "online": online}  # noqa: E731
    up = build(cfg, u, path, status)
    t0 = time.perf_counter()
    up.start()
    while up.sent_count < backlog and time.perf_counter() - t0 < 600:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    up.stop(1.0)
    proc.stdin.write("done\n")
    proc.stdin.flush()
    accepted, in_order = proc.stdout.readline().split()
    proc.wait(30)
    refuse_short({"the uplink (rows marked sent)": (up.sent_count, backlog),
                  "the platform (rows accepted)": (int(accepted), backlog)}, "alarm rows")
    assert in_order != "False", "the platform received the alarms out of seq order"
    return backlog / elapsed, "in seq order" if in_order == "True" else "order not judged: provincial bodies"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backlog", type=int, default=20000)
    ap.add_argument("--scheme", choices=("https", "http"), default="https")
    ap.add_argument("--profile", choices=("json", "provincial"), default="json")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.scheme == "https")
        return
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="pw-http-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        rate, order = bench(Path(tmp), args.backlog, args.scheme, args.profile)
    print(f"{args.backlog:,} alarm rows, {args.scheme}, profile {args.profile}, one per request: "
          f"{rate:,.0f} rows/s acknowledged and marked sent ({order})")


if __name__ == "__main__":
    main()
