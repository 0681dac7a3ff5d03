"""Faults are comm alarms, not crashes: outages yield COMM_FAIL batches, recovery clears them,
and reconnecting never leaves an orphan session on the server."""

from __future__ import annotations

import numpy as np

from drivers.base import BAD, COMM_FAIL
from drivers.opcua import OpcUaDriver
from tests.faults.tcpproxy import TcpProxy
from tests.opcua.helpers import Collector, PlantServer, device, free_port, plant_tags, run, tags


def test_server_restart_reconnects_without_session_growth():
    async def main():
        srv = await PlantServer().start()
        port = srv.port
        driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50, reconnect_max_s=0.5), plant_tags())
        try:
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="initial value")
                assert srv.session_count() == 1
                for k in range(3):
                    await srv.stop()
                    await c.wait_for(lambda c: c.batches[-1].error is not None, what="comm failure")
                    down = c.batches[-1]
                    assert (down.quality == COMM_FAIL).all() and np.isnan(down.value).all()
                    assert len(down) == 5
                    srv = await PlantServer(port).start()
                    await c.wait_for(lambda c: c.batches[-1].error is None, what="recovery")
                    await srv.set("R101.TI01", 100.0 + k)
                    await c.wait_for(lambda c, k=k: c.last(0)[0] == 100.0 + k, what="value after restart")
                    assert srv.session_count() == 1
            # closing the driver closes its session
            assert srv.session_count() == 0
        finally:
            await srv.stop()

    run(main())


def test_link_cut_leaves_no_orphan_session():
    async def main():
        async with PlantServer() as srv, TcpProxy(srv.port) as link:
            url = f"opc.tcp://127.0.0.1:{link.port}/plant"
            driver = OpcUaDriver(device(url, publishing_interval_ms=50, reconnect_max_s=0.5), plant_tags())
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="initial value")
                for k in range(3):
                    link.drop()
                    await c.wait_for(lambda c: c.batches[-1].error is not None, what="comm failure")
                    await c.wait_for(lambda c: c.batches[-1].error is None, what="recovery")
                    await srv.set("R101.TI01", 200.0 + k)
                    await c.wait_for(lambda c, k=k: c.last(0)[0] == 200.0 + k, what="value after the cut")
                    # the server kept the old session through the cut; the driver closed it
                    # before opening the new one
                    assert srv.session_count() == 1
            assert driver.stats.connects == 4 and driver.stats.reconnects == 3
            assert srv.session_count() == 0

    run(main())


def test_unreachable_device_yields_comm_fail_until_it_appears():
    async def main():
        port = free_port()
        url = f"opc.tcp://127.0.0.1:{port}/plant"
        driver = OpcUaDriver(device(url, interval_s=0.1, publishing_interval_ms=50, reconnect_max_s=0.5),
                             plant_tags())
        async with Collector(driver) as c:
            await c.wait_for(lambda c: len(c.batches) >= 3, what="failed batches")
            assert all(b.error and "refused" in b.error.lower() for b in c.batches)
            assert all((b.quality == COMM_FAIL).all() for b in c.batches)
            async with PlantServer(port) as srv:
                await c.wait_for(lambda c: c.batches[-1].error is None, what="recovery")
                await c.wait_for(lambda c: c.last(0)[0] == 85.0 and c.last(0)[2] != COMM_FAIL,
                                 what="first value")
                assert srv.session_count() == 1

    run(main())


def test_node_missing_after_restart_turns_bad_while_others_continue():
    async def main():
        srv = await PlantServer(extra=2).start()
        port = srv.port
        t = tags(["ns=2;s=X.0", "ns=2;s=X.1"])
        driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50, reconnect_max_s=0.5), t)
        try:
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(1) is not None, what="initial values")
                await srv.stop()
                await c.wait_for(lambda c: c.batches[-1].error is not None, what="comm failure")
                srv = await PlantServer(port, extra=1).start()  # X.1 is gone after the restart
                await c.wait_for(lambda c: c.last(1)[2] == BAD, what="X.1 bad")
                await srv.set("X.0", 5.0)
                await c.wait_for(lambda c: c.last(0)[0] == 5.0, what="X.0 still running")
        finally:
            await srv.stop()

    run(main())
