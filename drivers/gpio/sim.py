"""The simulated GPIO chip (``chip: sim``): lines of this process, driven from outside.

A process has one simulated chip per state directory, shared by every line it opens
there, for as long as one is open. The chip listens on a unix datagram socket at
``<state_dir>/gpio-sim.sock``, one ASCII request a datagram:

- ``set <offset> <0|1>``: drive the line's physical level from outside, as a button or
  a sensor would. Answered ``ok``, or ``error <why>`` (an offset past the chip's
  ``LINES``, a line this process drives as an output, a malformed request).
- ``get <offset>``: answered ``0`` or ``1``, the physical level (of an output, the level
  this process drives it to).

Answers go to the sender's address, so a client binds its socket first (Linux's
abstract autobind, ``bind("")``, is enough); a request from an unbound socket is
applied and not answered. ``sim_client`` is such a client, behind ``edgeloop gpio
set|get`` and ``edgeloop estop press|release``.

As on a real chip, a line's physical level is the last one ``set`` from outside or,
until there is one, its bias: ``pull_up`` reads 1, anything else 0 (gpio-sim pulls
down). ``active_low`` inverts the logical value. An input with ``debounce_ms`` reports
an edge only once its level has held that long: a change reverted sooner gives no edge,
as the kernel's debounce, and ``active()`` is the debounced value. An offset is
requested once; a second request of it fails, busy.

The chip's thread serves the socket: it applies each datagram, ends debounce periods,
and counts each edge of an input into the input's eventfd, which is the input's
``fileno``: readable until ``read_edges`` reads the count (which zeroes it). The control
loop never waits for that thread: reading a line reads an attribute. The thread needs
the GIL to count an edge, so the chip lowers the process's switch interval to
``GIL_SWITCH_S``: a press during a tick is counted within that, as a kernel would count
it at once.

A socket file left by a killed process is removed when the chip opens; one that a live
process answers on is that process's chip, and opening fails.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edgeloop.drivers.gpio.config import GpioLine
from edgeloop.drivers.gpio.errors import GpioError

SOCKET_NAME = "gpio-sim.sock"
LINES = 64  # offsets 0..63, as a gpio-sim bank configured with 64 lines
MAX_DATAGRAM = 256
USAGE = "expected 'set <offset> <0|1>' or 'get <offset>'"
_EVENTFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC
GIL_SWITCH_S = 0.0002


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def open_input(line: GpioLine, state_dir: Path) -> SimInput:
    with _CHIPS.chip(line, state_dir) as chip:
        return chip.add_input(line)


def open_output(line: GpioLine, state_dir: Path, initial: bool) -> SimOutput:
    with _CHIPS.chip(line, state_dir) as chip:
        return chip.add_output(line, initial)


def bias_level(line: GpioLine) -> int:
    """The physical level of a line nothing drives: its pull."""
    return 1 if line.bias == "pull_up" else 0


class SimInput:
    """An input of the simulated chip (``InputLine``)."""

    __slots__ = ("_chip", "_debounce_s", "_events", "_level", "_raw", "deadline", "line")

    def __init__(self, chip: SimChip, line: GpioLine, level: int) -> None:
        self._chip = chip
        self.line = line
        self._debounce_s = line.debounce_ms / 1000
        self._events = os.eventfd(0, _EVENTFD_FLAGS)
        self._level = level  # debounced: what the line reports
        self._raw = level  # what is on the pin
        self.deadline: float | None = None  # when the raw level becomes the reported one

    def fileno(self) -> int:
        return self._events

    def read_edges(self) -> int:
        try:
            return os.eventfd_read(self._events)
        except BlockingIOError:
            return 0

    def active(self) -> bool:
        return bool(self._level) != self.line.active_low

    def close(self) -> None:
        if self._events >= 0:
            self._chip.remove(self)
            os.close(self._events)
            self._events = -1

    # -- the chip's thread, under the chip's lock ---------------------------------------

    def sense(self, raw: int, now: float) -> None:
        if raw == self._raw:
            return
        self._raw = raw
        if not self._debounce_s:
            self._report(raw)
        elif raw == self._level:
            self.deadline = None  # reverted within the period: no edge
        else:
            self.deadline = now + self._debounce_s  # every change starts the period anew

    def settle(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self._report(self._raw)

    def _report(self, level: int) -> None:
        if level != self._level:
            self._level = level
            os.eventfd_write(self._events, 1)


class SimOutput:
    """An output of the simulated chip (``OutputLine``)."""

    __slots__ = ("_active_low", "_chip", "level", "line")

    def __init__(self, chip: SimChip, line: GpioLine, initial: bool) -> None:
        self._chip = chip
        self.line = line
        self._active_low = line.active_low
        self.level = int(initial != self._active_low)  # physical

    def set(self, active: bool) -> None:
        self.level = int(active != self._active_low)

    def close(self) -> None:
        self._chip.remove(self)


class _Refused(Exception):
    """A request the chip answers with ``error <why>``."""


class SimChip:
    """The chip of one state directory: its lines, the levels driven from outside, and
    the thread that serves its socket."""

    def __init__(self, path: Path, chips: _Chips) -> None:
        self.path = path
        self._chips = chips
        self._lock = threading.Lock()
        self._driven: dict[int, int] = {}  # levels set from outside, kept while open
        self._inputs: dict[int, SimInput] = {}
        self._outputs: dict[int, SimOutput] = {}
        self._socket = _listening_socket(path)
        self._stop = os.eventfd(0, _EVENTFD_FLAGS)
        self._thread = threading.Thread(target=self._serve, name="gpio-sim", daemon=True)
        # The thread stands in for the kernel, which counts an edge whatever this
        # process runs. Python's thread that waits for the GIL gets it only after the
        # switch interval (5 ms by default): during a tick, that would hold every press
        # back by up to that much, which a real chip does not.
        if sys.getswitchinterval() > GIL_SWITCH_S:
            sys.setswitchinterval(GIL_SWITCH_S)
        self._thread.start()

    @property
    def idle(self) -> bool:
        return not self._inputs and not self._outputs

    def add_input(self, line: GpioLine) -> SimInput:
        with self._lock:
            self._claim(line)
            level = self._driven.get(line.offset, bias_level(line))
            added = self._inputs[line.offset] = SimInput(self, line, level)
        return added

    def add_output(self, line: GpioLine, initial: bool) -> SimOutput:
        with self._lock:
            self._claim(line)
            added = self._outputs[line.offset] = SimOutput(self, line, initial)
        return added

    def remove(self, line: SimInput | SimOutput) -> None:
        with self._lock:
            offset = line.line.offset
            if isinstance(line, SimInput) and self._inputs.get(offset) is line:
                del self._inputs[offset]
            elif isinstance(line, SimOutput) and self._outputs.get(offset) is line:
                del self._outputs[offset]
        self._chips.close_if_idle(self)

    def close(self) -> None:
        os.eventfd_write(self._stop, 1)
        self._thread.join()
        self._socket.close()
        os.close(self._stop)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _claim(self, line: GpioLine) -> None:
        if line.offset >= LINES:
            raise GpioError(f"{line}: the simulated chip has lines 0 to {LINES - 1}")
        if line.offset in self._inputs or line.offset in self._outputs:
            raise GpioError(f"{line}: busy, already requested in this process")

    # -- the chip's thread --------------------------------------------------------------

    def _serve(self) -> None:
        _above_the_creator()
        poller = select.poll()
        poller.register(self._socket, select.POLLIN)
        poller.register(self._stop, select.POLLIN)
        while True:
            ready = poller.poll(self._wait_ms())
            if any(fd == self._stop for fd, _ in ready):
                return
            # every queued request first: a change reverted before its period ended must
            # cancel the period, however late this thread ran
            self._answer_requests()
            now = time.monotonic()
            with self._lock:
                for line in self._inputs.values():
                    line.settle(now)

    def _wait_ms(self) -> int | None:
        with self._lock:
            deadlines = [i.deadline for i in self._inputs.values() if i.deadline is not None]
        if not deadlines:
            return None
        return max(0, math.ceil((min(deadlines) - time.monotonic()) * 1000))

    def _answer_requests(self) -> None:
        while True:
            try:
                request, sender = self._socket.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            try:
                answer = self._apply(request.decode("ascii", "replace").split())
            except _Refused as refused:
                answer = f"error {refused}"
            if sender:
                # a client gone before its answer is no concern of the chip
                with contextlib.suppress(OSError):
                    self._socket.sendto(answer.encode(), sender)

    def _apply(self, words: list[str]) -> str:
        match words:
            case ["set", offset, level]:
                self._drive(_offset(offset), _level(level))
                return "ok"
            case ["get", offset]:
                return str(self._level_of(_offset(offset)))
        raise _Refused(USAGE)

    def _drive(self, offset: int, level: int) -> None:
        with self._lock:
            if offset in self._outputs:
                raise _Refused(f"line {offset} is an output of this process")
            self._driven[offset] = level
            if line := self._inputs.get(offset):
                line.sense(level, time.monotonic())

    def _level_of(self, offset: int) -> int:
        with self._lock:
            if output := self._outputs.get(offset):
                return output.level
            if offset in self._driven:
                return self._driven[offset]
            line = self._inputs.get(offset)
            return bias_level(line.line) if line else 0


class _Chips:
    """The simulated chips of this process, one per socket path: the lines of a process
    share its chip, as the lines of a real chip do; a chip closes with its last line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chips: dict[Path, SimChip] = {}

    @contextlib.contextmanager
    def chip(self, line: GpioLine, state_dir: Path) -> Iterator[SimChip]:
        """The chip for ``state_dir``, opened if need be, held while a line is added."""
        with self._lock:
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
                path = socket_path(state_dir.resolve())
            except OSError as error:
                raise GpioError(f"{line}: state_dir {state_dir}: {error.strerror}") from None
            chip = self._chips.get(path)
            if chip is None:
                try:
                    chip = self._chips[path] = SimChip(path, self)
                except GpioError as error:
                    raise GpioError(f"{line}: {error}") from None
            try:
                yield chip
            finally:
                self._close_if_idle(chip)

    def close_if_idle(self, chip: SimChip) -> None:
        with self._lock:
            self._close_if_idle(chip)

    def _close_if_idle(self, chip: SimChip) -> None:
        if chip.idle and self._chips.get(chip.path) is chip:
            del self._chips[chip.path]
            chip.close()


