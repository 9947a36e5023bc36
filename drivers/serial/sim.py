"""A simulated climate sensor on a pty pair, for tests and the demo.

The sensor reads temperature, humidity and a sample counter, and keeps the setpoint it
was last sent. In ``ascii`` mode it writes lines, ``T=21.50,H=40.20,S=0.00,N=7`` (``kv``)
or ``21.50,40.20,0.00,7`` (``csv``), ends them with CR LF, answers ``READ`` with one and
obeys ``SET <value>``. In ``binary`` mode it writes frames of ``FRAME`` (start byte 0xAA,
payload length, payload laid out as ``BINARY_FIELDS``, checksum) and answers the frame
whose payload is ``READ_COMMAND``. It streams every ``period_s`` unless told to only
answer.

The device end of the pty appears at ``link`` when one is given: a symlink, re-pointed
on every replug, as udev does with ``/dev/serial/by-id`` links. Faults are injected on
command (``inject``, or a line on stdin for ``edgeloop sim serial``), each for a duration:

- ``delay S``: every reading and answer goes S seconds late.
- ``silence``: no readings, no answers.
- ``garbage``: random bytes instead of readings (no end of line, no start byte in them).
- ``corrupt``: readings cut short (ascii) or with a wrong checksum (binary).
- ``unplug``: the pty is closed and the link removed, as when a USB adapter is pulled;
  when the fault ends a new pty appears at the link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import math
import os
import random
import signal
import sys
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeloop.drivers.serial.codec import (
    FrameField,
    FrameFields,
    FrameFormat,
    FrameSplitter,
    Junk,
    LineSplitter,
)
from edgeloop.drivers.sim_faults import FaultSchedule, commands_from_stdin, stdin_takes_commands
from edgeloop.logs import setup_logging

log = logging.getLogger("edgeloop.sim.serial")

Mode = Literal["ascii", "binary"]
LineFormat = Literal["kv", "csv"]

PERIOD_S = 0.1
GARBAGE_BYTES = 64  # sent each period while the garbage fault is on
FRAME = FrameFormat(start=b"\xaa", checksum="sum8")
READ_COMMAND = b"\x01"
# name -> where it is in a reading frame's payload (temperature, humidity in hundredths)
BINARY_FIELDS = {
    "temperature": FrameField(0, "int16"),
    "humidity": FrameField(2, "uint16"),
    "count": FrameField(4, "uint32"),
    "status": FrameField(8, "uint8"),
}


class Fault(enum.Enum):
    DELAY = "delay"
    SILENCE = "silence"
    GARBAGE = "garbage"
    CORRUPT = "corrupt"
    UNPLUG = "unplug"


@dataclass
class Climate:
    """What the sensor measures: a slow swing around a room's temperature and humidity."""

    temperature_c: float = 21.5
    humidity_pct: float = 40.0
    setpoint: float = 0.0
    count: int = 0

    def sample(self, t: float) -> None:
        self.temperature_c = 21.5 + 0.5 * math.sin(2 * math.pi * t / 60.0)
        self.humidity_pct = 40.0 + 2.0 * math.cos(2 * math.pi * t / 90.0)
        self.count += 1


class PtyPort:
    """The simulator's end of a pty pair; the device end is at ``path``."""

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self.master = -1
        self._slave = -1
        self.path = ""

    @property
    def is_open(self) -> bool:
        return self.master >= 0

    def open(self) -> str:
        """A new pty pair; the device path (the link, when there is one)."""
        self.master, self._slave = os.openpty()
        # Raw before anyone opens it: no echo of what the sensor writes, no CR -> LF.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        # The simulator holds the device end open too: with no one on it, the master
        # would read as hung up and wake its reader in a loop.
        device = os.ttyname(self._slave)
        if self.link is None:
            self.path = device
        else:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            staged = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            staged.symlink_to(device)
            staged.replace(self.link)
            self.path = str(self.link)
        return self.path

    def close(self) -> None:
        """Gone: the link first (as udev removes it), then both ends."""
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self.master, self._slave):
            if fd >= 0:
                os.close(fd)
        self.master = self._slave = -1

    def write(self, data: bytes) -> None:
        """Send ``data``; dropped when no one reads (a UART does not wait either)."""
        if self.master < 0:
            return
        with contextlib.suppress(BlockingIOError):
            os.write(self.master, data)


