"""History: bytes per tag per day, the recorder's CPU at 10,000 tags, and the query time.

1. size: a day of 1 s samples (synthetic time) of a noisy and of a quiet signal through the
   real compressor and day files (committed every 5 s, ``recent`` moved into ``points`` once a
   minute, as the agent does), then the day file's size after it is closed, per tag.
     noisy: 50 + 5 sin(2πt/1 h) + white noise σ = 0.5 (0.5 % of the range 0..100)
     quiet: 50 + 10 sin(2πt/6 h) + white noise σ = 0.02 (0.02 % of the range)
   at the default error bound (0.2 % of the range = 0.2), at 1 % (1.0) and, for the noisy
   signal, at 3 σ of its noise (1.5).
2. cpu: 10,000 tags polled every 1 s as 80 devices × 125 tags (80 batches a tick) through
   ``History.record`` (the compressor, on the event loop) and ``History.write`` (the commit
   every 5 s, in the worker thread, and ``Store.compact`` once a minute), for ``--ticks``
   seconds of synthetic time; CPU seconds per tick and per day, for all-quiet, all-noisy and a
   10 % noisy mix.
3. query: a day file holding 10,000 tags (9,999 with a point a minute, one with 86,400 points)
   and the time of `plantwatch history CONFIG TAG --from --to --csv` (the whole command, a
   new process) and of the read alone.

    .venv/bin/python bench/history.py [--tags 20] [--ticks 300] [--skip-query]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.config import parse
from agent.history import History
from agent.history_compress import Compressor, Points
from agent.history_store import DAY_S, Store, day_files, read
from agent.pipeline import build_manager
from drivers.base import SampleBatch

T0 = 1764374400.0  # 2025-11-29T00:00:00Z
ROOT = Path(__file__).resolve().parents[1]


def signal_at(kind: str, t: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` tags of ``kind`` at times ``t`` (1-d), shape (len(t), n), phases differ per tag."""
    phase = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if kind == "noisy":
        return 50 + 5 * np.sin(2 * np.pi * t[:, None] / 3600 + phase) + rng.normal(0, 0.5, (len(t), n))
    return 50 + 10 * np.sin(2 * np.pi * t[:, None] / 21600 + phase) + rng.normal(0, 0.02, (len(t), n))


def bench_size(directory: Path, kind: str, n: int, deviation: float) -> tuple[float, float]:
    """(bytes per tag per day, archived points per tag per day)."""
    rng = np.random.default_rng(1)
    store = Store(directory / f"{kind}-{deviation:g}", [f"T{i}" for i in range(n)])
    comp = Compressor(np.full(n, deviation), "swinging-door", 600.0)
    tags = np.arange(n, dtype=np.int32)
    points = 0
    chunk = 3600
    for start in range(0, DAY_S, chunk):
        t = np.arange(start, start + chunk, dtype=np.float64)
        values = signal_at(kind, t, n, rng)
        pending = []
        for i in range(chunk):
            pending.append(comp.add(tags, np.full(n, T0 + t[i]), values[i], np.zeros(n, np.uint8)))
            if i % 5 == 4:
                pts = Points.concat(pending)
                points += store.write(pts)
                pending = []
            if i % 60 == 59:  # recent into points once a minute, as the agent does
                store.compact()
        points += store.write(Points.concat(pending))
    points += store.write(comp.flush())
    store.close()
    size = sum(p.stat().st_size for p in day_files(store.dir).values())
    return size / n, points / n


def config_for(tags: int, data_dir: Path) -> dict:
    devices = [{"name": f"plc{d}", "driver": "modbus", "url": "tcp://127.0.0.1:5020", "unit": d + 1}
               for d in range(80)]
    per = tags // 80
    return {
        "agent": {"plant": "640100000001", "data_dir": str(data_dir)},
        "devices": devices,
        "tags": [{"name": f"U{i // per}.TI{i % per:03d}", "device": f"plc{i // per}", "address": f"hr:{2 * (i % per)}",
                  "range": [0.0, 100.0]} for i in range(tags)],
    }


def bench_cpu(directory: Path, mix: float, ticks: int, tags: int = 10000) -> dict[str, float]:
    cfg = parse(config_for(tags, directory / f"cpu-{mix:g}"), base=directory)
    h = History(cfg, build_manager(cfg), lambda msgs: None)
    rng = np.random.default_rng(2)
    noisy = int(tags * mix)
    per = tags // 80
    plans = [np.arange(d * per, (d + 1) * per, dtype=np.int32) for d in range(80)]
    record_s = write_s = 0.0
    for tick in range(ticks):
        t = np.array([float(tick)])
        values = np.concatenate([signal_at("noisy", t, noisy, rng)[0], signal_at("quiet", t, tags - noisy, rng)[0]])
        batches = [SampleBatch.build(f"plc{d}", p, values[p], T0 + tick, 0) for d, p in enumerate(plans)]
        c0 = time.process_time()
        for b in batches:
            h.record(b)
        record_s += time.process_time() - c0
        if tick % 5 == 4 or tick == ticks - 1:
            c0 = time.process_time()
            assert h.write(h.take(), T0 + tick, maintain=False)["error"] is None
            if tick % 60 == 59:  # the maintenance pass's move of recent into points, once a minute
                h.store.compact()
            write_s += time.process_time() - c0
    h.store.close()
    size = sum(p.stat().st_size for p in day_files(h.dir).values())
    return {"record_ms_per_tick": record_s / ticks * 1000, "write_ms_per_tick": write_s / ticks * 1000,
            "cpu_s_per_day": (record_s + write_s) / ticks * DAY_S, "bytes": size, "ticks": ticks}


