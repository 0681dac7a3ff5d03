"""Config validation: every bad URL, option and tag address is reported with the key it concerns,
all at once; and ``plan()`` prints what will be read."""

from __future__ import annotations

import pytest

from drivers import load
from drivers.modbus import ModbusDriver
from tests.modbus.helpers import device, tag


def problems(dev, tags=()):
    return [((p.tag.index if p.tag else None), p.key, p.message) for p in ModbusDriver.check(dev, list(tags))]


def test_registered_under_its_entry_point():
    assert load("modbus") is ModbusDriver
    assert ModbusDriver.name == "modbus" and set(ModbusDriver.schemes) == {"tcp", "rtu", "rtu+tcp"}


@pytest.mark.parametrize("url", ["tcp://10.0.0.5:502", "tcp://plc-1", "rtu:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1",
                                 "rtu+tcp://10.0.0.9:4001", "rtu:///dev/ttyS1"])
def test_good_urls_pass(url):
    assert problems(device(url), [tag(0, "hr:0")]) == []


@pytest.mark.parametrize(("url", "key", "words"), [
    ("http://x:1", "url", "scheme"),
    ("tcp://:502", "url", "needs a host"),
    ("tcp://x:99999", "url", "bad port"),
    ("rtu://", "url", "serial device"),
    ("rtu:///dev/ttyUSB0?baud=fast", "baud", "not a valid"),
    ("rtu:///dev/ttyUSB0?parity=X", "parity", "N, E or O"),
    ("rtu:///dev/ttyUSB0?stopbits=3", "stopbits", "1 or 2"),
    ("rtu:///dev/ttyUSB0?speed=9600", "url", "unknown query"),
    ("tcp://x:502?baud=9600", "url", "do not apply"),
])
def test_bad_urls_name_the_problem(url, key, words):
    found = problems(device(url), [tag(0, "hr:0")])
    assert any(k == key and words in m for _, k, m in found), found


@pytest.mark.parametrize(("address", "type_", "key", "words"), [
    ("hr:65536", "uint16", "address", "outside 0..65535"),
    ("hr:65535", "float32", "address", "runs past 65535"),
    ("hr:65533", "float64", "address", "runs past 65535"),
    ("4x100", "uint16", "address", "not a Modbus address"),
    ("hr:-1", "uint16", "address", "not a Modbus address"),
    ("hr:10.16", "bool", "address", "bit 16 is outside 0..15"),
    ("co:3.1", "bool", "address", "single bits already"),
    ("hr:10.3", "int16", "type", "needs type bool"),
    ("co:3", "float32", "type", "type must be bool"),
    ("di:3", "uint16", "type", "type must be bool"),
    ("hr:0", "float16", "type", "not one of"),
])
def test_bad_tags_name_the_problem(address, type_, key, words):
    found = problems(device("tcp://x"), [tag(7, address, type_)])
    assert any(i == 7 and k == key and words in m for i, k, m in found), found


def test_every_problem_is_reported_together():
    dev = device("rtu:///dev/ttyUSB0?parity=Q", unit=0, max_registers=200, max_gap=-1, frame_gap_ms="x")
    found = problems(dev, [tag(0, "hr:1.2", "float32"), tag(1, "xx"), tag(2, "hr:0", order="ABDC")])
    keys = {(i, k) for i, k, _ in found}
    assert {(None, "parity"), (None, "unit"), (None, "max_registers"), (None, "max_gap"),
            (None, "frame_gap_ms"), (0, "type"), (1, "address"), (2, "order")} <= keys


def test_serial_settings_may_be_device_keys_but_must_not_contradict_the_url():
    assert problems(device("rtu:///dev/ttyUSB0", baud=19200, parity="E")) == []
    found = problems(device("rtu:///dev/ttyUSB0?baud=9600", baud=19200))
    assert [(k, m) for _, k, m in found] == [("baud", "19200 contradicts baud=9600 in the url")]


def test_plan_lists_requests_and_a_total():
    tags = [tag(i, f"hr:{100 + 2 * i}", "float32") for i in range(10)] + [tag(10, "co:5", "bool")]
    assert ModbusDriver.plan(device("tcp://x"), tags) == [
        "co 5-5 (1 bit, 1 tag)", "hr 100-119 (20 regs, 10 tags)", "2 requests per poll for 11 tags (20 registers)"]
    assert ModbusDriver.plan(device("tcp://x", max_registers=8), tags)[:2] == [
        "co 5-5 (1 bit, 1 tag)", "hr 100-107 (8 regs, 4 tags)"]
