"""World fields served as a Modbus TCP server (slave), for a SCADA, an HMI or a stock tool.

Config section ``modbus_server``: ``host``, ``port``, ``unit_id`` and ``points``, each a
World field (``entity``, ``component``, ``field``, by name) at a ``table`` and
``address``, encoded as ``type`` with scale/offset and byte/word order, as the Modbus
client driver reads them. The component is found by its class name among the World's
component types, so a plain component (``TankLevel``) or one made for another driver's
points (``Tank``) can be served.

Only the map is served: an address no point occupies is answered with exception 2
(illegal data address), a point the World has no value for (yet) with exception 4, a
unit id other than ``unit_id`` with exception 0x0B. The server is pymodbus 3.16's,
which takes one request per read from a connection: a client must wait for each answer
(SCADA and HMI clients do; one that pipelines has the requests after the first of a
read left unanswered).

Writes: a point with ``writable: true`` (holding registers and coils only) may be
written, as a whole; anything else is refused by the server with exception 2, a value
outside ``min``/``max`` with exception 3. An accepted write goes to the control process
as a command, which checks it again (the field must exist and be writable, the value
within limits, the field not held by the safe state), applies it to the field, logs
it with the peer's address and counts it. A read-back shows the written value at once
and the World's from the next snapshot on (sent at once after a refusal, so a refused
value does not linger). Every write, applied or refused by either side, is in the
audit log with the peer's address.

Records on the io channel:

- ``modbus_server.values``, control -> io, NORMAL: ``[[index, value], ...]``, every
  point the World has a value for (a full snapshot, so conflating keeps the latest),
  sent when any changed and at least every ``REFRESH_S``.
- ``modbus_server.write``, io -> control, HIGH, key the peer's ``host:port``:
  ``[[index, value], ...]``, engineering values of the points one request wrote.
- ``modbus_server.refused``, io -> control, HIGH, key the peer's ``host:port``:
  ``[where, value, reason]`` of a write the io side answered with an exception, for
  the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Annotated, Any

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.config import ConfigSection, Section
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.modbus.codec import (
    TABLE_OF_FUNCTION,
    ByteOrder,
    Table,
    decode,
    encode,
    register_count,
)
from edgeloop.drivers.points import PointMap
from edgeloop.field_ref import FieldIndex, FieldRef
from edgeloop.logs import every_power_of_ten
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import HOME_WORKER, IoInput, IoLink
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import MAX_RECORD_BYTES, Record
from edgeloop.safety.audit_events import audit
from edgeloop.safety.field_writes import ValueKind, checked_write, value_refusal
from edgeloop.schedule import (
    ActuatorOutput,
    FixedUpdate,
    IoReceive,
    IoSend,
    ModbusServerInput,
    ModbusServerOutput,
    SensorInput,
)
from edgeloop.wiring import Claim
from edgeloop.world import World

log = logging.getLogger("edgeloop.modbus_server")

TOPIC_VALUES = "modbus_server.values"
TOPIC_WRITE = "modbus_server.write"
TOPIC_REFUSED = "modbus_server.refused"
REFRESH_S = 1.0  # a snapshot at least this often, so a restarted io process has values
RESOLVE_EVERY_S = 1.0  # how often fields not found yet are looked for again
MAX_POINTS = 2000


_TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")
_BIT_TABLES = ("coil", "discrete")
_WRITABLE_TABLES = ("holding", "coil")
_SNAPSHOT_BYTES_PER_POINT = 16  # msgpack of [index, float64] with room to spare

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]


class ServedPoint(PointMap):
    """A World field at a Modbus address; ``writable`` lets clients write it, within
    ``min``/``max`` (engineering units)."""

    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535, strict=True)]
    count: Annotated[int, Field(ge=1, le=125, strict=True)] | None = None  # string registers
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    writable: Flag = False

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("table") in _BIT_TABLES and "type" not in data:
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ServedPoint:
        if "direction" in self.model_fields_set:
            raise ValueError("direction is for client points; a served point has writable")
        if self.table in _BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit: type must be bool, not {self.type}")
        if self.writable and self.table not in _WRITABLE_TABLES:
            raise ValueError(f"{self.table} is read-only in Modbus: it cannot be writable")
        if self.type == "string" and self.count is None:
            raise ValueError("a string needs count: the registers it occupies (2 bytes each)")
        if self.type != "string" and self.count is not None:
            raise ValueError(f"count is for strings; a {self.type} has a fixed size")
        if self.address + self.width > 65536:
            raise ValueError(f"address {self.address} + {self.width} runs past 65535")
        if self.safe_value is not None:
            raise ValueError("safe_value is for outputs to devices; a served point has none")
        return self

    @property
    def takes_writes(self) -> bool:
        return self.writable

    @property
    def _not_written(self) -> str:
        return "set writable: true or remove them"

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return 1 if self.table in _BIT_TABLES else register_count(self.type, self.count)

    def refusal(self, value: Any) -> str | None:
        """Why a client may not write ``value`` (an engineering value), or None."""
        if not self.writable:
            return "the point is not writable"
        kind: ValueKind = "bool" if self.type == "bool" else "number"
        if self.type == "string":
            kind = "string"
        return value_refusal(value, kind, low=self.min, high=self.max)


class ModbusServerConfig(Section):
    host: Annotated[str, Field(min_length=1, max_length=253)] = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255, strict=True)] = 1
    # Modbus has no login: who may write is said by address. This host only, unless set.
    write_from: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.1/32"), ip_network("::1/128")]
    )
    points: Annotated[list[ServedPoint], Field(min_length=1, max_length=MAX_POINTS)]

    def may_write(self, peer: str) -> bool:
        """True if the client at ``peer`` (``host:port``) is in ``write_from``."""
        host = peer.rpartition(":")[0].strip("[]")
        try:
            address = ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.write_from)

    @field_validator("points")
    @classmethod
    def _no_overlaps(cls, points: list[ServedPoint]) -> list[ServedPoint]:
        taken: dict[tuple[str, int], int] = {}
        for index, point in enumerate(points):
            for address in range(point.address, point.address + point.width):
                other = taken.setdefault((point.table, address), index)
                if other != index:
                    raise ValueError(
                        f"points[{index}] ({point.path}) overlaps points[{other}] "
                        f"({points[other].path}) at {point.table} {address}"
                    )
        snapshot = sum(_SNAPSHOT_BYTES_PER_POINT + 2 * point.width for point in points)
        if snapshot > MAX_RECORD_BYTES:
            raise ValueError(
                f"the points' values take up to {snapshot} bytes, above the io channel's "
                f"{MAX_RECORD_BYTES} per record: serve fewer or shorter strings"
            )
        return points


# -- control side -------------------------------------------------------------------------


@dataclass
class ServedFields:
    """Resource: the fields the Modbus server exposes, found by name in the World, and
    what happened to external writes."""

    points: Sequence[ServedPoint]
    config: ModbusServerConfig
    components: list[Component | None] = field(default_factory=list)
    writes_applied: int = 0
    writes_refused: int = 0
    _last: list[Any] = field(default_factory=list)
    _sent_at: float | None = None
    _resolve_at: float = 0.0
    _reported: set[int] = field(default_factory=set)  # points whose absence was logged

    def __post_init__(self) -> None:
        self.components = [None] * len(self.points)

    def resolve(self, world: World) -> None:
        """Find the component of every point not found yet."""
        fields = FieldIndex(world)
        for index, point in enumerate(self.points):
            if self.components[index] is not None:
                continue
            component, problem = fields.find(FieldRef(point.entity, point.component, point.field))
            self.components[index] = component
            if problem and index not in self._reported:
                self._reported.add(index)
                log.warning(
                    "modbus_server.points[%d] (%s) not served yet: %s", index, point.path, problem
                )

    def values(self) -> list[Any]:
        """The current value of each point; None where it has none."""
        values: list[Any] = []
        for index, point in enumerate(self.points):
            component = self.components[index]
            if component is not None and not component.attached():
                component = self.components[index] = None  # its entity is gone
            values.append(None if component is None else getattr(component, point.field))
        return values


def send_served_values(world: World) -> None:
    """ModbusServerOutput: a snapshot of the served fields when any changed."""
    served = world.resource(ServedFields)
    now = world.resource(Time).elapsed
    if None in served.components and now >= served._resolve_at:
        served._resolve_at = now + RESOLVE_EVERY_S
        served.resolve(world)
    values = served.values()
    due = served._sent_at is None or now - served._sent_at >= REFRESH_S
    if not due and not _changed(values, served._last):
        return
    link = world.get_resource(IoLink)
    if link is None:
        return
    served._last = values
    served._sent_at = now
    snapshot = [[index, value] for index, value in enumerate(values) if value is not None]
    link.send(TOPIC_VALUES, "", snapshot, Priority.NORMAL, worker=HOME_WORKER)


def _changed(values: list[Any], last: list[Any]) -> bool:
    if len(values) != len(last):
        return True
    for value, before in zip(values, last, strict=True):
        if value != before and not (_is_nan(value) and _is_nan(before)):
            return True
    return False


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def apply_external_writes(world: World) -> None:
    """ModbusServerInput: writes from Modbus clients, checked as any command, applied."""
    served = world.resource(ServedFields)
    for message in world.read(IoInput):
        if message.topic == TOPIC_WRITE:
            peer = message.key or "an unknown peer"
            for write in message.payload:
                if isinstance(write, list) and len(write) == 2:
                    _apply_write(world, served, peer, write[0], write[1])
        elif message.topic == TOPIC_REFUSED and _is_refusal(message.payload):
            where, value, reason = message.payload
            _refuse(
                world,
                served,
                message.key or "an unknown peer",
                where=where,
                value=value,
                reason=reason,
            )


def _is_refusal(payload: Any) -> bool:
    return (
        isinstance(payload, list)
        and len(payload) == 3
        and isinstance(payload[0], str)
        and isinstance(payload[2], str)
    )


def _apply_write(world: World, served: ServedFields, peer: str, index: Any, value: Any) -> None:
    if not served.config.may_write(peer):
        where = f"points[{index!r}]"
        _refuse(
            world, served, peer, where=where, value=value, reason="the client is not in write_from"
        )
        return
    if not isinstance(index, int) or not 0 <= index < len(served.points):
        _refuse(
            world, served, peer, where=f"points[{index!r}]", value=value, reason="no such point"
        )
        return
    point = served.points[index]
    component = served.components[index]
    key = (point.entity, point.component, point.field)
    reason = point.refusal(value)
    new, reason = (None, reason) if reason else checked_write(world, key, component, value)
    if reason is not None or component is None:
        _refuse(world, served, peer, where=point.path, value=value, reason=reason or "")
        return
    current = getattr(component, point.field)
    served.writes_applied += 1
    audit(world, "command", by=f"modbus client {peer}", what=f"modbus_server write {point.path}",
          value=value, accepted=True, reason="applied")  # fmt: skip
    if new != current:
        setattr(component, point.field, new)
        log.info("write from %s: %s = %r", peer, point.path, new)


def _refuse(
    world: World, served: ServedFields, peer: str, *, where: str, value: Any, reason: str
) -> None:
    served.writes_refused += 1
    served._sent_at = None  # the io side shows the refused value until the next snapshot
    audit(world, "command", by=f"modbus client {peer}", what=f"modbus_server write {where}",
          value=value, accepted=False, reason=reason)  # fmt: skip
    if every_power_of_ten(served.writes_refused):
        log.warning(
            "write from %s refused: %s = %r: %s (%d refused so far)",
            peer,
            where,
            value,
            reason,
            served.writes_refused,
        )


class ModbusServerPlugin:
    def __init__(self, config: ModbusServerConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        app.insert_resource(ServedFields(self.config.points, self.config))
        app.configure_sets(FixedUpdate, IoReceive, ModbusServerInput, SensorInput)
        app.configure_sets(FixedUpdate, ActuatorOutput, ModbusServerOutput, IoSend)
        app.add_systems(FixedUpdate, apply_external_writes, in_set=ModbusServerInput)
        app.add_systems(FixedUpdate, send_served_values, in_set=ModbusServerOutput)


# -- io side ------------------------------------------------------------------------------


class ServedRegisters(SimCore):
    """The register map as the pymodbus server reads and writes it.

    A point's registers hold the World's value (encoded), or nothing before the World
    has sent one. A write goes to the control process; the registers hold the written
    value until the next snapshot of the World replaces it.
    """

    def __init__(self, config: ModbusServerConfig, context: IoContext) -> None:
        self.config = config
        self.unit_id = config.unit_id
        self.points = config.points
        self.context = context
        self.registers: list[list[int] | None] = [None] * len(self.points)
        self.cells: dict[Table, dict[int, tuple[int, int]]] = {t: {} for t in _TABLES}
        for index, point in enumerate(self.points):
            for at in range(point.width):
                self.cells[point.table][point.address + at] = (index, at)
        self.encode_errors = 0

    def device_ids(self) -> list[int]:
        return [self.unit_id]

    def update(self, snapshot: list[list[Any]]) -> None:
        """The registers of a snapshot from the control process."""
        registers: list[list[int] | None] = [None] * len(self.points)
        for index, value in snapshot:
            if not (isinstance(index, int) and 0 <= index < len(self.points)):
                continue
            point = self.points[index]
            try:
                raw = point.to_raw(value)
                registers[index] = (
                    [int(raw)]
                    if point.table in _BIT_TABLES
                    else encode(point.type, raw, point.byte_order, point.word_order, point.count)
                )
            except (TypeError, ValueError, OverflowError) as err:
                # Only this point answers exception 4 (no value) until its value fits again.
                self.encode_errors += 1
                if every_power_of_ten(self.encode_errors):
                    log.warning("%s = %r cannot be served: %s", point.path, value, err)
        self.registers = registers

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = self._table(device_id, func_code)
        cells = self.cells[table]
        values: list[int] = []
        for cell_address in range(address, address + count):
            cell = cells.get(cell_address)
            if cell is None:
                return ExcCodes.ILLEGAL_ADDRESS
            registers = self.registers[cell[0]]
            if registers is None:
                return ExcCodes.DEVICE_FAILURE
            values.append(registers[cell[1]])
        if table in _BIT_TABLES:
            return [value != 0 for value in values]
        return values

    def write(
        self,
        peer: str,
        device_id: int,
        func_code: int,
        address: int,
        values: list[int] | list[bool],
    ) -> ExcCodes | None:
        """A write from the client at ``peer`` (``host:port``): refused, or sent to the
        control process."""
        table = self._table(device_id, func_code)
        where = f"{table} {address}"
        if not self.config.may_write(peer):
            return self._refused(peer, where, None, "the client is not in write_from")
        cells = self.cells[table]
        written: dict[int, list[int]] = {}
        for cell_address, value in enumerate(values, start=address):
            cell = cells.get(cell_address)
            if cell is None or not self.points[cell[0]].writable:
                reason = f"no writable point at {table} {cell_address}"
                return self._refused(peer, where, None, reason, ExcCodes.ILLEGAL_ADDRESS)
            written.setdefault(cell[0], []).append(int(value))
        writes: list[list[Any]] = []
        for index, registers in written.items():
            point = self.points[index]
            if len(registers) != point.width:  # part of a value is no value
                reason = f"{len(registers)} of the point's {point.width} registers"
                return self._refused(peer, point.path, None, reason, ExcCodes.ILLEGAL_ADDRESS)
            value = self._value(point, registers)
            refusal = "not a value of the point's type" if value is None else point.refusal(value)
            if refusal is not None:
                return self._refused(peer, point.path, value, refusal, ExcCodes.ILLEGAL_VALUE)
            writes.append([index, value])
        self.context.send(Record(TOPIC_WRITE, peer, Priority.HIGH, writes))
        # The answer echoes the registers (FC5, FC6, FC23): they hold the written value
        # until the World's comes back, the same if the control process applied it.
        for index, registers in written.items():
            self.registers[index] = registers
        return None

    def _refused(
        self,
        peer: str,
        where: str,
        value: Any,
        reason: str,
        code: ExcCodes = ExcCodes.ILLEGAL_FUNCTION,
    ) -> ExcCodes:
        """Answer ``code``; the control process audits the refusal."""
        self.context.send(Record(TOPIC_REFUSED, peer, Priority.HIGH, [where, value, reason]))
        return code

    @staticmethod
    def _value(point: ServedPoint, registers: list[int]) -> Any:
        if point.table in _BIT_TABLES:
            return registers[0] != 0
        try:
            return point.to_value(decode(point.type, registers, point.byte_order, point.word_order))
        except ValueError:  # a string that is not UTF-8
            return None

    def _table(self, device_id: int, func_code: int) -> Table:
        if device_id != self.unit_id:
            raise NoSuchIdException(f"no unit id {device_id}")
        return TABLE_OF_FUNCTION[func_code]


class _ConnectionRegisters(SimCore):
    """The registers as one connection's requests see them: its writes carry its own
    peer address, whatever other connections do meanwhile."""

    def __init__(self, registers: ServedRegisters, connection: _PeerHandler) -> None:
        self.registers = registers
        self.connection = connection

    @property
    def peer(self) -> str:
        transport = self.connection.transport
        peer = transport.get_extra_info("peername") if transport else None
        return f"{peer[0]}:{peer[1]}" if peer else ""

    def device_ids(self) -> list[int]:
        return self.registers.device_ids()

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        return await self.registers.async_getValues(device_id, func_code, address, count)

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        return self.registers.write(self.peer, device_id, func_code, address, values)


@dataclass(frozen=True)
class _ConnectionServer:
    """What pymodbus's request handler reads of its ``server`` (``handle_request``
    passes ``server.context`` to the datastore), with this connection's registers."""

    context: _ConnectionRegisters
    broadcast_enable: bool
    ignore_missing_devices: bool


