"""Bytes from a serial port into messages, and messages into point values.

Two splitters cut the byte stream into messages: ``LineSplitter`` at an end-of-line
sequence, ``FrameSplitter`` into binary frames (start bytes, a length field, payload,
checksum). Both hold a bounded buffer: bytes that never make a message (a device sending
noise without a newline, a frame that fails its checksum) are dropped and reported as
``Junk``, at most one per ``max_length`` bytes, so a babbling device costs neither memory
nor a report per byte.

Then a line rule (``RegexFields``, ``KeyValueFields``, ``CsvFields``) picks the texts of
a device's points out of a line, and ``parse_text`` turns each into a value;
``FrameFields`` unpacks a frame's payload. Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edgeloop.drivers.points import STRUCT_CODES

if TYPE_CHECKING:
    from edgeloop.drivers.serial.config import SerialDevice, SerialPoint

ByteOrder = Literal["big", "little"]
LengthCounts = Literal["payload", "rest", "frame"]
ChecksumKind = Literal["sum8", "xor8", "crc16-modbus"]

ENCODING = "utf-8"
PREVIEW_BYTES = 24  # of a dropped message, shown in its report
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes dropped from the stream, and why."""

    reason: str


def preview(data: bytes | bytearray) -> str:
    """A short printable rendering of ``data`` for a health report."""
    shown = repr(bytes(data[:PREVIEW_BYTES]))[2:-1]
    return shown + ("..." if len(data) > PREVIEW_BYTES else "")


# -- lines ------------------------------------------------------------------------------------


class LineSplitter:
    """Cuts a byte stream into lines at ``eol`` (which is not part of the line)."""

    def __init__(self, eol: bytes = b"\n", max_length: int = 256) -> None:
        self.eol = eol
        self.max_length = max_length
        self._buffer = bytearray()
        self._overlong = False  # dropping the rest of a line that grew too long

    def reset(self) -> None:
        self._buffer.clear()
        self._overlong = False

    def feed(self, data: bytes) -> list[bytes | Junk]:
        buffer = self._buffer
        buffer += data
        out: list[bytes | Junk] = []
        eol, size = self.eol, len(self.eol)
        start = 0
        while (end := buffer.find(eol, start)) >= 0:
            if self._overlong:
                self._overlong = False
            else:
                out.append(bytes(buffer[start:end]))
            start = end + size
        del buffer[:start]
        if len(buffer) > self.max_length:
            out.append(Junk(f"no end of line in {len(buffer)} bytes: {preview(buffer)}"))
            # The tail may hold the first bytes of an end of line split across reads.
            keep = size - 1
            del buffer[: len(buffer) - keep]
            self._overlong = True
        return out


# -- frames -----------------------------------------------------------------------------------


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    return functools.reduce(operator.xor, data, 0)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


CHECKSUMS: dict[str, tuple[int, Callable[[bytes], int]]] = {
    "sum8": (1, sum8),
    "xor8": (1, xor8),
    "crc16-modbus": (2, crc16_modbus),
}


@dataclass(frozen=True, slots=True)
class FrameFormat:
    """A binary frame: ``start`` bytes, a length field at ``length_offset`` (counting the
    payload, the rest of the frame after the field, or the whole frame), the payload,
    then a checksum over the bytes from ``checksum_from`` up to the checksum."""

    start: bytes
    checksum: ChecksumKind
    length_offset: int = 1
    length_size: int = 1
    length_order: ByteOrder = "big"
    counts: LengthCounts = "payload"
    checksum_from: int = 1
    checksum_order: ByteOrder = "little"
    max_length: int = 256

    @property
    def header(self) -> int:
        """Bytes before the payload."""
        return self.length_offset + self.length_size

    @property
    def checksum_size(self) -> int:
        return CHECKSUMS[self.checksum][0]

    def total_length(self, length: int) -> int:
        """The frame's length in bytes, for the value of its length field."""
        if self.counts == "payload":
            return self.header + length + self.checksum_size
        if self.counts == "rest":
            return self.header + length
        return length

    def length_value(self, payload_size: int) -> int:
        total = self.header + payload_size + self.checksum_size
        return {"payload": payload_size, "rest": total - self.header, "frame": total}[self.counts]

    def checksum_of(self, frame: bytes) -> bytes:
        """The checksum bytes for ``frame`` (whose own checksum bytes are ignored)."""
        size, function = CHECKSUMS[self.checksum]
        value = function(frame[self.checksum_from : len(frame) - size])
        return value.to_bytes(size, self.checksum_order)

    def payload(self, frame: bytes) -> bytes:
        return frame[self.header : len(frame) - self.checksum_size]

    def build(self, payload: bytes) -> bytes:
        """The whole frame carrying ``payload``."""
        length = self.length_value(len(payload)).to_bytes(self.length_size, self.length_order)
        padding = bytes(self.length_offset - len(self.start))
        frame = self.start + padding + length + payload + bytes(self.checksum_size)
        return frame[: -self.checksum_size] + self.checksum_of(frame)


