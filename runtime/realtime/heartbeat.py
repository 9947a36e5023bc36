"""Heartbeat counters in shared memory: how the supervisor sees its children are alive.

A memfd of a few 64-bit slots, mapped by the supervisor and inherited by the children.
Each process writes only its own slots; the supervisor only reads. A torn read of a
counter is harmless (the next read is whole), which is why counters may live here while
records go through the kernel (see DESIGN.md).
"""

from __future__ import annotations

import mmap
import os
from enum import IntEnum


class Slot(IntEnum):
    CONTROL_TICKS = 0  # fixed ticks completed
    CONTROL_TICK_NS = 1  # CLOCK_MONOTONIC ns at the end of the last tick
    CONTROL_OVERRUNS = 2
    CONTROL_P99_LATENESS_NS = 3
    CONTROL_DEGRADED = 4  # count of real-time settings that could not be applied
    IO_BEATS = 5  # advanced by the io process's event loop
    IO_DEGRADED = 6
    IO_LINK_UP = 7  # 1 while the control process has an io link
    IO_CONNECTIONS = 8  # network peers connected to the io process


_SLOTS = len(Slot)


class Heartbeats:
    """The shared block; ``Heartbeats()`` creates it, ``Heartbeats(fd)`` maps an inherited one."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("edgeloop-heartbeats", 0)  # not CLOEXEC: children inherit it
            os.ftruncate(fd, _SLOTS * 8)
        self.fd = fd
        self._map = mmap.mmap(fd, _SLOTS * 8)
        self.slots = memoryview(self._map).cast("Q")

    def __getitem__(self, slot: Slot) -> int:
        return int(self.slots[slot])

    def __setitem__(self, slot: Slot, value: int) -> None:
        self.slots[slot] = value

    def close(self) -> None:
        self.slots.release()
        self._map.close()
        os.close(self.fd)
