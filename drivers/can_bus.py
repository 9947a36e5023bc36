"""CAN devices: frames from python-can decoded through cantools into device points.

Config section ``can``::

    can:
      bus: {interface: socketcan, channel: can0}   # or interfaces: [{name: ..., ...}, ...]
      devices:
        - name: drive1
          dbc: drive.dbc            # or messages: [{name, id, length, period_ms, signals}]
          points:
            - {message: DriveStatus, signal: Speed, entity: drive1, component: Drive,
               field: speed, unit: rpm}
            - {message: DriveCommand, signal: SpeedSetpoint, entity: drive1,
               component: Drive, field: speed_setpoint, direction: output}
          tx: [{message: DriveCommand, period_ms: 50, on_change: true}]

A DBC and inline messages give the same thing, a cantools ``Database``, so one decoder
serves both. A signal's own scale and offset come from its definition; a point's
``scale``/``offset`` apply on top.

Receive: each frame id a device reads maps to its cantools message and point indices
(built once); a frame is decoded and sent as one group of values. A message not seen
for ``timeout_periods`` x its period (``period_ms``, the DBC's cycle time, or ``rx:``)
turns its points STALE and counts a ``timeout``; a frame of the wrong length counts as
``garbage`` and marks its points BAD.

Transmit: each ``tx`` message goes out every ``period_ms`` with the values the control
loop last wrote (the signals' initial values before that), and at once on a write when
``on_change`` is set; a write while the bus is closed or bus-off goes out when it is
back. A period is at least 1 ms.

Bus state: error-passive and bus-off come from SocketCAN's error frames (or
``bus.state`` where an interface reports one) and are counted as ``bus`` errors of every
device on that bus; a bus that fails (interface down, adapter unplugged) is reopened
with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import enum
import errno
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import can
import cantools
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.errors import DecodeError
from cantools.database.errors import Error as CantoolsError
from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator

from edgeloop.app import App
from edgeloop.config import ConfigSection, KeyPath, Section
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.field_link import DeviceChannel, WriteHandler, on_writes
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.points import EntityName, Finite, Identifier, PointMap, Quality
from edgeloop.realtime.io_part import IoContext

log = logging.getLogger("edgeloop.can")

DRIVER = "can"
SUPERVISE_S = 0.05  # how often receive timeouts and the bus state are checked
RX_POLL_S = 0.1  # a receive thread's wait per call: how long stop() waits for it
RX_BATCH = 256  # frames handed to the event loop at once, at most
LOG_EVERY_S = 5.0  # one log line per bus and kind of event in this time, at most
# python-can filters these in software inside recv(), after the frame is already ours:
# the id table below drops foreign frames as cheaply, and lets error frames through.
SOFTWARE_FILTERED = frozenset({"virtual", "udp_multicast"})
LINK_DOWN_ERRNOS = frozenset({errno.ENETDOWN, errno.ENODEV, errno.EBADF, errno.ENXIO})

# SocketCAN error frames (linux/can/error.h): the class is in the id, details in data.
CAN_ERR_CRTL = 0x004
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
CAN_ERR_CRTL_RX_PASSIVE = 0x10  # data[1]
CAN_ERR_CRTL_TX_PASSIVE = 0x20
CAN_ERR_CRTL_ACTIVE = 0x40

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)
_EXTENDED = 1 << 31  # in frame keys: 0x181 standard and 0x181 extended are two frames

Positive = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
MIN_PERIOD_MS = 1.0  # a shorter period would keep the io loop busy with this one frame
SignalName = Annotated[str, Field(min_length=1, max_length=128)]


def _period_floor(period_ms: float) -> float:
    if period_ms < MIN_PERIOD_MS:
        raise ValueError(
            f"{period_ms:g} ms is below the {MIN_PERIOD_MS:g} ms floor: a frame that often "
            "would keep the io loop busy with nothing else"
        )
    return period_ms


PeriodMs = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_period_floor)]


# -- config ---------------------------------------------------------------------------------


class CanBusConfig(Section):
    """One python-can bus: ``interface`` socketcan on a device, virtual in tests,
    udp_multicast between processes; ``options`` go to ``can.Bus`` as they are."""

    name: Identifier = "can"
    interface: str
    channel: Annotated[str, Field(min_length=1, max_length=64)]
    bitrate: Annotated[int, Field(ge=5_000, le=1_000_000, strict=True)] | None = None
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    reopen_initial_s: Positive = 0.5
    reopen_max_s: Positive = 30.0

    @field_validator("interface")
    @classmethod
    def _known_interface(cls, interface: str) -> str:
        known = sorted(can.interfaces.VALID_INTERFACES)
        if interface not in known:
            match = difflib.get_close_matches(interface, known, n=1)
            hint = f"did you mean '{match[0]}'?" if match else f"one of: {', '.join(known)}"
            raise ValueError(f"unknown python-can interface {interface!r} ({hint})")
        return interface

    def bus_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**self.options}
        kwargs.update(interface=self.interface, channel=self.channel)
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        return kwargs


class SignalDef(Section):
    """An inline signal, laid out as in a DBC file (``start`` is the DBC start bit)."""

    name: SignalName
    start: Annotated[int, Field(ge=0, le=63, strict=True)]
    length: Annotated[int, Field(ge=1, le=64, strict=True)]
    byte_order: Literal["little_endian", "big_endian"] = "little_endian"
    signed: Annotated[bool, Field(strict=True)] = False
    scale: Finite = 1.0
    offset: Finite = 0.0
    minimum: Finite | None = None
    maximum: Finite | None = None
    initial: Finite | None = None  # sent until the control loop writes; else 0
    unit: Annotated[str, Field(max_length=16)] = ""

    @model_validator(mode="after")
    def _scale_not_zero(self) -> SignalDef:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    def to_cantools(self) -> Signal:
        raw_initial = None if self.initial is None else (self.initial - self.offset) / self.scale
        return Signal(
            name=self.name,
            start=self.start,
            length=self.length,
            byte_order=self.byte_order,
            is_signed=self.signed,
            raw_initial=raw_initial,
            conversion=BaseConversion.factory(scale=self.scale, offset=self.offset),
            minimum=self.minimum,
            maximum=self.maximum,
            unit=self.unit or None,
        )


class MessageDef(Section):
    """An inline message (frame)."""

    name: SignalName
    id: Annotated[int, Field(ge=0, le=0x1FFFFFFF, strict=True)]
    extended: Annotated[bool, Field(strict=True)] = False
    length: Annotated[int, Field(ge=0, le=8, strict=True)] = 8
    period_ms: PeriodMs | None = None  # how often the sender sends it
    signals: Annotated[list[SignalDef], Field(min_length=1)]

    @model_validator(mode="after")
    def _fits(self) -> MessageDef:
        if not self.extended and self.id > 0x7FF:
            raise ValueError(f"id {self.id:#x} is above 0x7ff: set extended: true")
        return self

    def to_cantools(self) -> Message:
        return Message(
            frame_id=self.id,
            name=self.name,
            length=self.length,
            signals=[signal.to_cantools() for signal in self.signals],
            is_extended_frame=self.extended,
            cycle_time=None if self.period_ms is None else round(self.period_ms),
        )


class RxDef(Section):
    """How often a received message is sent, where its definition does not say."""

    message: SignalName
    period_ms: PeriodMs


class TxDef(Section):
    message: SignalName
    period_ms: PeriodMs | None = None  # None: only on change
    on_change: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _sent_at_all(self) -> TxDef:
        if self.period_ms is None and not self.on_change:
            raise ValueError("give period_ms, or on_change: true, or both")
        return self


class CanPoint(PointMap):
    """A signal of a message, mapped to a component field."""

    message: SignalName
    signal: SignalName

    @model_validator(mode="after")
    def _fits_can(self) -> CanPoint:
        if self.direction == "both":
            raise ValueError(
                "direction 'both' does not exist on CAN (a frame has one sender): read "
                "the status message with an input point, write the command with an output"
            )
        if self.type == "string":
            raise ValueError("type 'string' is not a CAN signal type: use a number or bool")
        return self


class CanDevice(Section):
    name: EntityName
    bus: Identifier | None = None  # the interface's name; may be left out when only one
    dbc: Annotated[str, Field(min_length=1)] | None = None
    messages: Annotated[list[MessageDef], Field(min_length=1)] | None = None
    points: Annotated[list[CanPoint], Field(min_length=1)]
    rx: list[RxDef] = Field(default_factory=list)
    tx: list[TxDef] = Field(default_factory=list)
    timeout_periods: Annotated[float, Field(ge=1, le=1000, strict=True)] = 3.0
    offline_after: Annotated[int, Field(ge=1, le=1000, strict=True)] = 3
    _database: Database = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> CanDevice:
        if (self.dbc is None) == (self.messages is None):
            raise ValueError("give either dbc: <file> or messages: [...], not both or neither")
        self._database = load_dbc(self.dbc) if self.dbc else inline_database(self.messages)
        names = [m.name for m in self._database.messages]
        for index, point in enumerate(self.points):
            message = self.message(point.message, names, f"points[{index}].message")
            signals = {signal.name: signal for signal in message.signals}
            if point.signal not in signals:
                raise ValueError(
                    f"points[{index}].signal: {message.name} has no signal {point.signal!r}"
                    f"{_hint(point.signal, list(signals))}"
                )
            if signals[point.signal].multiplexer_ids or message.is_multiplexed():
                raise ValueError(f"points[{index}]: multiplexed messages are not supported")
        read = {p.message for p in self.points if p.reads}
        written = {p.message for p in self.points if p.writes}
        if both := sorted(read & written):
            raise ValueError(f"{both[0]} has both input and output points: a frame has one sender")
        self._check_tx(names, written)
        for index, rx in enumerate(self.rx):
            self.message(rx.message, names, f"rx[{index}].message")
            if rx.message not in read:
                raise ValueError(f"rx[{index}]: no input point reads {rx.message}")
        return self

    def _check_tx(self, names: list[str], written: set[str]) -> None:
        sent = [tx.message for tx in self.tx]
        for index, tx in enumerate(self.tx):
            message = self.message(tx.message, names, f"tx[{index}].message")
            if sent.count(tx.message) > 1:
                raise ValueError(f"tx[{index}]: {tx.message} is listed twice")
            try:
                message.encode(initial_values(message), scaling=True, strict=True)
            except (CantoolsError, ValueError, KeyError) as err:
                raise ValueError(f"tx[{index}]: initial values cannot be encoded: {err}") from None
        if unsent := sorted(written - set(sent)):
            raise ValueError(
                f"{unsent[0]} has output points but is not sent: add it to tx, e.g. "
                f"tx: [{{message: {unsent[0]}, period_ms: 100}}]"
            )

    def message(self, name: str, names: list[str], where: str = "message") -> Message:
        """The cantools message ``name`` of this device's database."""
        try:
            return self._database.get_message_by_name(name)
        except KeyError:
            source = f"dbc {self.dbc}" if self.dbc else "messages"
            raise ValueError(
                f"{where}: no message {name!r} in {source}{_hint(name, names)}"
            ) from None

    def rx_period_s(self, name: str) -> float | None:
        """How often message ``name`` arrives: ``rx:``, else its definition; None if unknown."""
        for rx in self.rx:
            if rx.message == name:
                return rx.period_ms / 1000.0
        cycle = self._database.get_message_by_name(name).cycle_time
        return cycle / 1000.0 if cycle else None

    @property
    def database(self) -> Database:
        return self._database


