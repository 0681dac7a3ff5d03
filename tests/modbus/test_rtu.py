"""Modbus RTU over a virtual serial cable and over TCP: units on one line share one client and
are polled in turn; a silent unit is skipped by its circuit breaker while the others keep their
rate; the RTU silent interval is kept."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

import numpy as np
import pytest

from drivers.base import COMM_FAIL, GOOD, cancel_and_wait
from drivers.modbus import ModbusDriver
from drivers.modbus.link import LinkPool, frame_gap_s
from tests.modbus.helpers import device, poll, tag
from tests.modbus.serial_pair import serial_pair
from tests.modbus.server import start_serial_server, start_server

UNITS = {1: {"holding": {0: 11, 1: 0xFFFF}}, 2: {"holding": {0: 22, 1: 2}}, 3: {"holding": {0: 33, 1: 3}}}


@contextmanager
def bus(kind: str):
    """Three RTU units on one line; yields (url for the devices, server)."""
    if kind == "serial":
        with serial_pair() as (device_end, server_end):
            srv = start_serial_server(server_end, units=UNITS, baudrate=19200)  # ptys refuse parity bits
            try:
                yield f"rtu://{device_end}?baud=19200", srv
            finally:
                srv.stop()
    else:
        with start_server(units=UNITS, rtu_over_tcp=True) as srv:
            yield srv.url, srv


TAGS = [tag(0, "hr:0"), tag(1, "hr:1", "int16")]


@pytest.mark.parametrize("kind", ["serial", "rtu+tcp"])
def test_units_on_one_line_are_read_with_their_own_values(kind):
    with bus(kind) as (url, srv):
        async def run():
            drivers = [ModbusDriver(device(url, unit=u, name=f"u{u}", interval_s=0.05), TAGS) for u in (1, 2, 3)]
            gens = [d.batches() for d in drivers]
            firsts = [await g.__anext__() for g in gens]
            shared = {id(d._link) for d in drivers}
            for g in gens:
                await g.aclose()
            for d in drivers:
                await d.close()
            return firsts, shared, LinkPool._links
        firsts, shared, remaining = asyncio.run(run())
        assert [list(b.value) for b in firsts] == [[11, -1], [22, 2], [33, 3]]
        assert all(b.error is None for b in firsts)
        assert len(shared) == 1  # one client, one lock for the line
        assert not remaining  # released with the last device
        assert srv.function_codes == {3}


@pytest.mark.parametrize("kind", ["serial", "rtu+tcp"])
def test_a_silent_unit_does_not_slow_the_others(kind):
    interval = 0.25
    with bus(kind) as (url, srv):
        srv.silence(3)

        async def run(duration: float):
            drivers = {u: ModbusDriver(device(url, unit=u, name=f"u{u}", interval_s=interval, timeout_s=0.2), TAGS)
                       for u in (1, 2, 3)}
            good = {u: 0 for u in drivers}
            failed = {u: 0 for u in drivers}

            async def consume(u):
                async for batch in drivers[u].batches():
                    if batch.error is None:
                        good[u] += 1
                    else:
                        failed[u] += 1
                        assert (batch.quality == COMM_FAIL).all()
            tasks = [asyncio.create_task(consume(u)) for u in drivers]
            await asyncio.sleep(duration)
            await cancel_and_wait(tasks)
            for d in drivers.values():
                await d.close()
            return good, failed
        good, failed = asyncio.run(run(6.0))
        asked = srv.request_count(3)
        # the breaker skips the dead unit: it was asked only a few times (1 s, 2 s, 4 s ... backoff)
        assert asked <= 6 < srv.request_count(1)
        # every tick of the dead unit is a COMM_FAIL batch, made without the line when skipped; the
        # others, on the same interval, were read at every tick but those a probe of it held up
        assert good[3] == 0 and failed[3] > 2 * asked
        assert failed[1] == failed[2] == 0
        assert min(good[1], good[2]) >= failed[3] - asked, (good, failed, asked)


def test_a_unit_coming_back_is_read_again():
    with bus("rtu+tcp") as (url, srv):
        srv.silence(2)

        async def run():
            drv = ModbusDriver(device(url, unit=2, interval_s=0.05, timeout_s=0.1), TAGS)
            seen = []
            async for batch in drv.batches():
                seen.append(batch.error)
                if len(seen) == 3:
                    srv.unsilence(2)
                if batch.error is None:
                    break
            await drv.close()
            return seen
        seen = asyncio.run(run())
        assert seen[0] == ("unit 2 did not answer (no response within 0.1 s) — never answered since start; "
                           "check the unit id (2), the gateway's serial settings against the device's, and the "
                           "serial wiring behind the gateway")
        assert seen[-1] is None


def test_rtu_silent_interval_follows_the_baud_rate():
    assert frame_gap_s(9600) == pytest.approx(3.5 * 11 / 9600)  # ~4 ms
    assert frame_gap_s(115200) == 1.75e-3
    drv = ModbusDriver(device("rtu:///dev/ttyS0?baud=9600", frame_gap_ms=20), TAGS)
    assert drv.frame_gap == 0.02


def test_rtu_serial_reads_every_type_like_tcp():
    from tests.modbus.test_decode import ORDERS, SAMPLES, expected
    with serial_pair() as (device_end, server_end):
        srv = start_serial_server(server_end, baudrate=115200)
        try:
            tags, want, address = [], [], 0
            for type_, value in SAMPLES.items():
                for order in ORDERS:
                    srv.set_value(address, value, type_, order)
                    tags.append(tag(len(tags), f"hr:{address}", type_, order))
                    want.append(expected(type_, value))
                    address += 4
            (batch,) = poll(device(f"rtu://{device_end}?baud=115200", timeout_s=1.0), tags)
        finally:
            srv.stop()
    assert batch.error is None and (batch.quality == GOOD).all()
    np.testing.assert_array_equal(batch.value, np.array(want))
    assert srv.function_codes == {3}
