"""``plantwatch check --connect`` for Modbus: every tag read once, with the raw words the device
sent and what the other byte orders would make of them.

Uses the driver's own connect, plan and read (function codes 1-4 only), so the values are the
ones the agent will see; the raw words come from the same poll.
"""

from __future__ import annotations

import asyncio
import math

from drivers.base import BAD, BYTE_ORDERS, COMM_FAIL, GOOD, DriverError, Reading, error_text
from drivers.modbus.address import BIT_AREAS, Point
from drivers.modbus.decode import decode_words
from drivers.modbus.driver import ModbusDriver


async def read_once(driver: ModbusDriver) -> list[Reading]:
    """One poll of ``driver``'s device, as one Reading per tag; the driver is closed after."""
    device = driver.device
    try:
        try:
            await asyncio.wait_for(driver.connect(), device.timeout_s * 2)
            batch = await driver.read()
        except (DriverError, OSError, TimeoutError) as exc:
            text = error_text(exc)
            return [Reading(t, math.nan, COMM_FAIL, error=text) for t in driver.tags]
        points = driver.points
        return [_reading(driver, points[i], i, float(batch.value[i]), int(batch.quality[i]))
                for i in range(len(driver.tags))]
    finally:
        await driver.close()


def _reading(driver: ModbusDriver, point: Point, i: int, value: float, quality: int) -> Reading:
    tag, dec = driver.tags[i], driver.decoder
    failed = driver.request_errors.get(int(dec.request_of[i]))
    if failed is not None:
        return Reading(tag, math.nan, BAD, error=failed)
    pos = int(dec.pos[i])
    if point.area in BIT_AREAS:
        return Reading(tag, value, quality, raw=str(int(driver._bits[pos])))
    words = [int(w) for w in driver._regs[pos:pos + point.width]]
    raw = " ".join(f"0x{w:04X}" for w in words)
    alternatives = {}
    if point.type != "bool" and point.width > 1:
        for order in BYTE_ORDERS:
            if order != point.order:
                alternatives[order] = decode_words(words, point.type, order) * tag.scale + tag.offset
    error = None if quality == GOOD else "not a number (NaN or infinity in the registers)"
    return Reading(tag, value, quality, raw=raw, alternatives=alternatives, error=error)
