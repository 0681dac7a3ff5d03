"""A server that stalls is not a lost link; a link that goes silent is, and is found within the
staleness bound (2 keep-alive periods + timeout_s) without any TCP error to tell."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from drivers.base import COMM_FAIL
from drivers.opcua import OpcUaDriver
from tests.faults.tcpproxy import TcpProxy
from tests.opcua.helpers import Collector, PlantServer, device, free_port, plant_tags, run, tags

SERVER = Path(__file__).with_name("counter_server.py")
NODES = 20


def _max_count(c: Collector) -> float:
    best = 0.0
    for b in c.batches:
        if b.error is None and len(b):
            best = max(best, float(np.nanmax(b.value)))
    return best


def test_server_stall_shorter_than_the_staleness_bound_keeps_the_session():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--nodes", str(NODES), "--rate", "10",
         "--wait-items", str(NODES)],
        stdout=subprocess.PIPE, text=True,
    )

    async def main(url: str) -> None:
        # staleness bound: 2 x 2 s keep-alive + 1 s; the server stops for 3 s, three times the
        # request timeout and longer than asyncua's default one-second watchdog read
        driver = OpcUaDriver(device(url, timeout_s=1.0, publishing_interval_ms=100, queue_size=50),
                             tags([f"ns=2;s=C.{i}" for i in range(NODES)]))
        async with Collector(driver) as c:
            await c.wait_for(lambda c: _max_count(c) >= 10, timeout=30, what="counting")
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(3.0)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            stalled_at = _max_count(c)
            await c.wait_for(lambda c: _max_count(c) >= stalled_at + 30, timeout=30, what="counting after the stall")
        assert [b.error for b in c.batches if b.error is not None] == []
        assert driver.stats.connects == 1 and driver.stats.reconnects == 0
        assert driver.stats.server_overflows == driver.stats.client_overflows == driver.stats.missed_messages == 0
        for t in range(NODES):
            seen = np.concatenate([b.value[b.tag == t] for b in c.batches])
            counts = seen[seen > 0]
            np.testing.assert_array_equal(counts, np.arange(1, len(counts) + 1), err_msg=f"node C.{t}")

    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "READY", ready
        run(main(ready[1]), timeout=90)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def test_silent_link_is_found_within_the_staleness_bound_and_recovered():
    async def main():
        async with PlantServer() as srv, TcpProxy(srv.port) as link:
            url = f"opc.tcp://127.0.0.1:{link.port}/plant"
            driver = OpcUaDriver(device(url, timeout_s=1.0, publishing_interval_ms=100, reconnect_max_s=0.5),
                                 plant_tags())
            bound = 2 * 2.0 + 1.0
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="initial value")
                before = len(c.batches)
                link.cut()  # bytes vanish, the sockets stay open
                # 3 x the bound: a hang guard, not a pass window (how fast is a benchmark's business)
                await c.wait_for(lambda c: c.batches[-1].error is not None, timeout=3 * bound, what="comm failure")
                assert [b.error for b in c.batches[:before]] == [None] * before  # nothing failed before the cut
                after = c.batches[before:]
                down = after[-1]
                assert (down.quality == COMM_FAIL).all()
                # found by the staleness check or the lost connection (asyncua's keep-alive read),
                # not by a read that timed out, and one failure, not a string of them
                assert down.error in (f"no publish response for {bound:.0f} s; reconnecting",
                                      "connection lost; reconnecting") or down.error.startswith("connection lost ("), \
                    down.error
                assert [b.error for b in after[:-1]] == [None] * (len(after) - 1)
                assert all(len(b) == 0 for b in after[:-1])  # no value crossed the silent link
                link.restore()
                await c.wait_for(lambda c: c.batches[-1].error is None, timeout=30, what="recovery")
                await srv.set("R101.TI01", 321.0)
                await c.wait_for(lambda c: c.last(0)[0] == 321.0, what="value after the link is back")
                assert srv.session_count() == 1  # the session left behind by the cut was closed
            assert driver.stats.reconnects >= 1

    run(main())
