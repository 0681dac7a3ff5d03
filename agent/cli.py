"""The ``plantwatch`` command line: run, check, demo, receive, replay, train, probe."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from agent.config import Config, ConfigError, load

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _load_or_report(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pymodbus", "asyncua"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    import drivers

    print(f"{args.config}: OK")
    print(f"plant {cfg.agent.plant} {cfg.agent.name}".rstrip())
    print(f"uplink {cfg.uplink.url} profile={cfg.uplink.profile} prefix={cfg.uplink.topic_prefix} mqtt {cfg.uplink.mqtt_version}"
          + (" user=" + cfg.uplink.username if cfg.uplink.username else "") + (" tls" if cfg.uplink.tls else ""))
    print(f"data_dir {cfg.agent.data_dir}")
    print(f"{len(cfg.devices)} devices, {len(cfg.tags)} tags, {len(cfg.models)} models")
    for d in cfg.devices:
        tags = cfg.device_tags(d.name)
        print(f"  device {d.name}: {d.driver} {d.url} unit={d.unit} every {d.interval_s:g} s, timeout {d.timeout_s:g} s, {len(tags)} tags")
        for line in drivers.load(d.driver).plan(d, [t.spec for t in tags]):
            print(f"    {line}")
    families: dict[str, int] = {}
    for t in cfg.tags:
        for fam in t.families:
            families[fam] = families.get(fam, 0) + 1
    print("detectors: " + (", ".join(f"{name} on {n} tags" for name, n in sorted(families.items())) or "none"))
    for m in cfg.models:
        state = "trained" if m.file.is_file() else "NOT TRAINED (run plantwatch train)"
        print(f"  model {m.name}: {m.kind} over {len(m.tags)} tags, {m.file} {state}")
    return EXIT_OK


# --- run ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    _setup_logging(cfg.agent.log_level)
    from agent.runtime import Agent

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(cfg).run(stop)

    asyncio.run(main())
    return EXIT_OK


# --- receive ------------------------------------------------------------------------------------


def cmd_receive(args: argparse.Namespace) -> int:
    from agent.receiver import Receiver, connect

    out = open(args.out, "a", encoding="utf-8") if args.out else None  # noqa: SIM115 - closed below
    receiver = Receiver(emit=lambda line: print(line, flush=True), out=out)
    try:
        client = connect(receiver, args.broker, args.plant, args.prefix, group=args.group, client_id=args.client_id,
                         ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    except (OSError, ConnectionError) as exc:
        print(f"receive: cannot connect to {args.broker}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"receiving from {args.broker} (plant {args.plant or 'any'}); Ctrl-C to stop", flush=True)
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        while not stop and (deadline is None or time.monotonic() < deadline):
            if args.count and len(receiver.alarms) >= args.count:
                break
            time.sleep(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
        if out is not None:
            out.close()
    for line in receiver.summary():
        print(line, flush=True)
    if args.strict and (receiver.invalid or any(t.missing() for t in receiver.plants.values())):
        return EXIT_FAIL
    return EXIT_OK


# --- demo ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(seconds=args.seconds, broker=args.broker)


# --- entry --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch", description="Edge agent for plants under hazard supervision.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="run the agent in the foreground")
    s.add_argument("config")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate a config and print what it will do")
    s.add_argument("config")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("demo", help="a simulated plant, a broker, the agent and a receiver on loopback")
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("receive", help="the platform side: subscribe, validate, report gaps")
    s.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    s.add_argument("--plant", help="only this plant (default: all)")
    s.add_argument("--prefix", default="plantwatch")
    s.add_argument("--out", help="append every unique alarm as a JSON line to this file")
    s.add_argument("--strict", action="store_true", help="exit 1 on schema violations or gaps")
    s.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: until Ctrl-C)")
    s.add_argument("--count", type=int, default=0, help="stop after this many unique alarms")
    s.add_argument("--group", help="share the subscription ($share/GROUP/...) with other receivers")
    s.add_argument("--client-id", help="a persistent session under this client id")
    s.add_argument("--ca-file")
    s.add_argument("--cert-file")
    s.add_argument("--key-file")
    s.set_defaults(func=cmd_receive)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())