class _PeerHandler(ServerRequestHandler):
    """pymodbus's handler of one connection: its requests reach the registers through a
    view of its own, so each write is authorised by its own connection's address (not a
    peer attribute shared by every connection)."""

    def __init__(self, owner: _Server) -> None:
        super().__init__(owner, None, None, None)  # type: ignore[no-untyped-call]
        self.server = _ConnectionServer(
            _ConnectionRegisters(owner.registers, self),
            owner.broadcast_enable,
            owner.ignore_missing_devices,
        )


class _Server(ModbusTcpServer):
    def __init__(self, registers: ServedRegisters, host: str, port: int) -> None:
        # pymodbus wants a device to build; the register map replaces it.
        super().__init__(
            SimDevice(0, simdata=SimData(0, datatype=DataType.REGISTERS)), address=(host, port)
        )
        self.context = registers
        self.registers = registers

    def callback_new_connection(self) -> _PeerHandler:
        return _PeerHandler(self)


class ModbusServerIo:
    """The io part: a Modbus TCP server over the registers the World's values fill."""

    def __init__(self, config: ModbusServerConfig, context: IoContext) -> None:
        self.config = config
        self.registers = ServedRegisters(config, context)
        self.server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        context.on_topic(TOPIC_VALUES, lambda record: self.registers.update(record.payload))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """Listen, retrying with backoff while the port cannot be had."""
        backoff = Backoff(initial_s=1.0, max_s=30.0)
        where = f"{self.config.host}:{self.config.port}"
        while True:
            server = _Server(self.registers, self.config.host, self.config.port)
            if await server.listen():
                self.server = server
                log.info("serving %d points on %s", len(self.config.points), where)
                return
            if every_power_of_ten(backoff.attempts + 1):
                log.error("cannot listen on %s (in use, or not allowed); retrying", where)
            await asyncio.sleep(backoff.next_delay())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None


def wiring(config: ModbusServerConfig) -> Iterator[Claim]:
    """Every point is read by the server; a writable one written by its clients."""
    for index, point in enumerate(config.points):
        by, at = f"modbus_server points[{index}]", ("points", index)
        yield Claim(point.path, "read", by, "Modbus-server read", at, unit=point.unit)
        if point.writable:
            how = "Modbus-server write"
            yield Claim(
                point.path, "write", by, how, at, min=point.min, max=point.max, unit=point.unit
            )


SECTION = ConfigSection(
    "modbus_server", ModbusServerConfig, ModbusServerPlugin, io=ModbusServerIo, wiring=wiring
)
