"""Subscriptions and polling against a real asyncua server: values, quality, timestamps, losses."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

import numpy as np
from asyncua import ua

from drivers.base import BAD, GOOD, UNCERTAIN
from drivers.opcua import OpcUaDriver
from tests.opcua.helpers import Collector, PercentDeadbands, PlantServer, device, plant_tags, run, tags


def test_subscription_delivers_changes_with_source_timestamps_and_scaling():
    async def main():
        async with PlantServer() as srv:
            t = plant_tags()
            t[0] = dataclasses.replace(t[0], scale=2.0, offset=-1.0)
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), t)
            async with Collector(driver) as c:
                await c.wait_for(lambda c: all(c.last(i) for i in range(5)), what="initial values")
                assert c.last(0)[:1] == (85.0 * 2.0 - 1.0,)
                assert c.last(3)[0] == 1.0  # Boolean True
                assert c.last(4)[0] == 7.0
                source = dt.datetime(2031, 5, 4, 3, 2, 1, 250000, tzinfo=dt.UTC)
                await srv.set("R101.TI01", 90.5, source_ts=source)
                await c.wait_for(lambda c: c.last(0)[0] == 90.5 * 2.0 - 1.0, what="new value")
                value, ts, quality = c.last(0)
                assert ts == source.timestamp()
                assert quality == GOOD
            assert all(b.error is None for b in c.batches)
            for b in c.batches:
                assert b.tag.dtype == np.int32 and b.value.dtype == np.float64
                assert b.ts.dtype == np.float64 and b.quality.dtype == np.uint8

    run(main())


STATUSES = [
    (ua.StatusCodes.Good, GOOD),
    (ua.StatusCodes.UncertainLastUsableValue, UNCERTAIN),
    (ua.StatusCodes.UncertainSensorNotAccurate, UNCERTAIN),
    (ua.StatusCodes.BadSensorFailure, BAD),
    (ua.StatusCodes.BadOutOfService, BAD),
]


def test_status_codes_map_to_quality():
    async def main():
        async with PlantServer(extra=len(STATUSES)) as srv:
            names = [f"X.{i}" for i in range(len(STATUSES))]
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), plant_tags(names))
            async with Collector(driver) as c:
                await c.wait_for(lambda c: all(c.last(i) for i in range(len(names))), what="initial values")
                for name, (status, _) in zip(names, STATUSES, strict=True):
                    await srv.set(name, 13.0, status=status)
                await c.wait_for(lambda c: all(len(c.samples(i)) >= 2 for i in range(len(names))),
                                 what="status changes")
            for i, (status, quality) in enumerate(STATUSES):
                value, _, q = c.last(i)
                assert q == quality, ua.StatusCode(status).name
                assert (value == 13.0) if quality != BAD else np.isnan(value)

    run(main())


def test_unknown_node_is_bad_and_the_other_tags_keep_running():
    async def main():
        async with PlantServer() as srv:
            t = tags(["ns=2;s=R101.TI01", "ns=2;s=NO.SUCH.TAG", "ns=2;i=999999", "ns=2;s=R101.CNT"])
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), t)
            async with Collector(driver) as c:
                await c.wait_for(lambda c: all(c.last(i) for i in range(4)), what="all four tags")
                for bad in (1, 2):
                    value, _, q = c.last(bad)
                    assert q == BAD and np.isnan(value)
                await srv.set("R101.CNT", 8)
                await c.wait_for(lambda c: c.last(3)[0] == 8.0, what="good tag still updating")
                assert all(b.error is None for b in c.batches)
                # what the console's devices view shows of the subscription
                (report,) = driver.report()
                rows = dict(report["rows"])
                assert report["title"] == "OPC-UA subscription" and rows["subscription id"] > 0
                assert rows["monitored items"] == "2 of 4" and rows["items refused"] == 2
                assert rows["publishing interval ms (asked, granted)"].startswith("50, ")
                assert rows["last publish"].endswith(" s ago") and driver.last_latency_s is None
            assert driver.stats.bad_items == 2
            assert dict(driver.report()[0]["rows"])["subscription"] == "none (not connected)"

    run(main())


def test_deadband_absolute_suppresses_small_changes():
    async def main():
        async with PlantServer() as srv:
            t = plant_tags(["R101.TI01"], deadband_abs=1.0)
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), t)
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="initial value")
                for v in (85.2, 85.4, 85.6, 87.0):  # only 87.0 is more than 1.0 from 85.0
                    await srv.set("R101.TI01", v)
                    await asyncio.sleep(0.1)
                await c.wait_for(lambda c: c.last(0)[0] == 87.0, what="change beyond the deadband")
                assert [v for v, _, _ in c.samples(0)] == [85.0, 87.0]

    run(main())


def test_deadband_percent_of_the_eu_range_suppresses_small_changes():
    async def main():
        # EURange 0..200 and a 1 % deadband: a change is reported when it differs from the last
        # reported value by more than 2.0
        async with PlantServer(extra=1, eu_ranges={"X.0": (0.0, 200.0)}) as srv:
            # a queue longer than the sequence: nothing the server reports can be discarded,
            # however the writes fall into publishing intervals
            t = plant_tags(["X.0"], deadband_percent=1.0, queue_size=16)
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), t)
            async with Collector(driver) as c:
                await c.wait_for(lambda c: c.last(0) is not None, what="initial value")
                # 1.0, 1.9: within 2.0 of 0.0; 2.5: beyond it (a slow drift is reported once it
                # adds up); 4.0, 3.0: within 2.0 of 2.5; 0.4: 2.1 below 2.5; 100.0: the sentinel
                for v in (1.0, 1.9, 2.5, 4.0, 3.0, 0.4, 100.0):
                    await srv.set("X.0", v)
                await c.wait_for(lambda c: c.last(0)[0] == 100.0, what="the sentinel change")
            assert [v for v, _, _ in c.samples(0)] == [0.0, 2.5, 0.4, 100.0]
            assert driver.stats.samples == 4
            assert all(q == GOOD for _, _, q in c.samples(0))
            assert driver.stats.filters_refused == 0 and driver.filter_refusals == {}

    with PercentDeadbands():
        run(main())


def test_refused_percent_deadband_is_reported_and_the_tag_runs_without_it(caplog):
    async def main():
        # X.1 has no EURange, so the server cannot apply a percent deadband to it
        async with PlantServer(extra=2, eu_ranges={"X.0": (0.0, 200.0)}) as srv:
            t = plant_tags(["X.0", "X.1"], deadband_percent=1.0, queue_size=16)
            t += tags(["ns=2;s=R101.CNT"], first_index=2)
            driver = OpcUaDriver(device(srv.url, publishing_interval_ms=50), t)
            async with Collector(driver) as c:
                await c.wait_for(lambda c: all(c.last(i) for i in range(3)), what="all three tags")
                assert c.last(1)[0] == 0.0 and c.last(1)[2] == UNCERTAIN
                assert c.last(0)[2] == GOOD and c.last(2)[2] == GOOD
                await srv.set("X.0", 0.5)  # within X.0's deadband
                await srv.set("X.1", 0.5)  # X.1 has none any more: reported
                await srv.set("R101.CNT", 8)
                await srv.set("X.0", 100.0)
                await c.wait_for(lambda c: c.last(0)[0] == 100.0 and c.last(1)[0] == 0.5 and c.last(2)[0] == 8.0,
                                 what="changes on all three tags")
            assert [v for v, _, _ in c.samples(0)] == [0.0, 100.0]
            assert [(v, q) for v, _, q in c.samples(1)] == [(0.0, UNCERTAIN), (0.5, GOOD)]
            assert all(b.error is None for b in c.batches)
            assert driver.stats.filters_refused == 1 and driver.stats.bad_items == 0
            assert driver.filter_refusals == {"X.1": "BadMonitoredItemFilterUnsupported"}

    with PercentDeadbands(), caplog.at_level(logging.WARNING, logger="drivers.opcua.subscription"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("X.1" in w and "BadMonitoredItemFilterUnsupported" in w and "without a deadband" in w
               for w in warnings), warnings
    assert not any("X.0" in w for w in warnings)


def test_poll_mode_reads_in_batches():
    async def main():
        async with PlantServer(extra=25) as srv:
            names = list(srv.nodes)
            driver = OpcUaDriver(device(srv.url, mode="poll", interval_s=0.1, batch_size=7), plant_tags(names))
            async with Collector(driver) as c:
                await c.wait_for(lambda c: len(c.batches) >= 3, what="three polls")
                await srv.set("X.3", 42.0)
                await c.wait_for(lambda c: c.last(names.index("X.3"))[0] == 42.0, what="polled change")
                rows = dict(driver.report()[0]["rows"])
                assert (rows["mode"], rows["nodes"], rows["nodes per Read"], rows["Reads per poll"]) == (
                    "poll", len(names), 7, -(-len(names) // 7))
                assert driver.last_latency_s is not None and driver.last_latency_s > 0
            for b in c.batches:
                assert b.error is None and len(b) == len(names)
                assert (b.quality == GOOD).all()

    run(main())


def test_client_buffer_overflow_is_counted_and_marks_tags_uncertain():
    async def main():
        async with PlantServer(extra=20) as srv:
            names = [f"X.{i}" for i in range(20)]
            driver = OpcUaDriver(
                device(srv.url, publishing_interval_ms=50, max_pending_samples=20), plant_tags(names)
            )
            gen = driver.batches()
            first = await gen.__anext__()  # connected, initial values
            assert first.error is None
            # the consumer stalls while the server sends three rounds of changes
            for k in range(1, 4):
                for n in names:
                    await srv.set(n, float(k))
                await asyncio.sleep(0.3)
            batch = await gen.__anext__()
            await gen.aclose()
            await driver.close()
            assert driver.stats.client_overflows >= 20
            assert (batch.quality == UNCERTAIN).all()  # every tag lost a sample
            assert (batch.value == 3.0).all()  # the newest values are kept

    run(main())
