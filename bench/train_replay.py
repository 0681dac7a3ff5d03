"""Speed of `plantwatch train` (with calibration) and `plantwatch replay` on a model over many tags.

    .venv/bin/python bench/train_replay.py [--rows 1000000] [--tags 50] [--csv] [--cli] [--kind cva]

A synthetic process: ``--tags`` tags driven by 5 latent signals plus noise, two of them slow
(a warming trend), sampled every second. One config, one ``[[models]]`` entry over all tags with
the defaults (train searches inputs, components and delays; limits at target_far). Timed: train
from the table in memory (``agent.replay.train``, what `plantwatch train` runs after reading the
CSV), replay of the same rows (``agent.replay.replay``); with ``--csv``, also the CSV read.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `plantwatch` sets it (agent/cli.py)
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from agent.config import parse
from agent.replay import Table, read_table, replay, train


def process(n: int, p: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = np.cumsum(rng.normal(size=(n, 5)), axis=0) * 0.01 + rng.normal(size=(n, 5))
    X = latent @ rng.normal(size=(5, p)) + rng.normal(scale=0.3, size=(n, p))
    X[:, :2] += np.linspace(0, 30, n)[:, None]  # two slow tags
    return X + 100.0


def config(p: int, data_dir: Path, extra: list[str] = ()):
    text, names = config_text(p, data_dir, extra)
    return parse(tomllib.loads(text)), names


def config_text(p: int, data_dir: Path, extra: list[str] = ()) -> tuple[str, list[str]]:
    names = [f"T{i:02d}" for i in range(p)]
    lines = ["[agent]", 'plant = "000000000000"', f'data_dir = "{data_dir}"', 'timezone = "UTC"',
             "[uplink]", 'url = "mqtt://127.0.0.1:1883"',
             "[[devices]]", 'name = "d"', 'driver = "modbus"', 'url = "tcp://127.0.0.1:5020"']
    for i, t in enumerate(names):
        lines += ["[[tags]]", f'name = "{t}"', 'device = "d"', f'address = "hr:{2 * i}"']
    lines += ["[[models]]", 'name = "m"', f"tags = {names!r}".replace("'", '"'), 'file = "m.npz"', *extra]
    if not any(e.startswith("kind") for e in extra):
        lines.append('kind = "pca"')
    return "\n".join(lines), names


def write_csv(path: Path, rows: int, p: int, chunk: int = 100_000) -> None:
    """The process's rows as a CSV, written a chunk at a time (same rows as ``process``)."""
    X = process(rows, p)
    names = [f"T{i:02d}" for i in range(p)]
    with path.open("w") as f:
        f.write("ts," + ",".join(names) + "\n")
        for a in range(0, rows, chunk):
            block = np.column_stack([1_800_000_000.0 + np.arange(a, min(rows, a + chunk), dtype=float), X[a:a + chunk]])
            np.savetxt(f, block, delimiter=",", fmt="%.6f")


def command(*args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one `plantwatch` command in a child process."""
    t = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"plantwatch {args[0]} failed: {out}")
    return took, usage.ru_maxrss / 1024, out


def run_cli(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        text, _ = config_text(args.tags, Path(tmp), args.set)
        cfg = Path(tmp) / "plant.toml"
        cfg.write_text(text)
        csv = Path(tmp) / "n.csv"
        # written by another process: a child's peak RSS counts its parent's at the fork, so this
        # one holds no rows
        subprocess.run([sys.executable, __file__, "--write-csv", str(csv), "--rows", str(args.rows), "--tags",
                        str(args.tags)], check=True)
        print(f"CSV: {csv.stat().st_size / 1e6:.0f} MB")
        took, rss, out = command("train", str(cfg), "--csv", str(csv), "--model", "m")
        print(out.rstrip())
        print(f"plantwatch train: {args.rows} rows x {args.tags} tags in {took:.1f} s, peak RSS {rss:.0f} MB")
        took, rss, out = command("replay", str(cfg), "--csv", str(csv), "--out", str(Path(tmp) / "a.jsonl"))
        print(out.rstrip())
        print(f"plantwatch replay: {args.rows} rows x {args.tags} tags in {took:.1f} s (with the read), "
              f"peak RSS {rss:.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--csv", action="store_true", help="also time reading the rows from a CSV file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a key of the [[models]] entry, TOML, e.g. --set 'rates=[30]' --set lags=1")
    ap.add_argument("--cli", action="store_true", help="run `plantwatch train` and `replay` on a CSV, with peak RSS")
    ap.add_argument("--kind", default="pca", help="the model kind (pca, cva)")
    ap.add_argument("--write-csv", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_csv:
        write_csv(Path(args.write_csv), args.rows, args.tags)
        return 0
    args.set = [*args.set, f'kind = "{args.kind}"']
    print(f"load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus")
    if args.cli:
        run_cli(args)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return 0
    X = process(args.rows, args.tags)
    ts = 1_800_000_000.0 + np.arange(args.rows, dtype=float)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, names = config(args.tags, Path(tmp), args.set)
        table = Table(Path("synthetic"), ts, {n: X[:, j].copy() for j, n in enumerate(names)}, {})
        if args.csv:
            path = Path(tmp) / "n.csv"
            np.savetxt(path, np.column_stack([ts, X]), delimiter=",", fmt="%.6f", header="ts," + ",".join(names),
                       comments="")
            t = time.perf_counter()
            table = read_table(path, names, "ts", None, ZoneInfo("UTC"))
            print(f"read CSV: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        _, lines = train(cfg, "m", table)
        took = time.perf_counter() - t
        print("\n".join(lines))
        print(f"train: {args.rows} rows x {args.tags} tags in {took:.1f} s")
        t = time.perf_counter()
        result = replay(cfg, Table(table.path, ts, {n: X[:, j].copy() for j, n in enumerate(names)}, {}))
        took = time.perf_counter() - t
        print(f"replay: {args.rows} rows x {args.tags} tags in {took:.1f} s = {args.rows / took:,.0f} rows/s "
              f"({len(result.messages)} alarm messages)")
    print(f"peak RSS of this process (the rows generated in memory included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
