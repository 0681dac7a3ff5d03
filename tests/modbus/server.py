"""A real pymodbus server for tests: a live register image per unit id, fault injection, and a
record of every function code it received (to prove the driver never writes).

The server runs on its own event loop in a background thread, so it serves sync tests, async
tests and agent subprocesses alike. Typical use::

    from tests.modbus.server import start_server

    with start_server(holding={100: 0x4148, 101: 0x0000}) as srv:   # port=0: a free port
        url = srv.url                                     # "tcp://127.0.0.1:PORT"
        srv.set_value(100, 12.5, type="float32")          # change values live
        srv.set_registers(200, [1, 2, 3])                 # raw words, area "hr" by default
        srv.set_exception("hr", 110, 120, code=2)         # reads touching 110..119 answer exception 02
        srv.silence(3)                                    # unit 3 stops answering (timeouts)
        ...
        assert srv.function_codes <= {1, 2, 3, 4}         # every function code received

``start_serial_server(path, ...)`` is the same over Modbus RTU on a serial device (e.g. one end
of a socat pty pair); ``units={1: {...}, 2: {...}}`` gives each unit id its own image.

Areas are "co", "di", "ir", "hr" (0-based addresses, as in plantwatch configs). Every address
of every area is readable (zero) unless ``strict=True``, in which case only addresses given in
the initial image are valid and others answer exception 02, like many real PLCs.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

AREAS = ("co", "di", "ir", "hr")
# function code -> area served by it; the write codes map to the area they would change
_FC_AREA = {1: "co", 5: "co", 15: "co", 2: "di", 4: "ir", 3: "hr", 6: "hr", 16: "hr", 22: "hr", 23: "hr"}
_AREA_KEYS = {"coils": "co", "discrete": "di", "input": "ir", "holding": "hr"}

# pymodbus logs every exception response and missing unit at ERROR; tests provoke them on purpose
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def encode(value: float | int | bool, type: str = "uint16", order: str = "ABCD") -> list[int]:
    """Register words for ``value`` as a device stores it (struct-based, independent of the
    driver's numpy decoder so that tests compare two implementations)."""
    fmt = {"bool": ">H", "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d"}[type]
    raw = struct.pack(fmt, int(value) if type not in ("float32", "float64") else value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


@dataclass
class _Image:
    """One unit's memory: 65536 words per register area, 65536 flags per bit area."""

    regs: dict[str, np.ndarray] = field(default_factory=lambda: {
        "hr": np.zeros(65536, np.uint16), "ir": np.zeros(65536, np.uint16)})
    bits: dict[str, np.ndarray] = field(default_factory=lambda: {
        "co": np.zeros(65536, bool), "di": np.zeros(65536, bool)})
    valid: dict[str, np.ndarray] = field(default_factory=lambda: {a: np.ones(65536, bool) for a in AREAS})
    # (area, start, end, code): reads overlapping [start, end) answer exception ``code``
    faults: list[tuple[str, int, int, int]] = field(default_factory=list)


def _make_image(spec: Mapping[str, Mapping[int, int | bool]] | None, strict: bool) -> _Image:
    img = _Image()
    if strict:
        for a in AREAS:
            img.valid[a][:] = False
    for key, values in (spec or {}).items():
        area = _AREA_KEYS.get(key, key)
        for addr, v in values.items():
            if area in img.regs:
                img.regs[area][addr] = int(v) & 0xFFFF
            else:
                img.bits[area][addr] = bool(v)
            img.valid[area][addr] = True
    return img


class _RecordingContext(ModbusServerContext):
    """A server datastore over ``_Image`` objects.

    pymodbus 3.x serves any ModbusServerContext flagged ``old_simulator`` by calling its
    async_getValues/async_setValues; that is the hook used here (SimDevice, the newer model,
    cannot stay silent for one unit or change images in place).
    """

    def __init__(self, images: dict[int, _Image]):  # noqa: D107 - no super(): it insists on its own stores
        self.images = images
        self.silent: set[int] = set()
        self.delay_s: dict[int, float] = {}
        self.old_simulator = True
        self.simdevices = []
        self.lock = threading.Lock()
        self.requests: list[tuple[int, int, int, int]] = []

    def _image(self, unit: int) -> _Image:
        if unit in self.silent:
            raise NoSuchIdException(f"unit {unit} is silent")
        img = self.images.get(unit, self.images.get(0))
        if img is None:
            raise NoSuchIdException(f"no unit {unit}")
        return img

    async def async_getValues(self, device_id, func_code, address, count=1):
        img = self._image(device_id)
        if delay := self.delay_s.get(device_id):
            await asyncio.sleep(delay)
        area = _FC_AREA[func_code]
        end = address + count
        with self.lock:
            if end > 65536 or not img.valid[area][address:end].all():
                return ExcCodes.ILLEGAL_ADDRESS
            for f_area, start, stop, code in img.faults:
                if f_area == area and address < stop and start < end:
                    return ExcCodes(code)
            if area in img.regs:
                return [int(v) for v in img.regs[area][address:end]]
            return [bool(v) for v in img.bits[area][address:end]]

    async def async_setValues(self, device_id, func_code, address, values):
        # a write reaching the store is recorded by trace_pdu already; refuse it so a test that
        # forgets to look at function_codes still sees the device reject it
        self._image(device_id)
        return ExcCodes.ILLEGAL_FUNCTION

    def device_ids(self):
        return list(self.images)


class ModbusTestServer:
    """Handle on a running server; see the module docstring."""

    def __init__(self, images: dict[int, _Image], *, tcp: tuple[str, int] | None = None,
                 serial: dict | None = None, rtu_over_tcp: bool = False, identity: dict | None = None):
        self.context = _RecordingContext(images)
        self._identity = ModbusDeviceIdentification(info=identity) if identity else None
        self._tcp = tcp
        self._rtu_over_tcp = rtu_over_tcp
        self._serial = serial
        self._fcs: list[tuple[int, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modbus-test-server", daemon=True)
        self._thread.start()
        self._server = None
        self.host, self.port = (tcp or ("", 0))
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    # --- lifecycle -------------------------------------------------------------------
    def _trace_pdu(self, sending: bool, pdu):
        if not sending:
            with self.context.lock:
                self._fcs.append((pdu.dev_id, pdu.function_code))
                if hasattr(pdu, "address") and hasattr(pdu, "count"):
                    self.context.requests.append((pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu

    async def _start(self) -> None:
        common = {"trace_pdu": self._trace_pdu, "ignore_missing_devices": True, "identity": self._identity}
        if self._tcp is not None:
            framer = FramerType.RTU if self._rtu_over_tcp else FramerType.SOCKET
            self._server = ModbusTcpServer(self.context, address=self._tcp, framer=framer, **common)
        else:
            s = self._serial
            self._server = ModbusSerialServer(
                self.context, framer=FramerType.RTU, port=s["path"], baudrate=s["baudrate"],
                parity=s["parity"], stopbits=s["stopbits"], bytesize=8, **common)
        await self._server.serve_forever(background=True)
        if self._tcp is not None:
            self.port = self._server.transport.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop serving and close every client connection (the clients see a connection loss)."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
            self._server = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> ModbusTestServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._tcp is not None:
            scheme = "rtu+tcp" if self._rtu_over_tcp else "tcp"
            return f"{scheme}://{self.host or '127.0.0.1'}:{self.port}"
        return f"rtu://{self._serial['path']}?baud={self._serial['baudrate']}"

    # --- what the server saw -----------------------------------------------------------
    @property
    def function_codes(self) -> set[int]:
        """Every function code received so far (reads, writes, diagnostics: all of them)."""
        with self.context.lock:
            return {fc for _, fc in self._fcs}

    @property
    def requests(self) -> list[tuple[int, int, int, int]]:
        """(unit, function code, address, count) of every read/write request received."""
        with self.context.lock:
            return list(self.context.requests)

    def request_count(self, unit: int | None = None) -> int:
        """Requests received in total, or addressed to ``unit``."""
        with self.context.lock:
            return sum(1 for u, _ in self._fcs if unit is None or u == unit)

    def clear_log(self) -> None:
        with self.context.lock:
            self._fcs.clear()
            self.context.requests.clear()

    # --- changing the image and injecting faults -----------------------------------------
    def _images(self, unit: int | None) -> Iterable[_Image]:
        return self.context.images.values() if unit is None else [self.context.images[unit]]

    def set_registers(self, address: int, values: Iterable[int], area: str = "hr", unit: int | None = None) -> None:
        """Write raw 16-bit words into the image (all units when ``unit`` is None)."""
        words = np.array([int(v) & 0xFFFF for v in values], dtype=np.uint16)
        with self.context.lock:
            for img in self._images(unit):
                img.regs[area][address:address + len(words)] = words
                img.valid[area][address:address + len(words)] = True

    def set_bits(self, address: int, values: Iterable[bool], area: str = "co", unit: int | None = None) -> None:
        flags = np.array([bool(v) for v in values], dtype=bool)
        with self.context.lock:
            for img in self._images(unit):
                img.bits[area][address:address + len(flags)] = flags
                img.valid[area][address:address + len(flags)] = True

    def set_value(self, address: int, value: float | int, type: str = "uint16", order: str = "ABCD",
                  area: str = "hr", unit: int | None = None) -> None:
        """Store ``value`` encoded as ``type`` in ``order`` starting at ``address``."""
        self.set_registers(address, encode(value, type, order), area, unit)

    def set_exception(self, area: str, start: int, end: int, code: int = 2, unit: int | None = None) -> None:
        """Reads of ``area`` overlapping [start, end) answer Modbus exception ``code``."""
        with self.context.lock:
            for img in self._images(unit):
                img.faults.append((area, start, end, code))

    def clear_exceptions(self, unit: int | None = None) -> None:
        with self.context.lock:
            for img in self._images(unit):
                img.faults.clear()

    def silence(self, unit: int) -> None:
        """The unit stops answering: the client times out (a dead RTU slave)."""
        self.context.silent.add(unit)

    def unsilence(self, unit: int) -> None:
        self.context.silent.discard(unit)

    def set_delay(self, unit: int, seconds: float) -> None:
        """Answer ``unit`` only after ``seconds`` (a slow device; 0 to clear)."""
        self.context.delay_s[unit] = seconds


def _images(holding, input, coils, discrete, units, strict) -> dict[int, _Image]:
    if units is not None:
        return {u: _make_image(spec, strict) for u, spec in units.items()}
    spec = {"hr": holding or {}, "ir": input or {}, "co": coils or {}, "di": discrete or {}}
    return {0: _make_image(spec, strict)}  # unit 0: answers every unit id


def start_server(port: int = 0, *, holding: Mapping[int, int] | None = None,
                 input: Mapping[int, int] | None = None, coils: Mapping[int, bool] | None = None,
                 discrete: Mapping[int, bool] | None = None,
                 units: Mapping[int, Mapping[str, Mapping[int, int | bool]]] | None = None,
                 strict: bool = False, host: str = "127.0.0.1", rtu_over_tcp: bool = False,
                 identity: Mapping[int, str] | None = None) -> ModbusTestServer:
    """Start a Modbus TCP server on ``host:port`` (0 = a free port; read ``.port``/``.url``).

    Without ``units`` one image answers every unit id; with ``units={1: {"holding": {...},
    "coils": {...}}, 2: {...}}`` only those unit ids answer (others time out). With
    ``rtu_over_tcp=True`` it speaks RTU frames over TCP, like a serial gateway (url rtu+tcp://).
    ``identity={0: "vendor", 1: "product code", 2: "revision"}`` answers function 43/14.
    """
    return ModbusTestServer(_images(holding, input, coils, discrete, units, strict), tcp=(host, port),
                            rtu_over_tcp=rtu_over_tcp, identity=dict(identity) if identity else None)


def start_serial_server(path: str, *, holding=None, input=None, coils=None, discrete=None, units=None,
                        strict: bool = False, baudrate: int = 19200, parity: str = "N",
                        stopbits: int = 1) -> ModbusTestServer:
    """Start a Modbus RTU server on serial device ``path`` (e.g. one end of a socat pty pair)."""
    return ModbusTestServer(_images(holding, input, coils, discrete, units, strict),
                            serial={"path": path, "baudrate": baudrate, "parity": parity, "stopbits": stopbits})
