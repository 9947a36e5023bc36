"""Modbus values <-> 16-bit registers, one value at a time or a whole read block at once.

Byte and word order: a value's big-endian bytes ``v0 v1 v2 v3`` are split into 16-bit
words, most significant first. ``word_order: little`` puts the words in the registers
least significant first; ``byte_order: little`` swaps the two bytes inside each
register. So float32 with big/big is ``ABCD`` on the wire, big bytes/little words
``CDAB``, little/big ``BADC`` and little/little ``DCBA``.

That reduces every order to one ``struct`` format over one of two buffers: the
registers as sent (big-endian each) when byte and word order agree, or byte-swapped
inside each register when they differ; the format's endianness is the word order.
A block decoder precomputes those formats for all its points, so a poll decodes a block
with a few ``unpack_from`` calls instead of Python code per point.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from edgeloop.drivers.points import STRUCT_CODES, Quality

ByteOrder = Literal["big", "little"]
Table = Literal["holding", "input", "coil", "discrete"]

# registers a value of each type occupies (strings: as many as configured)
REGISTERS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bool": 1,
}
# The table a function code reads or writes (the server and the simulator route
# every request by it).
TABLE_OF_FUNCTION: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}

_CODES = {**STRUCT_CODES, "bool": "H"}  # a bool in a register is a word
_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)


def register_count(type_: str, count: int | None = None) -> int:
    """Registers a value of ``type_`` occupies; ``count`` is a string's length in registers."""
    if type_ == "string":
        return count or 1
    return REGISTERS[type_]


def _layout(byte_order: ByteOrder, word_order: ByteOrder) -> tuple[bool, str]:
    """(read the byte-swapped buffer?, struct endianness) for an order."""
    return byte_order != word_order, ">" if word_order == "big" else "<"


def wire_bytes(registers: Sequence[int]) -> bytes:
    """Registers as they travel: 2 bytes each, big-endian."""
    return struct.pack(f">{len(registers)}H", *registers)


def _swap_pairs(data: bytes) -> bytes:
    swapped = bytearray(data)
    swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
    return bytes(swapped)


