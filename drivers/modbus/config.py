"""The ``modbus`` config section: lines (TCP or RTU), their devices and points.

Every check is here, in the models, so the config loader reports a mistake with its
file and line; the io side can then trust what it is given.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeloop.config import Section
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.modbus.codec import ByteOrder, Table, register_count
from edgeloop.drivers.modbus.mbap import MAX_OUTSTANDING
from edgeloop.drivers.modbus.plan import BIT_LIMIT, REGISTER_LIMIT
from edgeloop.drivers.points import EntityName, Identifier, PointMap
from edgeloop.safety.watchdogs import WatchdogSettings

DRIVER = "modbus"
DEFAULT_GROUP = "default"
RTU_FAST_GAP_S = 0.00175  # the fixed inter-frame gap above 19200 baud (Modbus over serial line)
BIT_TABLES = ("coil", "discrete")
WRITE_REGISTER_LIMIT = 123  # registers per write (FC16)
WRITE_BIT_LIMIT = 1968  # coils per write (FC15)
RTU_BYTESIZE = 8  # an RTU frame carries 8 data bits a character
_READ_ONLY_TABLES = ("input", "discrete")

Positive = Annotated[float, Field(gt=0, le=3600, strict=True)]
Flag = Annotated[bool, Field(strict=True)]

WATCHDOG_POLLS = 3  # a device silent this many polls (plus a timeout) trips its watchdog


class ModbusPoint(PointMap):
    """A point on a Modbus device: ``table`` and ``address`` (0-based, as on the wire),
    ``count`` registers for a string, the byte and word order of multi-byte values and
    the poll ``group`` it is read in."""

    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535, strict=True)]
    count: Annotated[int, Field(ge=1, le=REGISTER_LIMIT, strict=True)] | None = None
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    group: Identifier = DEFAULT_GROUP

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("table") in BIT_TABLES and "type" not in data:
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _fits_its_table(self) -> ModbusPoint:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit: type must be bool, not {self.type}")
        if self.table in _READ_ONLY_TABLES and self.writes:
            raise ValueError(f"{self.table} is read-only: direction must be input")
        if self.type == "string" and self.count is None:
            raise ValueError("a string needs count: the registers it occupies (2 bytes each)")
        if self.type != "string" and self.count is not None:
            raise ValueError(f"count is for strings; a {self.type} has a fixed size")
        if self.writes and self.count is not None and self.count > WRITE_REGISTER_LIMIT:
            raise ValueError(
                f"a written string takes at most {WRITE_REGISTER_LIMIT} registers (one FC16 "
                f"write), not count {self.count}"
            )
        if self.address + self.width > 65536:
            raise ValueError(f"address {self.address} + {self.width} runs past 65535")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return 1 if self.table in BIT_TABLES else register_count(self.type, self.count)


class ModbusDevice(WatchdogSettings):
    """A device (unit id) on a line, its poll groups and its points."""

    name: EntityName
    unit_id: Annotated[int, Field(ge=0, le=255, strict=True)] = 1
    poll_s: Positive = 1.0  # the period of the "default" poll group
    # more poll groups: name -> period in s
    groups: dict[Identifier, Positive] = Field(default_factory=dict)
    max_gap: Annotated[int, Field(ge=0, le=REGISTER_LIMIT - 2, strict=True)] = 0
    max_registers: Annotated[int, Field(ge=1, le=REGISTER_LIMIT, strict=True)] = REGISTER_LIMIT
    max_bits: Annotated[int, Field(ge=1, le=BIT_LIMIT, strict=True)] = BIT_LIMIT
    verify_writes: Flag = False  # read back what was written and compare
    # read requests of a poll on the wire at once (TCP): for devices and gateways that
    # accept several outstanding transactions
    max_outstanding: Annotated[int, Field(ge=1, le=MAX_OUTSTANDING, strict=True)] = 1
    points: Annotated[list[ModbusPoint], Field(min_length=1)]

    @model_validator(mode="after")
    def _points_fit(self) -> ModbusDevice:
        if DEFAULT_GROUP in self.groups:
            raise ValueError(f"groups: {DEFAULT_GROUP!r} is poll_s; name the other groups")
        for i, point in enumerate(self.points):
            where = f"points[{i}] ({point.entity}.{point.component}.{point.field})"
            if point.group != DEFAULT_GROUP and point.group not in self.groups:
                known = ", ".join([DEFAULT_GROUP, *self.groups])
                raise ValueError(f"{where}: poll group {point.group!r} is not one of: {known}")
            if point.table not in BIT_TABLES and point.width > self.max_registers:
                raise ValueError(
                    f"{where}: {point.width} registers do not fit one read of "
                    f"max_registers {self.max_registers}"
                )
        return self

    def period_s(self, group: str) -> float:
        return self.poll_s if group == DEFAULT_GROUP else self.groups[group]

    def watchdog_deadline_s(self, timeout_s: float) -> float:
        """``watchdog_s``, or 3 polls of its slowest group plus one exchange's timeout."""
        if self.watchdog_s is not None:
            return self.watchdog_s
        return WATCHDOG_POLLS * max([self.poll_s, *self.groups.values()]) + timeout_s


