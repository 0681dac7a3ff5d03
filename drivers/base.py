"""The driver contract: what every protocol driver gives the agent and what it may assume.

A driver turns one device's tags into SampleBatch arrays. It knows nothing of detection, alarms
or MQTT. The agent knows nothing of protocols: it only calls the classmethods below at config
time and iterates ``batches()`` at run time. The command line finds a driver by URL scheme
(``drivers.for_url``) for ``plantwatch probe``, adds the commands a driver brings, and quiets
its library's loggers; the demo runs a driver's simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np


class Quality(IntEnum):
    """Sample quality, stored as uint8 in SampleBatch.quality."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2
    COMM_FAIL = 3


GOOD, UNCERTAIN, BAD, COMM_FAIL = (int(q) for q in Quality)

VALUE_TYPES = ("bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
BYTE_ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")


@dataclass(frozen=True)
class DeviceSpec:
    """One [[devices]] entry after validation. ``options`` holds the driver's own extra keys."""

    name: str
    driver: str
    url: str
    unit: int = 1
    interval_s: float = 1.0
    timeout_s: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One [[tags]] entry as a driver sees it. ``index`` is the tag's position in the config and
    the value carried in SampleBatch.tag."""

    index: int
    name: str
    device: str
    address: str
    type: str = "float32"
    order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SampleBatch:
    """One read of one device. Times are float64 UTC seconds everywhere in plantwatch.

    ``error`` is None when the device answered (individual tags may still be BAD), else a short
    text saying why the device could not be read; the agent turns it into a ``comm`` alarm.
    """

    device: str
    tag: np.ndarray  # int32 tag indices
    value: np.ndarray  # float64, engineering units (scale and offset applied)
    ts: np.ndarray  # float64 UTC seconds
    quality: np.ndarray  # uint8 Quality
    error: str | None = None

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @classmethod
    def build(cls, device: str, tag, value, ts, quality, error: str | None = None) -> SampleBatch:
        n = len(tag)
        return cls(
            device=device,
            tag=np.ascontiguousarray(tag, dtype=np.int32),
            value=np.ascontiguousarray(value, dtype=np.float64),
            ts=_filled(ts, n, np.float64),
            quality=_filled(quality, n, np.uint8),
            error=error,
        )

    @classmethod
    def failed(cls, device: str, tags: Sequence[int], ts: float, error: str) -> SampleBatch:
        """Every tag of the device COMM_FAIL with NaN values: the device did not answer."""
        n = len(tags)
        return cls.build(device, tags, np.full(n, np.nan), ts, COMM_FAIL, error)


def _filled(x, n: int, dtype) -> np.ndarray:
    """``x`` as a new array of ``n`` elements: a scalar repeated (a poll's one time, its quality;
    filling an empty array is a few times cheaper than copying a broadcast view), an array copied
    (converted to ``dtype``)."""
    if isinstance(x, np.ndarray) and x.shape == (n,):
        return x.astype(dtype)  # a copy, always
    if isinstance(x, (int, float, np.integer, np.floating)):
        out = np.empty(n, dtype=dtype)
        out.fill(x)
        return out
    return np.broadcast_to(np.asarray(x, dtype=dtype), (n,)).copy()


def frozen_tags(tags) -> np.ndarray:
    """An int32 tag array that can never change: read-only, its memory an immutable bytes
    object (numpy refuses to make it, or any view of it, writeable again). Pass the same frozen
    array in every batch that lists the same tags in the same order (a device's read plan): the
    detector families then have its tick structure checked once and keep the plan, instead of
    checking it at every batch."""
    return np.frombuffer(np.ascontiguousarray(tags, dtype=np.int32).tobytes(), dtype=np.int32)


@dataclass(frozen=True)
class Reading:
    """One tag read once, for commissioning (``plantwatch check --connect``): the value as the
    agent would see it and what the device actually sent, so a wrong address or word order
    shows before the plant goes live."""

    tag: TagSpec
    value: float  # engineering units (scale and offset applied); NaN when not read
    quality: int  # Quality
    raw: str = ""  # what the device sent, in its own terms: "0x4148 0x0000", "1", "Double 12.5"
    #: the value the same raw words give in the other byte orders (multi-register values)
    alternatives: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None  # why the tag has no good value, None when it has one

    @property
    def good(self) -> bool:
        return self.quality == GOOD and self.error is None


def readings_of(batch: SampleBatch, tags: Sequence[TagSpec]) -> list[Reading]:
    """One Reading per tag from a SampleBatch; a tag absent from the batch has no value."""
    at = {int(t): i for i, t in enumerate(batch.tag)}
    out = []
    for tag in tags:
        i = at.get(tag.index)
        if i is None:
            out.append(Reading(tag, float("nan"), COMM_FAIL if batch.error else BAD,
                               error=batch.error or "no value received"))
            continue
        q = int(batch.quality[i])
        error = None if q == GOOD else (batch.error or Quality(q).name)
        out.append(Reading(tag, float(batch.value[i]), q, error=error))
    return out


@dataclass(frozen=True)
class Problem:
    """A config problem found by a driver, as (path, message) like every config problem.
    ``tag`` is None for the device itself, else the TagSpec concerned; ``path`` is relative
    to that table (``address``, ``trust[0]``)."""

    path: str
    message: str
    tag: TagSpec | None = None

    @property
    def key(self) -> str:
        """The path's older name, kept for plugins written against it."""
        return self.path


class DriverError(Exception):
    """The device could not be read (connection, timeout, protocol). Not a programming error."""


@dataclass(frozen=True)
class Command:
    """A ``plantwatch`` subcommand a driver brings (e.g. making its client certificates).
    ``run`` returns the exit code: 0 done, 1 failed, 2 bad arguments."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Simulator(ABC):
    """A device on loopback serving the tags of a config, for the demo and for tests.

    Every read (or, for protocols the server pushes, every refresh) answers with the values the
    ``values`` callback given to ``Driver.simulator`` returns at that moment: tag name ->
    engineering value. It serves at the device's URL; ``stop()`` drops the connections, and
    ``start()`` again brings the device back (a PLC going off the network and returning).
    """

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class Driver(ABC):
    """A protocol driver for one device.

    Integrators implement a subclass, register it under the ``plantwatch.drivers`` entry-point
    group, and get config validation, scheduling, quality handling and comm alarms for free.
    """

    #: the name used in ``driver = "..."``
    name: ClassVar[str] = ""
    #: extra keys this driver accepts in a [[devices]] table (beyond the common ones)
    device_keys: ClassVar[frozenset[str]] = frozenset()
    #: extra keys this driver accepts in a [[tags]] table
    tag_keys: ClassVar[frozenset[str]] = frozenset()
    #: URL schemes this driver accepts; ``drivers.for_url`` picks the driver by them
    schemes: ClassVar[tuple[str, ...]] = ()
    #: URL forms for help texts, e.g. ``"opc.tcp://host:port/path"``
    url_forms: ClassVar[tuple[str, ...]] = ()
    #: the protocol library's loggers and the lowest level of theirs worth showing: libraries
    #: tend to log every failed reconnect, which the device's comm alarm already says once
    loggers: ClassVar[Mapping[str, int]] = {}
    #: what ``plantwatch probe URL`` does for this driver's URLs, for the command's help
    probe_summary: ClassVar[str] = ""
    #: whether a tag's ``type`` and ``order`` say how to decode it (False: the protocol carries
    #: typed values, as OPC-UA does, and the sign-off shows the type as the server's)
    typed_by_config: ClassVar[bool] = True

    @classmethod
    def check(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Problem]:
        """Validate the device URL, its options and every tag address; report all problems."""
        return []

    @classmethod
    def check_devices(cls, devices: Sequence[DeviceSpec]) -> list[tuple[DeviceSpec, Problem]]:
        """Cross-checks between this driver's devices (e.g. two devices claiming one unit id on
        one serial line); each problem is reported against the device given."""
        return []

    @classmethod
    def default_type(cls, address: str) -> str | None:
        """The value type of a tag at ``address`` whose config names no ``type`` (bool at a
        Modbus coil, say); None leaves the common default (``TagSpec.type``, float32)."""
        return None

    @classmethod
    def show_address(cls, address: str) -> str:
        """A tag address as the sign-off table shows it (``plantwatch check --points``): every
        notation an engineer may compare it with. Default: as written."""
        return address

    @classmethod
    def plan(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[str]:
        """Human-readable lines describing what the driver will request (``plantwatch check``)."""
        return [f"{len(tags)} tags"]

    @classmethod
    def probe_arguments(cls, group: Any) -> None:
        """Add this driver's ``plantwatch probe`` options to ``group`` (an argparse argument
        group, ``add_argument`` as usual). All drivers share one parser (and its ``--timeout``):
        option names must not clash with another driver's."""
        return None

    @classmethod
    async def probe(cls, url: str, options: Mapping[str, Any]) -> list[str]:
        """Lines describing the device at ``url`` for an integrator writing a config;
        ``options`` holds the parsed probe options by name (``timeout`` among them). Raises
        ValueError for bad options and DriverError (or OSError) when the device cannot be read."""
        raise ValueError(f"the {cls.name} driver has no probe")

    @classmethod
    async def read_once(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Reading]:
        """Read every tag once, read-only as always, for ``plantwatch check --connect``: one
        Reading per tag, in order; never raises for device faults (the readings carry the
        error). This default takes the first batch a driver yields; drivers override it to
        show the raw data as well."""
        driver = cls(device, tags)
        batches = driver.batches()
        wait = max(10.0, 4 * device.timeout_s)
        try:
            batch = await asyncio.wait_for(anext(batches), wait)
        except TimeoutError:
            batch = SampleBatch.failed(device.name, driver.tag_indices, time.time(), f"no data within {wait:g} s")
        finally:
            if (aclose := getattr(batches, "aclose", None)) is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), wait)
            await driver.close()
        return readings_of(batch, driver.tags)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """Extra ``plantwatch`` subcommands this driver brings."""
        return ()

    @classmethod
    def simulator(cls, device: DeviceSpec, tags: Sequence[TagSpec],
                  values: Callable[[], Mapping[str, float]]) -> Simulator:
        """A simulated device serving ``tags`` at ``device.url`` (loopback), not yet started."""
        raise NotImplementedError(f"the {cls.name} driver has no simulator")

    #: seconds the last read of the whole device took; None where the driver does not ask (a
    #: server that pushes its changes) or has not read yet. The console's devices view shows it.
    last_latency_s: float | None = None

    def report(self) -> list[dict[str, Any]]:
        """What this driver shows of itself in the console's devices view, beside the agent's own
        counters (comm state, rate achieved, errors, last read latency): tables
        ``{"title": str, "columns": [str, ...], "rows": [[cell, ...], ...]}``, cells strings or
        numbers, in the driver's own words (its request plan, its subscription). Called on the
        event loop at most once a second while a page is open: cheap, no I/O. Default: none."""
        return []

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec]):
        self.device = device
        self.tags = list(tags)
        #: the device's tags in read order, frozen: every batch of a whole read passes this array,
        #: and the detector families have a frozen array's tick structure checked once, not per read
        self.tag_indices = frozen_tags([t.index for t in self.tags])

    @abstractmethod
    def batches(self) -> AsyncIterator[SampleBatch]:
        """Yield SampleBatches until cancelled. Never raise for device faults: yield a batch
        with COMM_FAIL quality and ``error`` set, then keep trying."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most drivers own no resources
        """Release connections. Called once when the agent stops."""


def backoff_delay(failures: int, initial_s: float, max_s: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``failures`` (1 after the first failure): ``initial_s``
    doubling up to ``max_s``, times a random factor in [0.5, 1.0). The jitter keeps many clients
    that lost one server at the same moment from coming back in lockstep."""
    base = min(max_s, initial_s * (2 ** max(0, failures - 1)))
    return base * (0.5 + rng() / 2)


