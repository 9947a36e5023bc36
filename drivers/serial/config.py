"""The ``serial`` config section: devices on ports, their parse rule (ascii) or frame
(binary), stream or poll, and points; every check here, so a mistake is reported with
its key path."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgeloop.config import KeyPath, Section
from edgeloop.drivers.points import EntityName, Identifier, PointMap
from edgeloop.drivers.serial.codec import (
    ENCODING,
    ByteOrder,
    ChecksumKind,
    FrameField,
    FrameFields,
    FrameFormat,
    LengthCounts,
    hex_bytes,
)
from edgeloop.safety.watchdogs import WatchdogSettings

DRIVER = "serial"

Milliseconds = Annotated[float, Field(gt=0, le=3_600_000, strict=True, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=3600, strict=True, allow_inf_nan=False)]
Offset = Annotated[int, Field(ge=0, le=4095, strict=True)]
Separator = Annotated[str, Field(min_length=1, max_length=8)]


# -- config ---------------------------------------------------------------------------------


class StreamConfig(Section):
    """The device talks on its own; nothing good for ``timeout_ms``: values STALE."""

    timeout_ms: Milliseconds = 2000.0


class PollConfig(Section):
    """Send ``request`` (text for ASCII devices, hex bytes for binary ones) every
    ``period_ms``; no answer within ``timeout_ms`` counts a ``timeout``."""

    request: Annotated[str, Field(min_length=1, max_length=512)]
    period_ms: Milliseconds = 1000.0
    timeout_ms: Milliseconds = 500.0


class KeyValueRule(Section):
    separator: Separator = "="
    pair_separator: Separator = ","


class CsvRule(Section):
    separator: Separator = ","


class LengthField(Section):
    """Where the frame says how long it is, and what that number counts: the payload,
    the rest of the frame after this field (checksum included), or the whole frame."""

    offset: Offset = 1
    size: Literal[1, 2] = 1
    byte_order: ByteOrder = "big"
    counts: LengthCounts = "payload"


class ChecksumConfig(Section):
    kind: ChecksumKind
    # first byte covered (the checksum covers up to itself); default: after the start bytes
    from_offset: Offset | None = None
    byte_order: ByteOrder = "little"  # of crc16-modbus: Modbus sends the low byte first


class FieldConfig(Section):
    """A number in the payload, at ``offset`` from its first byte."""

    name: Identifier
    offset: Offset
    type: Literal[
        "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
        "float32", "float64",
    ]  # fmt: skip
    byte_order: ByteOrder = "big"
    bit: Annotated[int, Field(ge=0, le=63, strict=True)] | None = None  # one bit of it, as 0/1

    @model_validator(mode="after")
    def _bit_fits(self) -> FieldConfig:
        if self.bit is not None:
            if self.type.startswith("float"):
                raise ValueError("bit: only integer fields have bits")
            size = FrameField(self.offset, self.type).end - self.offset
            if self.bit >= size * 8:
                raise ValueError(f"bit: {self.bit} is beyond the {size * 8} bits of {self.type}")
        return self

    def to_field(self) -> FrameField:
        return FrameField(self.offset, self.type, self.byte_order, self.bit)


class FrameConfig(Section):
    """A binary frame: start bytes, a length field, the payload, a checksum."""

    start: Annotated[int, Field(ge=0, le=255, strict=True)] | Annotated[str, Field(max_length=16)]
    length: LengthField = LengthField()
    checksum: ChecksumConfig
    fields: Annotated[list[FieldConfig], Field(min_length=1)]
    max_length: Annotated[int, Field(ge=4, le=4096, strict=True)] = 256

    @field_validator("start")
    @classmethod
    def _start_is_bytes(cls, start: int | str) -> int | str:
        if isinstance(start, str):
            hex_bytes(start)
        return start

    @model_validator(mode="after")
    def _consistent(self) -> FrameConfig:
        start = self.start_bytes
        if self.length.offset < len(start):
            raise ValueError(
                f"length.offset: {self.length.offset} is inside the {len(start)} start bytes"
            )
        fmt = self.format
        if not 0 <= fmt.checksum_from <= fmt.header:
            raise ValueError(
                f"checksum.from_offset: {fmt.checksum_from} is after the payload's start "
                f"({fmt.header})"
            )
        names = [f.name for f in self.fields]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"field names must be unique: {', '.join(dupes)}")
        needed = fmt.header + FrameFields([f.to_field() for f in self.fields]).needed
        if needed + fmt.checksum_size > self.max_length:
            raise ValueError(f"the fields need a frame of {needed} bytes, over max_length")
        return self

    @property
    def start_bytes(self) -> bytes:
        return bytes([self.start]) if isinstance(self.start, int) else hex_bytes(self.start)

    @property
    def format(self) -> FrameFormat:
        start = self.start_bytes
        checksum_from = self.checksum.from_offset
        return FrameFormat(
            start=start,
            checksum=self.checksum.kind,
            length_offset=self.length.offset,
            length_size=self.length.size,
            length_order=self.length.byte_order,
            counts=self.length.counts,
            checksum_from=len(start) if checksum_from is None else checksum_from,
            checksum_order=self.checksum.byte_order,
            max_length=self.max_length,
        )


Key = (
    Annotated[int, Field(ge=0, le=1023, strict=True)]
    | Annotated[str, Field(min_length=1, max_length=64)]
)

WATCHDOG_POLLS = 3  # a device silent this many polls (or stream timeouts) trips its watchdog


class SerialPoint(PointMap):
    """``key``: where the value is in a line or frame (see the module doc); ``write``:
    what an output sends, with ``{value}`` the raw value (``"SET {value:.2f}\\r\\n"``)."""

    key: Key | None = None
    write: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _keyed(self) -> SerialPoint:
        if self.reads and self.key is None:
            raise ValueError("key: say where the value is (regex group, key, column, field)")
        if self.writes and self.write is None:
            raise ValueError("write: an output needs a template, e.g. 'SET {value:.2f}\\r\\n'")
        if not self.writes and self.write is not None:
            raise ValueError("write: only output points write (direction: output or both)")
        if self.write is not None:
            sample = {"bool": True, "string": "x"}.get(self.type, 0 if "int" in self.type else 0.0)
            try:
                self.write.format(value=sample)
            except (KeyError, IndexError, ValueError, TypeError) as err:
                raise ValueError(
                    f"write: {self.write!r} cannot be filled in ({err}); "
                    "{value} is the only field, e.g. 'SET {value:.2f}\\r\\n'"
                ) from None
        return self


class SerialDevice(WatchdogSettings):
    name: EntityName
    port: Annotated[str, Field(min_length=1, max_length=4096)]
    baudrate: Annotated[int, Field(ge=50, le=4_000_000, strict=True)] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: Annotated[float, Field(strict=True)] = 1
    mode: Literal["ascii", "binary"] = "ascii"
    stream: StreamConfig | None = None  # the default when there is no poll
    poll: PollConfig | None = None
    # ascii: one of regex (named groups), key_value, csv (columns by index)
    regex: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    key_value: KeyValueRule | None = None
    csv: CsvRule | None = None
    ignore: Annotated[str, Field(min_length=1, max_length=1024)] | None = None  # lines to pass over
    eol: Annotated[str, Field(min_length=1, max_length=4)] = "\n"  # "\r\n" lines too
    max_line_bytes: Annotated[int, Field(ge=8, le=65536, strict=True)] = 256
    # binary
    frame: FrameConfig | None = None
    points: Annotated[list[SerialPoint], Field(min_length=1)]
    offline_after: Annotated[int, Field(ge=1, le=1000, strict=True)] = 3
    reopen_initial_s: Seconds = 0.5
    reopen_max_s: Seconds = 30.0

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, stopbits: float) -> float:
        if stopbits not in (1, 1.5, 2):
            raise ValueError(f"stopbits: {stopbits} is not 1, 1.5 or 2")
        return stopbits

    @model_validator(mode="after")
    def _consistent(self) -> SerialDevice:
        if self.stream is not None and self.poll is not None:
            raise ValueError("give stream: or poll:, not both")
        if self.mode == "ascii":
            self._check_ascii()
        else:
            self._check_binary()
        return self

    def _check_ascii(self) -> None:
        rules = [r for r in ("regex", "key_value", "csv") if getattr(self, r) is not None]
        if len(rules) != 1:
            raise ValueError(
                "mode ascii: give one parse rule: regex: '(?P<name>...)', "
                "key_value: {separator: '=', pair_separator: ','} or csv: {separator: ','}"
            )
        if self.frame is not None:
            raise ValueError("frame: is for mode: binary")
        groups: set[str] = set()
        for key in ("regex", "ignore"):
            pattern = getattr(self, key)
            try:
                compiled = re.compile(pattern) if pattern is not None else None
            except re.error as err:
                raise ValueError(f"{key}: {err}") from None
            if key == "regex" and compiled is not None:
                groups = set(compiled.groupindex)
        for index, point in enumerate(self.points):
            if not point.reads:
                continue
            where = f"points[{index}].key"
            if self.csv is not None and not isinstance(point.key, int):
                raise ValueError(f"{where}: csv columns are numbered from 0, e.g. key: 2")
            if self.csv is None and not isinstance(point.key, str):
                raise ValueError(f"{where}: {rules[0]} keys are names, not column numbers")
            if self.regex is not None and point.key not in groups:
                known = ", ".join(sorted(groups)) or "none: write groups as (?P<name>...)"
                raise ValueError(f"{where}: the regex has no group {point.key!r} ({known})")

    def _check_binary(self) -> None:
        if self.frame is None:
            raise ValueError("mode binary: frame: {start, checksum, fields} is missing")
        if any(getattr(self, r) is not None for r in ("regex", "key_value", "csv", "ignore")):
            raise ValueError("regex, key_value, csv and ignore are for mode: ascii")
        names = [field.name for field in self.frame.fields]
        for index, point in enumerate(self.points):
            if point.writes:
                raise ValueError(f"points[{index}]: binary devices have no output points")
            if point.type == "string":
                raise ValueError(f"points[{index}].type: binary fields are numbers")
            if point.key not in names:
                raise ValueError(
                    f"points[{index}].key: the frame has no field {point.key!r} "
                    f"({', '.join(names)})"
                )
        if self.poll is not None:
            try:
                hex_bytes(self.poll.request)
            except ValueError as err:
                raise ValueError(f"poll.request: {err}") from None

    @property
    def request(self) -> bytes:
        assert self.poll is not None
        if self.mode == "binary":
            return hex_bytes(self.poll.request)
        return self.poll.request.encode(ENCODING)

    def watchdog_deadline_s(self) -> float | None:
        """``watchdog_s``, or 3 polls plus a timeout (polled), 3 stream timeouts
        (streaming); None for a device with no input points."""
        if self.watchdog_s is not None:
            return self.watchdog_s
        if not any(point.reads for point in self.points):
            return None
        if self.poll is not None:
            return (WATCHDOG_POLLS * self.poll.period_ms + self.poll.timeout_ms) / 1000.0
        return WATCHDOG_POLLS * self.stream_timeout_s

    @property
    def stream_timeout_s(self) -> float:
        return (self.stream or StreamConfig()).timeout_ms / 1000.0


class SerialConfig(Section):
    devices: Annotated[list[SerialDevice], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> SerialConfig:
        for what, names in (
            ("device names", [d.name for d in self.devices]),
            ("ports (one device per port)", [d.port for d in self.devices]),
        ):
            if dupes := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"{what} must be unique: {', '.join(dupes)}")
        return self

    def warnings(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        escaped = re.compile(r"\\[rn]")
        hint = "has a backslash sequence: YAML makes \\r and \\n line ends only in double quotes"
        for d, device in enumerate(self.devices):
            poll = device.poll
            if poll is not None and device.mode == "ascii" and escaped.search(poll.request):
                found.append((("devices", d, "poll", "request"), f"request {hint}"))
            for p, point in enumerate(device.points):
                if point.write is not None and escaped.search(point.write):
                    found.append((("devices", d, "points", p, "write"), f"write {hint}"))
        return found
