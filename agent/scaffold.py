"""``plantwatch init``: an industry template's config and its empty point list, written to disk."""

from __future__ import annotations

from pathlib import Path

from agent import plants

#: the point list's file name, next to the config (the config's ``points_file``)
POINTS_FILE = "points.csv"


class Exists(FileExistsError):
    """A file ``init`` would write is there already (and ``force`` was not given)."""


def install(name: str, out: str | Path, force: bool = False) -> list[Path]:
    """Write template ``name`` to ``out`` and the header-only point list next to it; return the
    paths written. Nothing is written when one of them exists, unless ``force``."""
    config = Path(out)
    files = {config: plants.text(name), config.parent / POINTS_FILE: plants.points_header()}
    there = [str(p) for p in files if p.exists()]
    if there and not force:
        raise Exists(f"{' and '.join(there)} exist{'s' if len(there) == 1 else ''}; --force overwrites")
    config.parent.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
