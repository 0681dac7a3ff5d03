"""``plantwatch replay``: a historian CSV through the engine and alarm manager, the alarm messages
to a file, the scores against labels and, on request, an HTML report (agent/report.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.cli import EXIT_CONFIG, EXIT_OK, _load_or_report
from agent.progress import Progress


def add_parser(sub) -> None:
    s = sub.add_parser("replay", help="feed a historian CSV through the engine and alarm manager")
    s.add_argument("config")
    s.add_argument("--csv", required=True, help="columns named like the tags, plus a time column")
    s.add_argument("--time-col", help="the time column (ISO 8601, local time unless it has an offset, or epoch seconds)")
    s.add_argument("--rate", type=float, help="seconds between rows, when the file has no time column")
    s.add_argument("--labels", help="a 0/1 column of known anomalies: print precision, recall, F1, FAR, MAR, delays")
    s.add_argument("--out", required=True, help="alarm messages, one JSON per line")
    s.add_argument("--report", help="write a self-contained HTML report: trends, limits, alarms, scores")
    s.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from agent.replay import ReplayError, labels_of, read_table, replay, report_html, score_lines, write_jsonl
    from detectors.base import ModelError

    if args.rate is not None and args.rate <= 0:
        print(f"replay: --rate must be > 0, not {args.rate}", file=sys.stderr)
        return EXIT_CONFIG
    reading = Progress("read  ")
    try:
        table = read_table(args.csv, [t.name for t in cfg.tags], args.time_col, args.rate, ZoneInfo(cfg.agent.timezone),
                           keep=[args.labels] if args.labels else [], progress=reading)
        read_s = reading.done()
        labels = labels_of(table, args.labels) if args.labels else None
        replaying = Progress("replay")  # the rate is the replay's own, the read apart
        result = replay(cfg, table, progress=replaying)
        seconds = replaying.done()
    except (ReplayError, ModelError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    write_jsonl(result.messages, args.out)
    for name in (n for n in table.columns if cfg.tags[cfg.tag_index()[n]].expr):
        print(f"{args.csv}: column {name!r} ignored: {name} is a computed tag, computed from its inputs")
    span = result.ts[-1] - result.ts[0] if result.rows > 1 else 0.0
    lines = [f"{args.csv}: {result.rows} rows over {span:.0f} s, {len(result.tags)} tags -> "
             f"{len(result.messages)} alarm messages in {args.out}",
             f"read in {read_s:.2f} s, replayed in {seconds:.2f} s: {result.rows / max(seconds, 1e-9):,.0f} rows/s"]
    scores = score_lines(labels, result.alarm_rows, result.ts) if labels is not None else []
    print("\n".join([*lines, *(f"  {line}" for line in scores)]))
    if args.report:
        Path(args.report).write_text(report_html(cfg, table, result, labels, scores, lines), encoding="utf-8")
        print(f"report in {args.report}")
    return EXIT_OK
