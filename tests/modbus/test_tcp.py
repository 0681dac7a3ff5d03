"""The driver against a real pymodbus TCP server: reads only, values follow the device, faults
become BAD/COMM_FAIL samples with ``error`` set, and everything recovers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest
from pymodbus.pdu.register_message import WriteSingleRegisterRequest

from detectors.families import LimitFamily
from drivers.base import BAD, COMM_FAIL, GOOD
from drivers.modbus import ModbusDriver
from drivers.modbus.link import LinkPool, ReadOnlyViolation
from tests.modbus.helpers import device, poll, tag
from tests.modbus.server import start_server


def plant_tags():
    return ([tag(i, f"hr:{100 + 2 * i}", "float32") for i in range(20)]
            + [tag(20 + i, f"ir:{i}", "int16") for i in range(10)]
            + [tag(30 + i, f"co:{i}", "bool") for i in range(8)]
            + [tag(38 + i, f"di:{i}", "bool") for i in range(8)])


def test_the_server_sees_only_read_function_codes(server):
    batches = poll(device(server.url), plant_tags(), n=5)
    assert all(b.error is None for b in batches)
    assert server.function_codes == {1, 2, 3, 4}


def test_every_read_passes_the_device_frozen_read_plan(server):
    # the same read-only array at every read: the detection kernels check its ticks once
    batches = poll(device(server.url), plant_tags(), n=4)
    assert all(b.tag is batches[0].tag and b.quality.max() == GOOD for b in batches)
    assert batches[0].tag.tolist() == list(range(46))
    with pytest.raises(ValueError):
        batches[0].tag.flags.writeable = True
    family = LimitFamily(46, dict.fromkeys(range(46), {"hh": 1e6}))
    for b in batches:
        family.update(b.tag, b.value, b.ts, b.quality)
    assert family.kernel.fast_ticks == 4


def test_writes_are_refused_before_they_reach_the_wire(server):
    async def attempt():
        link = LinkPool.acquire(ModbusDriver(device(server.url), [tag(0, "hr:0")]).endpoint, 0.5)
        await link.connect()
        try:
            with pytest.raises(ReadOnlyViolation):
                await link.read(6, 0, 1, 1, 0.5)  # the read API itself refuses non-read codes
            with pytest.raises(ReadOnlyViolation):  # and so does the wire guard under it
                await link._client.execute(False, WriteSingleRegisterRequest(address=0, registers=[1], dev_id=1))
            await link.read(3, 0, 1, 1, 0.5)
        finally:
            LinkPool.release(link)
    asyncio.run(attempt())
    assert server.function_codes == {3}


def test_function_43_goes_out_only_with_mei_type_14(server):
    """MEI type 13 (CANopen general reference) can write: refused before the wire; 14 is sent."""
    async def attempt():
        link = LinkPool.acquire(ModbusDriver(device(server.url), [tag(0, "hr:0")]).endpoint, 0.5)
        await link.connect()
        try:
            for mei in (13, 0, 15, None):
                request = ReadDeviceInformationRequest(dev_id=1)
                request.sub_function_code = mei
                with pytest.raises(ReadOnlyViolation, match=f"MEI type {mei} refused"):
                    await link._client.execute(False, request)
            assert server.function_codes == set()  # nothing of those reached the device
            await link.device_information(1, 0.5)
        finally:
            LinkPool.release(link)
    asyncio.run(attempt())
    assert server.function_codes == {43}


def test_one_request_per_block_and_values_follow_the_device(server):
    tags = [tag(i, f"hr:{100 + 2 * i}", "float32") for i in range(32)]

    async def run():
        drv = ModbusDriver(device(server.url), tags)
        out = []
        async for batch in drv.batches():
            out.append(batch.value.copy())
            server.set_value(100, float(len(out)), "float32")
            if len(out) == 4:
                break
        await drv.close()
        return out
    server.clear_log()
    values = asyncio.run(run())
    assert [v[0] for v in values[1:]] == [1.0, 2.0, 3.0]
    assert {(fc, a, c) for _, fc, a, c in server.requests} == {(3, 100, 64)}
    assert ModbusDriver.plan(device(server.url), tags)[0] == "hr 100-163 (64 regs, 32 tags)"


def test_illegal_address_in_a_merged_block_marks_only_its_tags_bad_and_keeps_the_split():
    with start_server(holding={a: a for a in range(0, 40)}, strict=True) as srv:
        srv.set_exception("hr", 20, 22, code=2)  # e.g. a gap in the PLC's mapped DB
        tags = [tag(i, f"hr:{2 * i}", "uint32") for i in range(20)]
        dev = device(srv.url)

        async def run():
            drv = ModbusDriver(dev, tags)
            out = []
            async for batch in drv.batches():
                out.append(batch)
                if len(out) == 1:
                    srv.clear_log()  # the first poll discovers the bad range by splitting
                if len(out) == 3:
                    break
            await drv.close()
            return drv, out
        drv, batches = asyncio.run(run())
        bad = [i for i, q in enumerate(batches[0].quality) if q != GOOD]
        assert bad == [10]  # hr:20-21 only
        assert np.isnan(batches[0].value[10])
        assert batches[0].value[11] == (22 << 16) + 23
        assert "exception 02 illegal data address" in batches[0].error
        # the split is remembered: later polls send the pieces straight away, nothing more
        assert 1 < len(drv.requests) <= 7
        assert len(srv.requests) == 2 * len(drv.requests)
        assert [list(b.quality) for b in batches[1:]] == [list(batches[0].quality)] * 2
        srv.clear_exceptions()
        (ok,) = poll(dev, tags)
        assert ok.error is None and (ok.quality == GOOD).all()


def test_device_busy_exception_is_bad_quality_with_error_then_clears(server):
    server.set_exception("ir", 0, 10, code=6)
    tags = [tag(0, "ir:0"), tag(1, "hr:0")]

    async def run():
        drv = ModbusDriver(device(server.url), tags)
        out = []
        async for batch in drv.batches():
            out.append(batch)
            if len(out) == 2:
                server.clear_exceptions()
            if len(out) == 4:
                break
        await drv.close()
        return out
    batches = asyncio.run(run())
    assert list(batches[0].quality) == [BAD, GOOD]
    assert "exception 06 server device busy" in batches[0].error
    assert batches[-1].error is None and list(batches[-1].quality) == [GOOD, GOOD]


def test_timeout_gives_comm_fail_then_recovers(server):
    tags = [tag(0, "hr:0"), tag(1, "hr:1")]

    async def run():
        drv = ModbusDriver(device(server.url, timeout_s=0.2), tags)
        out = []
        server.silence(1)
        async for batch in drv.batches():
            out.append(batch)
            if sum(b.error is not None for b in out) == 2:
                server.unsilence(1)
            if out[-1].error is None and len(out) > 2:
                break
        await drv.close()
        return out
    batches = asyncio.run(run())
    # a unit silent from the start: the text says it never answered and what to check
    assert batches[0].error == ("unit 1 did not answer (no response within 0.2 s) — never answered since start; "
                                f"check the unit id (1): the device at 127.0.0.1:{server.port} accepts the "
                                "connection but does not answer this unit (is it the Modbus TCP server meant?)")
    assert (batches[0].quality == COMM_FAIL).all() and np.isnan(batches[0].value).all()
    assert batches[-1].error is None and (batches[-1].quality == GOOD).all()


def test_connection_loss_backs_off_and_recovers_on_the_same_port():
    srv = start_server(holding={0: 42})
    port = srv.port
    restarted = []

    async def run():
        drv = ModbusDriver(device(srv.url, interval_s=0.05), [tag(0, "hr:0")])
        out = []
        async for batch in drv.batches():
            out.append(batch)
            if len(out) == 2:
                srv.stop()
            if len(out) == 12 and not restarted:
                restarted.append(start_server(port, holding={0: 43}))
            if restarted and batch.error is None:
                break
        await drv.close()
        return out
    try:
        batches = asyncio.run(run())
    finally:
        for s in restarted:
            s.stop()
    assert batches[0].value[0] == 42
    failed = [b for b in batches if b.error is not None]
    assert len(failed) >= 10 and all((b.quality == COMM_FAIL).all() for b in failed)
    assert batches[-1].value[0] == 43 and batches[-1].quality[0] == GOOD


def test_connection_refused_is_a_comm_fail_not_a_crash():
    srv = start_server()
    url = srv.url
    srv.stop()
    (batch,) = poll(device(url), [tag(0, "hr:0")])
    assert batch.error == (f"cannot connect to {url.removeprefix('tcp://')} (connection refused) — never connected "
                           "since start; check the address and port of device 'plc', that the PLC's Modbus TCP "
                           "server is on, and the firewall")
    assert batch.quality[0] == COMM_FAIL


def test_backoff_grows_while_the_device_is_away():
    drv = ModbusDriver(device("tcp://127.0.0.1:1"), [tag(0, "hr:0")])
    delays = [max(drv.reconnect_delay(n) for _ in range(50)) for n in (1, 2, 3, 4)]
    assert delays == sorted(delays) and delays[-1] > 2 * delays[0]
