"""The commands that write a config's point list out: ``registry`` (the point registry a
provincial platform onboards the points from) and ``export-points`` (the tags as the CSV that
``[agent] points_file`` reads, docs/CONFIG.md “Point lists (CSV)”)."""

from __future__ import annotations

import argparse
import sys

from agent.cli import EXIT_CONFIG, EXIT_OK, _load_or_report


def add_parser(sub) -> None:
    s = sub.add_parser("registry", help="print the point registry (测点基础数据) for the platform's onboarding")
    s.add_argument("config")
    s.add_argument("--format", choices=("csv", "json"), default="csv",
                   help="csv: a header row of the province's field names (UTF-8); json: an array")
    s.set_defaults(func=registry)

    s = sub.add_parser("export-points", help="write the config's tags as a point list (位号表) CSV, "
                                             "the format of [agent] points_file")
    s.add_argument("config")
    s.add_argument("--out", metavar="FILE", help="write to FILE (default: standard output)")
    s.set_defaults(func=export_points)


def registry(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from agent import registry
    from agent.signoff import profile_for

    # a json-profile config is registered with the default field names and its tags' own codes
    profile = profile_for(cfg)
    pts = registry.points(cfg.tags, profile)
    text = registry.to_csv(profile, pts) if args.format == "csv" else registry.to_json(profile, pts)
    sys.stdout.buffer.write(text.encode("utf-8"))  # UTF-8 whatever the locale: the platform reads it
    return EXIT_OK


def export_points(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from agent.config.loader import export_points

    data = export_points(cfg).encode("utf-8-sig")  # with the BOM Excel needs to read it as UTF-8
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK
