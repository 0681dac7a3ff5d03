"""``plantwatch demo`` on the command line: its arguments, and the demo run (agent/demo.py is
imported only when it runs, so building the parser stays cheap)."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def cmd_demo(args: argparse.Namespace) -> int:
    if args.plant is not None:
        from agent import plants

        if args.plant not in plants.TEMPLATES:
            print(f"demo: {plants.UnknownTemplate(args.plant)}", file=sys.stderr)
            return EXIT_USAGE
    from agent.demo import run_demo

    return run_demo(seconds=args.seconds, broker=args.broker, embedded=args.embedded_broker, profile=args.profile,
                    transport=args.transport, plant=args.plant)


def add_parser(sub) -> None:
    """The ``demo`` command on the command line's subparsers."""
    s = sub.add_parser("demo", help="a simulated plant, a broker, the agent and a receiver on loopback")
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    s.add_argument("--embedded-broker", action="store_true", help="use the pure-Python broker even if mosquitto is installed")
    s.add_argument("--profile", choices=("json", "provincial"), default="json",
                   help="provincial: SM4-CBC, upper-case hex, in an {appid, data} envelope, decrypted by the platform")
    s.add_argument("--transport", choices=("mqtt", "http", "tcp"), default="mqtt",
                   help="http or tcp: the provincial profile straight to the reference platform on loopback "
                   "(tcp: AES-128-CBC in a dataId envelope), no broker")
    s.add_argument("--plant", metavar="NAME", help="run an industry template against its fault scenario: "
                   "al-casting, dust-collector, steel-gas, chemical-major-hazard (see `plantwatch init --list`)")
    s.set_defaults(func=cmd_demo)
