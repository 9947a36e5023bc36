"""Serial framing: lines and binary frames out of a byte stream, values out of them."""

from __future__ import annotations

import math

import pytest

from edgeloop.drivers.serial.codec import (
    CsvFields,
    FrameField,
    FrameFields,
    FrameFormat,
    FrameSplitter,
    Junk,
    KeyValueFields,
    LineSplitter,
    RegexFields,
    crc16_modbus,
    parse_text,
    sum8,
    xor8,
)


def junk(out: list[bytes | Junk]) -> list[Junk]:
    return [item for item in out if isinstance(item, Junk)]


def good(out: list[bytes | Junk]) -> list[bytes]:
    return [item for item in out if isinstance(item, bytes)]


# -- lines ----------------------------------------------------------------------------------


def test_lines_split_across_reads_including_a_split_crlf() -> None:
    splitter = LineSplitter(b"\r\n")
    assert splitter.feed(b"T=1,H") == []
    assert splitter.feed(b"=2\r") == []
    assert splitter.feed(b"\nT=3,H=4\r\nT=") == [b"T=1,H=2", b"T=3,H=4"]
    assert splitter.feed(b"5\r\n") == [b"T=5"]


def test_an_endless_line_is_dropped_in_bounded_memory_and_reported_per_max_length() -> None:
    splitter = LineSplitter(b"\n", max_length=64)
    reports: list[Junk] = []
    for _ in range(100):
        reports += junk(splitter.feed(b"x" * 32))
        assert len(splitter._buffer) <= 64
    # 3200 bytes: one report each time the buffer passes 64 bytes, not per read or never
    assert 30 <= len(reports) <= 50
    assert "no end of line" in reports[0].reason


def test_the_tail_of_an_overlong_line_is_dropped_and_the_next_line_is_whole() -> None:
    splitter = LineSplitter(b"\n", max_length=16)
    out = splitter.feed(b"a" * 20)
    assert len(junk(out)) == 1
    assert splitter.feed(b"tail of it\nT=1\n") == [b"T=1"]


# -- checksums ------------------------------------------------------------------------------


def test_checksums_match_their_reference_values() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    # a Modbus RTU request as captured on a line: 01 03 00 00 00 0A C5 CD
    assert crc16_modbus(bytes.fromhex("01030000000A")).to_bytes(2, "little") == b"\xc5\xcd"
    assert sum8(bytes([0xFF, 0x02])) == 0x01
    assert xor8(bytes([0x0F, 0xF0, 0x01])) == 0xFE


# -- frames ---------------------------------------------------------------------------------

SUM8 = FrameFormat(start=b"\xaa", checksum="sum8")


def test_a_built_frame_is_laid_out_as_its_format_says() -> None:
    frame = SUM8.build(b"\x01\x02")
    assert frame == bytes([0xAA, 0x02, 0x01, 0x02, (0x02 + 0x01 + 0x02) & 0xFF])
    crc = FrameFormat(
        start=b"\x55\xaa", checksum="crc16-modbus", checksum_from=2, length_offset=2, counts="frame"
    )
    frame = crc.build(b"\x10")
    assert frame[:4] == bytes([0x55, 0xAA, 6, 0x10])
    assert frame[4:] == crc16_modbus(frame[2:4]).to_bytes(2, "little")


def test_frames_fed_a_byte_at_a_time_come_out_whole() -> None:
    splitter = FrameSplitter(SUM8)
    stream = SUM8.build(b"\x01\x02\x03") + SUM8.build(b"") + SUM8.build(b"\xaa\xaa")
    out: list[bytes | Junk] = []
    for byte in stream:
        out += splitter.feed(bytes([byte]))
    assert out == [SUM8.build(b"\x01\x02\x03"), SUM8.build(b""), SUM8.build(b"\xaa\xaa")]


@pytest.mark.parametrize("counts", ["payload", "rest", "frame"])
def test_each_meaning_of_the_length_field_round_trips(counts: str) -> None:
    fmt = FrameFormat(
        start=b"\x7e",
        checksum="xor8",
        length_offset=2,  # a byte (an address) between start and length
        length_size=2,
        length_order="little",
        counts=counts,  # type: ignore[arg-type]
    )
    frame = fmt.build(b"hello")
    assert FrameSplitter(fmt).feed(b"\x00" + frame + frame[:3]) == [
        Junk("1 bytes without a frame: \\x00"),
        frame,
    ]
    assert fmt.payload(frame) == b"hello"


