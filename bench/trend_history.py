"""A trend of a week read from the history: how long the read takes, and how long the event loop
waits meanwhile, read in the caller's thread (``Trends.get``) and off the loop (``Trends.route``,
what the console's API awaits).

A week of one tag every 2 s (302,701 points) is written with the history's own writer
(tests/test_trends_history.py ``seed``). On an asyncio loop a task sleeps 1 ms at a time and
records the gaps between its wake-ups; the week's trend is asked for while it runs. Reported per
run: the time to the answer, the longest gap of the loop during it, and the task's wake-ups.

    .venv/bin/python bench/trend_history.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import platform
import tempfile
import time
from pathlib import Path

from agent.config import parse
from agent.trends import Trends
from tests.conftest import config_dict
from tests.test_trends_history import WEEK, seed


async def measure(trends: Trends, query: str, off_loop: bool) -> tuple[int, float, float, int]:
    """(status, seconds to the answer, longest gap of the loop, wake-ups) of one request."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    t0 = time.perf_counter()
    answer = trends.route("/trend", query, time.time()) if off_loop else trends.get("/trend", query, time.time())
    if inspect.isawaitable(answer):
        answer = await answer
    spent = time.perf_counter() - t0
    await asyncio.sleep(0.002)  # the ticker's wake-up that ends the last gap
    done = True
    await task
    return answer[0], spent, max(gaps), len(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    base = Path(tempfile.mkdtemp(prefix="plantwatch-bench-trend-history-"))
    cfg = parse(config_dict(), base=base)
    end = float(int(time.time()) - 60)
    points = seed(cfg.history.path(cfg.agent.data_dir), [t.name for t in cfg.tags], end - WEEK - 600, end)
    print(f"history: {points} points of R101.TI01 in {base}")
    query = f"tag=R101.TI01&from={end - WEEK:.0f}&to={end:.0f}"
    trends = Trends(cfg)
    try:
        for r in range(args.repeat):
            for off_loop in (False, True):
                status, spent, gap, ticks = asyncio.run(measure(trends, query, off_loop))
                assert status == 200
                print(f"run {r + 1}, {'off the loop (route)' if off_loop else 'in the loop (get)   '}: answer "
                      f"{spent * 1e3:.1f} ms, longest loop gap {gap * 1e3:.1f} ms, {ticks} wake-ups")
    finally:
        trends.close()


if __name__ == "__main__":
    main()
