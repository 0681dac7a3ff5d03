"""The Modbus driver: config checks, request plan, and the poll loop body for one device."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from drivers.base import (
    BAD,
    GOOD,
    DeviceSpec,
    DriverError,
    PollingDriver,
    Problem,
    Reading,
    SampleBatch,
    Simulator,
    TagSpec,
)
from drivers.modbus import diagnose
from drivers.modbus.address import (
    BIT_AREAS,
    MAX_BITS,
    MAX_REGISTERS,
    SCHEMES,
    Endpoint,
    Point,
    make_point,
    modicon,
    parse_address,
    parse_url,
)
from drivers.modbus.decode import Decoder
from drivers.modbus.link import ConnectFailed, Link, LinkPool, NoAnswer
from drivers.modbus.planner import AREA_ORDER, Limits, Request, plan_points, split

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target device failed to respond"}
# exceptions meaning "this address range is not readable": split the request and retry
_SPLIT_ON = frozenset({2, 3})
# exceptions meaning "the unit behind a gateway did not answer": a communication failure
_NO_ANSWER = frozenset({10, 11})

_INT_OPTIONS = {"max_registers": (1, MAX_REGISTERS), "max_bits": (1, MAX_BITS),
                "max_gap": (0, MAX_REGISTERS), "max_bit_gap": (0, MAX_BITS)}
MAX_IN_FLIGHT = 16
TCP_CLIENTS = ("lean", "pymodbus")


def exception_text(code: int) -> str:
    return f"exception {code:02X} {EXCEPTION_NAMES.get(code, 'unknown')}"


def _limits(options: Mapping[str, Any]) -> tuple[Limits, list[tuple[str, str]]]:
    values: dict[str, int] = {}
    problems = []
    for key, (lo, hi) in _INT_OPTIONS.items():
        if key not in options:
            continue
        v = options[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            problems.append((key, f"must be an integer {lo}..{hi}, not {v!r}"))
        else:
            values[key] = v
    return Limits(**values), problems


def _frame_gap(options: Mapping[str, Any]) -> tuple[float | None, list[tuple[str, str]]]:
    if "frame_gap_ms" not in options:
        return None, []
    v = options["frame_gap_ms"]
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1000:
        return None, [("frame_gap_ms", f"must be a number of milliseconds 0..1000, not {v!r}")]
    return v / 1000.0, []


def _tcp_client(options: Mapping[str, Any]) -> tuple[int | None, list[tuple[str, str]]]:
    """Requests in flight for the lean TCP client, None for pymodbus (``tcp_client``)."""
    problems = []
    n = options.get("max_in_flight", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IN_FLIGHT:
        problems.append(("max_in_flight", f"must be an integer 1..{MAX_IN_FLIGHT}, not {n!r}"))
        n = 1
    client = options.get("tcp_client", "lean")
    if client not in TCP_CLIENTS:
        problems.append(("tcp_client", f"must be one of {', '.join(TCP_CLIENTS)}, not {client!r}"))
    elif client == "pymodbus" and n != 1:
        problems.append(("max_in_flight", "needs tcp_client = \"lean\" (pymodbus sends one request at a time)"))
    return (n if client != "pymodbus" else None), problems


class ModbusDriver(PollingDriver):
    """Modbus TCP, RTU (serial) and RTU over TCP; reads coils, discrete inputs, input and
    holding registers only. See docs/DRIVERS.md, section Modbus."""

    name: ClassVar[str] = "modbus"
    schemes: ClassVar[tuple[str, ...]] = SCHEMES
    device_keys: ClassVar[frozenset[str]] = frozenset(
        {"max_registers", "max_bits", "max_gap", "max_bit_gap", "baud", "parity", "stopbits", "bytesize",
         "frame_gap_ms", "max_in_flight", "tcp_client"})
    tag_keys: ClassVar[frozenset[str]] = frozenset()
    #: the circuit breaker of a unit on a shared line: an unanswered poll costs the whole line a
    #: timeout, so a dead unit is retried after 1 s, then 2, 4 ... 30 s (with jitter)
    shared_backoff_initial_s: ClassVar[float] = 1.0
    url_forms: ClassVar[tuple[str, ...]] = ("tcp://host:port?unit=1", "rtu:///dev/ttyUSB0?baud=9600&unit=2",
                                            "rtu+tcp://...")
    loggers: ClassVar[Mapping[str, int]] = {"pymodbus": logging.WARNING}
    probe_summary: ClassVar[str] = "read a Modbus range decoded"

    # --- config time ---------------------------------------------------------------------
    @classmethod
    def check(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Problem]:
        problems = [Problem(k, m) for k, m in cls._device_problems(device)]
        for tag in tags:
            _, tag_problems = make_point(tag.address, tag.type, tag.order)
            problems.extend(Problem(k, m, tag) for k, m in tag_problems)
        return problems

    @classmethod
    def default_type(cls, address: str) -> str | None:
        """A coil, a discrete input and a register bit (``hr:N.B``) hold one bit: bool."""
        try:
            area, _, bit = parse_address(address)
        except ValueError:
            return None  # check() reports it
        return "bool" if area in BIT_AREAS or bit >= 0 else None

    @classmethod
    def show_address(cls, address: str) -> str:
        """Both notations, 0-based and Modicon: ``hr:100 = 40101``."""
        try:
            area, addr, bit = parse_address(address)
        except ValueError:
            return address
        b = f".{bit}" if bit >= 0 else ""
        return f"{area}:{addr}{b} = {modicon(area, addr)}{b}"

    @classmethod
    def check_devices(cls, devices: Sequence[DeviceSpec]) -> list[tuple[DeviceSpec, Problem]]:
        """Devices on one line (serial port, serial gateway or TCP endpoint) must not share a
        unit id, and devices on one serial line must agree on its settings."""
        problems: list[tuple[DeviceSpec, Problem]] = []
        first_on_line: dict[tuple, tuple[DeviceSpec, Endpoint]] = {}
        units: dict[tuple, DeviceSpec] = {}
        for device in devices:
            endpoint, errors = parse_url(device.url, dict(device.options))
            if endpoint is None or errors:
                continue  # reported by check()
            line = endpoint.key
            other = units.get((line, device.unit))
            if other is not None:
                problems.append((device, Problem("unit", f"unit {device.unit} on {endpoint.describe()} is also "
                                                         f"device {other.name!r}")))
            units.setdefault((line, device.unit), device)
            first = first_on_line.setdefault(line, (device, endpoint))
            if endpoint.scheme == "rtu" and first[0] is not device:
                theirs, ours = first[1], endpoint
                if (theirs.baud, theirs.parity, theirs.stopbits, theirs.bytesize) != (ours.baud, ours.parity, ours.stopbits, ours.bytesize):
                    problems.append((device, Problem("url", f"serial settings {ours.describe()} differ from device "
                                                            f"{first[0].name!r} on the same line ({theirs.describe()})")))
        return problems

    # --- for integrators and the demo -----------------------------------------------------
    @classmethod
    def probe_arguments(cls, group) -> None:
        group.add_argument("range", nargs="?", default="hr:0-20",
                           help="Modbus range, e.g. hr:0-20, ir:100, co:0-15 (default hr:0-20)")
        group.add_argument("--type", default="uint16", help="Modbus value type (default uint16)")
        group.add_argument("--order", default="ABCD", help="Modbus word/byte order (default ABCD)")

    @classmethod
    async def probe(cls, url: str, options: Mapping[str, Any]) -> list[str]:
        from drivers.modbus.probe import probe

        return await probe(url, options.get("range") or "hr:0-20", type=options.get("type") or "uint16",
                           order=options.get("order") or "ABCD", timeout=options.get("timeout") or 2.0)

    @classmethod
    async def read_once(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Reading]:
        from drivers.modbus.commission import read_once

        return await read_once(cls(device, tags))

    @classmethod
    def simulator(cls, device: DeviceSpec, tags: Sequence[TagSpec],
                  values: Callable[[], Mapping[str, float]]) -> Simulator:
        from drivers.modbus.simulator import ModbusSimulator

        return ModbusSimulator(device, tags, values)

    @classmethod
    def _device_problems(cls, device: DeviceSpec) -> list[tuple[str, str]]:
        _, problems = parse_url(device.url, dict(device.options))
        _, limit_problems = _limits(device.options)
        _, gap_problems = _frame_gap(device.options)
        _, client_problems = _tcp_client(device.options)
        problems += limit_problems + gap_problems + client_problems
        is_rtu = str(device.url).lower().startswith(("rtu:", "rtu+tcp:"))
        if is_rtu and not 1 <= device.unit <= 247:
            problems.append(("unit", f"an RTU unit id is 1..247 (0 is broadcast, never answered), not {device.unit}"))
        elif not 0 <= device.unit <= 255:
            problems.append(("unit", f"must be 0..255, not {device.unit}"))
        if not device.interval_s > 0:
            problems.append(("interval_s", "must be above 0"))
        if not device.timeout_s > 0:
            problems.append(("timeout_s", "must be above 0"))
        return problems

    @classmethod
    def plan(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[str]:
        points = [p for p in (make_point(t.address, t.type, t.order)[0] for t in tags) if p is not None]
        limits, _ = _limits(device.options)
        requests = plan_points(points, limits)
        lines = [r.describe() for r in requests]
        regs = sum(r.count for r in requests if r.area not in BIT_AREAS)
        lines.append(f"{len(requests)} request{'s' if len(requests) != 1 else ''} per poll for "
                     f"{len(points)} tags ({regs} registers)")
        return lines

    # --- run time --------------------------------------------------------------------------
    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec]):
        super().__init__(device, tags)
        problems = self.check(device, self.tags)
        if problems:
            first = problems[0]
            where = first.tag.address if first.tag else device.url
            raise ValueError(f"{device.name}: {where}: {first.message} ({len(problems)} problem(s); run check)")
        self.endpoint: Endpoint = parse_url(device.url, dict(device.options))[0]  # type: ignore[assignment]
        self.limits, _ = _limits(device.options)
        self.frame_gap, _ = _frame_gap(device.options)
        self.in_flight, _ = _tcp_client(device.options)
        self.scale = np.array([t.scale for t in self.tags], dtype=np.float64)
        self.offset = np.array([t.offset for t in self.tags], dtype=np.float64)
        if self.endpoint.shared:
            self.backoff_initial_s = self.shared_backoff_initial_s
        points = self.points
        self._set_plan(plan_points(points, self.limits), points)
        self._link: Link | None = None
        self._connected_once = False  # the connection opened at least once since start
        self._answered_once = False  # the unit answered at least once since start

    @property
    def points(self) -> list[Point]:
        """Each tag's point (area, address, type, order), made from the tags when needed (the
        plan, a split request, commissioning): not kept, they were ~80 bytes a tag of what a
        running agent held."""
        return [make_point(t.address, t.type, t.order)[0] for t in self.tags]  # type: ignore[misc]

    def _set_plan(self, requests: list[Request], points: list[Point] | None = None) -> None:
        self.requests = requests
        self.decoder = Decoder(self.points if points is None else points, requests, self.scale, self.offset)
        self._regs = np.zeros(self.decoder.reg_size, dtype=np.uint16)
        self._bits = np.zeros(self.decoder.bit_size, dtype=np.uint8)

    def report(self) -> list[dict[str, Any]]:
        """The read plan as it stands (after any split a device forced): one row per request."""
        rows = [[r.fc, r.area, r.start, r.count, len(r.members)] for r in self.requests]
        return [{"title": "Modbus requests per poll", "columns": ["function", "area", "start", "count", "tags"],
                 "rows": rows}]

    async def connect(self) -> None:
        link = LinkPool.acquire(self.endpoint, self.device.timeout_s, self.frame_gap, self.in_flight)
        try:
            await link.connect()
        except ConnectFailed as exc:
            LinkPool.release(link)
            if self._connected_once:
                raise DriverError(str(exc)) from None
            raise DriverError(diagnose.never_connected(exc.endpoint, exc.cause, exc.timeout_s, self.device.name)) \
                from None
        except BaseException:
            LinkPool.release(link)
            raise
        self._connected_once = True
        self._link = link

    def _silent(self, what: str) -> DriverError:
        """The error of a unit that did not answer, with what to check if it never has."""
        return DriverError(diagnose.unit_silent(self.endpoint, self.device.unit, what, self._answered_once))

    async def disconnect(self) -> None:
        if self._link is not None:
            link, self._link = self._link, None
            LinkPool.release(link)

    async def close(self) -> None:
        await self.disconnect()

    async def read(self) -> SampleBatch:
        link = self._link
        if link is None:
            raise DriverError("not connected")
        unit, timeout = self.device.unit, self.device.timeout_s
        answers: list[tuple[Request, list | None, str | None]] = []
        split_any = False
        async with link.lock:  # the whole poll: units on a shared line take turns
            ts = time.time()
            wave = self.requests
            while wave:  # a wave of reads, then the halves of those refused, if any
                asked = await link.read_many([(r.fc, r.start, r.count) for r in wave], unit, timeout)
                again: list[Request] = []
                for req, resp in zip(wave, asked, strict=False):
                    if isinstance(resp, DriverError):
                        raise self._silent(str(resp)) if isinstance(resp, NoAnswer) else resp
                    code = int(getattr(resp, "exception_code", 0)) if resp.isError() else 0
                    if code in _NO_ANSWER:
                        raise self._silent(exception_text(code))
                    self._answered_once = True
                    if not resp.isError():
                        data = resp.bits if req.area in BIT_AREAS else resp.registers
                        if len(data) < req.count:
                            raise DriverError(f"short answer to {req.describe()}: {len(data)} values")
                        answers.append((req, data, None))
                    elif code in _SPLIT_ON and (halves := split(req, self.points)):
                        again.extend(halves)
                        split_any = True
                    else:
                        answers.append((req, None, f"{req.describe()}: {exception_text(code)}"))
                wave = again
        if split_any:  # keep the split: the next polls go straight to the readable pieces
            self._set_plan(sorted((a[0] for a in answers), key=lambda r: (AREA_ORDER.index(r.area), r.start)))
            order = {id(r): i for i, r in enumerate(self.requests)}
            answers.sort(key=lambda a: order[id(a[0])])
        return self._batch(answers, ts)

    def _batch(self, answers: list[tuple[Request, list | None, str | None]], ts: float) -> SampleBatch:
        dec = self.decoder
        failed: list[int] = []
        errors: list[str] = []
        self.request_errors: dict[int, str] = {}  # request index -> its exception, this poll
        for r, (req, data, err) in enumerate(answers):
            if data is None:
                failed.append(r)
                errors.append(err)  # type: ignore[arg-type]
                self.request_errors[r] = err  # type: ignore[assignment]
                continue
            off = dec.reg_offsets[r]
            if req.area in BIT_AREAS:
                self._bits[off:off + req.count] = data[:req.count]
            else:
                self._regs[off:off + req.count] = data
        values = dec.values(self._regs, self._bits)
        quality = np.where(np.isfinite(values), GOOD, BAD).astype(np.uint8)
        error = None
        if failed:
            bad = np.isin(dec.request_of, failed)
            values[bad] = np.nan
            quality[bad] = BAD
            error = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        return SampleBatch.build(self.device.name, self.tag_indices, values, ts, quality, error)