class FrameSplitter:
    """Cuts a byte stream into frames of ``format`` whose checksum is right.

    After a bad length or checksum the search resumes one byte after the false start,
    so a start byte lost to noise costs one frame, not the stream; the bytes skipped on
    the way to the next start are part of that one report.
    """

    def __init__(self, format: FrameFormat) -> None:
        self.format = format
        self._buffer = bytearray()
        self._skipped = 0  # bytes dropped looking for a start, not reported yet
        self._head = b""  # the first of them, for the report
        self._reported = False  # the bytes being skipped follow a reported bad frame

    def reset(self) -> None:
        self._buffer.clear()
        self._skipped = 0
        self._reported = False

    def feed(self, data: bytes) -> list[bytes | Junk]:
        fmt = self.format
        buffer = self._buffer
        buffer += data
        out: list[bytes | Junk] = []
        header = fmt.header
        smallest = header + fmt.checksum_size
        while True:
            at = buffer.find(fmt.start)
            if at < 0:
                # A start may be split across reads: keep what could be its beginning.
                self._drop(len(buffer) - (len(fmt.start) - 1), out, before_start=False)
                break
            self._drop(at, out, before_start=True)
            if len(buffer) < header:
                break
            field = buffer[fmt.length_offset : header]
            total = fmt.total_length(int.from_bytes(field, fmt.length_order))
            if not smallest <= total <= fmt.max_length:
                self._bad(out, f"length {total} outside {smallest}..{fmt.max_length}")
                continue
            if len(buffer) < total:
                break
            frame = bytes(buffer[:total])
            if fmt.checksum_of(frame) != frame[total - fmt.checksum_size :]:
                self._bad(out, f"checksum wrong in {preview(frame)}")
                continue
            del buffer[:total]
            out.append(frame)
            self._reported = False
        return out

    def _drop(self, count: int, out: list[bytes | Junk], before_start: bool) -> None:
        if count > 0:
            if not self._skipped:
                self._head = bytes(self._buffer[: min(count, PREVIEW_BYTES + 1)])
            del self._buffer[:count]
            self._skipped += count
        if self._skipped >= self.format.max_length or (before_start and self._skipped):
            if self._skipped >= self.format.max_length or not self._reported:
                text = f"{self._skipped} bytes without a frame: {preview(self._head)}"
                out.append(Junk(text))
            self._skipped = 0

    def _bad(self, out: list[bytes | Junk], reason: str) -> None:
        out.append(Junk(reason))
        self._reported = True
        self._drop(1, out, before_start=False)


@dataclass(frozen=True, slots=True)
class FrameField:
    offset: int  # in the payload
    type: str  # int8 ... uint64, float32, float64
    byte_order: ByteOrder = "big"
    bit: int | None = None  # the value is this bit of the number (0: least significant)

    @property
    def end(self) -> int:
        return self.offset + struct.calcsize(STRUCT_CODES[self.type])


class FrameFields:
    """Unpacks numbers from a frame's payload, in the order of ``fields``."""

    def __init__(self, fields: Sequence[FrameField]) -> None:
        self.fields = tuple(fields)
        self.needed = max((f.end for f in fields), default=0)
        self._unpack = [
            (struct.Struct((">" if f.byte_order == "big" else "<") + STRUCT_CODES[f.type]), f)
            for f in fields
        ]

    def values(self, payload: bytes) -> list[int | float]:
        """The fields' values; ``ValueError`` if the payload is too short for them."""
        if len(payload) < self.needed:
            raise ValueError(f"payload of {len(payload)} bytes, the fields need {self.needed}")
        out: list[int | float] = []
        for unpacker, field in self._unpack:
            (value,) = unpacker.unpack_from(payload, field.offset)
            if field.bit is not None:
                value = (int(value) >> field.bit) & 1
            out.append(value)
        return out

    def pack(self, values: Sequence[int | float]) -> bytes:
        """A payload holding ``values`` (bit fields are not packed): for simulators and tests."""
        payload = bytearray(self.needed)
        for (packer, field), value in zip(self._unpack, values, strict=True):
            if field.bit is None:
                packer.pack_into(payload, field.offset, value)
        return bytes(payload)


# -- line rules -------------------------------------------------------------------------------

