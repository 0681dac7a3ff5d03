"""How long `plantwatch check` takes for a config whose tags come from a large point list.

Writes a config with ``--devices`` Modbus devices and ``[agent] points_file`` naming a CSV of
``--rows`` tags (each with a unit, a Chinese description, a range, three limits and a
deadband, a quarter of them with the ewma detector), then runs `plantwatch check` on it
``--repeat`` times as a user would (a new process each time) and prints the best and the median
wall time. ``--toml`` writes the same tags as [[tags]] tables instead, for comparison.
``--errors N`` spoils N tags spread through the list (an unknown device, an unknown value type,
a duplicate name, in turn): the check must then exit 2 and name every one of them.

    .venv/bin/python bench/points_check.py --rows 10000
    .venv/bin/python bench/points_check.py --rows 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, rows: int, devices: int, toml: bool, errors: int = 0) -> tuple[Path, list[str]]:
    """The config and, for each spoiled tag, what the check must name."""
    head = ['[agent]\nplant = "640100000001"\ndata_dir = "data"\n']
    if not toml:
        head.append('points_file = "points.csv"\n')
    for d in range(devices):
        head.append(f'\n[[devices]]\nname = "plc{d:03d}"\ndriver = "modbus"\nurl = "tcp://127.0.0.1:{5020 + d}"\n')
    tags = [_tag(i, devices) for i in range(rows)]
    expected = [_spoil(tags, k * rows // errors + rows // (2 * errors), k) for k in range(errors)]
    if toml:
        head.extend(_toml(t) for t in tags)
    else:
        with open(folder / "points.csv", "w", encoding="utf-8-sig", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(tags[0]))
            out.writeheader()
            out.writerows(tags)
    path = folder / "plant.toml"
    path.write_text("".join(head), encoding="utf-8")
    return path, expected


def _spoil(tags: list[dict[str, str]], i: int, k: int) -> str:
    """Spoils tag i in the k-th way; returns the text the check must print for it."""
    t = tags[i]
    if k % 3 == 0:
        t["device"] = "plc-missing"
        return "unknown device 'plc-missing'"
    if k % 3 == 1:
        t["type"] = "float33"
        return "'float33'"
    t["name"] = tags[i - 1]["name"]
    return f"duplicate tag name {t['name']!r}"


def _tag(i: int, devices: int) -> dict[str, str]:
    return {"name": f"U{i // 1000:02d}.TI{i % 1000:03d}", "device": f"plc{i % devices:03d}",
            "address": f"hr:{(i // devices) * 2}", "type": "float32", "unit": "°C", "desc": f"{i}#反应釜温度",
            "range": "0;500", "hh": "180", "h": "160", "l": "20", "alarms.deadband": "1",
            "detectors": "ewma" if i % 4 == 0 else ""}


def _toml(t: dict[str, str]) -> str:
    """The same tag as a [[tags]] table."""
    limits = {"hh": t["hh"], "h": t["h"], "l": t["l"], "deadband": t["alarms.deadband"]}
    lines = [f'{k} = "{t[k]}"' for k in ("name", "device", "address", "type", "unit", "desc")]
    lines.append(f"range = [{t['range'].replace(';', ', ')}]")
    lines.append("alarms = { " + ", ".join(f"{k} = {v}" for k, v in limits.items()) + " }")
    if t["detectors"]:
        lines.append(f'detectors = ["{t["detectors"]}"]')
    return "\n[[tags]]\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--errors", type=int, default=0, help="tags spoiled, spread through the list")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--toml", action="store_true", help="the tags as [[tags]] tables instead of a points file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, expected = write_config(Path(tmp), args.rows, args.devices, args.toml, args.errors)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if args.errors:
                said = done.stdout + done.stderr
                missing = [e for e in expected if e not in said] + [f"{len(expected)} problems"][:f"{len(expected)} problems" not in said]
                if done.returncode != 2 or missing:
                    sys.exit(f"check exited {done.returncode}, did not name {missing}:\n{done.stderr[:2000]}")
            elif done.returncode != 0:
                sys.exit(f"check failed:\n{done.stderr[:2000]}")
    source = "[[tags]] tables" if args.toml else "points.csv"
    spoiled = f", {args.errors} of them spoiled (exit 2, each named)" if args.errors else ""
    print(f"plantwatch check: {args.rows} tags from {source}{spoiled}, {args.devices} devices: best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s over {args.repeat} runs "
          f"(Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
