"""The ``plantwatch`` command line: run, check, registry, export-points, demo, init, receive, replay, train,
history, probe, provincial."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config
    from drivers.base import Driver

from agent.version import VersionAction

# One BLAS thread: the engine multiplies small matrices per batch (a replay chunk, a device's
# read), where a second BLAS thread on a busy gateway costs more than it brings (measured in
# docs/PERFORMANCE.md). Set before numpy is first imported; the environment can still say otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _load_or_report(path: str, apart: bool = False) -> Config | None:
    """The config, or None once its problems are printed. ``apart``: loaded in a child process
    (agent.config_apart), which must be called before any thread starts."""
    from agent.config import ConfigError, load  # imported here: `run` must install its signal handlers first

    try:
        if apart:
            from agent.config_apart import load_apart

            return load_apart(path)
        return load(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return None


def _setup_logging(level: str, driver_names: Iterable[str] = ()) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import drivers

    for name in sorted(set(driver_names)):
        _quiet(drivers.load(name))


def _quiet(cls: type[Driver], floor: int = logging.NOTSET) -> None:
    """Raise a driver's library loggers to the level it declares (at least ``floor``)."""
    for logger, level in cls.loggers.items():
        logging.getLogger(logger).setLevel(max(level, floor))


# --- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    if getattr(args, "strict", False) and cfg.warnings:
        print(f"{args.config}: refused (--strict): warnings", file=sys.stderr)
        for line in cfg.warnings:
            print(f"warning: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.format != "text" and not (args.points or args.connect):
        print("check: --format goes with --points or --connect", file=sys.stderr)
        return EXIT_CONFIG
    if args.points or args.connect:
        from agent import commissioning

        for line in cfg.warnings:  # on stderr: --format csv or json keeps stdout the table
            print(f"warning: {line}", file=sys.stderr)
        if args.points and args.connect and args.format != "text":
            print("check: --points and --connect together print text only", file=sys.stderr)
            return EXIT_CONFIG
        if args.connect and args.format == "csv":
            print("check: --connect prints text or json", file=sys.stderr)
            return EXIT_CONFIG
        code = commissioning.points(cfg, args.format) if args.points else EXIT_OK
        return commissioning.connect(cfg, args.format) if args.connect else code
    import drivers
    from agent.config.sections import redact

    print(f"{args.config}: OK")
    for line in cfg.warnings:
        print(f"warning: {line}")
    print(f"plant {cfg.agent.plant} {cfg.agent.name}".rstrip())
    _print_uplinks(cfg)
    if cfg.provincial is not None:
        print(cfg.provincial.describe())
    from agent.operator_cli import describe

    print(describe(cfg))
    print(f"data_dir {cfg.agent.data_dir}")
    h = cfg.history
    print(f"history {h.path(cfg.agent.data_dir)} {h.compression} {h.retention_days} days, max {h.max_mb:g} MB"
          if h.enabled else "history off")
    print(f"{len(cfg.devices)} devices, {len(cfg.tags)} tags, {len(cfg.models)} models")
    for d in cfg.devices:
        tags = cfg.device_tags(d.name)
        print(f"  device {d.name}: {d.driver} {redact(d.url)} unit={d.unit} every {d.interval_s:g} s, timeout {d.timeout_s:g} s, {len(tags)} tags")
        for line in drivers.load(d.driver).plan(d, [t.spec for t in tags]):
            print(f"    {line}")
    _print_computed(cfg)
    families: dict[str, int] = {}
    for t in cfg.tags:
        for fam in t.families:
            families[fam] = families.get(fam, 0) + 1
    print("detectors: " + (", ".join(f"{name} on {n} tags" for name, n in sorted(families.items())) or "none"))
    if cfg.tuning is not None:
        print(f"  calibrated by train: {cfg.tuning.path}, {len(cfg.tuning.params)} tags, {len(cfg.tuning.cycles)} with a cycle")
    for m in cfg.models:
        state = "trained" if m.file.is_file() else "NOT TRAINED (run plantwatch train)"
        print(f"  model {m.name}: {m.kind} over {len(m.tags)} tags, {m.file} {state}")
    return EXIT_OK


def _print_uplinks(cfg: Config) -> None:
    """One line per uplink: URL (a password in it shown as ***), profile, transport, user, TLS."""
    from agent.config.sections import redact

    for u in cfg.uplinks:
        named = "uplink" if len(cfg.uplinks) == 1 else f"uplink {u.name}"
        wire = {"mqtt": f"mqtt {u.mqtt_version}", "http": f"http timeout {u.timeout_s:g} s batch {u.batch_max}",
                "tcp": f"tcp timeout {u.timeout_s:g} s framing {'length' if u.framing == 'length' else repr(u.delimiter)}"
                       f" refused codes {','.join(u.refused_codes) or 'none'}"}[u.transport]
        print(f"{named} {redact(u.url)} profile={u.profile} prefix={u.topic_prefix} {wire}"
              + (" user=" + u.username if u.username else "") + (" tls" if u.tls else ""))


def _print_computed(cfg: Config) -> None:
    """The computed tags in the order they are evaluated, each with its expression."""
    if not cfg.computed:
        return
    print(f"  computed: {len(cfg.computed.programs)} tags, evaluated each tick in this order")
    for prog in cfg.computed.programs:
        t = cfg.tags[prog.out]
        print(f"    {t.name} = {t.expr}" + (" (bool)" if t.spec.type == "bool" else ""))


# --- run ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    # systemd may stop us while we are still starting: remember it, and stop cleanly once up
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    # loaded in a child process, so that the parser's leftovers never sit in the agent's heap: it
    # forks, so this comes before anything starts a thread (logging's handlers, the agent's
    # workers, asyncio). The child keeps these handlers: a signal during the load is recorded,
    # and the agent stops once up (agent.config_apart)
    cfg = _load_or_report(args.config, apart=True)
    if cfg is None:
        return EXIT_CONFIG
    _setup_logging(cfg.agent.log_level, [d.driver for d in cfg.devices])
    for line in cfg.warnings:
        logging.getLogger("agent").warning("%s", line)
    from agent.outbox import OutboxError
    from agent.runtime import Agent, DataDirError
    from detectors.base import ModelError

    try:
        agent = Agent(cfg)
    except DataDirError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ModelError as exc:
        print(f"{args.config}: model: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OutboxError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_FAIL

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if early:
            stop.set()
        await agent.run(stop)

    asyncio.run(main())
    return EXIT_OK


# --- replay and train ---------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from zoneinfo import ZoneInfo

    from agent.progress import Progress
    from agent.replay import NoTimeColumn, ReplayError, columns_needed, read_table, train
    from agent.tuning import train_detectors, tuned_tags

    if not (args.model or args.detectors):
        print("train: give --model NAME (a [[models]] entry) and/or --detectors (the per-tag detectors)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        model = next((m for m in cfg.models if m.name == args.model), None)
        tags = columns_needed(cfg, model.tags) if model else []
        tags += [t for t in (tuned_tags(cfg) if args.detectors else []) if t not in tags]
        read = [args.csv, tags or [t.name for t in cfg.tags]]
        zone, reading = ZoneInfo(cfg.agent.timezone), Progress("read  ")
        try:  # the file's time column (derived inputs' windows are in seconds), else one row a second
            table = read_table(*read, args.time_col, args.rate, zone, progress=reading)
        except NoTimeColumn:
            if args.detectors:  # the detectors' cycles and rates need the time
                raise
            table = read_table(*read, None, 1.0, zone, progress=reading)
        reading.done()
        lines = train(cfg, args.model, table)[1] if args.model else []
        if args.detectors:
            calibrating = Progress("calibrate", unit="tags")
            lines += train_detectors(cfg, table, progress=calibrating)
            calibrating.done()
    except ReplayError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for line in lines:
        print(line)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from agent.history_query import run  # reads only the parts of the config it needs (see there)

    return run(args, _load_or_report)


# --- probe ------------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    import drivers
    from drivers.base import DriverError

    try:
        cls = drivers.for_url(args.url)
        # the protocol libraries log connection failures themselves; probe reports them once
        _quiet(cls, logging.CRITICAL)
        lines = asyncio.run(cls.probe(args.url, vars(args)))
    except ValueError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DriverError, OSError, TimeoutError) as exc:
        print(f"probe: {args.url}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    for line in lines:
        print(line)
    return EXIT_OK


# --- provincial decrypt ----------------------------------------------------------------------------


def cmd_provincial_decrypt(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from agent.decrypt import run

    return run(cfg, args.source)


# --- entry --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    return _parser(with_drivers=True)[0]


# declarative: the argparse tables of every command, one after the other
def _parser(with_drivers: bool) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the names of the commands that need no driver."""
    p = argparse.ArgumentParser(prog="plantwatch", description="Edge agent for plants under hazard supervision.")
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="run the agent in the foreground")
    s.add_argument("config")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate a config and print what it will do")
    s.add_argument("config")
    s.add_argument("--strict", action="store_true", help="warnings (a secret file others can read) refuse the config")
    s.add_argument("--connect", action="store_true",
                   help="read every point once from its device (read-only) and print value, quality and raw data; "
                   "exit 1 when a point is not GOOD")
    s.add_argument("--points", action="store_true",
                   help="print the per-tag sign-off table: address, decoding, limits and priorities in force, codes")
    s.add_argument("--format", choices=("text", "csv", "json"), default="text",
                   help="with --points: text, csv or json; with --connect: text or json")
    s.set_defaults(func=cmd_check)

    from agent import pointlists, replay_cmd

    pointlists.add_parser(sub)
    replay_cmd.add_parser(sub)

    from agent import demo_command, scaffold

    demo_command.add_parser(sub)

    scaffold.add_parser(sub)

    s = sub.add_parser("train", help="fit a multivariate model from normal-operation data")
    s.add_argument("config")
    s.add_argument("--csv", required=True)
    s.add_argument("--model", help="the [[models]] name")
    s.add_argument("--detectors", action="store_true", help="calibrate the per-tag ewma, cusum, robust and flatline "
                   "for [agent] target_alarms_per_week, learn daily/weekly cycles; written to [agent] detectors_file")
    s.add_argument("--time-col")
    s.add_argument("--rate", type=float)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("history", help="print one tag's recorded history (time, value, quality)")
    s.add_argument("config")
    s.add_argument("tag")
    s.add_argument("--from", dest="start", metavar="T", help="RFC 3339, or YYYY-MM-DD HH:MM[:SS] in the plant's "
                   "time zone ([agent] timezone); default: 24 hours before --to")
    s.add_argument("--to", metavar="T", help="as --from; default: now")
    s.add_argument("--csv", action="store_true", help="CSV (time in RFC 3339 UTC, TAG, quality) that "
                   "`plantwatch replay` reads")
    s.set_defaults(func=cmd_history)

    from agent import operator_cli, receive

    operator_cli.add_parsers(sub)

    receive.add_parser(sub)

    s = sub.add_parser("provincial", help="the provincial profile's tools")
    tools = s.add_subparsers(dest="tool", required=True, metavar="TOOL")
    s = tools.add_parser("decrypt", help="payloads as sent (one a line) opened with the config's key: one JSON a line")
    s.add_argument("config")
    s.add_argument("--in", dest="source", metavar="FILE", help="read the payloads from FILE (default: standard input)")
    s.set_defaults(func=cmd_provincial_decrypt)
    core = set(sub.choices)
    if with_drivers:
        _add_driver_commands(sub)
    return p, core


def _add_driver_commands(sub) -> None:
    """``probe`` (its help, URL forms and options come from the drivers) and the commands the
    drivers bring."""
    import drivers

    classes = drivers.loadable()
    probing = [c for c in classes if c.probe_summary]
    s = sub.add_parser("probe", help="for integrators: " + ", or ".join(c.probe_summary for c in probing))
    s.add_argument("url", help=", ".join(form for c in classes for form in c.url_forms))
    s.add_argument("--timeout", type=float, default=3.0)
    for cls in probing:
        cls.probe_arguments(s.add_argument_group(f"{cls.name} probe options"))
    s.set_defaults(func=cmd_probe)
    for cls in classes:
        for command in cls.commands():
            if command.name in sub.choices:  # a plugin must not shadow a command, nor break the parser
                logging.getLogger(__name__).warning("driver %r: command %r exists already; ignored",
                                                    cls.name, command.name)
                continue
            s = sub.add_parser(command.name, help=command.help)
            command.add_arguments(s)
            s.set_defaults(func=command.run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # importing the protocol libraries takes most of a second on a small gateway: the commands
    # that need no driver (ack, alarms, receive ...) are parsed without loading them
    parser, core = _parser(with_drivers=False)
    if next((a for a in argv if not a.startswith("-")), None) not in core:
        parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `plantwatch check x.toml | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())


