"""Serial devices: ASCII lines or binary frames from a serial port into device points.

Config section ``serial``::

    serial:
      devices:
        - name: sensor1
          port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0
          baudrate: 9600
          key_value: {separator: "=", pair_separator: ","}   # or regex: / csv:
          stream: {timeout_ms: 2000}                          # or poll: {request: ...}
          points:
            - {key: T, entity: room1, component: Climate, field: temperature, unit: degC}
            - {key: S, entity: room1, component: Climate, field: setpoint,
               direction: both, write: "SET {value:.2f}\\r\\n"}
        - name: meter1
          port: /dev/ttyUSB1
          mode: binary
          frame:
            start: "AA"
            checksum: {kind: crc16-modbus}
            fields: [{name: power, offset: 0, type: float32}]
          poll: {request: "AA 01 01 C1 E0", period_ms: 500, timeout_ms: 200}
          points: [{key: power, entity: meter1, component: Meter, field: power}]

A point's ``key`` names where its value is: a named group of ``regex``, a key of
``key_value``, a column index of ``csv``, a field of a binary ``frame``. A line (or
frame) is taken whole: one that does not hold every key counts as ``garbage`` and
changes no value (lines matching ``ignore`` and empty ones are passed over); a key whose
text is not a value of the point's type makes that point BAD. Output points (ASCII
only) send their ``write`` template, filled with the raw value, when the control loop
changes them, and again after the port is reopened; what the port cannot take at once
waits (``add_writer``) and goes out whole.

``stream`` devices talk on their own; when nothing good arrives for ``timeout_ms`` their
values turn STALE and a ``timeout`` is counted. ``poll`` devices are sent ``request``
every ``period_ms``; the first line or frame back is the answer.

The port is read on the event loop (``add_reader`` on the descriptor pyserial opened
non-blocking). When it fails (a USB adapter pulled: the read fails, the path is gone)
the device goes offline, its values STALE, and the path is opened again with backoff
until it is back, as udev's ``/dev/serial/by-id`` links come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import termios
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import serial  # type: ignore[import-untyped]
from pydantic import Field, field_validator, model_validator

from edgeloop.app import App
from edgeloop.config import ConfigSection, KeyPath, Section
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.field_link import DeviceChannel, on_writes
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.points import EntityName, Identifier, PointMap, Quality
from edgeloop.drivers.serial_framing import (
    ByteOrder,
    ChecksumKind,
    CsvFields,
    FrameField,
    FrameFields,
    FrameFormat,
    FrameSplitter,
    Junk,
    KeyValueFields,
    LengthCounts,
    LineSplitter,
    RegexFields,
    Texts,
    parse_text,
    preview,
)
from edgeloop.realtime.io_part import IoContext

log = logging.getLogger("edgeloop.serial")

DRIVER = "serial"
READ_SIZE = 4096
LOG_EVERY_S = 5.0  # one log line per device and kind of event in this time, at most
ENCODING = "utf-8"

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)
_DEFAULTS: dict[str, Any] = {"bool": False, "string": ""}
_PARITIES = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}

Milliseconds = Annotated[float, Field(gt=0, le=3_600_000, strict=True, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=3600, strict=True, allow_inf_nan=False)]
Offset = Annotated[int, Field(ge=0, le=4095, strict=True)]
Separator = Annotated[str, Field(min_length=1, max_length=8)]
Values = list[list[Any]]


def hex_bytes(text: str) -> bytes:
    """``"AA 01 FF"`` as bytes; ``ValueError`` saying what is wrong."""
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'{text!r} is not hex bytes (write them like "AA 01 FF")') from None
    if not data:
        raise ValueError("no bytes given")
    return data


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


class SerialDevice(Section):
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


# -- control process ------------------------------------------------------------------------


class SerialPlugin:
    def __init__(self, config: SerialConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        specs = [DeviceSpec(device.name, DRIVER, device.points) for device in self.config.devices]
        add_field_devices(app, DRIVER, specs)


# -- io process -----------------------------------------------------------------------------


class SerialLink:
    """One device on its port: open (again, with backoff), read, poll, write."""

    def __init__(self, config: SerialDevice, context: IoContext) -> None:
        self.config = config
        self.channel = DeviceChannel(
            context, config.name, DRIVER, config.points, config.offline_after
        )
        self.reads = [i for i, p in enumerate(config.points) if p.reads]
        points = [config.points[i] for i in self.reads]
        self.splitter: LineSplitter | FrameSplitter
        if config.frame is not None:
            self.group = "frame"
            self.splitter = FrameSplitter(config.frame.format)
            self.decode = frame_decoder(config, points)
        else:
            self.group = "line"
            self.splitter = LineSplitter(config.eol.encode(ENCODING), config.max_line_bytes)
            self.decode = line_decoder(config, points)
        self._last: list[Any] = [_DEFAULTS.get(p.type, 0.0) for p in points]
        self._backoff = Backoff(config.reopen_initial_s, config.reopen_max_s)
        self._task: asyncio.Task[None] | None = None
        self._fd = -1  # of the open port, -1 while closed
        self._failure: asyncio.Future[str] | None = None
        self._reply: asyncio.Future[None] | None = None  # a poll waiting for its answer
        self._asked_at = 0.0
        self._silence_s = config.stream_timeout_s
        self._deadline = math.inf  # stream: when silence becomes a timeout
        self._written: dict[int, bytes] = {}  # by output point: sent again after a reopen
        self._unsent: dict[int, bytes] = {}
        self._pending = b""  # the rest of a message partly written: goes out before anything
        self._writing = False  # waiting for the port to take more (add_writer)
        self._logged: dict[str, float] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"serial {self.config.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                port = self._open()
            except (OSError, ValueError) as err:  # SerialException is an OSError
                self._down(str(err))  # pyserial's: "could not open port <path>: <why>"
            else:
                reason = await self._session(port, loop)
                self._down(reason)
            await asyncio.sleep(self._backoff.next_delay())

    def _open(self) -> serial.Serial:
        # Non-blocking open and termios calls only: quick enough for the event loop.
        config = self.config
        return serial.Serial(
            port=config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=_PARITIES[config.parity],
            stopbits=config.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )

    async def _session(self, port: serial.Serial, loop: asyncio.AbstractEventLoop) -> str:
        """Read (and poll) the open port until it fails; why it failed."""
        fd = port.fileno()
        failure: asyncio.Future[str] = loop.create_future()
        self._failure = failure
        self._fd = fd
        worker: asyncio.Task[None] | None = None
        try:
            self.splitter.reset()
            loop.add_reader(fd, self._on_readable, fd)
            self._log("open", "serial %s: %s open", self.config.port, level=logging.INFO)
            self._pending = b""  # a message cut by the old session is sent whole again
            self._unsent = dict(self._written)
            self._send_unsent()
            worker = loop.create_task(self._poll(loop) if self.config.poll else self._watch(loop))
            return await failure
        finally:
            if worker is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            loop.remove_reader(fd)
            self._stop_writing()
            self._fd = -1
            self._failure = None
            with contextlib.suppress(OSError):
                port.close()

    def _fail(self, reason: str) -> None:
        if self._failure is not None and not self._failure.done():
            asyncio.get_running_loop().remove_reader(self._fd)  # a dead fd stays readable
            self._stop_writing()
            self._failure.set_result(reason)

    def _down(self, reason: str) -> None:
        self._log("down", "serial %s: %s; reopening with backoff", reason)
        self.channel.error("disconnect", reason)

    # -- receiving ----------------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            self._fail(f"read failed: {err.strerror or err}")
            return
        if not data:
            self._fail("port closed (end of file)")
            return
        for message in self.splitter.feed(data):
            if isinstance(message, Junk):
                self._garbage(message.reason)
            else:
                self._on_message(message)

    def _on_message(self, message: bytes) -> None:
        try:
            decoded = self.decode(message)
        except ValueError as err:
            self._garbage(str(err))
            return
        if decoded is None:
            return
        last = self._last
        values: Values = []
        for slot, (index, value) in enumerate(zip(self.reads, decoded, strict=True)):
            if value is None:
                values.append([index, last[slot], _BAD])
            else:
                last[slot] = value
                values.append([index, value, _GOOD])
        self.channel.publish(self.group, values)
        now = asyncio.get_running_loop().time()
        self._deadline = now + self._silence_s
        rtt = 0.0
        if self._reply is not None and not self._reply.done():
            rtt = now - self._asked_at
            self._reply.set_result(None)
        self.channel.good(rtt)
        self._backoff.reset()

    def _garbage(self, detail: str) -> None:
        self.channel.error("garbage", detail)
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(None)  # answered, if badly: not a timeout too

    # -- streaming and polling ----------------------------------------------------------------

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self._silence_s
        self._deadline = loop.time() + timeout
        while True:
            await asyncio.sleep(max(0.0, self._deadline - loop.time()))
            if loop.time() >= self._deadline:
                self._deadline = loop.time() + timeout
                self.channel.mark_stale(self.group)
                self.channel.error("timeout", f"nothing good for {round(timeout * 1000)} ms")

    async def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        poll = self.config.poll
        assert poll is not None
        request = self.config.request
        period = poll.period_ms / 1000.0
        due = loop.time()
        while True:
            await self._ask(request, poll.timeout_ms, loop)
            self._send_unsent()
            # Absolute deadlines keep the rate; a late answer skips polls, never bunches them.
            due += period
            now = loop.time()
            if due <= now:
                due = now + period
            await asyncio.sleep(due - now)

    async def _ask(
        self, request: bytes, timeout_ms: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        try:
            termios.tcflush(self._fd, termios.TCIFLUSH)  # an answer is to this request
        except (termios.error, OSError) as err:
            self._fail(f"flush failed: {err}")
            return
        self.splitter.reset()
        reply = self._reply = loop.create_future()
        self._asked_at = loop.time()
        try:
            if self._pending:  # a period on, the port has still not taken it all: stuck
                self.channel.error("write", f"port not taking {preview(self._pending)}")
                return
            self._pending = request
            self._send_unsent()
            await asyncio.wait_for(reply, timeout_ms / 1000.0)
        except TimeoutError:
            self.channel.mark_stale(self.group)
            self.channel.error("timeout", f"no answer to {preview(request)} in {timeout_ms:g} ms")
        finally:
            self._reply = None

    # -- writing ------------------------------------------------------------------------------

    def write(self, writes: list[tuple[int, Any]]) -> None:
        """Output values from the control loop: sent now, or after the poll in progress."""
        points = self.config.points
        for index, value in writes:
            if not 0 <= index < len(points) or points[index].write is None:
                continue
            point = points[index]
            try:
                data = str(point.write).format(value=point.to_raw(value)).encode(ENCODING)
            except (ValueError, TypeError) as err:
                detail = f"{point.entity}.{point.component}.{point.field} = {value!r}: {err}"
                self.channel.error("write", detail)
                continue
            self._written[index] = self._unsent[index] = data
        if self._reply is None:
            self._send_unsent()

    def _send_unsent(self) -> None:
        """Write what waits, as much as the port takes now: the rest of a message partly
        written, then the commands (not while a poll waits for its answer). The rest goes
        when the port can take more, or after the poll."""
        if self._failure is None or self._failure.done():
            return  # sent when the port is open again
        while self._pending or (self._unsent and self._reply is None):
            if not self._pending:
                self._pending = self._unsent.pop(next(iter(self._unsent)))
            try:
                sent = os.write(self._fd, self._pending)
            except BlockingIOError:
                break
            except OSError as err:
                self._fail(f"write failed: {err.strerror or err}")
                return
            self._pending = self._pending[sent:]
            if self._pending:
                break  # the port took what it could: on when it can take more
        if self._pending or (self._unsent and self._reply is None):
            if not self._writing:
                asyncio.get_running_loop().add_writer(self._fd, self._send_unsent)
                self._writing = True
        else:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False

    # -- reporting ------------------------------------------------------------------------------

    def _log(self, kind: str, text: str, detail: object, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -math.inf) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.log(level, text, self.config.name, detail)


class SerialIo:
    """The io part: a ``SerialLink`` per device."""

    def __init__(self, config: SerialConfig, context: IoContext) -> None:
        self.links = {device.name: SerialLink(device, context) for device in config.devices}
        on_writes(context, {name: link.write for name, link in self.links.items()})

    async def start(self) -> None:
        for link in self.links.values():
            link.start()

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()


SECTION = ConfigSection(DRIVER, SerialConfig, SerialPlugin, io=SerialIo)
