"""The io side of the CAN driver: a task per bus receiving, transmitting, and watching
timeouts and the bus state."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import can
from cantools.database.can import Message
from cantools.database.errors import DecodeError
from cantools.database.errors import Error as CantoolsError

from edgeloop.drivers.base import DriverIo, FaultLog, Link, finish
from edgeloop.drivers.can.codec import (
    EXTENDED,
    BusHealth,
    bus_health_of,
    frame_key,
    initial_values,
    receive_filters,
)
from edgeloop.drivers.can.config import DRIVER, CanBusConfig, CanConfig, CanDevice, TxDef
from edgeloop.drivers.field_link import DeviceChannel, WriteHandler, on_writes
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.points import Quality
from edgeloop.realtime.io_part import IoContext

log = logging.getLogger("edgeloop.can")

SUPERVISE_S = 0.05  # how often receive timeouts and the bus state are checked
RX_POLL_S = 0.1  # a receive thread's wait per call: how long stop() waits for it
RX_BATCH = 256  # frames handed to the event loop at once, at most
LOG_EVERY_S = 5.0  # one log line per bus and kind of event in this time, at most
# python-can filters these in software inside recv(), after the frame is already ours:
# the id table below drops foreign frames as cheaply, and lets error frames through.
SOFTWARE_FILTERED = frozenset({"virtual", "udp_multicast"})
LINK_DOWN_ERRNOS = frozenset({errno.ENETDOWN, errno.ENODEV, errno.EBADF, errno.ENXIO})

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)


_POLLED_STATES = {
    can.BusState.ACTIVE: BusHealth.ACTIVE,
    can.BusState.PASSIVE: BusHealth.PASSIVE,
    can.BusState.ERROR: BusHealth.OFF,
}


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


class _BusLink(Link):
    """One python-can bus and the devices on it: open (again, with backoff), receive,
    transmit, watch timeouts and the bus state."""

    def __init__(self, config: CanBusConfig, devices: list[_Device]) -> None:
        super().__init__(
            f"can bus {config.name}",
            [device.channel for device in devices],
            Backoff(config.reopen_initial_s, config.reopen_max_s),
            FaultLog(log, LOG_EVERY_S),
        )
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
        self._failure: asyncio.Future[str] | None = None
        self._reader_stop = threading.Event()
        self._reader: threading.Thread | int | None = None

    async def session(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            bus = await self._opened()
        except Exception as err:  # each interface raises its own (driver missing, no device)
            return f"cannot open: {err}"
        self.backoff.reset()
        self._failure = loop.create_future()
        self.bus = bus
        self.state = BusHealth.ACTIVE
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._start_reading(bus, loop)
            self._send_dirty()
            tasks = [loop.create_task(self._supervise()), loop.create_task(self._transmit())]
            return await self._failure
        finally:
            await finish(*tasks)
            await self._stop_reading(loop)
            self.bus = None
            bus.shutdown()

    async def _opened(self) -> can.BusABC:
        """The bus, opened in a thread (interfaces block in open); a stop meanwhile waits
        for the thread and shuts down what it opened."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            while not opening.done():  # however often stop cancels meanwhile
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({opening})
            with contextlib.suppress(Exception):
                opening.result().shutdown()
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
            key = frame.arbitration_id | EXTENDED if frame.is_extended_id else frame.arbitration_id
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
        change = f"{self.state.value} -> {state.value} ({why})"
        self.faults.log(f"state {state.value}", "%s: %s", self.name, change)
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
        while self.running:
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
        while self.running:
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


class CanIo(DriverIo):
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
        super().__init__(self.links)

    @property
    def frames(self) -> int:
        return sum(link.frames for link in self.links)

    @property
    def foreign(self) -> int:
        return sum(link.foreign for link in self.links)

    @property
    def garbage(self) -> int:
        return sum(link.garbage for link in self.links)
