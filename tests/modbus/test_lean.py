"""The lean Modbus TCP client (drivers/modbus/lean.py) against real servers: the pymodbus test
server and the libmodbus one, directly or through a small TCP relay that misbehaves the way
networks and devices do (answers cut into pieces, wrong transaction ids, a close mid-answer)."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from agent.broker import free_port
from drivers.base import DriverError
from drivers.modbus import ModbusDriver
from drivers.modbus.lean import LeanTcpClient, NoAnswer, ReadOnlyViolation, decode_pdu, encode_read
from tests.modbus.helpers import device, poll, tag
from tests.modbus.server import start_server
from tests.modbus.test_libmodbus import check, image, libmodbus_server, running  # noqa: F401 - fixture

WRITES = (5, 6, 15, 16, 22, 23)
WORDS = list(range(100, 200))  # hr:0-99, the whole holding area of the libmodbus server


@pytest.fixture(params=["pymodbus", "libmodbus"])
def backend(request) -> int:
    """The port of a real server holding WORDS: the pymodbus test server or libmodbus (C)."""
    if request.param == "pymodbus":
        with start_server(holding=dict(enumerate(WORDS))) as srv:
            yield srv.port
        return
    binary = request.getfixturevalue("libmodbus_server")
    port = free_port()
    with running([str(binary), "tcp", str(port), *(f"hr:{i}={w}" for i, w in enumerate(WORDS))]):
        yield port


class Relay:
    """Forwards one client's bytes to a server and back, counting Modbus frames each way;
    ``answers`` decides what reaches the client: "pass", "bytewise" (one byte per segment),
    "wrong tid" (every answer's id + 1), "cut" (half an answer, then close)."""

    def __init__(self, port: int, answers: str = "pass"):
        self.port, self.answers = port, answers
        self.asked = self.answered = self.max_out = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()

    async def _serve(self, reader, writer) -> None:
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:  # the test's loop ends with the relay still open
            writer.close()

    async def _relay(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        down = asyncio.create_task(self._down(up_r, writer))
        try:
            while frame := await _frame(reader):
                self.asked += 1
                self.max_out = max(self.max_out, self.asked - self.answered)
                up_w.write(frame)
        finally:
            down.cancel()
            up_w.close()
            writer.close()

    async def _down(self, up_r, writer) -> None:
        while frame := await _frame(up_r):
            self.answered += 1
            if self.answers == "wrong tid":
                frame = struct.pack(">H", (struct.unpack_from(">H", frame)[0] + 1) & 0xFFFF) + frame[2:]
            if self.answers == "cut":
                writer.write(frame[:len(frame) // 2])
                await writer.drain()
                writer.close()
                return
            if self.answers == "bytewise":
                for i in range(len(frame)):
                    writer.write(frame[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.001)
            else:
                writer.write(frame)


async def _frame(reader) -> bytes:
    try:
        head = await reader.readexactly(6)
        return head + await reader.readexactly(struct.unpack_from(">H", head, 4)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""


async def _through(server_port: int, answers: str, body):
    relay = Relay(server_port, answers)
    port = await relay.start()
    client = LeanTcpClient("127.0.0.1", port)
    await client.connect(1.0)
    try:
        return await body(client), relay
    finally:
        client.close()
        await relay.close()


def test_no_write_function_code_can_be_encoded_or_sent(server):
    for fc in (*WRITES, 8, 43, 0, 0x83):
        with pytest.raises(ReadOnlyViolation):
            encode_read(1, 1, fc, 0, 1)

    async def attempt(client):
        for fc in WRITES:
            with pytest.raises(ReadOnlyViolation):
                client.send(fc, 0, 1, 1, 0.5)
        answer = await client.read(3, 0, 1, 1, 0.5)
        return answer.registers.tolist()
    assert asyncio.run(_through(server.port, "pass", attempt))[0] == [0]
    assert server.function_codes == {3}


def test_a_response_is_decoded_in_one_piece_registers_and_bits(server):
    server.set_registers(10, [1, 0xFFFF, 0x1234])
    server.set_bits(3, [True, False, True], area="co")
    server.set_exception("ir", 5, 6, code=2)

    async def body(client):
        regs = await client.read(3, 10, 3, 1, 0.5)
        bits = await client.read(1, 0, 9, 1, 0.5)
        refused = await client.read(4, 0, 10, 1, 0.5)
        return regs, bits, refused
    (regs, bits, refused), _ = asyncio.run(_through(server.port, "pass", body))
    assert regs.registers.tolist() == [1, 0xFFFF, 0x1234] and not regs.isError()
    assert bits.bits[:9].tolist() == [0, 0, 0, 1, 0, 1, 0, 0, 0]
    assert refused.isError() and refused.exception_code == 2


def test_an_answer_that_does_not_fit_its_request_is_an_error_not_values():
    assert decode_pdu(bytes([3, 4, 0, 1, 0xFF, 0xFF]), 3).registers.tolist() == [1, 0xFFFF]
    assert decode_pdu(bytes([0x83, 2]), 3).exception_code == 2
    for pdu, fc in ((bytes([3, 3, 0, 1, 2]), 3),  # an odd byte count for registers
                    (bytes([4, 2, 0, 1]), 3),  # another function's answer
                    (bytes([3, 4, 0, 1]), 3)):  # fewer bytes than it says
        with pytest.raises(DriverError, match="garbled answer to function 3"):
            decode_pdu(pdu, fc)


def test_an_answer_split_across_many_tcp_segments_is_put_together(backend):
    async def body(client):
        return [(await client.read(3, 0, 100, 1, 5.0)).registers.tolist() for _ in range(2)]
    (answers, relay) = asyncio.run(_through(backend, "bytewise", body))
    assert answers == [WORDS] * 2 and relay.answered == 2


@pytest.mark.parametrize(("answers", "error", "still_open"), [
    ("wrong tid", NoAnswer("no response within 0.3 s"), True),  # an answer nobody asked for is dropped
    ("cut", DriverError("connection lost"), False),  # the server closes mid-answer
])
def test_an_answer_with_another_id_or_cut_short_is_never_taken(backend, answers, error, still_open):
    async def body(client):
        with pytest.raises(type(error), match=str(error)):
            await client.read(3, 0, 20, 1, 0.3)
        return client.connected
    (is_open, relay) = asyncio.run(_through(backend, answers, body))
    assert is_open == still_open and relay.answered == 1


def test_the_driver_recovers_after_the_connection_dies_mid_answer(server):
    server.set_registers(0, [5])

    async def run():
        relay = Relay(server.port, "cut")
        port = await relay.start()
        drv = ModbusDriver(device(f"tcp://127.0.0.1:{port}", interval_s=0.05), [tag(0, "hr:0")])
        out = []
        async for batch in drv.batches():
            out.append(batch)
            relay.answers = "pass"
            if batch.error is None:
                break
        await drv.close()
        await relay.close()
        return out
    batches = asyncio.run(run())
    assert batches[0].error == "connection lost" and batches[-1].value[0] == 5


def test_one_timer_serves_every_request_of_a_connection(server):
    async def body(client):
        await client.read(3, 0, 1, 1, 5.0)
        timer = client._timer
        for _ in range(20):
            await client.read(3, 0, 1, 1, 5.0)
        return timer is not None and client._timer is timer
    assert asyncio.run(_through(server.port, "pass", body))[0]


@pytest.mark.parametrize("in_flight", [1, 4])
def test_requests_in_flight_never_exceed_the_device_setting(libmodbus_server, in_flight):  # noqa: F811
    port = free_port()
    words = list(range(1, 11))
    with running([str(libmodbus_server), "tcp", str(port), *(f"hr:{5 * i}={w}" for i, w in enumerate(words))]) \
            as codes:
        async def body(client):
            client.max_in_flight = in_flight
            return await client.read_many([(3, 5 * i, 1) for i in range(10)], 1, 2.0)
        answers, relay = asyncio.run(_through(port, "pass", body))
    assert [a.registers.tolist() for a in answers] == [[w] for w in words]
    assert relay.max_out == in_flight and relay.asked == 10
    assert codes == {3}


def test_the_driver_with_requests_in_flight_reads_libmodbus_right(libmodbus_server):  # noqa: F811
    port = free_port()
    args, tags, want = image()
    with running([str(libmodbus_server), "tcp", str(port), *args]) as codes:
        batches = poll(device(f"tcp://127.0.0.1:{port}", max_gap=2, max_in_flight=4), tags, n=2)
    for batch in batches:
        check(batch, want)
    assert codes == {1, 3, 4}


def test_the_device_options_of_the_tcp_client_are_checked():
    def problems(**options):
        return [(p.key, p.message) for p in ModbusDriver.check(device("tcp://127.0.0.1:502", **options), [])]
    assert problems(max_in_flight=4) == [] and problems(tcp_client="pymodbus") == []
    assert problems(max_in_flight=0) == [("max_in_flight", "must be an integer 1..16, not 0")]
    assert problems(tcp_client="fast") == [("tcp_client", "must be one of lean, pymodbus, not 'fast'")]
    assert problems(tcp_client="pymodbus", max_in_flight=2)[0][0] == "max_in_flight"


def test_pymodbus_still_serves_a_device_that_asks_for_it(server):
    server.set_value(0, 2.5, "float32")
    (batch,) = poll(device(server.url, tcp_client="pymodbus"), [tag(0, "hr:0", "float32")])
    assert batch.error is None and np.float32(batch.value[0]) == np.float32(2.5)
