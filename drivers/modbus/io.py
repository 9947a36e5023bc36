"""The io side of the Modbus driver: a task per connection polling and writing its devices.

One connection serves its devices one job (a poll of a group, or a device's writes) at a
time: an RTU line (the bus allows nothing else), or a TCP gateway with
``shared_connection``. Otherwise every device on a TCP address gets its own connection,
so devices are polled concurrently. A poll's read requests go one at a time unless the
device has ``max_outstanding`` > 1 (TCP only): then up to that many are outstanding on
the connection, sent in one write when due together and matched by transaction id
(``mbap``). By default they are not pipelined: a device, and pymodbus 3.16's own server,
may answer only the first of several requests that arrive together. Writes always go
one at a time, in order. TCP is framed by ``mbap``; RTU by pymodbus's client.

A device whose request times out, answers garbage or drops the connection is backed off
(exponential, with jitter) and skipped until its backoff expires, so on a shared line
the healthy devices keep their poll rate; its values turn STALE until it answers again.
A Modbus exception answer only makes that block's values BAD: the device is alive.

Polls and writes take turns by when they fell due, so control logic that changes an
output every tick cannot starve the polls of its device or of its line. A group whose
poll is overdue (the line is busy elsewhere) turns STALE even though its device answers.
The safe values (CRITICAL writes: an e-stop, another cause of the safe state) are due
before every poll: they wait only for the exchange under way. On a device with
``max_outstanding`` > 1 they do not wait for it either: they go on the wire beside the
poll's reads, within the window, and their answers are taken once the poll is done.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from edgeloop.drivers.base import DriverIo, FaultLog, Link, finish
from edgeloop.drivers.field_link import DeviceChannel, on_writes
from edgeloop.drivers.health import ErrorKind
from edgeloop.drivers.modbus.codec import BitDecoder, RegisterDecoder, Slot, Table, encode
from edgeloop.drivers.modbus.config import (
    BIT_TABLES,
    DRIVER,
    WRITE_BIT_LIMIT,
    WRITE_REGISTER_LIMIT,
    ModbusConfig,
    ModbusDevice,
    ModbusLine,
    ModbusPoint,
)
from edgeloop.drivers.modbus.mbap import MbapConnection
from edgeloop.drivers.modbus.plan import plan_reads
from edgeloop.drivers.points import Quality, default_value
from edgeloop.realtime.io_part import IoContext

log = logging.getLogger("edgeloop.modbus")

LOG_EVERY_S = 10.0  # at most one state-change line per device this often
# A group not read within 2 periods (or 2 polls of it, when a poll takes longer) plus a
# timeout is overdue; the watch for that looks twice within the shortest such window.
OVERDUE_PERIODS = 2.0
OVERDUE_CHECKS_PER_WINDOW = 2.0

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)


class _RegistersAnswer(ModbusPDU):
    """An answer to FC3/FC4 decoded with one ``struct`` call instead of pymodbus's one per
    register (the largest single cost of polling 125 registers), keeping the bytes as
    sent for the block decoder."""

    raw = b""

    def decode(self, data: bytes) -> None:
        size = data[0]
        if size >= len(data) or size % 2:
            raise ModbusIOException(f"byte count {size} does not fit the answer")
        self.raw = data[1 : 1 + size]

    # As registers only when asked (a read-back, a log line): a poll's block decoder
    # reads ``raw``, and unpacking it here too was 9 % of the io process's poll work.
    @property
    def registers(self) -> Sequence[int]:
        return struct.unpack(f">{len(self.raw) // 2}H", self.raw) if self.raw else self._given

    @registers.setter
    def registers(self, registers: Sequence[int]) -> None:
        self._given = registers

    def __str__(self) -> str:
        # pymodbus formats every answer for its debug log, enabled or not
        return f"{type(self).__name__}(dev_id={self.dev_id}, count={len(self.registers)})"


class _HoldingAnswer(_RegistersAnswer, ReadHoldingRegistersResponse):
    pass


class _InputAnswer(_RegistersAnswer, ReadInputRegistersResponse):
    pass


class _Failure(Exception):
    """A request got no usable answer (the device or the connection is the problem)."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _Block:
    """One read request of a poll group, and how to decode its answer."""

    __slots__ = (
        "bits", "count", "indices", "key", "last", "registers", "start", "table", "wire",
    )  # fmt: skip

    def __init__(
        self, group: str, table: Table, start: int, points: Sequence[tuple[int, ModbusPoint]]
    ) -> None:
        self.table = table
        self.start = start
        self.key = f"{group}.{table}.{start}"
        self.count = max(p.address + p.width for _, p in points) - start
        self.wire = _wire(self.request())
        self.bits: BitDecoder | None = None
        self.registers: RegisterDecoder | None = None
        if table in BIT_TABLES:
            self.bits = BitDecoder(self.count, [(i, p.address - start) for i, p in points])
            self.indices = self.bits.indices
        else:
            slots = [
                Slot(i, p.address - start, p.type, p.byte_order, p.word_order, p.count,
                     p.scale, p.offset)
                for i, p in points
            ]  # fmt: skip
            self.registers = RegisterDecoder(self.count, slots)
            self.indices = self.registers.indices
        order = (
            range(self.indices, self.indices + len(points))
            if isinstance(self.indices, int)
            else self.indices
        )
        types = {i: p.type for i, p in points}
        # what a block never read shows, BAD, when the device refuses to read it
        self.last: list[Any] = [default_value(types[i]) for i in order]

    def decode(self, response: ModbusPDU) -> tuple[list[Any], list[int] | int]:
        """The values of the block's points (in ``indices`` order) and their quality."""
        if self.registers is not None:
            if not isinstance(response, _RegistersAnswer) or len(response.raw) != 2 * self.count:
                got = len(response.registers)
                raise _Failure("garbage", f"{got} registers in answer to {self.describe()}")
            return self.registers.decode(response.raw)
        assert self.bits is not None
        if len(response.bits) < self.count:
            got = len(response.bits)
            raise _Failure("garbage", f"{got} bits in answer to {self.describe()}")
        return self.bits.decode(response.bits), _GOOD

    def request(self, unit: int = 0) -> ModbusPDU:
        return _READ_REQUESTS[self.table](address=self.start, count=self.count, dev_id=unit)

    def describe(self) -> str:
        return f"{self.table} {self.start}+{self.count}"


