"""Faults of the simulators: when each is on (``FaultSchedule``), and the commands typed
on their stdin: ``silence 5``, ``delay 0.2 10``, ``clear``. Each simulator names its
faults in an Enum with a ``delay`` member."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import stat
import sys
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("edgeloop.sim")

F = TypeVar("F", bound=enum.Enum)


class FaultSchedule(Generic[F]):
    """The faults a simulator has on, each until the loop time it ends; ``delay_s`` is
    what the ``delay`` fault delays by."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.delay_s = 0.0
        self._ends: dict[F, float] = {}

    def start(self, fault: F, duration_s: float, delay_s: float = 0.0) -> None:
        """``fault`` on from now, for ``duration_s`` seconds."""
        self._ends[fault] = asyncio.get_running_loop().time() + duration_s
        if fault.value == "delay":
            self.delay_s = delay_s
        self.log.info("fault %s for %g s", fault.value, duration_s)

    def clear(self) -> None:
        """Every fault ends at the simulator's next look (``ended``)."""
        now = asyncio.get_running_loop().time()
        for fault in self._ends:
            self._ends[fault] = now

    def active(self, fault: F) -> bool:
        return fault in self._ends

    def ended(self, now: float) -> list[F]:
        """The faults whose time is up at ``now``, taken off."""
        over = [fault for fault, ends in self._ends.items() if now >= ends]
        for fault in over:
            del self._ends[fault]
            self.log.info("fault %s over", fault.value)
        return over


class FaultTarget(Protocol):
    def inject(self, fault: Any, duration_s: float, delay_s: float = 0.0) -> None: ...

    def clear(self) -> None: ...


def apply_command(sim: FaultTarget, faults: type[enum.Enum], line: str) -> str:
    """Apply one command line to ``sim``; what was done (or the usage)."""
    words = line.split()
    if not words:
        return ""
    if words == ["clear"]:
        sim.clear()
        return "cleared"
    try:
        fault = faults(words[0])
        numbers = [float(word) for word in words[1:]]
    except ValueError:
        return f"unknown command {line.strip()!r}: {usage(faults)}"
    if fault.value == "delay" and len(numbers) == 2:
        sim.inject(fault, numbers[1], delay_s=numbers[0])
    elif fault.value != "delay" and len(numbers) == 1:
        sim.inject(fault, numbers[0])
    else:
        return usage(faults)
    return f"{fault.value} on"


def usage(faults: type[enum.Enum]) -> str:
    names = ", ".join(f.value for f in faults if f.value != "delay")
    return f"commands: delay SECONDS DURATION | ({names}) DURATION | clear"


def stdin_takes_commands() -> bool:
    """A pipe, socket or terminal: the event loop can wait on it (not on /dev/null, which
    is what ``edgeloop demo`` gives its simulators)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()


async def commands_from_stdin(sim: FaultTarget, faults: type[enum.Enum]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode(errors="replace"):
        if reply := apply_command(sim, faults, line):
            log.info("%s", reply)
