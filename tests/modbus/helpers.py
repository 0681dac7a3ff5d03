"""Small helpers shared by the Modbus tests: build specs, run a driver for N polls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from drivers.base import DeviceSpec, SampleBatch, TagSpec
from drivers.modbus import ModbusDriver


def device(url: str, unit: int = 1, interval_s: float = 0.05, timeout_s: float = 0.5, name: str = "plc",
           **options) -> DeviceSpec:
    return DeviceSpec(name, "modbus", url, unit=unit, interval_s=interval_s, timeout_s=timeout_s,
                      options=options)


def tag(i: int, address: str, type: str = "uint16", order: str = "ABCD", scale: float = 1.0,
        offset: float = 0.0, device: str = "plc") -> TagSpec:
    return TagSpec(i, f"T{i}", device, address, type, order, scale, offset)


async def collect(driver: ModbusDriver, n: int) -> list[SampleBatch]:
    """The first ``n`` batches the driver yields, then close it."""
    out: list[SampleBatch] = []
    try:
        async for batch in driver.batches():
            out.append(batch)
            if len(out) >= n:
                break
    finally:
        await driver.close()
    return out


def poll(dev: DeviceSpec, tags: Sequence[TagSpec], n: int = 1) -> list[SampleBatch]:
    """Run a fresh driver for ``n`` polls on its own event loop."""
    return asyncio.run(collect(ModbusDriver(dev, tags), n))