Texts = list[str | None]  # a text per point key; None: the key matched nothing


class RegexFields:
    """A point's text is the regex group its key names; a line the regex does not find
    anything in is not one of the device's lines."""

    def __init__(self, pattern: str, keys: Sequence[str]) -> None:
        self.pattern = re.compile(pattern)
        self.keys = tuple(keys)

    def texts(self, line: str) -> Texts | None:
        match = self.pattern.search(line)
        if match is None:
            return None
        return [match.group(key) for key in self.keys]


class KeyValueFields:
    """Lines of ``key<separator>value`` pairs joined by ``pair_separator``; a line must
    hold every key, in any order, among others."""

    def __init__(self, separator: str, pair_separator: str, keys: Sequence[str]) -> None:
        self.separator = separator
        self.pair_separator = pair_separator
        self.keys = tuple(keys)

    def texts(self, line: str) -> Texts | None:
        pairs: dict[str, str] = {}
        for pair in line.split(self.pair_separator):
            key, found, value = pair.partition(self.separator)
            if found:
                pairs[key.strip()] = value.strip()
        try:
            return [pairs[key] for key in self.keys]
        except KeyError:
            return None


class CsvFields:
    """Columns by index; a line with too few columns is not one of the device's lines."""

    def __init__(self, separator: str, columns: Sequence[int]) -> None:
        self.separator = separator
        self.columns = tuple(columns)
        self.needed = max(columns, default=-1) + 1

    def texts(self, line: str) -> Texts | None:
        cells = line.split(self.separator)
        if len(cells) < self.needed:
            return None
        return [cells[column].strip() for column in self.columns]


def parse_text(text: str, type_: str) -> float | bool | str:
    """The value a device wrote as ``text``, for a point of ``type_``; ``ValueError`` if
    it is not one (not a number, not finite, too large, not a boolean word)."""
    if type_ == "string":
        return text
    if type_ == "bool":
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a boolean (1/0, true/false, on/off, yes/no)")
    if type_.startswith(("int", "uint")):
        body = text.strip()
        hexadecimal = body.lower().lstrip("+-").startswith("0x")
        try:
            return float(int(body, 16) if hexadecimal else int(body))
        except OverflowError:
            raise ValueError(f"{preview(body.encode())} is too large for a number") from None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def hex_bytes(text: str) -> bytes:
    """``"AA 01 FF"`` as bytes; ``ValueError`` saying what is wrong."""
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'{text!r} is not hex bytes (write them like "AA 01 FF")') from None
    if not data:
        raise ValueError("no bytes given")
    return data


# -- decoding -------------------------------------------------------------------------------

# A message's point values (None for a BAD one); None for a message to pass over.
Decoder = Callable[[bytes], list[Any] | None]


def line_decoder(device: SerialDevice, points: Sequence[SerialPoint]) -> Decoder:
    """Values of ``points`` from a line; ``ValueError`` for a line that is not the device's."""
    ignore = re.compile(device.ignore) if device.ignore is not None else None
    rule: Callable[[str], Texts | None]
    if device.regex is not None:
        rule = RegexFields(device.regex, [str(p.key) for p in points]).texts
    elif device.key_value is not None:
        kv = device.key_value
        rule = KeyValueFields(kv.separator, kv.pair_separator, [str(p.key) for p in points]).texts
    else:
        assert device.csv is not None
        rule = CsvFields(device.csv.separator, [int(p.key or 0) for p in points]).texts

    def decode(line: bytes) -> list[Any] | None:
        text = line.decode(ENCODING, "replace").strip()
        if not text or (ignore is not None and ignore.search(text)):
            return None
        texts = rule(text)
        if texts is None:
            raise ValueError(f"unparsable line {preview(line)}")
        values: list[Any] = []
        for point, found in zip(points, texts, strict=True):
            try:
                values.append(
                    None if found is None else point.to_value(parse_text(found, point.type))
                )
            except ValueError:
                values.append(None)
        return values

    return decode


def frame_decoder(device: SerialDevice, points: Sequence[SerialPoint]) -> Decoder:
    """Values of ``points`` from a frame; ``ValueError`` for a payload too short."""
    assert device.frame is not None
    fmt = device.frame.format
    by_name = {field.name: field.to_field() for field in device.frame.fields}
    fields = FrameFields([by_name[str(p.key)] for p in points])
    convert = [bool if p.type == "bool" else p.to_value for p in points]

    def decode(frame: bytes) -> list[Any] | None:
        raw = fields.values(fmt.payload(frame))
        return [to_value(value) for to_value, value in zip(convert, raw, strict=True)]

    return decode