_READ_REQUESTS: dict[str, type[ModbusPDU]] = {
    "holding": ReadHoldingRegistersRequest,
    "input": ReadInputRegistersRequest,
    "coil": ReadCoilsRequest,
    "discrete": ReadDiscreteInputsRequest,
}


def _write_pdu(request: _Write, unit: int) -> ModbusPDU:
    start, values = request.start, request.values
    if request.table == "coil" and len(values) == 1:
        return WriteSingleCoilRequest(address=start, bits=[bool(values[0])], dev_id=unit)
    if request.table == "coil":
        return WriteMultipleCoilsRequest(address=start, bits=[bool(v) for v in values], dev_id=unit)
    if len(values) == 1:
        return WriteSingleRegisterRequest(address=start, registers=[int(values[0])], dev_id=unit)
    words = [int(v) for v in values]
    return WriteMultipleRegistersRequest(address=start, registers=words, dev_id=unit)


def _wire(request: ModbusPDU) -> bytes:
    """A request's PDU as it travels: function code, then its data."""
    return bytes((request.function_code,)) + request.encode()


class _Sent:
    """A read request of a poll on its way: its answer, when it left, re-sends left."""

    __slots__ = ("answer", "at", "block", "retries")

    def __init__(self, block: _Block, answer: asyncio.Future[ModbusPDU], retries: int) -> None:
        self.block = block
        self.answer = answer
        self.at = time.monotonic()
        self.retries = retries