class CanConfig(Section):
    bus: CanBusConfig | None = None
    interfaces: Annotated[list[CanBusConfig], Field(min_length=1)] | None = None
    devices: Annotated[list[CanDevice], Field(min_length=1)]

    @model_validator(mode="after")
    def _wiring(self) -> CanConfig:
        if (self.bus is None) == (self.interfaces is None):
            raise ValueError("give either bus: {...} or interfaces: [...], not both or neither")
        buses = [bus.name for bus in self.buses]
        _unique("interface names", buses)
        _unique("device names", [device.name for device in self.devices])
        frames: dict[tuple[str, int], str] = {}
        for index, device in enumerate(self.devices):
            if device.bus is None and len(buses) > 1:
                raise ValueError(f"devices[{index}].bus: say which of {', '.join(buses)}")
            if device.bus is not None and device.bus not in buses:
                raise ValueError(f"devices[{index}].bus: no interface named {device.bus!r}")
            bus = self.bus_of(device)
            for message in used_messages(device):
                key = (bus, frame_key(message.frame_id, message.is_extended_frame))
                other = frames.setdefault(key, device.name)
                if other != device.name:
                    raise ValueError(
                        f"devices[{index}]: frame {message.frame_id:#x} ({message.name}) is "
                        f"also used by device {other!r} on bus {bus!r}"
                    )
        return self

    @property
    def buses(self) -> list[CanBusConfig]:
        return [self.bus] if self.bus is not None else list(self.interfaces or ())

    def bus_of(self, device: CanDevice) -> str:
        return device.bus if device.bus is not None else self.buses[0].name

    def warnings(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        for d, device in enumerate(self.devices):
            warned: set[str] = set()
            for p, point in enumerate(device.points):
                unwatched = point.reads and point.message not in warned
                if unwatched and device.rx_period_s(point.message) is None:
                    warned.add(point.message)
                    message = (
                        f"{point.message} has no period: its points never turn stale when "
                        f"it stops; add rx: [{{message: {point.message}, period_ms: ...}}]"
                    )
                    found.append((("devices", d, "points", p, "message"), message))
        return found


def load_dbc(name: str) -> Database:
    """The database in file ``name``: absolute, relative to the working directory, or a
    bare file name shipped with the examples (``drive.dbc``)."""
    path = dbc_path(name)
    try:
        database = cantools.database.load_file(path, strict=True)
    except FileNotFoundError:
        raise ValueError(f"dbc: {name}: no such file (nor among the examples)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"dbc: cannot read {path}: {err}") from None
    except Exception as err:  # cantools raises a parser's own errors for a broken file
        raise ValueError(f"dbc: {path} is not a valid CAN database: {err}") from None
    if not isinstance(database, Database):
        raise ValueError(f"dbc: {path} is not a CAN database")
    return database


def dbc_path(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists() or path.name != name:
        return path
    packaged = files("edgeloop.examples") / name
    return Path(str(packaged)) if packaged.is_file() else path


def inline_database(messages: Sequence[MessageDef] | None) -> Database:
    _unique("message names", [m.name for m in messages or ()])
    _unique("message ids", [f"{m.id:#x}" for m in messages or ()])
    built = []
    for index, definition in enumerate(messages or ()):
        _unique(f"messages[{index}] signal names", [s.name for s in definition.signals])
        try:
            built.append(definition.to_cantools())
        except (CantoolsError, ValueError) as err:
            raise ValueError(f"messages[{index}] ({definition.name}): {err}") from None
    return Database(messages=built)


def initial_values(message: Message) -> dict[str, float]:
    """What a tx message carries before the control loop writes: each signal's initial
    value, else 0 (or its minimum or maximum, when 0 is out of range)."""
    values: dict[str, float] = {}
    for signal in message.signals:
        value = signal.initial if isinstance(signal.initial, (int, float)) else 0
        if signal.minimum is not None and value < signal.minimum:
            value = signal.minimum
        if signal.maximum is not None and value > signal.maximum:
            value = signal.maximum
        values[signal.name] = value
    return values


def used_messages(device: CanDevice) -> list[Message]:
    names = dict.fromkeys([p.message for p in device.points] + [t.message for t in device.tx])
    return [device.database.get_message_by_name(name) for name in names]


def frame_key(frame_id: int, extended: bool) -> int:
    return frame_id | _EXTENDED if extended else frame_id


def receive_filters(messages: Sequence[Message]) -> list[can.typechecking.CanFilter]:
    """python-can ``can_filters`` that let exactly these frames through."""
    filters: list[can.typechecking.CanFilter] = []
    for message in messages:
        mask = 0x1FFFFFFF if message.is_extended_frame else 0x7FF
        filters.append(
            {"can_id": message.frame_id, "can_mask": mask, "extended": message.is_extended_frame}
        )
    return filters


def _unique(what: str, names: Sequence[str]) -> None:
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique: {', '.join(dupes)}")


def _hint(name: str, names: list[str]) -> str:
    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# -- control process ------------------------------------------------------------------------


class CanPlugin:
    def __init__(self, config: CanConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        specs = [DeviceSpec(device.name, DRIVER, device.points) for device in self.config.devices]
        add_field_devices(app, DRIVER, specs)


# -- io process -----------------------------------------------------------------------------


class BusHealth(enum.Enum):
    ACTIVE = "error-active"
    PASSIVE = "error-passive"
    OFF = "bus-off"


_POLLED_STATES = {
    can.BusState.ACTIVE: BusHealth.ACTIVE,
    can.BusState.PASSIVE: BusHealth.PASSIVE,
    can.BusState.ERROR: BusHealth.OFF,
}


def bus_health_of(frame: can.Message) -> BusHealth | None:
    """The controller state an error frame reports, if it reports one."""
    kind = frame.arbitration_id
    if kind & CAN_ERR_BUSOFF:
        return BusHealth.OFF
    if kind & CAN_ERR_RESTARTED:
        return BusHealth.ACTIVE
    if kind & CAN_ERR_CRTL and len(frame.data) > 1:
        status = frame.data[1]
        if status & (CAN_ERR_CRTL_RX_PASSIVE | CAN_ERR_CRTL_TX_PASSIVE):
            return BusHealth.PASSIVE
        if status & CAN_ERR_CRTL_ACTIVE:
            return BusHealth.ACTIVE
    return None


@dataclass(slots=True)
class _Rx:
    """A received message: how to decode it and where its signals go."""

    device: _Device
    message: Message
    group: str  # the message's name
    key: int  # frame_key of its id
    decode: Callable[..., dict[str, Any]]
    points: tuple[tuple[int, str, float, float, bool], ...]  # index, signal, scale, offset, bool
    timeout_s: float | None
    deadline: float = math.inf
    last: list[list[Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Tx:
    """A transmitted message: its frame, ready to send, and the signal values in it."""

    device: _Device
    message: Message
    frame: can.Message
    values: dict[str, Any]
    period_s: float | None
    on_change: bool
    due: float = 0.0
    dirty: bool = False  # values changed but not sent: sent when the bus can take it again


class _Device:
    def __init__(self, config: CanDevice, context: IoContext) -> None:
        self.config = config
        self.channel = DeviceChannel(
            context, config.name, DRIVER, config.points, config.offline_after
        )
        self.frames = 0
        self._frames_reported = 0
        self.rx = [
            self._rx(name) for name in dict.fromkeys(p.message for p in config.points if p.reads)
        ]
        self.tx = {t.message: self._tx(t) for t in config.tx}
        # output point index -> (its message, its signal)
        self.outputs = {
            index: (self.tx[point.message], point.signal)
            for index, point in enumerate(config.points)
            if point.writes
        }

    def _rx(self, name: str) -> _Rx:
        message = self.config.database.get_message_by_name(name)
        points = tuple(
            (index, p.signal, p.scale, p.offset, p.type == "bool")
            for index, p in enumerate(self.config.points)
            if p.reads and p.message == name
        )
        period = self.config.rx_period_s(name)
        timeout = None if period is None else period * self.config.timeout_periods
        key = frame_key(message.frame_id, message.is_extended_frame)
        return _Rx(self, message, name, key, message.decode_simple, points, timeout)

    def _tx(self, config: TxDef) -> _Tx:
        message = self.config.database.get_message_by_name(config.message)
        values = initial_values(message)
        frame = can.Message(
            arbitration_id=message.frame_id,
            is_extended_id=message.is_extended_frame,
            data=message.encode(values, scaling=True, strict=True),
        )
        period = None if config.period_ms is None else config.period_ms / 1000.0
        return _Tx(self, message, frame, values, period, config.on_change)

    def supervise(self) -> None:
        """Health news: good frames since the last pass, or a snapshot now and then."""
        if self.frames != self._frames_reported:
            self._frames_reported = self.frames
            self.channel.good(0.0)
        else:
            self.channel.publish_health()


class _BusLink:
    """One python-can bus and the devices on it: open (again, with backoff), receive,
    transmit, watch timeouts and the bus state."""

    def __init__(self, config: CanBusConfig, devices: list[_Device]) -> None:
        self.config = config
        self.devices = devices
        self.rx = {rx.key: rx for device in devices for rx in device.rx}
        self.tx = [tx for device in devices for tx in device.tx.values()]
        timeouts = [rx.timeout_s for rx in self.rx.values() if rx.timeout_s is not None]
        self.supervise_s = min([SUPERVISE_S, *(t / 2 for t in timeouts)])
        self.state = BusHealth.ACTIVE
        self.bus: can.BusABC | None = None
        self.frames = 0  # decoded into values
        self.foreign = 0  # frames no device reads
        self.garbage = 0
        self.bus_errors = 0  # error frames other than state changes
        self._backoff = Backoff(config.reopen_initial_s, config.reopen_max_s)
        self._task: asyncio.Task[None] | None = None
        self._failure: asyncio.Future[str] | None = None
        self._reader_stop = threading.Event()
        self._reader: threading.Thread | int | None = None
        self._logged: dict[str, float] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"can {self.config.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                bus = await self._opened()
            except Exception as err:  # each interface raises its own (driver missing, no device)
                self._log("open", "%s: cannot open: %s", err)
                self._all_devices("disconnect", f"bus {self.config.name}: cannot open: {err}")
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            self._failure = loop.create_future()
            self.bus = bus
            self.state = BusHealth.ACTIVE
            tasks: list[asyncio.Task[None]] = []
            try:
                await self._start_reading(bus, loop)
                self._send_dirty()
                tasks = [loop.create_task(self._supervise()), loop.create_task(self._transmit())]
                reason = await self._failure
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._stop_reading(loop)
                self.bus = None
                bus.shutdown()
            self._log("fail", "%s: %s; reopening", reason)
            self._all_devices("disconnect", f"bus {self.config.name}: {reason}")
            await asyncio.sleep(self._backoff.next_delay())

    async def _opened(self) -> can.BusABC:
        """The bus, opened in a thread (interfaces block in open); a stop meanwhile waits
        for the thread and shuts down what it opened."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                (await opening).shutdown()
            raise

    def _open(self) -> can.BusABC:
        kwargs = self.config.bus_kwargs()
        if self.config.interface not in SOFTWARE_FILTERED:
            kwargs["can_filters"] = receive_filters([rx.message for rx in self.rx.values()])
        return can.Bus(**kwargs)

    def _fail(self, reason: str) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(reason)

    # -- receiving ----------------------------------------------------------------------------

    async def _start_reading(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for rx in self.rx.values():
            rx.deadline = now + rx.timeout_s if rx.timeout_s is not None else math.inf
        try:
            fd = bus.fileno()
        except NotImplementedError:
            fd = -1
        if fd >= 0:
            loop.add_reader(fd, self._drain, bus, loop)
            self._reader = fd
            return
        # No descriptor to wait on (the virtual bus, some adapters): a thread waits in
        # recv() and hands the loop batches, one wake-up for many frames.
        self._reader_stop.clear()
        thread = threading.Thread(
            target=self._receive_thread, args=(bus, loop), name=f"can-rx {self.config.name}"
        )
        thread.daemon = True
        thread.start()
        self._reader = thread

    async def _stop_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        reader, self._reader = self._reader, None
        if isinstance(reader, int):
            loop.remove_reader(reader)
        elif reader is not None:
            self._reader_stop.set()
            await asyncio.to_thread(reader.join)

    def _drain(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[can.Message] = []
        try:
            while len(batch) < RX_BATCH and (frame := bus.recv(0)) is not None:
                batch.append(frame)
        except (can.CanError, OSError) as err:
            self._fail(f"receive failed: {err}")
        if batch:
            self._on_frames(batch, loop.time())

    def _receive_thread(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop) -> None:
        stop = self._reader_stop
        try:
            while not stop.is_set():
                frame = bus.recv(RX_POLL_S)
                if frame is None:
                    continue
                batch = [frame]
                while len(batch) < RX_BATCH and (frame := bus.recv(0)) is not None:
                    batch.append(frame)
                loop.call_soon_threadsafe(self._on_thread_frames, batch, loop)
        except Exception as err:  # the interface's own; the loop decides what to do
            if not stop.is_set():
                loop.call_soon_threadsafe(self._fail, f"receive failed: {err}")

    def _on_thread_frames(self, batch: list[can.Message], loop: asyncio.AbstractEventLoop) -> None:
        if self._reader is not None:  # not a batch that was on its way while stopping
            self._on_frames(batch, loop.time())

    def _on_frames(self, batch: list[can.Message], now: float) -> None:
        table = self.rx
        # A group's values go out once per batch, its latest: the io channel would keep
        # only the latest anyway, and packing a record per frame was ~1/3 of the cost.
        fresh: dict[int, _Rx] = {}
        decoded_frames = 0
        for frame in batch:
            if frame.is_error_frame:
                self._publish(fresh)
                self._on_error_frame(frame)
                continue
            key = frame.arbitration_id | _EXTENDED if frame.is_extended_id else frame.arbitration_id
            rx = table.get(key)
            if rx is None or frame.is_remote_frame:
                self.foreign += 1
                continue
            if self.state is BusHealth.OFF:
                self._set_state(BusHealth.ACTIVE, "frames arrive again")
            try:
                decoded = rx.decode(frame.data, False, True, False, False)
            except (DecodeError, ValueError) as err:
                fresh.pop(key, None)
                self._garbage(rx, frame, err)
                continue
            rx.last = [
                [
                    index,
                    bool(decoded[signal]) if is_bool else decoded[signal] * scale + offset,
                    _GOOD,
                ]
                for index, signal, scale, offset, is_bool in rx.points
            ]
            fresh[key] = rx
            if rx.timeout_s is not None:
                rx.deadline = now + rx.timeout_s
            device = rx.device
            device.frames += 1
            decoded_frames += 1
            if device.channel.health.state != "online":
                device.channel.good(0.0)
        self._publish(fresh)
        self.frames += decoded_frames

    @staticmethod
    def _publish(fresh: dict[int, _Rx]) -> None:
        for rx in fresh.values():
            rx.device.channel.publish(rx.group, rx.last)
        fresh.clear()

    def _garbage(self, rx: _Rx, frame: can.Message, err: Exception) -> None:
        self.garbage += 1
        if rx.last:
            rx.device.channel.publish(rx.group, [[i, v, _BAD] for i, v, _ in rx.last])
        detail = f"{rx.group}: {len(frame.data)} bytes {bytes(frame.data).hex()}: {err}"
        rx.device.channel.error("garbage", detail)

    def _on_error_frame(self, frame: can.Message) -> None:
        state = bus_health_of(frame)
        if state is None:
            self.bus_errors += 1
        else:
            self._set_state(state, f"error frame {frame.arbitration_id:#x}")

    def _set_state(self, state: BusHealth, why: str) -> None:
        if state is self.state:
            return
        self._log(f"state {state.value}", "%s: %s", f"{self.state.value} -> {state.value} ({why})")
        self.state = state
        if state is BusHealth.ACTIVE:
            self._send_dirty()
        else:
            self._all_devices("bus", f"{state.value} on bus {self.config.name}")
        if state is BusHealth.OFF:
            for device in self.devices:
                device.channel.mark_stale()

    # -- supervising ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        bus = self.bus
        polls_state = bus is not None and type(bus).state is not can.BusABC.state
        while True:
            now = loop.time()
            for rx in self.rx.values():
                if now >= rx.deadline:
                    assert rx.timeout_s is not None
                    rx.deadline = now + rx.timeout_s
                    rx.device.channel.mark_stale(rx.group)
                    ms = round(rx.timeout_s * 1000)
                    rx.device.channel.error("timeout", f"no {rx.group} for {ms} ms")
            if polls_state and bus is not None:
                self._poll_state(bus)
            for device in self.devices:
                device.supervise()
            await asyncio.sleep(self.supervise_s)

    def _poll_state(self, bus: can.BusABC) -> None:
        try:
            state = _POLLED_STATES.get(bus.state)
        except (can.CanError, OSError) as err:
            self._fail(f"bus state unreadable: {err}")
            return
        if state is not None:
            self._set_state(state, "bus.state")

    # -- transmitting ---------------------------------------------------------------------------

    async def _transmit(self) -> None:
        periodic = [tx for tx in self.tx if tx.period_s is not None]
        if not periodic:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        for tx in periodic:
            tx.due = start
        while True:
            now = loop.time()
            for tx in periodic:
                if now >= tx.due:
                    self.send(tx)
                    assert tx.period_s is not None
                    # Absolute deadlines keep the rate; a pass that came very late
                    # skips the frames it missed rather than sending a burst.
                    tx.due += tx.period_s
                    if tx.due <= now:
                        tx.due = now + tx.period_s
            await asyncio.sleep(max(0.0, min(tx.due for tx in periodic) - loop.time()))

    def send(self, tx: _Tx) -> None:
        bus = self.bus
        tx.dirty = True  # until the frame is out
        if bus is None or self.state is BusHealth.OFF:
            return
        try:
            # timeout 0: a full transmit queue (no ACK, bus-off) fails at once, never blocks.
            bus.send(tx.frame, timeout=0)
        except (can.CanError, OSError) as err:
            if getattr(err, "error_code", None) in LINK_DOWN_ERRNOS:
                self._fail(f"send failed: {err}")
            else:
                tx.device.channel.error("write", f"{tx.message.name}: {err}")
            return
        tx.dirty = False
        if not tx.device.rx and tx.device.channel.health.state != "online":
            tx.device.channel.good(0.0)  # a device we only send to: a sent frame was ACKed

    def _send_dirty(self) -> None:
        """Frames whose values changed while the bus was closed or off: an on-change-only
        frame has no next period to bring them."""
        for tx in self.tx:
            if tx.dirty:
                self.send(tx)

    def write(self, device: _Device, writes: list[tuple[int, Any]]) -> None:
        """Output values from the control loop into their frames; on-change frames go now."""
        changed: dict[int, _Tx] = {}
        for index, value in writes:
            target = device.outputs.get(index)
            if target is None:
                continue
            tx, signal = target
            point = device.config.points[index]
            try:
                raw = point.to_raw(value)
                values = {**tx.values, signal: int(raw) if isinstance(raw, bool) else raw}
                data = tx.message.encode(values, scaling=True, strict=True)
            except (CantoolsError, ValueError, TypeError, OverflowError) as err:
                # OverflowError: a raw value wider than its signal, where no min/max says so
                detail = f"{point.entity}.{point.component}.{point.field} = {value!r}: {err}"
                device.channel.error("write", detail)
                continue
            tx.values = values
            tx.frame.data = bytearray(data)
            changed[id(tx)] = tx
        for tx in changed.values():
            if tx.on_change:
                self.send(tx)

    # -- reporting ------------------------------------------------------------------------------

    def _all_devices(self, kind: str, detail: str) -> None:
        for device in self.devices:
            device.channel.error(kind, detail)

    def _log(self, kind: str, text: str, detail: object) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -math.inf) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.warning(text, self.config.name, detail)


class CanIo:
    """The io part: one ``_BusLink`` per configured bus."""

    def __init__(self, config: CanConfig, context: IoContext) -> None:
        self.links: list[_BusLink] = []
        handlers: dict[str, WriteHandler] = {}
        for bus in config.buses:
            devices = [
                _Device(device, context)
                for device in config.devices
                if config.bus_of(device) == bus.name
            ]
            link = _BusLink(bus, devices)
            self.links.append(link)
            for device in devices:
                handlers[device.config.name] = functools.partial(link.write, device)
        on_writes(context, handlers)

    @property
    def frames(self) -> int:
        return sum(link.frames for link in self.links)

    @property
    def foreign(self) -> int:
        return sum(link.foreign for link in self.links)

    @property
    def garbage(self) -> int:
        return sum(link.garbage for link in self.links)

    async def start(self) -> None:
        for link in self.links:
            link.start()

    async def stop(self) -> None:
        for link in self.links:
            await link.stop()


SECTION = ConfigSection(DRIVER, CanConfig, CanPlugin, io=CanIo)
