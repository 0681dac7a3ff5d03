"""Every value type in every byte order decodes to the value the device stored, with scale and
offset applied: end to end against a pymodbus server, and property-tested against struct."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import BAD, GOOD
from drivers.modbus.address import make_point
from drivers.modbus.decode import Decoder, byte_permutation
from drivers.modbus.planner import plan_points
from tests.modbus.helpers import device, poll, tag
from tests.modbus.server import encode

ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")
SAMPLES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3_000_000_000,
    "int64": -1_234_567_890_123,
    "uint64": 2**60 + 2**12,  # exactly representable in float64
    "float32": -123.456,
    "float64": 1234.567890123,
}


def expected(type_: str, value: float) -> float:
    return float(np.float32(value)) if type_ == "float32" else float(value)


def test_known_register_images_decode_for_every_type_and_order(server):
    tags, want = [], []
    address = 0
    for type_, value in SAMPLES.items():
        for order in ORDERS:
            server.set_value(address, value, type_, order)
            tags.append(tag(len(tags), f"hr:{address}", type_, order))
            want.append(expected(type_, value))
            address += 5  # a one-register hole between values: merged across, never decoded
    (batch,) = poll(device(server.url), tags)
    assert batch.error is None
    assert list(batch.quality) == [GOOD] * len(tags)
    np.testing.assert_array_equal(batch.value, np.array(want))


def test_hand_checked_words_for_each_order(server):
    # 0x41480000 is 12.5f; the words as four common PLC families store them
    images = {"ABCD": [0x4148, 0x0000], "CDAB": [0x0000, 0x4148], "BADC": [0x4841, 0x0000],
              "DCBA": [0x0000, 0x4841]}
    tags = []
    for i, (order, words) in enumerate(images.items()):
        server.set_registers(10 * i, words, area="ir")
        tags.append(tag(i, f"ir:{10 * i}", "float32", order))
    server.set_registers(50, [0x1234], area="ir")
    tags += [tag(4, "ir:50", "uint16", "ABCD"), tag(5, "ir:50", "uint16", "BADC")]
    (batch,) = poll(device(server.url), tags)
    assert list(batch.value) == [12.5, 12.5, 12.5, 12.5, 0x1234, 0x3412]


def test_scale_and_offset_give_engineering_units(server):
    server.set_value(0, 1234, "int16")  # 0.1 degC per count, offset -50
    server.set_value(1, 4000, "uint16")
    tags = [tag(0, "hr:0", "int16", scale=0.1, offset=-50.0), tag(1, "hr:1", "uint16", scale=0.25)]
    (batch,) = poll(device(server.url), tags)
    assert batch.value[0] == pytest.approx(73.4)
    assert batch.value[1] == 1000.0


def test_bits_of_registers_coils_and_discrete_inputs(server):
    server.set_registers(7, [0b1000_0000_0000_0101])
    server.set_bits(3, [True, False, True], area="co")
    server.set_bits(1000, [True], area="di")
    tags = [tag(0, "hr:7.0", "bool"), tag(1, "hr:7.1", "bool"), tag(2, "hr:7.2", "bool"),
            tag(3, "hr:7.15", "bool"), tag(4, "hr:7", "bool"), tag(5, "co:3", "bool"),
            tag(6, "co:4", "bool"), tag(7, "co:5", "bool"), tag(8, "di:1000", "bool"), tag(9, "di:999", "bool")]
    (batch,) = poll(device(server.url), tags)
    assert list(batch.value) == [1, 0, 1, 1, 1, 1, 0, 1, 1, 0]


def test_nan_from_the_device_is_a_bad_sample(server):
    server.set_value(0, math.nan, "float32")
    server.set_value(2, 7.0, "float32")
    (batch,) = poll(device(server.url), [tag(0, "hr:0", "float32"), tag(1, "hr:2", "float32")])
    assert list(batch.quality) == [BAD, GOOD]
    assert batch.error is None  # the device answered; the sensor alarm is the engine's business


VALUE = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}


@st.composite
def images(draw):
    """A random register image holding random values of random types and orders."""
    n = draw(st.integers(1, 12))
    points, words, want = [], [], []
    for _ in range(n):
        type_ = draw(st.sampled_from(sorted(VALUE)))
        order = draw(st.sampled_from(ORDERS))
        value = draw(VALUE[type_])
        words += [0] * draw(st.integers(0, 3))
        point, problems = make_point(f"ir:{len(words)}", type_, order)
        assert not problems
        points.append(point)
        words += encode(value, type_, order)
        want.append(float(np.float32(value)) if type_ == "float32" else float(value))
    return points, words, want


@settings(max_examples=200, deadline=None)
@given(images())
def test_vectorised_decoding_agrees_with_struct(image):
    points, words, want = image
    requests = plan_points(points)
    dec = Decoder(points, requests, np.ones(len(points)), np.zeros(len(points)))
    regs = np.concatenate([np.array(words[r.start:r.end], dtype=np.uint16) for r in requests])
    got = dec.values(regs, np.zeros(0, np.uint8))
    np.testing.assert_array_equal(got, np.array(want))


def test_byte_permutations_are_the_documented_orders():
    assert list(byte_permutation("ABCD", 2)) == [0, 1, 2, 3]
    assert list(byte_permutation("CDAB", 2)) == [2, 3, 0, 1]
    assert list(byte_permutation("BADC", 2)) == [1, 0, 3, 2]
    assert list(byte_permutation("DCBA", 2)) == [3, 2, 1, 0]
    assert list(byte_permutation("CDAB", 4)) == [6, 7, 4, 5, 2, 3, 0, 1]
    assert list(byte_permutation("DCBA", 1)) == [1, 0]