class _Beside:
    """A safe write sent during a poll: its device, request, values and answer."""

    __slots__ = ("answer", "at", "device", "request", "values")

    def __init__(
        self,
        device: _Device,
        request: _Write,
        values: dict[int, Any],
        answer: asyncio.Future[ModbusPDU],
    ) -> None:
        self.device = device
        self.request = request
        self.values = values
        self.answer = answer
        self.at = time.monotonic()


class _Group:
    __slots__ = ("blocks", "due", "fresh_until", "period_s", "slack_s")

    def __init__(self, period_s: float, blocks: list[_Block], slack_s: float) -> None:
        self.period_s = period_s
        self.blocks = blocks
        self.slack_s = slack_s  # the line's timeout: one exchange may hold it that long
        self.due = 0.0
        self.fresh_until = math.inf  # when its GOOD values turn STALE unless read again

    def read(self, started: float, ended: float) -> None:
        """A poll of every block answered between ``started`` and ``ended``."""
        self.fresh_until = ended + self.window_s(ended - started)

    def window_s(self, poll_s: float = 0.0) -> float:
        return OVERDUE_PERIODS * max(self.period_s, poll_s) + self.slack_s


class _Write(NamedTuple):
    table: Table
    start: int
    values: list[int] | list[bool]
    indices: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.table} {self.start}+{len(self.values)}"


class _Device:
    """One device's poll groups, pending writes, backoff and channel to the control side."""

    def __init__(self, config: ModbusDevice, line: ModbusLine, context: IoContext) -> None:
        self.config = config
        self.name = config.name
        self.unit = config.unit_id
        self.channel = DeviceChannel(
            context, config.name, DRIVER, config.points, line.offline_after
        )
        self.groups = _poll_groups(config, line.timeout_s)
        self.channel.health.set_requests_per_cycle(sum(len(g.blocks) for g in self.groups))
        self.backoff = line.backoff.make()
        self.line_retries = line.retries
        self.retry_at = 0.0  # skipped until then (monotonic s) after a failed request
        self.pending: dict[int, Any] = {}  # point index -> engineering value to write
        self.write_due = 0.0  # when the oldest of ``pending`` was queued (monotonic s)
        self.sending: dict[int, Any] = {}  # the values of the write under way
        # point index -> value the device accepted, written again when it comes back
        # online: a PLC that rebooted holds its defaults
        self.written: dict[int, Any] = {}
        self.good_reads = 0  # blocks read and published, for tests and benchmarks
        self._logged_state = "connecting"
        self._faults = FaultLog(log, LOG_EVERY_S)

    @property
    def retries(self) -> int:
        """Re-sends after a timeout: none while the device is failing, one probe will do."""
        return 0 if self.backoff.attempts else self.line_retries

    def queue_writes(self, writes: list[tuple[int, Any]], *, safe: bool = False) -> None:
        """``safe``: the safe values, due before every poll (not when queued)."""
        points = self.config.points
        queued = bool(self.pending)
        for index, value in writes:
            if 0 <= index < len(points) and points[index].writes:
                self.pending[index] = value
        if safe and self.pending:
            self.write_due = -math.inf
        elif not queued and self.pending:
            self.write_due = time.monotonic()

    def requeue(self, values: dict[int, Any], *, safe: bool = False) -> None:
        """Write ``values`` again, unless a newer value of a point is pending; ``safe``:
        they are safe values, due before every poll."""
        if values and safe:
            self.write_due = -math.inf
        elif values and not self.pending:
            self.write_due = time.monotonic()
        self.pending = {**values, **self.pending}

    @property
    def safe_waiting(self) -> bool:
        return bool(self.pending) and self.write_due == -math.inf

    def answered(self, rtt_s: float) -> None:
        """A good exchange; a device back from offline gets its outputs written again."""
        back = self.channel.health.state in _UNREACHED
        self.channel.good(rtt_s)
        self.backoff.reset()
        if back and self.written:
            self.requeue({i: v for i, v in self.written.items() if i not in self.sending})

    def expire_overdue(self, now: float) -> float:
        """Turn STALE the groups whose poll is overdue; when the next one will be."""
        soonest = math.inf
        for group in self.groups:
            if group.fresh_until <= now:
                group.fresh_until = math.inf
                for block in group.blocks:
                    self.channel.mark_stale(block.key)
            else:
                soonest = min(soonest, group.fresh_until)
        return soonest

    def failed(self, kind: ErrorKind, detail: str) -> None:
        """No usable answer: back off, and nothing read before counts as current."""
        self.channel.error(kind, detail)
        self.channel.mark_stale()
        self.retry_at = time.monotonic() + self.backoff.next_delay()
        self.log_state()

    def log_state(self) -> None:
        state = self.channel.health.state
        if state in (self._logged_state, "degraded") or not self._faults.due("state"):
            return
        self._logged_state = state
        if state == "online":
            log.info("modbus device %s (unit %d): online", self.name, self.unit)
        else:
            last_error = self.channel.health.last_error
            log.warning(
                "modbus device %s (unit %d): %s (%s)", self.name, self.unit, state, last_error
            )


