"""Connections to Modbus devices, read-only by construction.

A ``Link`` owns one pymodbus client. Modbus TCP devices get a link each (one client serialises
its requests, so sharing would make devices wait for each other). RTU devices on one serial port,
and RTU-over-TCP devices behind one gateway, share one link and its lock: the line carries one
transaction at a time, so the units on it are polled in turn, each holding the lock for its
whole poll, with the RTU silent interval kept between frames.

The pymodbus client is private to the link, which exposes only reads. As a second wall, every
outgoing PDU passes ``_guard``, which refuses any function code but 1–4 and 43 with MEI type 14
(read device identification, used by the probe; MEI 13, CANopen general reference, can write)
before a byte is sent.

Modbus TCP devices polled by the driver use the lean client of lean.py instead (reads 1–4 only,
several requests in flight where the device allows); ``tcp_client = "pymodbus"`` on a device keeps
pymodbus for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from drivers.base import DriverError
from drivers.modbus import diagnose
from drivers.modbus.address import Endpoint
from drivers.modbus.lean import READ_FUNCTION_CODES, LeanTcpClient, NoAnswer, ReadOnlyViolation

__all__ = ["ConnectFailed", "Link", "LinkPool", "NoAnswer", "ReadOnlyViolation", "READ_FUNCTION_CODES"]
ALLOWED_FUNCTION_CODES = READ_FUNCTION_CODES | {43}  # 43 only with MEI type 14 (see _guard)
READ_DEVICE_IDENTIFICATION = 14  # the one MEI type of function 43 that is a read
# no pymodbus-level reconnect or retry: the driver owns backoff, and a dead unit on a shared
# bus must not make the client drop the line for the healthy ones
_NO_DISCONNECT = 1 << 30


class ConnectFailed(DriverError):
    """The connection did not open; ``cause`` is what the operating system said (None: no
    answer in time)."""

    def __init__(self, endpoint: Endpoint, cause: BaseException | None, timeout_s: float):
        self.endpoint, self.cause, self.timeout_s = endpoint, cause, timeout_s
        super().__init__(diagnose.cannot_connect(endpoint, cause, timeout_s))


def _guard(sending: bool, pdu):
    if sending and pdu.function_code not in ALLOWED_FUNCTION_CODES:
        raise ReadOnlyViolation(f"function code {pdu.function_code} refused: plantwatch only reads")
    if sending and pdu.function_code == 43 and getattr(pdu, "sub_function_code", None) != READ_DEVICE_IDENTIFICATION:
        mei = getattr(pdu, "sub_function_code", None)
        raise ReadOnlyViolation(f"function code 43 with MEI type {mei} refused: only 14 (read device identification)")
    return pdu


def frame_gap_s(baud: int) -> float:
    """The RTU silent interval: 3.5 character times (11 bits each), fixed at 1.75 ms above
    19200 baud (Modbus over serial line v1.02, 2.5.1.1)."""
    return 1.75e-3 if baud > 19200 else 3.5 * 11 / baud


class Link:
    """One client, one lock, shared by the devices on one line."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, frame_gap: float | None = None,
                 in_flight: int | None = None):
        self.endpoint = endpoint
        # the lean client (TCP only) with up to ``in_flight`` requests out; None: pymodbus
        self.in_flight = in_flight if endpoint.scheme == "tcp" else None
        self.lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self.users = 0
        self.timeout_s = timeout_s
        if frame_gap is None:
            frame_gap = frame_gap_s(endpoint.baud) if endpoint.scheme == "rtu" else 0.0
        self.frame_gap = frame_gap
        self._last_end = 0.0
        self._failures = 0  # consecutive unanswered requests on this line, any unit
        self._client = self._make_client()

    def _make_client(self):
        e = self.endpoint
        if self.in_flight is not None:
            return LeanTcpClient(e.host, e.port, self.in_flight)
        # pymodbus is imported where a line needs it (RTU, RTU over TCP, tcp_client = "pymodbus"):
        # a gateway of lean TCP devices does not carry its modules (~11 MB)
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        common: dict[str, Any] = {"timeout": self.timeout_s, "retries": 0, "reconnect_delay": 0,
                                  "trace_pdu": _guard}
        if e.scheme == "rtu":
            client = AsyncModbusSerialClient(e.path, framer=FramerType.RTU, baudrate=e.baud, parity=e.parity,
                                             stopbits=e.stopbits, bytesize=e.bytesize, **common)
        else:
            framer = FramerType.RTU if e.scheme == "rtu+tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(e.host, port=e.port, framer=framer, **common)
        client.set_max_no_responses(_NO_DISCONNECT)
        return client

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._client.connected:
                return
            if self.in_flight is not None:
                await self._connect_lean()
                return
            # pymodbus only logs why a connection failed; catch the reason on its way out
            ctx = self._client.ctx
            create = getattr(ctx, "call_create", None)
            causes: list[BaseException] = []

            async def recording():
                try:
                    return await create()
                except BaseException as exc:
                    causes.append(exc)
                    raise

            if create is not None:
                ctx.call_create = recording
            try:
                opened = await self._client.connect()
            finally:
                if create is not None:
                    ctx.call_create = create
            if not opened:
                raise ConnectFailed(self.endpoint, causes[0] if causes else None, self.timeout_s)

    async def _connect_lean(self) -> None:
        try:
            await self._client.connect(self.timeout_s)
        except TimeoutError:
            raise ConnectFailed(self.endpoint, None, self.timeout_s) from None
        except OSError as exc:
            raise ConnectFailed(self.endpoint, exc, self.timeout_s) from None

    def close(self) -> None:
        self._client.close()

    async def read_many(self, requests, unit: int, timeout_s: float) -> list:
        """Several reads, ``requests`` as (fc, address, count); the caller holds ``lock``.
        Answers in order; the first failure (a DriverError) ends the list."""
        if self.in_flight is not None:
            out = await self._client.read_many(requests, unit, timeout_s)
            if out and isinstance(out[-1], NoAnswer):
                self._unanswered()
            else:
                self._failures = 0
            return out
        out = []
        for fc, address, count in requests:
            try:
                out.append(await self.read(fc, address, count, unit, timeout_s))
            except DriverError as exc:
                out.append(exc)
                break
        return out

    async def read(self, fc: int, address: int, count: int, unit: int, timeout_s: float):
        """One read request; the caller holds ``lock``. Returns the pymodbus response (maybe an
        ExceptionResponse); raises DriverError when the device does not answer."""
        if fc not in READ_FUNCTION_CODES:
            raise ReadOnlyViolation(f"function code {fc} is not a read")
        if self.frame_gap:
            wait = self._last_end + self.frame_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.in_flight is not None:
            return await self._read_lean(fc, address, count, unit, timeout_s)
        from pymodbus.exceptions import ModbusException

        self._set_timeout(timeout_s)
        c = self._client
        method = {1: c.read_coils, 2: c.read_discrete_inputs, 3: c.read_holding_registers,
                  4: c.read_input_registers}[fc]
        try:
            response = await method(address, count=count, device_id=unit)
        except ModbusException as exc:
            self._unanswered()
            text = _short(exc)
            if text == "no response (timeout)":
                raise NoAnswer(f"no response within {timeout_s:g} s") from None
            raise DriverError(text) from None
        finally:
            self._last_end = time.monotonic()
        self._failures = 0
        return response

    async def _read_lean(self, fc: int, address: int, count: int, unit: int, timeout_s: float):
        try:
            response = await self._client.read(fc, address, count, unit, timeout_s)
        except NoAnswer:
            self._unanswered()
            raise
        self._failures = 0
        return response

    def _unanswered(self) -> None:
        # one dead unit fails, its neighbours succeed and reset the count; only when the whole
        # line goes quiet (a half-open gateway socket, a re-plugged USB adapter) is it reopened
        self._failures += 1
        if self._failures >= 3:
            self._failures = 0
            self._client.close()

    async def device_information(self, unit: int, timeout_s: float):
        """Function 43 / MEI 14, basic objects (vendor, product code, revision)."""
        if self.in_flight is not None:
            raise DriverError("device identification is read through pymodbus, not the lean TCP client")
        from pymodbus.exceptions import ModbusException

        self._set_timeout(timeout_s)
        try:
            return await self._client.read_device_information(read_code=1, object_id=0, device_id=unit)
        except ModbusException as exc:
            raise DriverError(_short(exc)) from None
        finally:
            self._last_end = time.monotonic()

    def _set_timeout(self, timeout_s: float) -> None:
        # devices sharing a line may have different timeouts; pymodbus reads the response
        # timeout from the transaction manager's params on every request
        self._client.ctx.comm_params.timeout_connect = timeout_s


def _short(exc: Exception) -> str:
    text = str(exc).replace("Modbus Error: ", "")
    if "No response received" in text:
        return "no response (timeout)"
    if "Not connected" in text:
        return "connection lost"
    return text


class LinkPool:
    """Links by line, per event loop, reference-counted: a shared line stays open while any of
    its devices uses it, so one unit's failure never closes the bus under the others."""

    _links: dict[tuple, Link] = {}

    @classmethod
    def acquire(cls, endpoint: Endpoint, timeout_s: float, frame_gap: float | None = None,
                in_flight: int | None = None) -> Link:
        """``in_flight``: use the lean TCP client with that many requests out (TCP only)."""
        if not endpoint.shared:
            link = Link(endpoint, timeout_s, frame_gap, in_flight)
            link.users = 1
            return link
        key = (id(asyncio.get_running_loop()), endpoint.key)
        link = cls._links.get(key)
        if link is None:
            link = cls._links[key] = Link(endpoint, timeout_s, frame_gap)
        link.users += 1
        return link

    @classmethod
    def release(cls, link: Link) -> None:
        link.users -= 1
        if link.users > 0:
            return
        link.close()
        for key, value in list(cls._links.items()):
            if value is link:
                del cls._links[key]