def bench_query(directory: Path, tags: int = 10000) -> dict[str, float]:
    data_dir = directory / "query"
    store = Store(data_dir / "history", [f"U{i // 125}.TI{i % 125:03d}" for i in range(tags)])
    rng = np.random.default_rng(3)
    minute = T0 + np.arange(0, DAY_S, 60.0)
    c0 = time.perf_counter()
    for first in range(0, tags, 100):
        idx = np.arange(first, min(tags, first + 100), dtype=np.int32)
        idx = idx[idx != 4321]
        store.write(Points(np.repeat(idx, len(minute)), np.tile(minute, len(idx)),
                           rng.normal(50, 5, len(idx) * len(minute)), np.zeros(len(idx) * len(minute), np.uint8)))
    second = T0 + np.arange(DAY_S, dtype=np.float64)
    store.write(Points(np.full(DAY_S, 4321, np.int32), second, rng.normal(50, 5, DAY_S), np.zeros(DAY_S, np.uint8)))
    store.close()
    fill_s = time.perf_counter() - c0
    size = sum(p.stat().st_size for p in day_files(data_dir / "history").values())
    config = directory / "query.toml"
    lines = ['[agent]', 'plant = "640100000001"', f'data_dir = "{data_dir}"', 'timezone = "UTC"',
             '[[devices]]', 'name = "plc"', 'driver = "modbus"', 'url = "tcp://127.0.0.1:5020"']
    for i in range(tags):  # the config names every tag, as the gateway's would
        lines += ['[[tags]]', f'name = "U{i // 125}.TI{i % 125:03d}"', 'device = "plc"', f'address = "hr:{2 * (i % 125)}"']
    config.write_text("\n".join(lines) + "\n")
    out = {"fill_s": fill_s, "file_mb": size / 2**20}
    for name, tag in (("noisy", "U34.TI071"), ("quiet", "U0.TI001")):  # 4321 = U34.TI071
        c0 = time.perf_counter()
        pts = read(data_dir / "history", tag, T0, T0 + DAY_S - 0.001)
        out[f"read_{name}_s"], out[f"points_{name}"] = time.perf_counter() - c0, len(pts)
        times = []
        for _ in range(3):
            c0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "agent.cli", "history", str(config), tag, "--from",
                                  "2025-11-29T00:00:00Z", "--to", "2025-11-29T23:59:59.999Z", "--csv"],
                                 capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            times.append(time.perf_counter() - c0)
            assert run.returncode == 0, run.stderr
        out[f"command_{name}_s"] = times
        out[f"rows_{name}"] = run.stdout.count("\n") - 1
    c0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agent.cli", "check", str(config)], capture_output=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    out["check_s"] = time.perf_counter() - c0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=20, help="tags of each kind in the size run")
    ap.add_argument("--ticks", type=int, default=300, help="seconds of 10,000 tags in the CPU run")
    ap.add_argument("--skip-query", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        directory = Path(tmp)
        for kind, devs in (("noisy", (0.2, 1.0, 1.5)), ("quiet", (0.2, 1.0))):
            for dev in devs:
                per_tag, pts = bench_size(directory, kind, args.tags, dev)
                print(f"size {kind:5} deviation {dev:g}: {pts:9.0f} points/tag/day, {per_tag / 1024:8.1f} KiB/tag/day, "
                      f"{per_tag / max(pts, 1):.1f} B/point")
        for mix in (0.0, 0.1, 1.0):
            r = bench_cpu(directory, mix, args.ticks)
            print(f"cpu 10k tags, {mix * 100:3.0f} % noisy: record {r['record_ms_per_tick']:.2f} ms/tick, write "
                  f"{r['write_ms_per_tick']:.2f} ms/tick, {r['cpu_s_per_day']:.0f} CPU s/day "
                  f"({(r['record_ms_per_tick'] + r['write_ms_per_tick']) / 10:.2f} % of one core)")
        if not args.skip_query:
            q = bench_query(directory)
            print(f"query store: 10,000 tags x 1 day, {q['file_mb']:.0f} MB, filled in {q['fill_s']:.0f} s")
            for name in ("noisy", "quiet"):
                print(f"query {name}: {q[f'points_{name}']} points, read {q[f'read_{name}_s'] * 1000:.0f} ms, "
                      f"`plantwatch history --csv` {', '.join(f'{x * 1000:.0f}' for x in q[f'command_{name}_s'])} ms "
                      f"(3 runs, {q[f'rows_{name}']} rows)")
            print(f"`plantwatch check` of the 10,000-tag config: {q['check_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