_UNREACHED = ("connecting", "offline")


def _poll_groups(config: ModbusDevice, timeout_s: float) -> list[_Group]:
    by_group: dict[tuple[str, Table], list[tuple[int, ModbusPoint]]] = {}
    for index, point in enumerate(config.points):
        if point.reads:
            by_group.setdefault((point.group, point.table), []).append((index, point))
    blocks: dict[str, list[_Block]] = {}
    for (group, table), points in by_group.items():
        limit = config.max_bits if table in BIT_TABLES else config.max_registers
        spans = [(p.address, p.address + p.width) for _, p in points]
        for request in plan_reads(spans, limit, config.max_gap):
            members = [points[i] for i in request.points]
            blocks.setdefault(group, []).append(_Block(group, table, request.start, members))
    return [
        _Group(config.period_s(group), group_blocks, timeout_s)
        for group, group_blocks in blocks.items()
    ]


def _write_requests(
    points: Sequence[ModbusPoint], pending: dict[int, Any]
) -> tuple[list[_Write], list[str]]:
    """The requests that write ``pending`` (adjacent points of a table in one request),
    and the values that cannot be written, described."""
    encoded: list[tuple[Table, int, list[int] | list[bool], int]] = []
    problems: list[str] = []
    for index, value in pending.items():
        point = points[index]
        try:
            raw = point.to_raw(value)
            words: list[int] | list[bool] = (
                [bool(raw)]
                if point.table == "coil"
                else encode(point.type, raw, point.byte_order, point.word_order, point.count)
            )
        except (TypeError, ValueError) as err:
            problems.append(f"{point.entity}.{point.component}.{point.field}: {err}")
            continue
        encoded.append((point.table, point.address, words, index))
    encoded.sort(key=lambda item: (item[0], item[1]))
    requests: list[_Write] = []
    for table, address, words, index in encoded:
        if requests:
            last = requests[-1]
            limit = WRITE_BIT_LIMIT if table == "coil" else WRITE_REGISTER_LIMIT
            joins = last.table == table and last.start + len(last.values) == address
            if joins and len(last.values) + len(words) <= limit:
                values: Any = [*last.values, *words]
                requests[-1] = _Write(table, last.start, values, (*last.indices, index))
                continue
        requests.append(_Write(table, address, words, (index,)))
    return requests, problems


