"""``plantwatch receive``: the reference platform on the command line — an MQTT subscriber, and
HTTP(S) and TCP/TLS listeners — printing what it receives, its gaps and duplicates."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from agent.cli import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, _load_or_report


def add_parser(sub) -> None:
    s = sub.add_parser("receive", help="the platform side: subscribe or listen, validate, answer, report gaps")
    s.add_argument("--broker", help="mqtt://host:port or mqtts://host:port")
    s.add_argument("--listen", action="append", default=[], metavar="URL",
                   help="be the HTTP or TCP platform: http(s)://HOST:PORT/PATH or tcp://HOST:PORT, tls://HOST:PORT "
                        "(repeatable; needs --config)")
    s.add_argument("--config", help="a config whose [provincial] section gives the profile (field names, codes, "
                                    "cipher, key, IV, encoding, envelope); without it: the json profile")
    s.add_argument("--plant", help="only this plant (default: all; MQTT)")
    s.add_argument("--prefix", default="plantwatch")
    s.add_argument("--out", help="append every unique alarm as a JSON line to this file")
    s.add_argument("--strict", action="store_true", help="exit 1 on invalid messages or gaps")
    s.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: until Ctrl-C)")
    s.add_argument("--count", type=int, default=0, help="stop after this many unique alarms")
    s.add_argument("--max-payload", type=int, default=None, metavar="BYTES",
                   help="refuse (and count) a message larger than this (default 1048576)")
    s.add_argument("--group", help="share the subscription ($share/GROUP/...) with other receivers")
    s.add_argument("--client-id", help="a persistent session under this client id")
    s.add_argument("--username", help="the broker's user name")
    s.add_argument("--password-file", help="a file holding the broker's password (first line)")
    s.add_argument("--ca-file")
    s.add_argument("--cert-file", help="mqtts: the client certificate; https/tls listeners: the server's")
    s.add_argument("--key-file", help="the key of --cert-file")
    s.add_argument("--answer", default="ok", metavar="MODE",
                   help="listeners: ok (default), error:NNN (4xx or 5xx, e.g. error:503), wrong (2xx, a code "
                        "that does not match) or stall (read, never answer)")
    s.add_argument("--success", default='{"code":"200","msg":"ok"}', metavar="JSON",
                   help="listeners: the document that answers a message taken")
    s.add_argument("--framing", choices=("delimiter", "length"), default="delimiter",
                   help="tcp/tls: frames end with --delimiter, or start with a 4-byte big-endian length")
    s.add_argument("--delimiter", default="\\n",
                   help='tcp/tls: the frame delimiter (default "\\n"; escapes as in JSON)')
    s.add_argument("--store", metavar="URL",
                   help="store every message (postgresql://USER@HOST:PORT/DB shared by N workers, or sqlite:///PATH "
                        "for one); a message is acknowledged to the broker only once stored (MQTT 5)")
    s.add_argument("--report", action="store_true",
                   help="with --store: print the gaps, duplicates, sequence epochs and offline plants the store "
                        "holds, then exit")
    s.add_argument("--offline-after", type=float, default=180.0, metavar="S",
                   help="--report: a plant not heard from for this long is offline (default 180)")
    s.add_argument("--session-expiry", type=int, default=7 * 86400, metavar="S",
                   help="--store: the broker keeps this worker's session and unacknowledged messages this long "
                        "while it is away (default 604800)")
    s.set_defaults(func=run)


def _options(args: argparse.Namespace) -> tuple[dict, str | None]:
    """The listeners' options from the arguments, or what is wrong with them."""
    from agent.platform import check_mode

    try:
        check_mode(args.answer)
        success = json.loads(args.success)
        delimiter = json.loads(f'"{args.delimiter}"').encode()
    except ValueError as exc:
        return {}, str(exc)
    if not isinstance(success, dict):
        return {}, "--success must be a JSON object"
    return {"mode": args.answer, "success": success, "framing": args.framing, "delimiter": delimiter,
            "cert_file": args.cert_file, "key_file": args.key_file}, None


# linear: read the arguments, start the subscriber and listeners, wait, print the summary
def run(args: argparse.Namespace) -> int:
    from agent.platform import Platform
    from agent.receiver import MAX_PAYLOAD, Receiver, connect

    if args.store or args.report:
        from agent.receive_store import run_store

        return run_store(args)
    if not args.broker and not args.listen:
        print("receive: give --broker, --listen or both", file=sys.stderr)
        return EXIT_CONFIG
    profile = None
    plant = None
    if args.config:
        cfg = _load_or_report(args.config)
        if cfg is None:
            return EXIT_CONFIG
        if cfg.provincial is None:
            print(f'receive: {args.config}: uplink.profile is not "provincial"', file=sys.stderr)
            return EXIT_CONFIG
        profile = cfg.provincial
        plant = cfg.agent.plant
    if args.listen and profile is None:
        print("receive: --listen takes the provincial profile: give --config", file=sys.stderr)
        return EXIT_CONFIG
    options, wrong = _options(args)
    if wrong:
        print(f"receive: {wrong}", file=sys.stderr)
        return EXIT_CONFIG
    password = broker_password(args)
    if password is False:
        return EXIT_CONFIG
    out = open(args.out, "a", encoding="utf-8") if args.out else None  # noqa: SIM115 - closed below
    if args.max_payload is not None and args.max_payload < 1:
        print(f"receive: --max-payload must be >= 1, not {args.max_payload}", file=sys.stderr)
        return EXIT_CONFIG
    receiver = Receiver(emit=lambda line: print(line, flush=True), out=out, profile=profile,
                        max_payload=args.max_payload or MAX_PAYLOAD, plant=plant)
    client = None
    platforms: list[Platform] = []
    try:
        if args.broker:
            client = connect(receiver, args.broker, args.plant, args.prefix, group=args.group,
                             client_id=args.client_id, ca_file=args.ca_file, cert_file=args.cert_file,
                             key_file=args.key_file, username=args.username, password=password)
            print(f"receiving from {args.broker} (plant {args.plant or 'any'}); Ctrl-C to stop", flush=True)
        for url in args.listen:
            platforms.append(Platform(receiver, url, **options).start())
            print(f"listening on {platforms[-1].url} (answer {args.answer}); Ctrl-C to stop", flush=True)
        _wait(args, lambda: receiver.accepted)
    except (OSError, ConnectionError, ValueError) as exc:
        print(f"receive: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        for platform in platforms:
            platform.close()
        if client is not None:
            client.loop_stop()
            client.disconnect()
        if out is not None:
            out.close()
    for line in receiver.summary():
        print(line, flush=True)
    if args.strict and (receiver.refused or any(t.gaps or t.missing_earlier() for t in receiver.plants.values())):
        return EXIT_FAIL
    return EXIT_OK


def broker_password(args: argparse.Namespace) -> str | None | bool:
    """The first line of --password-file (None without one); False, said on stderr, when unreadable."""
    if not args.password_file:
        return None
    try:
        return Path(args.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"receive: cannot read {args.password_file}: {exc.strerror or exc}", file=sys.stderr)
        return False


def _wait(args: argparse.Namespace, taken) -> None:
    """Until a signal, --seconds, or ``taken()`` (alarms so far) reaches --count."""
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    while not stop and (deadline is None or time.monotonic() < deadline):
        if args.count and taken() >= args.count:
            break
        time.sleep(0.1)
