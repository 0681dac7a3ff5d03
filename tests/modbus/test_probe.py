"""``probe()``: one read of a range, decoded, over TCP and RTU; reads and identification only."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import DriverError
from drivers.modbus.probe import parse_spec, probe
from tests.modbus.serial_pair import serial_pair
from tests.modbus.server import start_serial_server, start_server


def test_probe_shows_identity_raw_words_and_decoded_values():
    with start_server(identity={0: "Siemens", 1: "S7-1500", 2: "V2.9"}) as srv:
        srv.set_value(100, 12.5, "float32", "CDAB")
        srv.set_value(102, -273.15, "float32", "CDAB")
        lines = asyncio.run(probe(srv.url + "?unit=1", "hr:100-103", type="float32", order="CDAB"))
        assert srv.function_codes == {3, 43}
    assert lines[0] == f"tcp://127.0.0.1:{srv.port} unit 1"
    assert lines[1] == "identification: vendor=Siemens, product code=S7-1500, revision=V2.9"
    assert lines[2] == "hr:100-103 (Modicon 40101-40104) as float32 CDAB"
    assert lines[3].split() == ["hr:100", "0000", "4148", "12.5"]
    assert lines[4].split() == ["hr:102", "9333", "C388", "-273.15"]


def test_probe_shows_bits_and_exceptions():
    with start_server(holding={0: 5}, coils={0: False, 1: True, 2: False}, strict=True) as srv:
        coils = asyncio.run(probe(srv.url, "co:0-2"))
        regs = asyncio.run(probe(srv.url, "hr:0-1"))
    assert [line.split() for line in coils[3:]] == [["co:0", "0"], ["co:1", "1"], ["co:2", "0"]]
    assert regs[-1] == "hr:0-1: exception 02 illegal data address"
    assert regs[-2].split() == ["hr:1", "(not", "readable)"]


def test_probe_over_rtu_serial():
    with serial_pair() as (device_end, server_end):
        srv = start_serial_server(server_end, units={7: {"input": {3: 0xFFFE}}}, baudrate=9600)
        try:
            lines = asyncio.run(probe(f"rtu://{device_end}?baud=9600&unit=7", "ir:3", type="int16"))
        finally:
            srv.stop()
    assert lines[-1].split() == ["ir:3", "FFFE", "-2"]
    assert srv.function_codes <= {4, 43} and 4 in srv.function_codes


def test_probe_reports_bad_arguments_and_unreachable_devices():
    with pytest.raises(ValueError, match="not a range"):
        parse_spec("holding 0..20")
    with pytest.raises(ValueError, match="type"):
        asyncio.run(probe("tcp://127.0.0.1:1", type="float16"))
    with pytest.raises(ValueError, match="scheme"):
        asyncio.run(probe("udp://127.0.0.1:1"))
    srv = start_server()
    url = srv.url
    srv.stop()
    with pytest.raises(DriverError, match="cannot connect"):
        asyncio.run(probe(url, timeout=0.5))
    assert parse_spec("hr:0-20") == ("hr", 0, 21)
