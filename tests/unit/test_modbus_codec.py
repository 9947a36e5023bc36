"""Modbus values <-> registers: every type and byte/word order round-trips, one value at a
time and through a block decoder."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.drivers.modbus.codec import (
    BitDecoder,
    ByteOrder,
    RegisterDecoder,
    Slot,
    decode,
    encode,
    register_count,
    wire_bytes,
)
from edgeloop.drivers.points import INT_RANGES, Quality

ORDERS: list[tuple[ByteOrder, ByteOrder]] = [
    ("big", "big"),
    ("big", "little"),
    ("little", "big"),
    ("little", "little"),
]
STRING_REGISTERS = 4


def _values(type_: str) -> st.SearchStrategy[Any]:
    if type_ in INT_RANGES:
        low, high = INT_RANGES[type_]
        return st.integers(low, high)
    if type_ == "float32":
        return st.floats(width=32, allow_nan=False)
    if type_ == "float64":
        return st.floats(allow_nan=False)
    if type_ == "bool":
        return st.booleans()
    text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=8)
    return text.filter(lambda s: len(s.encode()) <= 2 * STRING_REGISTERS)


TYPES = [*INT_RANGES, "float32", "float64", "bool", "string"]
typed_values = st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), _values(t)))


@settings(max_examples=600, deadline=None)
@given(typed=typed_values, order=st.sampled_from(ORDERS))
def test_every_type_and_order_round_trips(
    typed: tuple[str, Any], order: tuple[ByteOrder, ByteOrder]
) -> None:
    type_, value = typed
    byte_order, word_order = order
    registers = encode(type_, value, byte_order, word_order, STRING_REGISTERS)
    assert len(registers) == register_count(type_, STRING_REGISTERS)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(type_, registers, byte_order, word_order) == value


@pytest.mark.parametrize(
    ("byte_order", "word_order", "wire"),
    [
        ("big", "big", b"\x3f\x80\x00\x00"),  # ABCD
        ("big", "little", b"\x00\x00\x3f\x80"),  # CDAB
        ("little", "big", b"\x80\x3f\x00\x00"),  # BADC
        ("little", "little", b"\x00\x00\x80\x3f"),  # DCBA
    ],
)
def test_float32_orders_put_bytes_where_devices_expect_them(
    byte_order: ByteOrder, word_order: ByteOrder, wire: bytes
) -> None:
    registers = encode("float32", 1.0, byte_order, word_order)
    assert struct.pack(">2H", *registers) == wire


def test_string_is_padded_with_nul_and_byte_order_swaps_characters() -> None:
    assert encode("string", "ABC", count=2) == [0x4142, 0x4300]
    assert encode("string", "ABC", "little", count=2) == [0x4241, 0x0043]
    assert decode("string", [0x4241, 0x0043], "little") == "ABC"


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode("uint16", 70000)
    with pytest.raises(ValueError, match="does not fit in float32"):
        encode("float32", 1e40)
    with pytest.raises(ValueError, match="longer than 4 bytes"):
        encode("string", "ABCDE", count=2)


def _points(decoder: RegisterDecoder, registers: list[int]) -> dict[int, tuple[Any, int]]:
    """point index -> (value, quality), from the decoder's wire form."""
    values, quality = decoder.decode(wire_bytes(registers))
    indices = decoder.indices
    order = range(indices, indices + len(values)) if isinstance(indices, int) else indices
    qualities = [quality] * len(values) if isinstance(quality, int) else quality
    assert len(order) == len(values) == len(qualities)
    return {i: (v, q) for i, v, q in zip(order, values, qualities, strict=True)}


slot_specs = st.tuples(
    st.sampled_from(TYPES),
    st.sampled_from(ORDERS),
    st.sampled_from([(1.0, 0.0), (0.5, 10.0)]),
).flatmap(lambda spec: st.tuples(st.just(spec), _values(spec[0])))


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(slot_specs, min_size=1, max_size=12), gap=st.integers(0, 3))
def test_block_decoder_gives_what_single_decodes_give(
    specs: list[tuple[tuple[str, tuple[ByteOrder, ByteOrder], tuple[float, float]], Any]],
    gap: int,
) -> None:
    registers: list[int] = []
    slots: list[Slot] = []
    expected: dict[int, Any] = {}
    for index, ((type_, (byte_order, word_order), (scale, offset)), value) in enumerate(specs):
        registers += [0xFFFF] * gap  # registers no point uses
        slot = Slot(index, len(registers), type_, byte_order, word_order, STRING_REGISTERS)
        if type_ not in ("bool", "string"):
            slot = slot._replace(scale=scale, offset=offset)
        slots.append(slot)
        registers += encode(type_, value, byte_order, word_order, STRING_REGISTERS)
        numeric = type_ not in ("bool", "string")
        expected[index] = value * slot.scale + slot.offset if numeric else value
    decoded = _points(RegisterDecoder(len(registers), slots), registers)
    assert sorted(decoded) == list(range(len(specs)))
    for index, (value, quality) in decoded.items():
        assert quality == Quality.GOOD
        assert value == expected[index] or math.isclose(value, expected[index])
        numeric = specs[index][0][0] not in ("bool", "string")
        assert type(value) is (float if numeric else type(expected[index]))


def test_consecutive_points_travel_as_their_first_index() -> None:
    decoder = RegisterDecoder(3, [Slot(4, 0, "uint16"), Slot(5, 1, "uint16"), Slot(6, 2, "int16")])
    assert decoder.indices == 4
    assert decoder.decode(wire_bytes([1, 2, 0xFFFF])) == ([1.0, 2.0, -1.0], Quality.GOOD)


def test_overlapping_points_decode_from_the_same_registers() -> None:
    registers = [*encode("float32", 2.5), 7]
    slots = [Slot(0, 0, "float32"), Slot(1, 0, "uint16"), Slot(2, 1, "uint32")]
    decoded = _points(RegisterDecoder(3, slots), registers)
    assert decoded == {
        0: (2.5, Quality.GOOD),
        1: (float(registers[0]), Quality.GOOD),
        2: (float((registers[1] << 16) | 7), Quality.GOOD),
    }


def test_a_string_that_is_not_utf8_is_bad_and_the_others_good() -> None:
    slots = [Slot(0, 0, "string", length=1), Slot(1, 1, "string", length=1)]
    decoded = _points(RegisterDecoder(2, slots), [0xFFFE, 0x4142])
    assert decoded == {0: ("", Quality.BAD), 1: ("AB", Quality.GOOD)}


def test_nan_is_a_good_float() -> None:
    [value], quality = RegisterDecoder(2, [Slot(0, 0, "float32")]).decode(b"\x7f\xc0\0\0")
    assert math.isnan(value) and quality == Quality.GOOD


def test_bit_decoder_picks_the_bits_of_its_points() -> None:
    decoder = BitDecoder(10, [(4, 0), (7, 9)])
    assert decoder.indices == [4, 7]
    assert decoder.decode([True] + [False] * 8 + [True] + [False] * 6) == [True, True]


def test_a_point_past_the_block_end_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        RegisterDecoder(2, [Slot(0, 1, "float32")])
