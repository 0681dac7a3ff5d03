"""A conformance kit for driver plugins: run a driver against a real device and check that
what it yields keeps the contract the agent relies on (drivers.base).

    from drivers.testkit import check_driver
    problems = asyncio.run(check_driver(MyDriver, device_spec, tag_specs))
    assert problems == []

It checks the classmethods (``check`` accepts the config, ``plan`` returns lines) and then
reads batches: array types and shapes, tag indices belonging to the device, quality codes,
finite values for GOOD samples, plausible UTC times, and that ``error`` and COMM_FAIL go
together. It never writes to the device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from drivers.base import (
    COMM_FAIL,
    GOOD,
    DeviceSpec,
    Driver,
    Problem,
    Quality,
    Reading,
    SampleBatch,
    TagSpec,
    cancel_and_wait,
)

MAX_CLOCK_SKEW_S = 24 * 3600.0


def check_batch(batch: SampleBatch, device: DeviceSpec, tags: Sequence[TagSpec], now: float | None = None) -> list[str]:
    """Everything wrong with one batch, as sentences."""
    now = time.time() if now is None else now
    out: list[str] = []
    if batch.device != device.name:
        out.append(f"batch.device is {batch.device!r}, not {device.name!r}")
    expected = {"tag": np.int32, "value": np.float64, "ts": np.float64, "quality": np.uint8}
    for name, dtype in expected.items():
        arr = getattr(batch, name)
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.shape[0] != np.shape(batch.tag)[0]:
            out.append(f"batch.{name} must be a 1-D numpy array as long as batch.tag")
            return out  # nothing below can be checked
        if arr.dtype != dtype:
            out.append(f"batch.{name} has dtype {arr.dtype}, not {np.dtype(dtype)}")
        if not arr.flags.c_contiguous:
            out.append(f"batch.{name} is not C-contiguous (kernels take contiguous memory)")
    allowed = {t.index for t in tags}
    stray = sorted(set(batch.tag.tolist()) - allowed)
    if stray:
        out.append(f"batch.tag holds indices {stray[:5]} that are not this device's tags")
    codes = {int(q) for q in Quality}
    bad_q = sorted(set(batch.quality.tolist()) - codes)
    if bad_q:
        out.append(f"batch.quality holds codes {bad_q} (allowed: {sorted(codes)})")
    good = batch.quality == GOOD
    if np.any(good & ~np.isfinite(batch.value)):
        out.append("a GOOD sample has a NaN or infinite value (mark it BAD)")
    if len(batch) and (np.any(np.abs(batch.ts - now) > MAX_CLOCK_SKEW_S) or not np.all(np.isfinite(batch.ts))):
        out.append("batch.ts is not UTC seconds near now (float64 seconds since the epoch)")
    if batch.error is not None and not isinstance(batch.error, str):
        out.append("batch.error must be None or a string")
    if batch.error is None and len(batch) and np.all(batch.quality == COMM_FAIL):
        out.append("every sample is COMM_FAIL but batch.error is None: say why the device was not read")
    return out


async def check_driver(cls: type[Driver], device: DeviceSpec, tags: Sequence[TagSpec], batches: int = 3,
                       timeout_s: float = 30.0) -> list[str]:
    """Build the driver as the agent would, read ``batches`` batches, report every problem."""
    out: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        return [f"{cls!r} is not a drivers.base.Driver subclass"]
    if not cls.name:
        out.append("the driver class has no name")
    problems = cls.check(device, tags)
    if not all(isinstance(p, Problem) for p in problems):
        out.append("check() must return drivers.base.Problem objects")
    elif problems:
        out += [f"check() rejects the config: {p.path}: {p.message}" for p in problems]
        return out
    plan = cls.plan(device, tags)
    if not (isinstance(plan, list) and all(isinstance(line, str) for line in plan)):
        out.append("plan() must return a list of strings")
    driver = cls(device, tags)
    seen = 0

    async def read() -> None:
        nonlocal seen
        async for batch in driver.batches():
            if not isinstance(batch, SampleBatch):
                out.append(f"batches() yielded a {type(batch).__name__}, not a SampleBatch")
                return
            out.extend(f"batch {seen + 1}: {p}" for p in check_batch(batch, device, tags))
            seen += 1
            if seen >= batches:
                return

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        out.append(f"only {seen} of {batches} batches within {timeout_s:g} s")
    finally:
        await cancel_and_wait([task])
        await driver.close()
    out += await _check_read_once(cls, device, tags, timeout_s)
    return out


async def _check_read_once(cls: type[Driver], device: DeviceSpec, tags: Sequence[TagSpec],
                           timeout_s: float) -> list[str]:
    """``read_once`` (``plantwatch check --connect``): one Reading per tag, in the tags' order."""
    try:
        readings = await asyncio.wait_for(cls.read_once(device, tags), timeout_s)
    except Exception as exc:
        return [f"read_once() raised {type(exc).__name__}: {exc} (it must report device faults in the readings)"]
    if not (isinstance(readings, list) and all(isinstance(r, Reading) for r in readings)):
        return ["read_once() must return a list of drivers.base.Reading"]
    if [r.tag.index for r in readings] != [t.index for t in tags]:
        return ["read_once() must return one Reading per tag, in the tags' order"]
    return [f"read_once(): {r.tag.name} is GOOD with a NaN value" for r in readings
            if r.quality == GOOD and r.value != r.value]