def encode(
    type_: str,
    raw: Any,
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
    count: int | None = None,
) -> list[int]:
    """The registers holding ``raw`` (a value of ``type_``, unscaled).

    ``ValueError`` if it does not fit: an integer or a float out of range, a string
    longer than ``count`` registers.
    """
    swap, endian = _layout(byte_order, word_order)
    if type_ == "string":
        width = register_count(type_, count)
        data = str(raw).encode("utf-8")
        if len(data) > 2 * width:
            raise ValueError(f"{raw!r} is longer than {2 * width} bytes")
        data = data.ljust(2 * width, b"\0")
        swap = byte_order == "little"
    else:
        value: Any = (1 if raw else 0) if type_ == "bool" else raw
        try:
            data = struct.pack(endian + _CODES[type_], value)
        except (struct.error, OverflowError) as err:  # a float too large is an OverflowError
            raise ValueError(f"{raw!r} does not fit in {type_}: {err}") from None
    if swap:
        data = _swap_pairs(data)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def decode(
    type_: str,
    registers: Sequence[int],
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> Any:
    """The raw value in ``registers`` (exactly the registers of one value).

    ``ValueError`` for a string that is not UTF-8.
    """
    data = wire_bytes(registers)
    swap, endian = _layout(byte_order, word_order)
    if type_ == "string":
        return _text(_swap_pairs(data) if byte_order == "little" else data)
    value = struct.unpack(endian + _CODES[type_], _swap_pairs(data) if swap else data)[0]
    return value != 0 if type_ == "bool" else value


def _text(data: bytes) -> str:
    return data.rstrip(b"\0").decode("utf-8")


class Slot(NamedTuple):
    """One point of a register block: ``point`` is its index in its device's points,
    ``at`` its first register counted from the block's start."""

    point: int
    at: int
    type: str
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    length: int | None = None  # registers of a string
    scale: float = 1.0
    offset: float = 0.0


# How a lane turns what struct unpacked into engineering values.
_AS_IS = "as_is"  # floats, unscaled
_SCALED = "scaled"  # integers (the field holds a float), or scaled


def _kind(slot: Slot) -> str:
    if slot.type in ("bool", "string"):
        return slot.type
    unscaled = slot.scale == 1.0 and slot.offset == 0.0
    return _AS_IS if unscaled and slot.type.startswith("float") else _SCALED


def _compact(indices: list[int]) -> list[int] | int:
    """The wire form of point indices: the first one, when they are consecutive."""
    consecutive = indices and indices == list(range(indices[0], indices[0] + len(indices)))
    return indices[0] if consecutive else indices


class _Lane:
    """Points of one kind and layout that do not overlap: one struct format over the block."""

    __slots__ = (
        "convert", "end", "format", "indices", "kind", "offsets", "scales", "struct", "swapped",
    )  # fmt: skip

    def __init__(self, swapped: bool, endian: str, kind: str) -> None:
        self.swapped = swapped
        self.format = endian
        self.end = 0  # bytes of the block the format covers so far
        self.indices: list[int] = []
        self.scales: list[float] = []
        self.offsets: list[float] = []
        self.struct = struct.Struct(endian)
        self.kind = kind
        self.convert: Callable[[tuple[Any, ...]], list[Any]] = getattr(self, f"_{kind}")

    def add(self, slot: Slot) -> None:
        start = 2 * slot.at
        if start > self.end:
            self.format += f"{start - self.end}x"
        width = 2 * register_count(slot.type, slot.length)
        code = f"{width}s" if slot.type == "string" else _CODES[slot.type]
        self.format += code
        self.end = start + width
        self.indices.append(slot.point)
        self.scales.append(slot.scale)
        self.offsets.append(slot.offset)

    def seal(self) -> None:
        self.struct = struct.Struct(self.format)
        if self.kind == _SCALED and len(set(zip(self.scales, self.offsets, strict=True))) == 1:
            self.convert = self._scaled_alike

    def _as_is(self, raw: tuple[Any, ...]) -> list[Any]:
        return list(raw)

    def _scaled_alike(self, raw: tuple[Any, ...]) -> list[Any]:
        # one scale and offset for the lane (the usual case): no per-point lookups
        scale, offset = self.scales[0], self.offsets[0]
        return [v * scale + offset for v in raw]

    def _scaled(self, raw: tuple[Any, ...]) -> list[Any]:
        return [v * s + o for v, s, o in zip(raw, self.scales, self.offsets, strict=True)]

    def _bool(self, raw: tuple[Any, ...]) -> list[Any]:
        return [v != 0 for v in raw]

    def _string(self, raw: tuple[Any, ...]) -> list[Any]:
        texts: list[Any] = []
        for data in raw:
            try:
                texts.append(_text(data))
            except UnicodeDecodeError:
                texts.append(None)  # RegisterDecoder makes it a BAD ""
        return texts


class RegisterDecoder:
    """Decodes one read block of ``count`` registers into the values of its points, in
    the field link's form: ``indices`` (fixed per block), values, quality."""

    __slots__ = ("_has_strings", "_lanes", "count", "indices")

    def __init__(self, count: int, slots: Sequence[Slot]) -> None:
        self.count = count
        lanes: dict[tuple[bool, str, str], list[_Lane]] = {}
        for slot in sorted(slots, key=lambda s: (s.at, s.point)):
            if slot.at + register_count(slot.type, slot.length) > count:
                raise ValueError(f"point {slot.point} does not fit in a block of {count}")
            swapped, endian = _layout(slot.byte_order, slot.word_order)
            if slot.type == "string":
                swapped, endian = slot.byte_order == "little", ">"
            kind = _kind(slot)
            candidates = lanes.setdefault((swapped, endian, kind), [])
            # overlapping points (two types over the same registers) go in another lane
            lane = next((lane for lane in candidates if lane.end <= 2 * slot.at), None)
            if lane is None:
                lane = _Lane(swapped, endian, kind)
                candidates.append(lane)
            lane.add(slot)
        self._lanes = [lane for group in lanes.values() for lane in group]
        for lane in self._lanes:
            lane.seal()
        self._has_strings = any(lane.kind == "string" for lane in self._lanes)
        self.indices = _compact([i for lane in self._lanes for i in lane.indices])

    def decode(self, wire: bytes) -> tuple[list[Any], list[int] | int]:
        """The values of the points (in ``indices`` order) and their quality (one for
        all, or a list), from the block's registers as sent (2 bytes each, big-endian);
        ``ValueError`` if they are not ``count`` registers."""
        if len(wire) != 2 * self.count:
            raise ValueError(f"{len(wire)} bytes for {self.count} registers")
        swapped = b""
        values: list[Any] = []
        for lane in self._lanes:
            if lane.swapped:
                if not swapped:
                    swapped = _swap_pairs(wire)
                values += lane.convert(lane.struct.unpack_from(swapped))
            else:
                values += lane.convert(lane.struct.unpack_from(wire))
        if self._has_strings and None in values:
            quality = [_GOOD if v is not None else _BAD for v in values]
            return ["" if v is None else v for v in values], quality
        return values, _GOOD


class BitDecoder:
    """Decodes one read block of coils or discrete inputs: ``slots`` are (point, at)."""

    __slots__ = ("_ats", "count", "indices")

    def __init__(self, count: int, slots: Sequence[tuple[int, int]]) -> None:
        self.count = count
        self.indices = _compact([point for point, _ in slots])
        self._ats = [at for _, at in slots]
        if any(not 0 <= at < count for at in self._ats):
            raise ValueError(f"a bit is outside the block of {count}")

    def decode(self, bits: Sequence[int]) -> list[Any]:
        """The values of the points, in ``indices`` order."""
        return [bool(bits[at]) for at in self._ats]
