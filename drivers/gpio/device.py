"""One ``gpio`` device's lines, in the control process: opened, read every tick, driven.

A device is all or nothing: its lines are open together or not at all. A line that
cannot be had (no such chip, line busy, offset past the chip) or fails later (a USB GPIO
expander unplugged) closes every line of the device, makes it ``offline`` with the reason
(a ``disconnect``) and its values STALE, and the device is opened again after a backoff
that doubles up to ``reopen_max_s``. Each output is opened at the value it should have
(the last one written; before any, its ``safe_value``, or inactive), so a reopened
device holds what control logic last wrote, or its safe values while they hold.

It reports as every driver's io side does, through a ``DeviceChannel`` (whose sink is
the field bridge's ``FieldModel.local``): one group of values, ``lines``, sent when a
level changes, and its health when its state changes. Nothing it reports reads a clock
(``last_good_read`` stays 0: a device ``online`` is read every tick), so the World stays
a function of the inputs per tick, as replay and ``state_hash`` need.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from edgeloop.data.tape import InputTape
from edgeloop.drivers.base import FaultLog
from edgeloop.drivers.field_link import DeviceChannel, RecordSink
from edgeloop.drivers.gpio.config import DRIVER, GpioDevice
from edgeloop.drivers.gpio.errors import GpioError
from edgeloop.drivers.gpio.lines import InputLine, OutputLine, open_input, open_output
from edgeloop.drivers.health import Backoff
from edgeloop.drivers.points import Quality

log = logging.getLogger("edgeloop.gpio")

GROUP = "lines"
LOG_EVERY_S = 5.0  # one log line per device and kind of event in this time, at most

_GOOD = int(Quality.GOOD)


class GpioDeviceLines:
    """The lines of one device: ``open`` at Startup, ``poll`` every tick (reads inputs,
    reopens when due), ``write`` from the field bridge, ``close`` at Shutdown."""

    def __init__(self, config: GpioDevice, sink: RecordSink) -> None:
        self.config = config
        points = [point.point_map() for point in config.points]
        self.channel = DeviceChannel(sink, config.name, DRIVER, points, offline_after=1)
        # Jitter keeps devices sharing a bus from retrying in lockstep; lines of a local
        # chip share none, and a seeded one keeps the World a function of its inputs.
        rng = random.Random(config.name)
        self.backoff = Backoff(config.reopen_initial_s, config.reopen_max_s, rng=rng)
        self.faults = FaultLog(log, LOG_EVERY_S)
        self.state_dir = Path()
        self.tape: InputTape | None = None
        self.inputs: list[tuple[int, InputLine]] = []
        self.outputs: dict[int, OutputLine] = {}
        self.wanted = {  # what each output should hold
            index: bool(point.safe_value)
            for index, point in enumerate(config.points)
            if point.direction == "output"
        }
        self.input_indices = [i for i, p in enumerate(config.points) if p.direction == "input"]
        self._levels: list[bool] | None = None  # as last published; None: not since opened
        self._retry_at: float | None = None  # when to open again; None: open
        self._now = 0.0  # the world's time at the last poll

    @property
    def opened(self) -> bool:
        return self._retry_at is None

    def open(self, state_dir: Path, now: float, tape: InputTape | None = None) -> None:
        """Request every line; on a failure, none stays open and a retry is due later.
        ``tape``: the App's input tape, when it records or replays."""
        self.state_dir = state_dir
        self.tape = tape
        self._now = now
        self._open(now)

    def poll(self, now: float) -> None:
        """Read the inputs and send what changed (opening the device first when a retry
        is due). ``now``: the world's time, for the backoff."""
        self._now = now
        if self._retry_at is not None:
            if now < self._retry_at:
                return
            self._open(now)
            if self._retry_at is not None:
                return
        try:
            levels = [line.active() for _, line in self.inputs]
            if self.inputs and levels != self._levels:
                # The level is what a tick samples; the edges queued meanwhile say no
                # more. Drained on a change only: a drain per line per tick was most of
                # a poll's cost (an eventfd read, ~5 us a line on the simulated chip).
                for _, line in self.inputs:
                    line.read_edges()
                self._levels = levels
                self.channel.publish_block(GROUP, self.input_indices, levels, _GOOD)
        except GpioError as error:
            self._failed(str(error), now)

    def write(self, writes: list[tuple[int, Any]]) -> None:
        """Output values from the field bridge: driven at once (kept for a reopen)."""
        for index, value in writes:
            if index in self.wanted:
                self.wanted[index] = bool(value)
        if not self.opened:
            return
        try:
            for index, value in writes:
                line = self.outputs.get(index)
                if line is not None:
                    line.set(bool(value))
        except GpioError as error:
            self._failed(str(error), self._now)

    def close(self) -> None:
        for _, line in self.inputs:
            line.close()
        for output in self.outputs.values():
            output.close()
        self.inputs, self.outputs = [], {}

    def _open(self, now: float) -> None:
        config = self.config
        try:
            for index, point in enumerate(config.points):
                line = point.line(config.chip)
                if point.direction == "input":
                    opened: InputLine = open_input(line, self.state_dir)
                    if self.tape is not None:
                        opened = self.tape.line(f"gpio.{config.name}.points[{index}]", opened)
                    self.inputs.append((index, opened))
                else:
                    initial = self.wanted[index]
                    self.outputs[index] = open_output(line, self.state_dir, initial)
        except GpioError as error:
            self._failed(str(error), now)
            return
        self._retry_at = None
        self._levels = None
        self.backoff.reset()
        self.channel.good(0.0, now=0.0)
        self.faults.log("open", "gpio %s: %s open", config.name, config.chip, level=logging.INFO)

    def _failed(self, reason: str, now: float) -> None:
        self.close()
        delay = self.backoff.next_delay()
        self._retry_at = now + delay
        self.channel.error("disconnect", reason)
        name = self.config.name
        self.faults.log("disconnect", "gpio %s: %s; again in %.1f s", name, reason, delay)
