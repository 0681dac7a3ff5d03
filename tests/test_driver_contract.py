"""The driver contract's shared parts: one backoff for every reconnect loop, drivers found by URL
scheme, and the hooks through which a driver brings its own probe, commands and simulator."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

import drivers
from agent import cli
from agent.broker import free_port
from drivers.base import (
    PHASE_GROUPS,
    DeviceSpec,
    Driver,
    PollingDriver,
    SampleBatch,
    TagSpec,
    backoff_delay,
    poll_phase,
)
from drivers.modbus import ModbusDriver


def test_backoff_doubles_from_the_initial_delay_up_to_the_bound():
    top = [backoff_delay(n, 0.5, 30.0, rng=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # the first retry waits the initial delay at most, never less than half of it
    assert backoff_delay(1, 0.5, 30.0, rng=lambda: 0.0) == 0.25
    assert backoff_delay(0, 0.5, 30.0, rng=lambda: 0.0) == 0.25


def test_backoff_jitter_stays_between_half_and_the_full_delay():
    delays = [backoff_delay(4, 1.0, 30.0) for _ in range(500)]
    assert all(4.0 <= d < 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # the jitter really spreads the retries


def test_polling_driver_retries_on_the_shared_backoff():
    class Slow(PollingDriver):
        name = "slow"
        backoff_initial_s, backoff_max_s = 2.0, 5.0

        async def connect(self): ...

        async def read(self): ...

    drv = Slow(DeviceSpec("d", "slow", "x://"), [])
    for n in (1, 2, 3, 7):
        lo, hi = (backoff_delay(n, 2.0, 5.0, rng=lambda v=v: v) for v in (0.0, 1.0))
        assert all(lo <= drv.reconnect_delay(n) < hi for _ in range(50))


def test_many_devices_fall_evenly_into_the_poll_phase_groups_the_same_at_every_start():
    names = [f"D{i:04d}" for i in range(1613)]
    groups = collections.Counter(poll_phase(n) for n in names)
    assert sorted(groups) == [k / PHASE_GROUPS for k in range(PHASE_GROUPS)]
    assert max(groups.values()) < 1.2 * len(names) / PHASE_GROUPS  # ~200 each, not one burst of 1,613
    assert [poll_phase(n) for n in names] == [poll_phase(n) for n in names]


def test_a_device_is_first_read_at_its_phase_of_the_interval():
    first: dict[str, float] = {}

    class Stamp(PollingDriver):
        name = "stamp"

        async def connect(self): ...

        async def read(self):
            first.setdefault(self.device.name, time.monotonic())
            return SampleBatch.build(self.device.name, self.tag_indices, [1.0], time.time(), [0])

    by_phase = {poll_phase(f"d{i}"): f"d{i}" for i in range(200)}
    early, late = by_phase[0.0], by_phase[6 / PHASE_GROUPS]  # 750 ms apart with a 1 s interval

    async def main():
        async def poll(name):
            async for _ in Stamp(DeviceSpec(name, "stamp", "x://", interval_s=1.0), [TagSpec(0, "A", name, "a")]).batches():
                if len(first) == 2:
                    return

        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(poll(late), poll(early)), 10)
        return start

    start = asyncio.run(main())
    assert first[early] < first[late]  # started second, read first
    assert first[late] - start >= 0.75 * 0.99


# --- drivers found by URL scheme ------------------------------------------------------------------


@pytest.mark.parametrize("url, name", [
    ("tcp://10.0.0.5:502", "modbus"),
    ("rtu:///dev/ttyUSB0?baud=9600", "modbus"),
    ("rtu+tcp://10.0.0.9:4001", "modbus"),
    ("opc.tcp://10.0.0.7:4840/plc", "opcua"),
])
def test_for_url_picks_the_driver_whose_schemes_hold_the_url_scheme(url, name):
    assert drivers.for_url(url) is drivers.load(name)


@pytest.mark.parametrize("url", ["http://10.0.0.5/", "10.0.0.5:502", ""])
def test_for_url_without_a_driver_names_the_known_schemes(url):
    with pytest.raises(ValueError) as err:
        drivers.for_url(url)
    assert "no driver for" in str(err.value)
    for scheme in ("tcp://", "rtu://", "rtu+tcp://", "opc.tcp://"):
        assert scheme in str(err.value)


def test_a_driver_without_probe_or_simulator_says_so():
    class Bare(Driver):
        name = "bare"

        def batches(self): ...

    with pytest.raises(ValueError, match="bare driver has no probe"):
        asyncio.run(Bare.probe("bare://x", {}))
    with pytest.raises(NotImplementedError, match="bare driver has no simulator"):
        Bare.simulator(DeviceSpec("d", "bare", "bare://x"), [], dict)
    assert Bare.commands() == () and Bare.loggers == {}


# --- simulators read back through the drivers ----------------------------------------------------

MODBUS_TAGS = [
    TagSpec(0, "T.F32", "sim", "hr:0", "float32", "CDAB"),
    TagSpec(1, "T.I16", "sim", "ir:0", "int16", scale=0.1),
    TagSpec(2, "T.U32", "sim", "hr:2", "uint32", "DCBA"),
    TagSpec(3, "T.F64", "sim", "hr:4", "float64", "BADC", offset=-100.0),
    TagSpec(4, "T.BIT", "sim", "hr:10.3", "bool"),
    TagSpec(5, "T.COIL", "sim", "co:5", "bool"),
    TagSpec(6, "T.I64", "sim", "ir:8", "int64", "ABCD"),
]
MODBUS_VALUES = {"T.F32": 172.5, "T.I16": -12.3, "T.U32": 4_000_000_000.0, "T.F64": 1234.5678,
                 "T.BIT": 1.0, "T.COIL": 1.0, "T.I64": -(2 ** 40)}


def modbus_device(port: int, unit: int = 3) -> DeviceSpec:
    return DeviceSpec("sim", "modbus", f"tcp://127.0.0.1:{port}", unit=unit, interval_s=0.1, timeout_s=1.0)


async def first_good_batch(driver: Driver) -> SampleBatch:
    try:
        async for batch in driver.batches():
            if batch.error is None and len(batch):
                return batch
    finally:
        await driver.close()
    raise AssertionError("no batch")


def test_modbus_simulator_serves_every_type_and_order_as_the_driver_decodes_them():
    async def main():
        device = modbus_device(free_port())
        sim = drivers.load("modbus").simulator(device, MODBUS_TAGS, lambda: MODBUS_VALUES)
        await sim.start()
        try:
            batch = await asyncio.wait_for(first_good_batch(ModbusDriver(device, MODBUS_TAGS)), 20)
        finally:
            await sim.stop()
        return batch, sim.function_codes

    batch, fcs = asyncio.run(main())
    got = dict(zip((MODBUS_TAGS[i].name for i in batch.tag), batch.value.tolist(), strict=True))
    assert got["T.F32"] == 172.5 and got["T.U32"] == 4_000_000_000.0 and got["T.I64"] == -(2 ** 40)
    assert got["T.I16"] == pytest.approx(-12.3) and got["T.F64"] == pytest.approx(1234.5678)
    assert got["T.BIT"] == 1.0 and got["T.COIL"] == 1.0
    assert fcs <= {1, 2, 3, 4}


def test_modbus_simulator_going_away_is_a_comm_fail_and_coming_back_clears_it():
    async def main():
        device = modbus_device(free_port())
        tags = MODBUS_TAGS[:1]
        sim = ModbusDriver.simulator(device, tags, lambda: {"T.F32": 1.5})
        await sim.start()
        driver = ModbusDriver(device, tags)
        seen: list[str | None] = []
        try:
            async for batch in driver.batches():
                seen.append(batch.error)
                if len(seen) == 3:
                    await sim.stop()
                elif batch.error is not None and sim.server is None:
                    await sim.start()
                elif batch.error is None and any(e is not None for e in seen):
                    return seen, batch
        finally:
            await driver.close()
            await sim.stop()

    seen, batch = asyncio.run(asyncio.wait_for(main(), 30))
    assert seen[:3] == [None, None, None]
    assert any(e and "connection lost" in e for e in seen)
    assert batch.value.tolist() == [1.5]


def test_opcua_simulator_hosts_the_tags_and_probe_lists_them():
    from drivers.opcua import OpcUaDriver

    async def main():
        device = DeviceSpec("gas", "opcua", f"opc.tcp://127.0.0.1:{free_port()}/sim", interval_s=0.2,
                            timeout_s=2.0, options={"publishing_interval_ms": 100.0})
        tags = [TagSpec(0, "GD101.LEL", "gas", "ns=2;s=GD101.LEL"), TagSpec(1, "GD102.LEL", "gas", "ns=3;i=7")]
        level = {"GD101.LEL": 3.0, "GD102.LEL": 4.5}
        sim = OpcUaDriver.simulator(device, tags, lambda: level)
        await sim.start()
        try:
            lines = await drivers.for_url(device.url).probe(device.url, {"depth": 3, "timeout": 5.0})
            first = await asyncio.wait_for(first_good_batch(OpcUaDriver(device, tags)), 20)
            level["GD101.LEL"] = 27.5  # the simulator writes it at its next refresh
            driver = OpcUaDriver(device, tags)
            later = None
            async for batch in driver.batches():
                if 27.5 in batch.value:
                    later = batch
                    break
            await driver.close()
        finally:
            await sim.stop()
        return lines, first, later

    lines, first, later = asyncio.run(asyncio.wait_for(main(), 60))
    assert any(line.startswith("ns=2;s=GD101.LEL  Double  3") for line in lines), lines
    assert any(line.startswith("ns=3;i=7  Double  4.5") for line in lines), lines
    assert sorted(zip(first.tag.tolist(), first.value.tolist(), strict=True)) == [(0, 3.0), (1, 4.5)]
    assert later is not None and dict(zip(later.tag.tolist(), later.value.tolist(), strict=True))[0] == 27.5


# --- probe and commands through the command line's dispatch ---------------------------------------


def test_probe_dispatches_by_scheme_with_the_drivers_own_options(capsys):
    async def serve(device, stop):
        sim = ModbusDriver.simulator(device, MODBUS_TAGS, lambda: MODBUS_VALUES)
        await sim.start()
        await stop.wait()
        await sim.stop()

    import threading

    device = modbus_device(free_port(), unit=1)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(device, stop),), daemon=True)
    thread.start()
    try:
        for _ in range(100):  # until the simulator listens
            if cli.main(["probe", device.url, "hr:0-1", "--type", "float32", "--order", "CDAB",
                         "--timeout", "1"]) == 0:
                break
        out = capsys.readouterr().out.splitlines()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert out[-2:] == ["hr:0-1 (Modicon 40001-40002) as float32 CDAB", "  hr:0      8000 432C            172.5"]


def test_a_drivers_commands_are_plantwatch_subcommands(tmp_path, capsys):
    from drivers.opcua import OpcUaDriver

    (command,) = OpcUaDriver.commands()
    assert command.name == "opcua-cert"
    assert "opcua-cert" in cli.build_parser().format_help()
    assert cli.main(["opcua-cert", "--out", str(tmp_path), "--days", "0"]) == 2
    assert cli.main(["opcua-cert", "--out", str(tmp_path), "--cn", "gw-01"]) == 0
    out = capsys.readouterr()
    assert "--days must be >= 1, not 0" in out.err
    assert out.out.startswith(f"certificate {tmp_path}/")


# --- the commissioning hooks --------------------------------------------------------------------


def test_a_plugin_gets_read_once_from_its_first_batch_and_the_plain_defaults():
    class Counter(PollingDriver):
        name = "counter"
        fail = False

        async def connect(self):
            if self.fail:
                raise OSError("no route to the counter")

        async def read(self):
            values = [float(t.index) * 10 for t in self.tags]
            quality = [0] * (len(self.tags) - 1) + [2]  # the last tag BAD
            return SampleBatch.build(self.device.name, self.tag_indices, values, 1.8e9, quality)

    tags = [TagSpec(0, "A", "d", "a"), TagSpec(1, "B", "d", "b"), TagSpec(2, "C", "d", "c")]
    readings = asyncio.run(Counter.read_once(DeviceSpec("d", "counter", "x://", timeout_s=0.2), tags))
    assert [(r.tag.name, r.value, r.quality, r.error, r.good) for r in readings] == [
        ("A", 0.0, 0, None, True), ("B", 10.0, 0, None, True), ("C", 20.0, 2, "BAD", False)]
    Counter.fail = True
    readings = asyncio.run(Counter.read_once(DeviceSpec("d", "counter", "x://", timeout_s=0.2), tags))
    assert all(r.quality == 3 and r.error == "OSError: no route to the counter" for r in readings)
    assert Counter.show_address("DB1.DBD0") == "DB1.DBD0" and Counter.default_type("DB1.DBX0.0") is None
    assert Counter.typed_by_config is True
