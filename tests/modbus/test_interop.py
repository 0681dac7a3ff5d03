"""Interoperability with a Modbus server not built on pymodbus: pyModbusTCP's threaded server
(a separate implementation of the framing, the exception responses and the data model)."""

from __future__ import annotations

import threading

import numpy as np
from pyModbusTCP.server import DataBank, DataHandler, ModbusServer

from agent.broker import free_port
from drivers.base import BAD, GOOD
from tests.modbus.helpers import device, poll, tag
from tests.modbus.server import encode
from tests.modbus.test_decode import ORDERS, SAMPLES, expected


class RecordingHandler(DataHandler):
    """Notes every function code the server is asked for, reads and writes alike."""

    def __init__(self, data_bank):
        super().__init__(data_bank)
        self.lock = threading.Lock()
        self.function_codes: set[int] = set()

    def _note(self, fc):
        with self.lock:
            self.function_codes.add(fc)

    def read_coils(self, address, count, srv_info):
        self._note(1)
        return super().read_coils(address, count, srv_info)

    def read_d_inputs(self, address, count, srv_info):
        self._note(2)
        return super().read_d_inputs(address, count, srv_info)

    def read_h_regs(self, address, count, srv_info):
        self._note(3)
        return super().read_h_regs(address, count, srv_info)

    def read_i_regs(self, address, count, srv_info):
        self._note(4)
        return super().read_i_regs(address, count, srv_info)

    def write_coils(self, address, bits_l, srv_info):
        self._note(15 if len(bits_l) > 1 else 5)
        return super().write_coils(address, bits_l, srv_info)

    def write_h_regs(self, address, words_l, srv_info):
        self._note(16 if len(words_l) > 1 else 6)
        return super().write_h_regs(address, words_l, srv_info)


def start(bank: DataBank) -> tuple[ModbusServer, RecordingHandler]:
    handler = RecordingHandler(bank)
    server = ModbusServer("127.0.0.1", free_port(), no_block=True, data_hdl=handler)
    server.start()
    return server, handler


def test_every_type_and_order_and_only_reads_on_pymodbustcp():
    bank = DataBank()
    server, handler = start(bank)
    try:
        tags, want, address = [], [], 0
        for type_, value in SAMPLES.items():
            for order in ORDERS:
                bank.set_holding_registers(address, encode(value, type_, order))
                bank.set_input_registers(address, encode(value, type_, order))
                tags.append(tag(len(tags), f"hr:{address}", type_, order))
                tags.append(tag(len(tags), f"ir:{address}", type_, order))
                want += [expected(type_, value)] * 2
                address += 4
        bank.set_coils(10, [True, False, True])
        bank.set_discrete_inputs(20, [False, True])
        bank.set_holding_registers(500, [0b100])
        tags += [tag(len(tags) + i, a, "bool") for i, a in enumerate(["co:10", "co:11", "co:12", "di:20", "di:21", "hr:500.2"])]
        want += [1, 0, 1, 0, 1, 1]
        batches = poll(device(f"tcp://127.0.0.1:{server.port}"), tags, n=3)
    finally:
        server.stop()
    for batch in batches:
        assert batch.error is None and (batch.quality == GOOD).all()
        np.testing.assert_array_equal(batch.value, np.array(want, dtype=float))
    assert handler.function_codes == {1, 2, 3, 4}


def test_illegal_address_from_pymodbustcp_marks_only_the_unreadable_tags_bad():
    # a 100-register device: the merged block 90..109 runs past its end and is refused
    bank = DataBank(h_regs_size=100)
    bank.set_holding_registers(90, list(range(90, 100)))
    server, handler = start(bank)
    try:
        tags = [tag(i, f"hr:{90 + 2 * i}", "uint16") for i in range(10)]
        batches = poll(device(f"tcp://127.0.0.1:{server.port}"), tags, n=2)
    finally:
        server.stop()
    for batch in batches:
        assert list(batch.quality) == [GOOD] * 5 + [BAD] * 5
        assert list(batch.value[:5]) == [90, 92, 94, 96, 98]
        assert "exception 02" in batch.error
    assert handler.function_codes == {3}
