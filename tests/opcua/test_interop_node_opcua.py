"""Interoperability with another stack: node-opcua (tests/opcua_interop/server.js) as the server.

node-opcua sets the Overflow info bit when a monitored item's queue discards a value, which the
asyncua server does not, so the server-overflow accounting is proven here.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from drivers.base import BAD, GOOD, UNCERTAIN
from drivers.opcua import OpcUaDriver
from tests.opcua.helpers import Collector, device, free_port, run, tags

INTEROP = Path(__file__).resolve().parents[1] / "opcua_interop"
COUNTERS = 20


def _npm_install() -> None:
    # the Makefile installs these before the tests; a direct pytest run installs them itself
    if (INTEROP / "node_modules" / "node-opcua-server").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "npm is required for the node-opcua interoperability tests"
    subprocess.run([npm, "install", "--prefix", str(INTEROP), "--no-audit", "--no-fund"], check=True,
                   timeout=600, stdout=subprocess.DEVNULL)


class NodeOpcUaServer:
    def __init__(self, rate: float):
        _npm_install()
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["node", str(INTEROP / "server.js"), "--port", str(self.port), "--counters", str(COUNTERS),
             "--rate", str(rate)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.requests: list[str] = []
        # node-opcua may print warnings (e.g. about the node version) before the server is up
        seen = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"node-opcua server exited before READY: {seen}"
            if line.startswith("READY "):
                break
            seen.append(line.strip())
        self.url = line.split()[1]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("REQ "):
                self.requests.append(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self._reader.join(5)


@pytest.fixture(scope="module")
def node_server():
    server = NodeOpcUaServer(rate=20.0)
    yield server
    server.stop()


PLANT = ["ns=1;s=R101.TI01", "ns=1;s=R101.RUN", "ns=1;s=R101.CNT", "ns=1;s=R101.BAD", "ns=1;s=NO.SUCH"]
COUNTER_TAGS = [f"ns=1;s=C.{i}" for i in range(COUNTERS)]


def test_subscription_against_node_opcua(node_server):
    async def main():
        driver = OpcUaDriver(device(node_server.url, publishing_interval_ms=100, sampling_interval_ms=0,
                                    queue_size=20), tags(PLANT + COUNTER_TAGS))
        async with Collector(driver) as c:
            await c.wait_for(lambda c: len(c.values_of(5)) >= 20, what="20 counter updates")
        assert c.last(0)[:1] == (85.0,) and c.last(0)[2] == GOOD
        assert c.last(1)[0] == 1.0 and c.last(2)[0] == 7.0
        assert c.last(3)[2] == BAD and np.isnan(c.last(3)[0])  # BadSensorFailure from the server
        assert c.last(4)[2] == BAD  # unknown node
        for i in range(5, 5 + COUNTERS):
            counts = c.values_of(i)
            # exception-based sampling and a deep queue: every count arrives, in order
            assert (np.diff(counts) == 1).all(), counts
        assert driver.stats.server_overflows == 0

    run(main())


def test_server_queue_overflow_is_counted_and_marked_uncertain(node_server):
    async def main():
        # 20 updates/s, a queue of 2 and a publish every 500 ms: the server must discard values
        driver = OpcUaDriver(device(node_server.url, publishing_interval_ms=500, sampling_interval_ms=0,
                                    queue_size=2), tags(COUNTER_TAGS[:5]))
        async with Collector(driver) as c:
            await c.wait_for(lambda c: driver.stats.server_overflows >= 10, what="overflow notifications")
        flagged = [q for i in range(5) for _, _, q in c.samples(i) if q == UNCERTAIN]
        assert len(flagged) >= 10
        for i in range(5):
            counts = c.values_of(i)
            assert (np.diff(counts) > 1).any()  # values were lost, and the losses were flagged

    run(main())


def test_poll_mode_against_node_opcua(node_server):
    async def main():
        driver = OpcUaDriver(device(node_server.url, mode="poll", interval_s=0.1, batch_size=4),
                             tags(PLANT + COUNTER_TAGS))
        async with Collector(driver) as c:
            await c.wait_for(lambda c: len(c.batches) >= 5, what="five polls")
        for b in c.batches:
            assert b.error is None and len(b) == len(PLANT) + COUNTERS
        assert c.last(0)[0] == 85.0 and c.last(3)[2] == BAD and c.last(4)[2] == BAD
        counts = c.values_of(5)
        assert (np.diff(counts) >= 0).all() and counts[-1] > counts[0]

    run(main())


def test_node_opcua_saw_no_write_and_no_call(node_server):
    async def main():
        driver = OpcUaDriver(device(node_server.url, publishing_interval_ms=100), tags(PLANT))
        async with Collector(driver) as c:
            await c.wait_for(lambda c: c.last(0) is not None, what="data")

    run(main())
    node_server.stop()  # flushes its request log
    seen = set(node_server.requests)
    assert {"CreateSessionRequest", "CreateMonitoredItemsRequest", "ReadRequest"} <= seen, seen
    assert not {"WriteRequest", "CallRequest"} & seen, seen
