"""The ``can`` config section: buses, devices (a DBC or inline messages), points, rx
and tx; every check here, so a mistake is reported with its key path."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import can
import cantools
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.errors import Error as CantoolsError
from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator

from edgeloop.config import KeyPath, Section
from edgeloop.drivers.can.codec import frame_key, initial_values
from edgeloop.drivers.points import EntityName, Finite, Identifier, PointMap
from edgeloop.safety.watchdogs import WatchdogSettings

DRIVER = "can"
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


class CanDevice(WatchdogSettings):
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

    def watchdog_deadline_s(self) -> float | None:
        """``watchdog_s``, or ``timeout_periods`` of its slowest received message with a
        known period; None (not watched) when no input message has one."""
        if self.watchdog_s is not None:
            return self.watchdog_s
        periods = [self.rx_period_s(p.message) for p in self.points if p.reads]
        known = [period for period in periods if period is not None]
        return self.timeout_periods * max(known) if known else None

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


def used_messages(device: CanDevice) -> list[Message]:
    names = dict.fromkeys([p.message for p in device.points] + [t.message for t in device.tx])
    return [device.database.get_message_by_name(name) for name in names]


def _unique(what: str, names: Sequence[str]) -> None:
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique: {', '.join(dupes)}")


def _hint(name: str, names: list[str]) -> str:
    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
