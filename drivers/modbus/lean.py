"""A lean Modbus TCP client that can only read: function codes 1–4, nothing else.

pymodbus spends most of a polling agent's CPU per request (a transaction object, a PDU decoded
register by register, a timer armed and cancelled, log text built even with logging off). This
client is an asyncio ``Protocol`` doing only what a poll needs:

* MBAP framing with transaction ids; answers are matched by id, so an answer to a request that
  already timed out, or carrying an id nobody asked for, is dropped, never mistaken for another;
* up to ``max_in_flight`` requests outstanding on the connection (1 unless the device is known to
  queue requests; the Modbus TCP spec allows servers to, many PLCs do not);
* one response decoded with one ``numpy.frombuffer`` (registers) or ``unpackbits`` (bits) call;
* one timer handle per connection, armed for the oldest deadline and re-armed lazily, instead of
  one per request.

The only bytes ever written are built by ``encode_read``, which refuses any function code but
1–4 before anything is formed: the read-only guard holds by construction. RTU, RTU over TCP and
device identification (function 43) stay with pymodbus (see link.py).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from collections.abc import Sequence

import numpy as np

from drivers.base import DriverError

READ_FUNCTION_CODES = frozenset({1, 2, 3, 4})
_REQUEST = struct.Struct(">HHHBBHH")  # transaction id, protocol 0, length 6, unit, fc, address, count
_HEADER = struct.Struct(">HHH")  # transaction id, protocol, length (of unit id + PDU)
_MAX_LENGTH = 254  # unit id + the largest PDU (253 bytes)
# Linux: acknowledge at once instead of after the delayed-ACK timer. A server that leaves Nagle's
# algorithm on holds its second queued answer until the first is acknowledged, which costs ~40 ms
# per poll with several requests in flight; the kernel clears the flag again, so it is re-set
# after each segment while answers are outstanding.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class ReadOnlyViolation(RuntimeError):
    """Something tried to send a Modbus function code that is not a read."""


class NoAnswer(DriverError):
    """A request went out on an open connection and nothing came back in time."""


def encode_read(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    """The one frame this client can send: a read of ``count`` coils, inputs or registers."""
    if fc not in READ_FUNCTION_CODES:
        raise ReadOnlyViolation(f"function code {fc} refused: plantwatch only reads")
    return _REQUEST.pack(tid, 0, 6, unit, fc, address, count)


class Answer:
    """A decoded response, shaped like pymodbus' for the driver: ``isError()``,
    ``exception_code``, ``registers`` (uint16 array) or ``bits`` (uint8 array of 0/1)."""

    __slots__ = ("exception_code", "registers", "bits")

    def __init__(self, exception_code: int = 0, registers=None, bits=None):
        self.exception_code, self.registers, self.bits = exception_code, registers, bits

    def isError(self) -> bool:  # noqa: N802 - pymodbus' name, the driver reads both
        return self.exception_code != 0


def decode_pdu(pdu: bytes, fc: int) -> Answer:
    """The answer in one response PDU (function code, byte count, data) to a read ``fc``."""
    got = pdu[0]
    if got == fc | 0x80 and len(pdu) >= 2:
        return Answer(exception_code=pdu[1])
    if got != fc or len(pdu) < 2 or len(pdu) != 2 + pdu[1] or (fc > 2 and pdu[1] % 2):
        raise DriverError(f"garbled answer to function {fc}: {pdu[:8].hex()}")
    data = np.frombuffer(pdu, dtype=np.uint8, offset=2)
    if fc <= 2:
        return Answer(bits=np.unpackbits(data, bitorder="little"))
    return Answer(registers=np.frombuffer(pdu, dtype=">u2", offset=2))


class _Wire(asyncio.Protocol):
    def __init__(self, client: LeanTcpClient):
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client._wire is self:
            self.client._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._wire is self:  # not an older connection closing late
            self.client._lost()


class LeanTcpClient:
    """One Modbus TCP connection; reads only."""

    def __init__(self, host: str, port: int, max_in_flight: int = 1):
        self.host, self.port = host, port
        self.max_in_flight = max_in_flight
        self._transport: asyncio.Transport | None = None
        self._wire: _Wire | None = None
        self._buf = bytearray()
        self._tid = 0
        # transaction id -> (future, function code, deadline)
        self._pending: dict[int, tuple[asyncio.Future, int, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._why = "connection lost"
        self._sock = None  # set when acknowledgements are hurried (several requests in flight)

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def connect(self, timeout_s: float) -> None:
        """Open the connection; OSError or TimeoutError when it does not."""
        loop = asyncio.get_running_loop()
        transport, wire = await asyncio.wait_for(
            loop.create_connection(lambda: _Wire(self), self.host, self.port), timeout_s)
        self._buf.clear()
        self._why = "connection lost"
        self._transport, self._wire = transport, wire  # type: ignore[assignment]
        self._sock = transport.get_extra_info("socket") if self.max_in_flight > 1 and _QUICKACK else None
        self._quickack()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._lost()

    def send(self, fc: int, address: int, count: int, unit: int, timeout_s: float) -> asyncio.Future:
        """Write one read request; the future resolves to its Answer, or fails with NoAnswer or
        DriverError (connection lost, garbled answer)."""
        frame_tid = (self._tid + 1) & 0xFFFF
        frame = encode_read(frame_tid, unit, fc, address, count)  # refuses non-reads first
        if self._transport is None:
            raise DriverError(self._why)
        if len(self._pending) >= self.max_in_flight:
            raise DriverError(f"more than {self.max_in_flight} requests in flight")
        while frame_tid in self._pending:  # 65536 ids, a few in flight: a short walk at most
            frame_tid = (frame_tid + 1) & 0xFFFF
            frame = encode_read(frame_tid, unit, fc, address, count)
        self._tid = frame_tid
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = loop.time() + timeout_s
        self._pending[frame_tid] = (fut, fc, deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, timeout_s)
        self._transport.write(frame)
        return fut

    async def read(self, fc: int, address: int, count: int, unit: int, timeout_s: float) -> Answer:
        return await self.send(fc, address, count, unit, timeout_s)

    async def read_many(self, requests: Sequence[tuple[int, int, int]], unit: int,
                        timeout_s: float) -> list[Answer | DriverError]:
        """``requests`` as (fc, address, count), up to ``max_in_flight`` at a time. Answers in
        request order; the first failure ends the list (the requests after it are not sent,
        those already out are abandoned: their late answers are dropped by transaction id)."""
        out: list[Answer | DriverError] = []
        todo = iter(requests)
        window: deque[asyncio.Future] = deque()
        try:
            for fc, address, count in todo:
                window.append(self.send(fc, address, count, unit, timeout_s))
                if len(window) >= self.max_in_flight:
                    break
            while window:
                out.append(await window[0])  # still in the window if this poll is cancelled here
                window.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(self.send(nxt[0], nxt[1], nxt[2], unit, timeout_s))
        except DriverError as exc:
            out.append(exc)
        finally:
            self._abandon(window)
        return out

    def _abandon(self, futures) -> None:
        for fut in futures:
            for tid, entry in list(self._pending.items()):
                if entry[0] is fut:
                    del self._pending[tid]
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # seen: the poll already failed on an earlier answer

    def _expire(self, timeout_s: float) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_deadline = None
        for tid, (fut, _, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[tid]
                if not fut.done():
                    fut.set_exception(NoAnswer(f"no response within {timeout_s:g} s"))
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        if next_deadline is not None:
            self._timer = loop.call_at(next_deadline, self._expire, timeout_s)

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._sock is not None:
            self._quickack()
        while len(buf) >= 8:
            tid, protocol, length = _HEADER.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= _MAX_LENGTH:
                self._why = f"garbled answer (protocol id {protocol}, length {length}): connection dropped"
                self._transport.close()  # type: ignore[union-attr]
                self._lost()
                return
            end = 6 + length
            if len(buf) < end:
                return  # the rest is in a later segment
            entry = self._pending.pop(tid, None)
            if entry is not None and not entry[0].done():
                try:
                    entry[0].set_result(decode_pdu(bytes(buf[7:end]), entry[1]))
                except DriverError as exc:
                    entry[0].set_exception(exc)
            del buf[:end]

    def _quickack(self) -> None:
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                self._sock = None

    def _lost(self) -> None:
        self._transport = self._wire = None
        self._buf.clear()
        pending, self._pending = self._pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(DriverError(self._why))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