class SensorSim:
    """One simulated sensor; ``run()`` opens its pty and serves until cancelled."""

    def __init__(
        self,
        mode: Mode = "ascii",
        *,
        link: Path | None = None,
        period_s: float = PERIOD_S,
        stream: bool = True,
        line_format: LineFormat = "kv",
        frame: FrameFormat = FRAME,
        rng: random.Random | None = None,
    ) -> None:
        self.mode = mode
        self.port = PtyPort(link)
        self.period_s = period_s
        self.stream = stream
        self.line_format = line_format
        self.frame = frame
        self.climate = Climate()
        self.sent = 0  # readings sent
        self.answered = 0  # requests answered
        self.commands: list[str] = []  # ascii commands obeyed or refused, in order
        self._fields = FrameFields(list(BINARY_FIELDS.values()))
        self._splitter: LineSplitter | FrameSplitter = (
            FrameSplitter(frame) if mode == "binary" else LineSplitter(b"\n", 256)
        )
        self._rng = rng or random.Random()
        self._faults: FaultSchedule[Fault] = FaultSchedule(log)

    @property
    def path(self) -> str:
        return self.port.path

    def open(self) -> str:
        """Plug in: a new pty, served from now on; its device path."""
        path = self.port.open()
        self._splitter.reset()
        asyncio.get_running_loop().add_reader(self.port.master, self._on_request)
        return path

    def close(self) -> None:
        if self.port.is_open:
            asyncio.get_running_loop().remove_reader(self.port.master)
            self.port.close()

    def inject(self, fault: Fault, duration_s: float, delay_s: float = 0.0) -> None:
        """Start ``fault`` now, for ``duration_s`` seconds."""
        self._faults.start(fault, duration_s, delay_s)
        if fault is Fault.UNPLUG:
            self.close()

    def clear(self) -> None:
        """End every fault at the next tick."""
        self._faults.clear()

    def active(self, fault: Fault) -> bool:
        return self._faults.active(fault)

    async def run(self) -> None:
        """Stream (or just answer) until cancelled; opens the pty unless ``open()`` did."""
        loop = asyncio.get_running_loop()
        if not self.port.is_open:
            self.open()
        try:
            start = due = loop.time()
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                now = loop.time()
                due = max(due + self.period_s, now)
                self._end_faults(now)
                self.climate.sample(now - start)
                if self.stream and self.port.is_open:
                    self._send_reading()
        finally:
            self.close()

    def _send_reading(self) -> None:
        if self.active(Fault.SILENCE):
            return
        if self.active(Fault.GARBAGE):
            self._send(self._garbage())
            return
        self.sent += 1
        self._send(self.reading())

    def reading(self) -> bytes:
        """The current reading as the sensor sends it (cut or corrupted under ``corrupt``)."""
        c = self.climate
        if self.mode == "binary":
            raw = [round(c.temperature_c * 100), round(c.humidity_pct * 100), c.count, 1]
            frame = self.frame.build(self._fields.pack(raw))
            if self.active(Fault.CORRUPT):
                frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
            return frame
        if self.line_format == "csv":
            line = f"{c.temperature_c:.2f},{c.humidity_pct:.2f},{c.setpoint:.2f},{c.count}"
        else:
            line = f"T={c.temperature_c:.2f},H={c.humidity_pct:.2f},S={c.setpoint:.2f},N={c.count}"
        if self.active(Fault.CORRUPT):
            line = line[: len(line) // 3]
        return line.encode() + b"\r\n"

    def _garbage(self) -> bytes:
        banned = set(self.frame.start) if self.mode == "binary" else {0x0A, 0x0D}
        allowed = [b for b in range(256) if b not in banned]
        return bytes(self._rng.choice(allowed) for _ in range(GARBAGE_BYTES))

    def _send(self, data: bytes) -> None:
        if self.active(Fault.DELAY):
            asyncio.get_running_loop().call_later(self._faults.delay_s, self.port.write, data)
        else:
            self.port.write(data)

    def _on_request(self) -> None:
        try:
            data = os.read(self.port.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # the pty is being closed
        for message in self._splitter.feed(data):
            if isinstance(message, Junk) or self.active(Fault.SILENCE):
                continue
            if self.mode == "binary":
                if self.frame.payload(message) == READ_COMMAND:
                    self._answer()
            else:
                self._obey(message.decode(errors="replace").strip())

    def _obey(self, command: str) -> None:
        if not command:
            return
        self.commands.append(command)
        word, _, argument = command.partition(" ")
        if word == "READ":
            self._answer()
            return
        if word == "SET":
            try:
                self.climate.setpoint = float(argument)
                return
            except ValueError:
                pass
        self._send(b"ERR\r\n")

    def _answer(self) -> None:
        self.answered += 1
        if self.active(Fault.GARBAGE):
            self._send(self._garbage())
        else:
            self._send(self.reading())

    def _end_faults(self, now: float) -> None:
        for fault in self._faults.ended(now):
            if fault is Fault.UNPLUG:
                path = self.open()
                log.info("plugged in again at %s", path)


def main(argv: list[str] | None = None) -> int:
    """``edgeloop sim serial``: a simulated sensor; prints its device path; fault commands
    on stdin."""
    parser = argparse.ArgumentParser(prog="edgeloop sim serial", description=__doc__)
    parser.add_argument("--mode", choices=["ascii", "binary"], default="ascii")
    parser.add_argument("--format", choices=["kv", "csv"], default="kv", help="ascii lines")
    parser.add_argument("--link", type=Path, help="make the device appear at this path")
    parser.add_argument("--period-ms", type=float, default=PERIOD_S * 1000)
    parser.add_argument("--poll-only", action="store_true", help="answer, do not stream")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    sim = SensorSim(
        args.mode,
        link=args.link,
        period_s=args.period_ms / 1000.0,
        stream=not args.poll_only,
        line_format=args.format,
    )

    async def run() -> None:
        print(sim.open(), flush=True)
        tasks = [asyncio.create_task(sim.run())]
        # Terminated (as the demo stops it): unplug properly, so no dangling link is left.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, tasks[0].cancel)
        if stdin_takes_commands():
            tasks.append(asyncio.create_task(commands_from_stdin(sim, Fault)))
        try:
            await asyncio.wait(tasks[:1], timeout=args.duration)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
