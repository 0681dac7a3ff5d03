"""Commissioning on the Modbus side: Modicon references (1-based, area in the leading digit) in
tag addresses and probe ranges, bool as the type of a bit address, `read_once` with raw words and
the other byte orders, and failures that say what to check."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from drivers.base import BAD, COMM_FAIL, GOOD
from drivers.modbus import ModbusDriver, diagnose
from drivers.modbus.address import modicon, parse_address, parse_url
from drivers.modbus.probe import parse_spec, probe
from tests.modbus.helpers import device, tag
from tests.modbus.server import start_server

# every boundary of every range: (Modicon reference, 0-based form)
MODICON = [
    ("00001", "co:0"), ("09999", "co:9998"), ("10001", "di:0"), ("19999", "di:9998"),
    ("30001", "ir:0"), ("39999", "ir:9998"), ("40001", "hr:0"), ("49999", "hr:9998"),
    ("000001", "co:0"), ("065536", "co:65535"), ("100001", "di:0"), ("165536", "di:65535"),
    ("300001", "ir:0"), ("365536", "ir:65535"), ("400001", "hr:0"), ("465536", "hr:65535"),
    ("410000", "hr:9999"), ("40101.3", "hr:100.3"),
]


@pytest.mark.parametrize(("ref", "plain"), MODICON)
def test_modicon_references_map_to_0_based_addresses(ref, plain):
    assert parse_address(ref) == parse_address(plain)


@pytest.mark.parametrize(("text", "words"), [
    ("0", "bare number"), ("1234", "bare number"), ("1000000", "bare number"),
    ("40000", "outside 40001..49999"), ("00000", "outside 00001..09999"), ("400000", "outside 400001..465536"),
    ("465537", "outside 400001..465536"), ("365537", "outside 300001..365536"),
    ("50000", "starts with 0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register), not 5"),
    ("20001", "not 2"), ("600001", "not 6"), ("10001.2", "single bits already"), ("40001.16", "bit 16"),
])
def test_bad_modicon_references_say_why(text, words):
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert words in str(info.value)


def test_modicon_is_printed_back_with_5_digits_where_they_suffice():
    assert [modicon("hr", 0), modicon("hr", 9998), modicon("hr", 9999), modicon("co", 65535)] == \
        ["40001", "49999", "410000", "065536"]
    assert ModbusDriver.show_address("40101") == "hr:100 = 40101"
    assert ModbusDriver.show_address("di:3") == "di:3 = 10004"
    assert ModbusDriver.show_address("hr:7.2") == "hr:7.2 = 40008.2"
    assert ModbusDriver.show_address("nonsense") == "nonsense"


def test_probe_takes_modicon_ranges():
    assert parse_spec("40001-40021") == ("hr", 0, 21)
    assert parse_spec("300101") == ("ir", 100, 1)
    assert parse_spec("400001-400002") == ("hr", 0, 2)
    for bad, words in (("40001-30010", "one area"), ("40000-40002", "outside"), ("465537", "outside"),
                       ("40010-40001", "upwards")):
        with pytest.raises(ValueError, match=words):
            parse_spec(bad)
    with start_server() as srv:
        srv.set_value(100, 12.5, "float32")
        lines = asyncio.run(probe(srv.url, "40101-40102", type="float32"))
        assert srv.function_codes <= {3, 43}
    assert lines[2] == "hr:100-101 (Modicon 40101-40102) as float32 ABCD"
    assert lines[3].split() == ["hr:100", "4148", "0000", "12.5"]


def test_a_bit_address_defaults_to_bool_and_others_keep_the_common_default():
    assert [ModbusDriver.default_type(a) for a in ("co:1", "di:2", "00003", "10004", "hr:5.1", "40006.2")] == \
        ["bool"] * 6
    assert [ModbusDriver.default_type(a) for a in ("hr:5", "ir:1", "40001", "garbage")] == [None] * 4


def test_read_once_shows_raw_words_decoded_values_and_the_other_orders():
    with start_server(coils={3: True}) as srv:
        srv.set_value(100, 12.5, "float32")
        srv.set_value(102, 7.25, "float32", "CDAB")  # the device sends CDAB; the config says ABCD
        srv.set_value(110, -5, "int16")
        srv.set_exception("hr", 200, 201)
        tags = [tag(0, "hr:100", "float32"), tag(1, "40103", "float32"), tag(2, "hr:110", "int16", scale=0.1),
                tag(3, "00004", "bool"), tag(4, "hr:200")]
        readings = asyncio.run(ModbusDriver.read_once(device(srv.url), tags))
        assert srv.function_codes <= {1, 2, 3, 4}
    r = {x.tag.name: x for x in readings}
    assert (r["T0"].value, r["T0"].quality, r["T0"].raw, r["T0"].error) == (12.5, GOOD, "0x4148 0x0000", None)
    assert set(r["T0"].alternatives) == {"BADC", "CDAB", "DCBA"}
    # a wrong word order: a tiny denormal as configured, the true value under CDAB
    assert r["T1"].raw == "0x0000 0x40E8" and abs(r["T1"].value) < 1e-30 and r["T1"].alternatives["CDAB"] == 7.25
    assert (r["T2"].value, r["T2"].raw, dict(r["T2"].alternatives)) == (pytest.approx(-0.5), "0xFFFB", {})
    assert (r["T3"].value, r["T3"].raw) == (1.0, "1")
    assert r["T4"].quality == BAD and r["T4"].error == "hr 200-200 (1 reg, 1 tag): exception 02 illegal data address"
    assert [x.good for x in readings] == [True, True, True, True, False]


def test_a_port_nobody_listens_on_says_it_never_connected_and_what_to_check():
    srv = start_server()
    url = srv.url
    srv.stop()
    (r,) = asyncio.run(ModbusDriver.read_once(device(url, name="plc1"), [tag(0, "hr:0")]))
    assert r.quality == COMM_FAIL
    assert r.error == (f"cannot connect to 127.0.0.1:{srv.port} (connection refused) — never connected since start; "
                       "check the address and port of device 'plc1', that the PLC's Modbus TCP server is on, "
                       "and the firewall")


def test_a_unit_a_gateway_cannot_reach_says_check_the_unit_id():
    with start_server() as srv:
        srv.set_exception("hr", 0, 65536, code=11)
        (r,) = asyncio.run(ModbusDriver.read_once(device(srv.url, unit=3), [tag(0, "hr:0")]))
    assert r.quality == COMM_FAIL
    assert r.error.startswith("unit 3 did not answer (exception 0B gateway target device failed to respond) — never "
                              "answered since start; check the unit id (3)")


def test_a_missing_serial_port_says_what_to_check():
    (r,) = asyncio.run(ModbusDriver.read_once(device("rtu:///dev/ttyPLANTWATCH9?baud=9600"), [tag(0, "hr:0")]))
    assert r.error == ("cannot open serial port /dev/ttyPLANTWATCH9 (no such device) — never connected since start; "
                       "check the serial port of device 'plc' (/dev/ttyPLANTWATCH9) and that the USB/serial adapter "
                       "is plugged in")


def test_probe_of_a_closed_port_and_of_a_silent_unit_say_what_to_check():
    srv = start_server()
    url = srv.url
    srv.stop()
    with pytest.raises(Exception, match=r"connection refused\) — check the address and port, that the PLC's"):
        asyncio.run(probe(url, timeout=0.5))
    with start_server(units={1: {"holding": {0: 1}}}) as srv:
        with pytest.raises(Exception, match=r"unit 2 did not answer \(no response within 0.3 s\) — check the unit id "
                                            r"\(2\).*\?unit=N in the URL selects the unit"):
            asyncio.run(probe(srv.url + "?unit=2", "hr:0", timeout=0.3))


def test_a_device_that_was_connected_before_drops_the_never_connected_advice():
    srv = start_server(holding={0: 42})
    port = srv.port

    async def run():
        drv = ModbusDriver(device(srv.url, interval_s=0.05), [tag(0, "hr:0")])
        errors = []
        async for batch in drv.batches():
            if batch.error is None:
                srv.stop()
            else:
                errors.append(batch.error)
            if any(e.startswith("cannot connect") for e in errors):
                break
        await drv.close()
        return errors
    errors = asyncio.run(run())
    assert errors[-1] == f"cannot connect to 127.0.0.1:{port} (connection refused)"
    assert not any("never" in e for e in errors), errors


@pytest.mark.parametrize(("url", "exc", "reason", "advice"), [
    ("tcp://10.0.0.5:502", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused",
     "check the address and port of device 'plc1', that the PLC's Modbus TCP server is on, and the firewall"),
    ("tcp://10.0.0.5:502", None, "no answer within 1 s", "check the address and port of device 'plc1'"),
    ("tcp://10.0.0.5:502", asyncio.CancelledError(), "no answer within 1 s", "and the firewall"),
    ("tcp://10.0.0.5:502", OSError(errno.EHOSTUNREACH, "No route to host"), "host unreachable", "the firewall"),
    ("tcp://plc.invalid:502", socket.gaierror(-2, "Name or service not known"), "host name not found",
     "check the host name in the url of device 'plc1' and the gateway's DNS"),
    ("rtu+tcp://10.0.0.9:4001", ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection refused",
     "that the serial gateway is on"),
    ("rtu:///dev/ttyUSB0", PermissionError(errno.EACCES, "Permission denied"), "permission denied",
     "check that the user running plantwatch may open /dev/ttyUSB0 (group dialout, or the udev rule of the adapter)"),
    ("rtu:///dev/ttyUSB0", OSError(errno.EBUSY, "busy"), "in use by another program",
     "check that no other program holds /dev/ttyUSB0"),
])
def test_what_each_connection_failure_says(url, exc, reason, advice):
    endpoint, _ = parse_url(url)
    text = diagnose.never_connected(endpoint, exc, 1.0, "plc1")
    assert f"({reason}) — never connected since start; " in text and advice in text, text


def test_a_silent_rtu_unit_points_at_the_unit_id_the_serial_settings_and_the_wiring():
    endpoint, _ = parse_url("rtu:///dev/ttyUSB0?baud=19200&parity=E")
    assert diagnose.unit_silent(endpoint, 7, "no response within 1 s", answered_before=False) == (
        "unit 7 did not answer (no response within 1 s) — never answered since start; check the unit id (7), the "
        "serial settings (19200 baud, parity E, 1 stop bit) against the device's, and the wiring (A/B swapped? "
        "termination?)")
    assert diagnose.unit_silent(endpoint, 7, "no response within 1 s", answered_before=True) == \
        "unit 7: no response within 1 s"