def test_a_wrong_checksum_costs_one_report_and_the_next_frame_is_found() -> None:
    splitter = FrameSplitter(SUM8)
    bad = bytearray(SUM8.build(b"\x10\x20\x30"))
    bad[-1] ^= 0xFF
    following = SUM8.build(b"\x05")
    out = splitter.feed(bytes(bad) + following)
    assert good(out) == [following]
    assert len(junk(out)) == 1 and "checksum" in junk(out)[0].reason


def test_a_false_start_in_noise_costs_one_report_and_the_frame_in_it_is_found() -> None:
    splitter = FrameSplitter(SUM8)
    frame = SUM8.build(b"\x05")
    # 0xAA 0x03 claims a 6-byte frame that swallows the real one: its checksum fails,
    # and the search resumes right after the false start.
    out = splitter.feed(b"\xaa\x03" + frame)
    assert good(out) == [frame]
    assert len(junk(out)) == 1


def test_a_length_beyond_the_maximum_is_refused_without_waiting_for_it() -> None:
    fmt = FrameFormat(start=b"\xaa", checksum="sum8", max_length=16)
    splitter = FrameSplitter(fmt)
    frame = fmt.build(b"\x01")
    out = splitter.feed(b"\xaa\xf0" + frame)
    assert good(out) == [frame]
    assert "length" in junk(out)[0].reason


def test_noise_without_a_start_byte_is_dropped_in_bounded_memory() -> None:
    fmt = FrameFormat(start=b"\xaa", checksum="sum8", max_length=64)
    splitter = FrameSplitter(fmt)
    reports: list[Junk] = []
    for _ in range(100):
        reports += junk(splitter.feed(bytes(range(32))))
        assert len(splitter._buffer) < 64
    assert 40 <= len(reports) <= 60
    frame = fmt.build(b"\x01")
    assert good(splitter.feed(frame)) == [frame]


def test_noise_before_a_frame_is_one_report() -> None:
    splitter = FrameSplitter(SUM8)
    frame = SUM8.build(b"\x01")
    assert junk(splitter.feed(b"\x01\x02")) == []  # the noise may go on: not reported yet
    out = splitter.feed(b"\x03" + frame)
    assert out == [Junk("3 bytes without a frame: \\x01\\x02"), frame]


def test_fields_unpack_in_their_byte_order_and_bits() -> None:
    fields = FrameFields(
        [
            FrameField(0, "int16"),
            FrameField(2, "uint16", "little"),
            FrameField(4, "float32"),
            FrameField(8, "uint8", bit=2),
            FrameField(8, "uint8", bit=0),
        ]
    )
    payload = bytes.fromhex("ff38341241a8000004")
    assert fields.values(payload) == [-200, 0x1234, 21.0, 1, 0]
    with pytest.raises(ValueError, match="fields need 9"):
        fields.values(payload[:8])


def test_packed_fields_unpack_to_the_same_values() -> None:
    fields = FrameFields([FrameField(0, "int32", "little"), FrameField(4, "float64")])
    assert fields.values(fields.pack([-7, 2.5])) == [-7, 2.5]


# -- line rules -----------------------------------------------------------------------------


def test_a_regex_takes_its_named_groups_and_refuses_other_lines() -> None:
    rule = RegexFields(r"T=(?P<t>-?[\d.]+)\s+H=(?P<h>[\d.]+)", ["h", "t"])
    assert rule.texts("#12 T=-3.5 H=40") == ["40", "-3.5"]
    assert rule.texts("ERR") is None


def test_key_values_come_in_any_order_and_every_key_must_be_there() -> None:
    rule = KeyValueFields(":", ";", ["temp", "hum"])
    assert rule.texts(" hum : 40.1 ; id:7; temp:21.5") == ["21.5", "40.1"]
    assert rule.texts("temp:21.5") is None


def test_csv_columns_by_index_and_too_few_columns_refused() -> None:
    rule = CsvFields(",", [2, 0])
    assert rule.texts("21.5, 40.2 ,on") == ["on", "21.5"]
    assert rule.texts("21.5,40.2") is None


def test_texts_become_values_of_the_point_type() -> None:
    assert parse_text(" 21.5 ", "float32") == 21.5
    assert parse_text("-12", "int16") == -12.0
    assert parse_text("0x1F", "uint16") == 31.0
    assert parse_text("ON", "bool") is True
    assert parse_text("0", "bool") is False
    assert parse_text("ok", "string") == "ok"
    for text, type_ in (
        ("nan", "float32"),
        ("inf", "float64"),
        ("2.5", "int16"),
        ("maybe", "bool"),
        ("9" * 400, "int64"),  # an int, but no float holds it
        ("0x" + "f" * 300, "uint64"),
    ):
        with pytest.raises(ValueError):
            parse_text(text, type_)
    assert math.isclose(float(parse_text("1e3", "float64")), 1000.0)
