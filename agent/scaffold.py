"""``plantwatch init``: an industry template's config and its empty point list, written to disk."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import plants

#: the point list's file name, next to the config (the config's ``points_file``)
POINTS_FILE = "points.csv"
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class Exists(FileExistsError):
    """A file ``init`` would write is there already (and ``force`` was not given)."""


def install(name: str, out: str | Path, force: bool = False) -> list[Path]:
    """Write template ``name`` to ``out`` and the header-only point list next to it; return the
    paths written. Nothing is written when one of them exists, unless ``force``."""
    config = Path(out)
    files = {config: plants.render(name, POINTS_FILE), config.parent / POINTS_FILE: plants.points_header()}
    there = [str(p) for p in files if p.exists()]
    if there and not force:
        raise Exists(f"{' and '.join(there)} exist{'s' if len(there) == 1 else ''}; --force overwrites")
    config.parent.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def cmd_init(args: argparse.Namespace) -> int:
    """``--list``: the templates; else write ``--template`` to ``--out``. Exit 2 for an unknown or
    missing template, 1 when a file exists (without ``--force``)."""
    if args.list:
        for name, summary in plants.TEMPLATES.items():
            print(f"{name:22} {summary}")
        return EXIT_OK
    if not args.template:
        print(f"init: name a template with --template NAME (--list shows them): {', '.join(plants.TEMPLATES)}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        written = install(args.template, args.out, force=args.force)
    except plants.UnknownTemplate as exc:
        print(f"init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exists as exc:
        print(f"init: {exc}", file=sys.stderr)
        return EXIT_FAIL
    for path in written:
        print(f"wrote {path}")
    print(f"next: fill in the addresses and limits, then `plantwatch check {written[0]}`")
    return EXIT_OK


def add_parser(sub) -> None:
    """The ``init`` command on the command line's subparsers."""
    s = sub.add_parser("init", help="write an industry template's config and an empty point list to fill in")
    s.add_argument("--template", metavar="NAME", help="the template (--list shows them)")
    s.add_argument("--out", default="plantwatch.toml", help="the config to write; the point list goes next to it")
    s.add_argument("--force", action="store_true", help="overwrite the files if they exist")
    s.add_argument("--list", action="store_true", help="list the templates, one line each")
    s.set_defaults(func=cmd_init)
