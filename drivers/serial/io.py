"""The io side of the serial driver: a task per device opening its port (again, with
backoff), reading, polling and writing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import termios
from typing import Any

import serial  # type: ignore[import-untyped]

from edgeloop.drivers.base import DriverIo, FaultLog, Link, finish
from edgeloop.drivers.field_link import DeviceChannel, on_writes
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.points import Quality, default_value
from edgeloop.drivers.serial.codec import (
    ENCODING,
    FrameSplitter,
    Junk,
    LineSplitter,
    frame_decoder,
    line_decoder,
    preview,
)
from edgeloop.drivers.serial.config import DRIVER, SerialConfig, SerialDevice
from edgeloop.realtime.io_part import IoContext

log = logging.getLogger("edgeloop.serial")

READ_SIZE = 4096
LOG_EVERY_S = 5.0  # one log line per device and kind of event in this time, at most

_GOOD = int(Quality.GOOD)
_BAD = int(Quality.BAD)
_PARITIES = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}

Values = list[list[Any]]


class SerialLink(Link):
    """One device on its port: open (again, with backoff), read, poll, write."""

    def __init__(self, config: SerialDevice, context: IoContext) -> None:
        self.config = config
        self.channel = DeviceChannel(
            context, config.name, DRIVER, config.points, config.offline_after
        )
        super().__init__(
            f"serial {config.name}",
            [self.channel],
            Backoff(config.reopen_initial_s, config.reopen_max_s),
            FaultLog(log, LOG_EVERY_S),
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
        self._last: list[Any] = [default_value(p.type) for p in points]
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

    async def session(self) -> str:
        try:
            port = self._open()
        except (OSError, ValueError) as err:  # SerialException is an OSError
            return str(err)  # pyserial's: "could not open port <path>: <why>"
        return await self._serve(port, asyncio.get_running_loop())

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

    async def _serve(self, port: serial.Serial, loop: asyncio.AbstractEventLoop) -> str:
        """Read (and poll) the open port until it fails; why it failed."""
        fd = port.fileno()
        failure: asyncio.Future[str] = loop.create_future()
        self._failure = failure
        self._fd = fd
        worker: asyncio.Task[None] | None = None
        try:
            self.splitter.reset()
            loop.add_reader(fd, self._on_readable, fd)
            self.faults.log("open", "%s: %s open", self.name, self.config.port, level=logging.INFO)
            self._pending = b""  # a message cut by the old session is sent whole again
            self._unsent = dict(self._written)
            self._send_unsent()
            worker = loop.create_task(self._poll(loop) if self.config.poll else self._watch(loop))
            return await failure
        finally:
            if worker is not None:
                await finish(worker)
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
        self.backoff.reset()

    def _garbage(self, detail: str) -> None:
        self.channel.error("garbage", detail)
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(None)  # answered, if badly: not a timeout too

    # -- streaming and polling ----------------------------------------------------------------

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self._silence_s
        self._deadline = loop.time() + timeout
        while self.running:
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
        while self.running:
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
            # not wait_for: on Python 3.11 it swallows a cancel that meets the answer
            async with asyncio.timeout(timeout_ms / 1000.0):
                await reply
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


class SerialIo(DriverIo):
    """The io part: a ``SerialLink`` per device."""

    def __init__(self, config: SerialConfig, context: IoContext) -> None:
        self.links = {device.name: SerialLink(device, context) for device in config.devices}
        super().__init__(list(self.links.values()))
        on_writes(context, {name: link.write for name, link in self.links.items()})
