"""Input and output lines, on a kernel GPIO chip or on the simulated chip.

An input line is made for the control loop's selector: its ``fileno`` is readable while
edge events are pending, ``read_edges`` drains them without blocking (so the loop never
spins on a stale wake-up) and ``active`` is the line's logical value, ``active_low``
applied. The kernel backend (libgpiod v2, ``chardev``) is imported only when a line is
on a real chip: a config of simulated lines never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from edgeloop.drivers.gpio import sim
from edgeloop.drivers.gpio.config import GpioLine
from edgeloop.drivers.gpio.errors import GpioError

__all__ = ["GpioError", "InputLine", "OutputLine", "open_input", "open_output"]


class InputLine(Protocol):
    def fileno(self) -> int:
        """A descriptor readable while edge events are pending."""
        ...

    def read_edges(self) -> int:
        """Drain the pending edge events without blocking; how many there were."""
        ...

    def active(self) -> bool:
        """The line's logical value now (``active_low`` applied, debounced)."""
        ...

    def close(self) -> None: ...


class OutputLine(Protocol):
    def set(self, active: bool) -> None:
        """Drive the line to its active (or inactive) level; does not block."""
        ...

    def close(self) -> None: ...


def open_input(line: GpioLine, state_dir: Path) -> InputLine:
    """Request ``line`` as an input with edge detection on both edges.

    ``state_dir`` is where the simulated chip listens (``chip: sim``); a real chip does
    not use it. Raises ``GpioError`` naming the chip and offset when the line cannot be
    had (no such chip, offset out of range, line busy).
    """
    if line.simulated:
        return sim.open_input(line, state_dir)
    from edgeloop.drivers.gpio import chardev  # noqa: PLC0415 - loads libgpiod: real chips only

    return chardev.open_input(line)


def open_output(line: GpioLine, state_dir: Path, initial: bool) -> OutputLine:
    """Request ``line`` as an output driven to ``initial`` (active or not) from the
    moment it is requested; errors as ``open_input``."""
    if line.simulated:
        return sim.open_output(line, state_dir, initial)
    from edgeloop.drivers.gpio import chardev  # noqa: PLC0415 - loads libgpiod: real chips only

    return chardev.open_output(line, initial)