class TcpLine(Section):
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 502
    # true: one connection for every device, one request at a time (a serial gateway);
    # false: a connection per device, polled concurrently
    shared_connection: Flag = False


class RtuLine(Section):
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(ge=300, le=4_000_000, strict=True)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Annotated[int, Field(strict=True)] = RTU_BYTESIZE
    # silence after each exchange before the next request, for devices slow to turn
    # their RS-485 driver around; never less than the 3.5-character inter-frame gap
    inter_request_delay_s: Annotated[float, Field(ge=0, le=10, strict=True)] = 0.0
    local_echo: Flag = False  # the adapter echoes what it sends: discard it

    @field_validator("bytesize")
    @classmethod
    def _eight_data_bits(cls, bytesize: int) -> int:
        if bytesize != RTU_BYTESIZE:
            raise ValueError(f"Modbus RTU needs {RTU_BYTESIZE} data bits: bytesize must be 8")
        return bytesize

    def gap_s(self) -> float:
        """The silence the line needs between a response and the next request."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        frame_gap = 3.5 * bits / self.baudrate if self.baudrate <= 19200 else RTU_FAST_GAP_S
        return max(frame_gap, self.inter_request_delay_s)


class BackoffConfig(Section):
    initial_s: Positive = 0.5
    max_s: Positive = 30.0
    jitter: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.2

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s {self.max_s} is below initial_s {self.initial_s}")
        return self

    def make(self) -> Backoff:
        return Backoff(self.initial_s, self.max_s, self.jitter)


class ModbusLine(Section):
    """A TCP address or an RTU serial port, with the devices reached through it."""

    name: EntityName | None = None  # for logs; the address when not given
    tcp: TcpLine | None = None
    rtu: RtuLine | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60, strict=True)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10, strict=True)] = 1  # re-sends after a timeout
    backoff: BackoffConfig = BackoffConfig()
    offline_after: Annotated[int, Field(ge=1, le=1000, strict=True)] = 3  # errors in a row
    devices: Annotated[list[ModbusDevice], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_transport(self) -> ModbusLine:
        if (self.tcp is None) == (self.rtu is None):
            raise ValueError("a line is either tcp: {host, port} or rtu: {port, ...}; give one")
        for i, device in enumerate(self.devices):
            if self.rtu is not None and device.max_outstanding != 1:
                raise ValueError(
                    f"devices[{i}] ({device.name}).max_outstanding: an RTU line carries one "
                    f"request at a time; max_outstanding must be 1, not {device.max_outstanding}"
                )
        units = [device.unit_id for device in self.devices]
        twice = sorted({unit for unit in units if units.count(unit) > 1})
        if twice:
            raise ValueError(f"unit_id {twice[0]} is used by two devices on this line")
        return self

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.tcp is not None:
            return f"{self.tcp.host}:{self.tcp.port}"
        assert self.rtu is not None
        return self.rtu.port


class ModbusConfig(Section):
    lines: Annotated[list[ModbusLine], Field(min_length=1)]

    @field_validator("lines")
    @classmethod
    def _device_names_unique(cls, lines: list[ModbusLine]) -> list[ModbusLine]:
        names = [device.name for line in lines for device in line.devices]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"device name {twice[0]!r} is used twice")
        return lines

    def devices(self) -> list[ModbusDevice]:
        return [device for line in self.lines for device in line.devices]