# The one module-level registry: lines opened separately (an e-stop input, a stack light
# output) must find the same chip, as lines of one real chip do. Keyed by state_dir, so
# two Apps with their own state directories in one process keep their own chips.
_CHIPS = _Chips()


def _listening_socket(path: Path) -> socket.socket:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            listening.bind(str(path))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            if _answered_at(path):
                raise GpioError(
                    f"{path}: another process's simulated chip listens here "
                    "(one process a state_dir)"
                ) from None
            path.unlink()  # left by a process that was killed
            listening.bind(str(path))
    except OSError as error:
        listening.close()
        raise GpioError(f"{path}: {error.strerror or error}") from None
    except GpioError:
        listening.close()
        raise
    listening.setblocking(False)
    return listening


def _answered_at(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
    return True


def _offset(word: str) -> int:
    if not word.isdigit() or int(word) >= LINES:
        raise _Refused(f"offset {word!r}: the simulated chip has lines 0 to {LINES - 1}")
    return int(word)


def _level(word: str) -> int:
    if word not in ("0", "1"):
        raise _Refused(f"level {word!r}: must be 0 or 1")
    return int(word)


def _above_the_creator() -> None:
    """In a real-time process (the control process: SCHED_FIFO, pinned), run this thread
    one step above the thread that made it, as the kernel's interrupt thread of a real
    chip would be: at the same priority on the same core it could not run (nor count a
    press) until the control loop blocked, after the tick under way."""
    if os.sched_getscheduler(0) != os.SCHED_FIFO:
        return
    priority = os.sched_getparam(0).sched_priority
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(
            0,
            os.SCHED_FIFO,
            os.sched_param(min(priority + 1, os.sched_get_priority_max(os.SCHED_FIFO))),
        )