async def cancel_and_wait(tasks) -> None:
    """Cancel tasks until they are done. On Python 3.11 ``asyncio.wait_for`` (used inside
    protocol libraries) can swallow a cancellation that lands just as the awaited reply
    arrives, so one ``cancel()`` followed by ``await`` may wait for ever."""
    pending = set(tasks)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


def error_text(exc: BaseException) -> str:
    """A failed read as the comm alarm says it: a plain DriverError is the driver's own sentence
    and stands alone; anything else is prefixed with its type (``TimeoutError``)."""
    if type(exc) is DriverError and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


PHASE_GROUPS = 8


def poll_phase(device: str) -> float:
    """A device's phase in [0, 1) of its poll interval: one of ``PHASE_GROUPS`` steps, fixed by
    its name (the same at every start, spread evenly over many devices)."""
    return (zlib.crc32(device.encode()) % PHASE_GROUPS) / PHASE_GROUPS


class PollingDriver(Driver):
    """A driver that reads the whole device every ``interval_s``.

    Subclasses implement ``connect``, ``read`` and ``disconnect``; this class keeps the rate
    (fixed schedule, no drift), turns exceptions into COMM_FAIL batches, and reconnects with
    exponential backoff and jitter.
    """

    backoff_initial_s: ClassVar[float] = 0.5
    backoff_max_s: ClassVar[float] = 30.0

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def read(self) -> SampleBatch:
        """Read every tag once; raise DriverError (or OSError/TimeoutError) if the device is
        unreachable. Per-tag failures are BAD samples, not exceptions."""

    async def disconnect(self) -> None:
        return None

    def reconnect_delay(self, failures: int) -> float:
        return backoff_delay(failures, self.backoff_initial_s, self.backoff_max_s)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        interval = self.device.interval_s
        connected = False
        failures = 0
        retry_at = 0.0
        # devices fall into PHASE_GROUPS groups by their name, each polled at its own phase of
        # the interval (of the first second at most): 1,613 devices polled every second are 8
        # bursts of ~200 requests, and a device's answer waits only for its group's, not for all
        # 1,613 (the alarm latency). Not more groups: each wake-up of a small burst costs CPU,
        # in the agent and in the devices' simulators alike (bench/scale.py, docs/PERFORMANCE.md)
        next_tick = time.monotonic() + min(interval, 1.0) * poll_phase(self.device.name)
        try:
            while True:
                now = time.monotonic()
                if next_tick > now:
                    await asyncio.sleep(next_tick - now)
                next_tick += interval
                if next_tick < time.monotonic():  # fell behind: skip missed ticks, keep the phase
                    next_tick += interval * int((time.monotonic() - next_tick) // interval + 1)
                if not connected and time.monotonic() < retry_at:
                    yield SampleBatch.failed(self.device.name, self.tag_indices, time.time(), self._last_error)
                    continue
                try:
                    if not connected:
                        await asyncio.wait_for(self.connect(), self.device.timeout_s * 2)
                        connected = True
                    started = time.monotonic()
                    batch = await self.read()
                    self.last_latency_s = time.monotonic() - started
                    failures = 0
                except (DriverError, OSError, TimeoutError) as exc:
                    failures += 1
                    self._last_error = error_text(exc)
                    if connected:
                        with contextlib.suppress(Exception):
                            await self.disconnect()
                        connected = False
                    retry_at = time.monotonic() + self.reconnect_delay(failures)
                    yield SampleBatch.failed(self.device.name, self.tag_indices, time.time(), self._last_error)
                    continue
                yield batch
        finally:
            if connected:
                with contextlib.suppress(Exception):
                    await self.disconnect()

    _last_error: str = "not connected"