class _Link(Link):
    """One connection and the devices it serves, one job at a time.

    A session is one job (a poll or a write), connecting first when the connection is
    down: a dead device is backed off on its own, so the link itself only backs off
    when it cannot connect. Polling back to back, a stop is likely to meet an answer
    inside pymodbus's wait_for (RTU); the base's stop holds all the same.
    """

    def __init__(self, line: ModbusLine, devices: list[_Device]) -> None:
        super().__init__(
            f"modbus {line.label}",
            [device.channel for device in devices],
            line.backoff.make(),
            FaultLog(log, LOG_EVERY_S),
        )
        self.line = line
        self.label = line.label
        self.devices = devices
        # TCP devices that take several outstanding requests: a safe write goes beside a poll
        self._pipelined = [d for d in devices if d.config.max_outstanding > 1]
        self.gap_s = line.rtu.gap_s() if line.rtu is not None else 0.0
        self.wakeup = asyncio.Event()  # set when a write is queued, and to stop
        self.client: ModbusBaseClient | None = None  # RTU
        self.connection: MbapConnection | None = None  # TCP
        self._decoder = DecodePDU(is_server=False)
        self._decoder.register(_HoldingAnswer)
        self._decoder.register(_InputAnswer)
        self._quiet_until = 0.0
        self._heard = False  # bytes arrived since the last request went out (RTU)

    def make_client(self) -> ModbusBaseClient:
        # pymodbus retries and reconnects on its own terms; this driver does both itself,
        # per device, so that a dead device is backed off instead of retried in place
        rtu = self.line.rtu
        assert rtu is not None
        client = AsyncModbusSerialClient(
            rtu.port,
            framer=FramerType.RTU,
            baudrate=rtu.baudrate,
            bytesize=rtu.bytesize,
            parity=rtu.parity,
            stopbits=rtu.stopbits,
            handle_local_echo=rtu.local_echo,
            timeout=self.line.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        client.register(_HoldingAnswer)
        client.register(_InputAnswer)
        return client

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._heard = True
        return data

    @property
    def connected(self) -> bool:
        if self.connection is not None:
            return self.connection.connected
        return self.client is not None and bool(self.client.connected)

    def wake(self) -> None:
        self.wakeup.set()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.connection is not None:
            self.connection.close()

    def down(self, reason: str) -> None:
        for device in self.devices:
            device.channel.error("disconnect", reason)
            device.channel.mark_stale()
            device.log_state()

    async def session(self) -> str | None:
        job = self._next_job(time.monotonic())
        if isinstance(job, float):
            self.wakeup.clear()
            try:
                async with asyncio.timeout(job):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
            return None
        if not self.connected:
            failure = await self._connect()
            if failure is not None:
                return failure
        device, group = job
        if group is None:
            await self._write(device)
        else:
            await self._poll(device, group)
        return None

    def _next_job(self, now: float) -> tuple[_Device, _Group | None] | float:
        """The device and group to poll next (group None: its writes), or the seconds
        until one is due.

        The job that fell due first goes first, writes (due when queued) like polls: a
        write queued while another was under way waits for the polls due before it.
        """
        soonest = math.inf
        best: tuple[_Device, _Group | None] | None = None
        best_due = math.inf
        for device in self.devices:
            if device.retry_at > now:
                soonest = min(soonest, device.retry_at)
                continue
            if device.pending and device.write_due < best_due:
                best, best_due = (device, None), device.write_due
            for group in device.groups:
                if group.due < best_due:
                    best, best_due = (device, group), group.due
        if best is not None and best_due <= now:
            return best
        return min(min(soonest, best_due) - now, 3600.0)

    async def _connect(self) -> str | None:
        """Connect; why it failed, or None."""
        tcp = self.line.tcp
        try:
            if tcp is not None:
                if self.connection is not None:
                    self.connection.close()
                self.connection = await MbapConnection.open(
                    tcp.host, tcp.port, self.line.timeout_s, self._decoder
                )
                connected, detail = True, ""
            else:
                if self.client is None:
                    self.client = self.make_client()
                connected = await self.client.connect()
                detail = "no answer"
        except TimeoutError:
            connected, detail = False, f"no answer within {self.line.timeout_s} s"
        except (OSError, ModbusException) as err:
            connected, detail = False, str(err)
        if connected:
            self.backoff.reset()
            return None
        return f"cannot connect to {self.label}: {detail}"

    async def _exchange(self, request: ModbusPDU, retries: int) -> tuple[ModbusPDU, float]:
        """The answer to ``request`` (its ``dev_id`` set) and its round trip; re-sent up to
        ``retries`` times after a timeout, ``_Failure`` when there is no usable answer."""
        attempts = retries + 1
        wire = _wire(request) if self.connection is not None else b""
        while True:
            if self.gap_s:
                quiet = self._quiet_until - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(quiet)
            self._heard = False
            sent = time.monotonic()
            try:
                if self.connection is not None:
                    answer = self.connection.send(request.dev_id, wire)
                    self.connection.flush()
                    response = await answer
                else:
                    assert self.client is not None
                    response = await self.client.execute(False, request)
            except (ModbusException, OSError, TimeoutError) as err:
                failure = self._failure(err, sent)
            else:
                received = time.monotonic()
                self._quiet_until = received + self.gap_s
                return response, received - sent
            self._quiet_until = time.monotonic() + self.gap_s
            attempts -= 1
            if attempts == 0 or failure.kind == "disconnect":
                raise failure

    def _failure(self, err: Exception, sent: float) -> _Failure:
        if not self.connected:
            return _Failure("disconnect", f"connection to {self.label} lost")
        connection = self.connection
        if isinstance(err, ModbusIOException) and connection is not None:
            return _Failure("garbage", f"no valid answer ({err})")
        heard = connection.heard_garbage_since(sent) if connection is not None else self._heard
        if heard:
            return _Failure("garbage", f"no valid answer ({err})")
        return _Failure("timeout", f"no answer within {self.line.timeout_s} s")

    async def _poll(self, device: _Device, group: _Group) -> None:
        now = time.monotonic()
        group.due = max(group.due + group.period_s, now)
        try:
            if self.connection is not None:
                await self._poll_outstanding(device, group.blocks, self.connection)
            else:
                for block in group.blocks:
                    request = block.request(device.unit)
                    try:
                        response, rtt = await self._exchange(request, device.retries)
                    except _Failure as failure:
                        failure.detail = f"{failure.detail} ({block.describe()})"
                        raise
                    self._take(device, block, response, rtt)
        except _Failure as failure:
            device.failed(failure.kind, failure.detail)
            return
        group.read(now, time.monotonic())
        device.log_state()

    async def _poll_outstanding(
        self, device: _Device, blocks: list[_Block], connection: MbapConnection
    ) -> None:
        """Read ``blocks`` with up to the device's ``max_outstanding`` requests on the
        wire, sent together when due together; answers are taken in the blocks' order
        (an answer that overtook another waits for it, already in)."""
        window = device.config.max_outstanding
        unit, retries = device.unit, device.retries
        sent: deque[_Sent] = deque()
        beside: deque[_Beside] = deque()  # safe writes sent meanwhile, in the window too
        queued = 0
        try:
            while queued < len(blocks) or sent:
                while queued < len(blocks) and len(sent) + len(beside) < window:
                    block = blocks[queued]
                    sent.append(_Sent(block, self._send(connection, unit, block), retries))
                    queued += 1
                if not sent:  # the window is full of safe writes: their answers first
                    await self._settle(beside.popleft())
                    continue
                head = sent[0]
                if not head.answer.done():
                    connection.flush()
                    room = window - len(sent) - len(beside)
                    if room > 0 and self._pipelined:
                        await self._answer_or_safe_values(head.answer)
                        if not head.answer.done():
                            beside += self._send_safe_values(connection, room)
                            connection.flush()
                            continue
                try:
                    response = await head.answer
                except (ModbusException, OSError, TimeoutError) as err:
                    failure = self._failure(err, head.at)
                    if head.retries == 0 or failure.kind == "disconnect":
                        failure.detail = f"{failure.detail} ({head.block.describe()})"
                        raise failure from None
                    sent[0] = _Sent(
                        head.block, self._send(connection, unit, head.block), head.retries - 1
                    )
                    continue
                sent.popleft()
                self._take(device, head.block, response, time.monotonic() - head.at)
        except BaseException:
            for write in beside:  # not known to have arrived: sent again, first
                write.answer.cancel()
                write.device.requeue(write.values, safe=True)
            raise
        finally:
            for abandoned in sent:  # a failed poll: their answers are not waited for
                abandoned.answer.cancel()
        while beside:
            await self._settle(beside.popleft())

    async def _answer_or_safe_values(self, answer: asyncio.Future[ModbusPDU]) -> None:
        """Wait for ``answer`` or for a safe value to write (the write handlers wake the
        link), whichever comes first; stopping, only for ``answer``."""
        if not self.running:  # the wake-up is the stop's: it stays set for the session
            await asyncio.wait((answer,))
            return
        self.wakeup.clear()
        if any(device.safe_waiting for device in self._pipelined):
            return
        woken = asyncio.ensure_future(self.wakeup.wait())
        try:
            await asyncio.wait((answer, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    def _send_safe_values(self, connection: MbapConnection, room: int) -> list[_Beside]:
        """Up to ``room`` write requests of the safe values waiting, on the wire now."""
        sending: list[_Beside] = []
        for device in self._pipelined:
            if not device.safe_waiting or len(sending) >= room:
                continue
            pending, device.pending = device.pending, {}
            requests, problems = _write_requests(device.config.points, pending)
            for problem in problems:
                device.channel.error("write", problem)
            for position, request in enumerate(requests):
                values = {i: pending[i] for i in request.indices}
                if len(sending) >= room:
                    device.requeue(values, safe=True)
                    continue
                try:
                    wire = _wire(_write_pdu(request, device.unit))
                    answer = connection.send(device.unit, wire)
                except OSError:  # lost meanwhile: the poll fails, these go first after it
                    for rest in requests[position:]:
                        device.requeue({i: pending[i] for i in rest.indices}, safe=True)
                    break
                sending.append(_Beside(device, request, values, answer))
        return sending

    async def _settle(self, write: _Beside) -> None:
        """Take the answer to a safe write sent beside a poll, as ``_write_pending``
        would have."""
        device = write.device
        try:
            response = await write.answer
        except (ModbusException, OSError, TimeoutError) as err:
            failure = self._failure(err, write.at)
            device.failed("write", f"{failure.kind}: {failure.detail} "
                          f"({write.request.describe()})")  # fmt: skip
            device.requeue(write.values, safe=True)
            return
        if self._accepted(device, write.request, response, time.monotonic() - write.at):
            device.written.update(write.values)
            if device.config.verify_writes:
                await self._verify(device, write.request)

    def _send(
        self, connection: MbapConnection, unit: int, block: _Block
    ) -> asyncio.Future[ModbusPDU]:
        """``connection.send``, a connection lost meanwhile (between two answers of a
        poll) being the poll's ``disconnect`` failure like any other."""
        try:
            return connection.send(unit, block.wire)
        except OSError as err:
            raise self._failure(err, time.monotonic()) from None

    def _take(self, device: _Device, block: _Block, response: ModbusPDU, rtt: float) -> None:
        """Publish a block's answer: its values, or BAD for an exception answer;
        ``_Failure`` if it does not fit the block."""
        channel = device.channel
        if response.isError():
            channel.error("exception", f"code {response.exception_code} reading "
                          f"{block.describe()}")  # fmt: skip
            channel.publish_block(block.key, block.indices, block.last, _BAD)
            return
        try:
            values, quality = block.decode(response)
        except _Failure as failure:
            failure.detail = f"{failure.detail} ({block.describe()})"
            raise
        block.last = values
        channel.publish_block(block.key, block.indices, values, quality)
        device.answered(rtt)
        device.good_reads += 1

    async def _write(self, device: _Device) -> None:
        pending = device.sending = device.pending
        device.pending = {}
        try:
            await self._write_pending(device, pending)
        finally:
            device.sending = {}
        device.log_state()

    async def _write_pending(self, device: _Device, pending: dict[int, Any]) -> None:
        requests, problems = _write_requests(device.config.points, pending)
        for problem in problems:
            device.channel.error("write", problem)
        for position, request in enumerate(requests):
            try:
                accepted = await self._write_one(device, request)
            except _Failure as failure:
                device.failed("write", f"{failure.kind}: {failure.detail} "
                              f"({request.describe()})")  # fmt: skip
                # kept for when the device answers again, unless a newer value came
                device.requeue(
                    {i: pending[i] for unsent in requests[position:] for i in unsent.indices}
                )
                return
            if accepted:
                device.written.update((i, pending[i]) for i in request.indices)
                if device.config.verify_writes:
                    await self._verify(device, request)

    async def _write_one(self, device: _Device, request: _Write) -> bool:
        """Send one write request; whether the device accepted it."""
        pdu = _write_pdu(request, device.unit)
        response, rtt = await self._exchange(pdu, device.retries)
        return self._accepted(device, request, response, rtt)

    def _accepted(self, device: _Device, request: _Write, response: ModbusPDU, rtt: float) -> bool:
        if response.isError():
            code = response.exception_code
            device.channel.error("write", f"code {code} writing {request.describe()}")
            return False
        device.answered(rtt)
        return True

    async def _verify(self, device: _Device, request: _Write) -> None:
        """Read back a write the device accepted: a mismatch or no answer is a write
        error, and the write is not sent again (it was accepted)."""
        count, unit = len(request.values), device.unit
        read = ReadCoilsRequest if request.table == "coil" else ReadHoldingRegistersRequest
        try:
            response, _ = await self._exchange(
                read(address=request.start, count=count, dev_id=unit), device.retries
            )
        except _Failure as failure:
            device.channel.error("write", f"read-back of {request.describe()}: {failure.kind}: "
                                 f"{failure.detail}")  # fmt: skip
            return
        got = list(response.bits[:count] if request.table == "coil" else response.registers)
        if response.isError() or got != list(request.values):
            device.channel.error("write", f"read-back of {request.describe()} differs")


class ModbusIo(DriverIo):
    """The io side: a task per connection, polling and writing its devices."""

    def __init__(self, config: ModbusConfig, context: IoContext) -> None:
        self.devices: dict[str, _Device] = {}
        self.links: list[_Link] = []
        for line in config.lines:
            devices = [_Device(device, line, context) for device in line.devices]
            self.devices.update((device.name, device) for device in devices)
            shared = line.rtu is not None or (line.tcp is not None and line.tcp.shared_connection)
            if shared:
                self.links.append(_Link(line, devices))
            else:
                self.links += [_Link(line, [device]) for device in devices]
        super().__init__(self.links)
        self._overdue: asyncio.Task[None] | None = None
        link_of = {device.name: link for link in self.links for device in link.devices}
        on_writes(
            context,
            {name: _write_handler(device, link_of[name]) for name, device in self.devices.items()},
            safe_handlers={
                name: _write_handler(device, link_of[name], safe=True)
                for name, device in self.devices.items()
            },
        )

    async def start(self) -> None:
        await super().start()
        self._overdue = asyncio.create_task(self._expire_overdue(), name="modbus overdue")

    async def _expire_overdue(self) -> None:
        """Turn STALE the values of groups whose poll is overdue, even while their line
        waits for an answer elsewhere: a value not read on time is not presented as fresh.
        """
        devices = list(self.devices.values())
        windows = [group.window_s() for device in devices for group in device.groups]
        if not windows:
            return
        check_s = min(windows) / OVERDUE_CHECKS_PER_WINDOW
        while True:
            now = time.monotonic()
            soonest = min(device.expire_overdue(now) for device in devices)
            # a group read again while this sleeps is checked within check_s of its time
            await asyncio.sleep(min(soonest - now, check_s))

    async def stop(self) -> None:
        await super().stop()
        if self._overdue is not None:
            await finish(self._overdue)
            self._overdue = None


def _write_handler(
    device: _Device, link: _Link, *, safe: bool = False
) -> Callable[[list[tuple[int, Any]]], None]:
    def queue(writes: list[tuple[int, Any]]) -> None:
        device.queue_writes(writes, safe=safe)
        link.wakeup.set()

    return queue
