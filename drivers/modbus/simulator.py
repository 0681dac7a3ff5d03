"""A simulated Modbus device for the demo and for tests: a Modbus TCP (or RTU over TCP) server
on loopback whose registers hold a config's tags, encoded as the driver decodes them, refreshed
from a callback on every request.

It answers reads only; a write gets exception 01 (illegal function), as the agent never writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer

from drivers.base import DeviceSpec, Simulator, TagSpec
from drivers.modbus.address import BIT_AREAS, Point, make_point, parse_url
from drivers.modbus.decode import DTYPES, byte_permutation

_FC_AREA = {1: "co", 2: "di", 3: "hr", 4: "ir"}
_SIZE = 65536


def encode(value: float, type: str, order: str) -> np.ndarray:
    """The register words (uint16) that hold the raw ``value`` as ``type`` in byte ``order``:
    the inverse of drivers.modbus.decode. Integers are rounded and clipped to the type's range."""
    dtype = np.dtype(DTYPES[type])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = min(max(round(value), int(info.min)), int(info.max))
    msb_first = np.array([value], dtype=dtype).tobytes()
    perm = byte_permutation(order, dtype.itemsize // 2)
    sent = bytearray(len(msb_first))
    for j, b in enumerate(msb_first):  # byte j of the value travels as byte perm[j]
        sent[perm[j]] = b
    return np.frombuffer(bytes(sent), dtype=">u2").astype(np.uint16)


class _Image:
    """One unit's memory: the four areas, rewritten from the tags' values."""

    def __init__(self, tags: Sequence[TagSpec]):
        self.regs = {"hr": np.zeros(_SIZE, np.uint16), "ir": np.zeros(_SIZE, np.uint16)}
        self.bits = {"co": np.zeros(_SIZE, bool), "di": np.zeros(_SIZE, bool)}
        self.points: list[tuple[TagSpec, Point]] = []
        for tag in tags:
            point, problems = make_point(tag.address, tag.type, tag.order)
            if point is None:
                raise ValueError(f"tag {tag.name}: " + "; ".join(f"{k}: {m}" for k, m in problems))
            self.points.append((tag, point))

    def store(self, values: Mapping[str, float]) -> None:
        for tag, p in self.points:
            if tag.name not in values or not np.isfinite(values[tag.name]):
                continue
            raw = (float(values[tag.name]) - tag.offset) / tag.scale
            if p.area in BIT_AREAS:
                self.bits[p.area][p.address] = raw != 0
            elif p.type == "bool" and p.bit >= 0:
                mask = np.uint16(1 << p.bit)
                regs = self.regs[p.area]
                regs[p.address] = (regs[p.address] | mask) if raw != 0 else (regs[p.address] & ~mask)
            elif p.type == "bool":
                self.regs[p.area][p.address] = 1 if raw != 0 else 0
            else:
                self.regs[p.area][p.address:p.end] = encode(raw, p.type, p.order)


class _Context(ModbusServerContext):
    """pymodbus serves a ModbusServerContext flagged ``old_simulator`` through its
    async_getValues/async_setValues, which lets the image be refreshed at each request."""

    def __init__(self, unit: int, image: _Image, values: Callable[[], Mapping[str, float]]):  # noqa: D107 - no super(): it insists on its own stores
        self.unit = unit
        self.image = image
        self.values = values
        self.old_simulator = True
        self.simdevices = []
        self.function_codes: set[int] = set()

    async def async_getValues(self, device_id, func_code, address, count=1):
        if device_id != self.unit:
            raise NoSuchIdException(f"no unit {device_id}")
        self.function_codes.add(func_code)
        area = _FC_AREA.get(func_code)
        if area is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if address + count > _SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        self.image.store(self.values())
        if area in BIT_AREAS:
            return [bool(v) for v in self.image.bits[area][address:address + count]]
        return [int(v) for v in self.image.regs[area][address:address + count]]

    async def async_setValues(self, device_id, func_code, address, values):
        self.function_codes.add(func_code)
        return ExcCodes.ILLEGAL_FUNCTION

    def device_ids(self):
        return [self.unit]


class ModbusSimulator(Simulator):
    """A simulated device at a ``tcp://`` or ``rtu+tcp://`` URL; see the module docstring."""

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec], values: Callable[[], Mapping[str, float]]):
        endpoint, problems = parse_url(device.url, dict(device.options))
        if endpoint is None or problems or endpoint.scheme == "rtu":
            raise ValueError(f"a simulator serves tcp:// or rtu+tcp:// URLs, not {device.url!r}")
        self.host, self.port = endpoint.host or "127.0.0.1", endpoint.port
        self.framer = FramerType.RTU if endpoint.scheme == "rtu+tcp" else FramerType.SOCKET
        self.context = _Context(device.unit, _Image(tags), values)
        self.server: ModbusTcpServer | None = None

    @property
    def function_codes(self) -> set[int]:
        """Every function code received so far."""
        return set(self.context.function_codes)

    async def start(self) -> None:
        if self.server is not None:
            return
        server = ModbusTcpServer(self.context, address=(self.host, self.port), framer=self.framer,
                                 ignore_missing_devices=True)
        await server.serve_forever(background=True)
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.shutdown()
