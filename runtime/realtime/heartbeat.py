"""Heartbeat counters in shared memory: how the supervisor sees its children are alive.

A memfd of 64-bit slots, mapped by the supervisor and inherited by the children: the
control process's slots, its figures for ``/metrics`` (``FIGURE_SLOTS`` and the
``FIGURE_NAMES_BYTES`` naming them, laid out by ``edgeloop.realtime.loop_figures``),
then one block per io worker. Each process writes only its own slots; the supervisor
and the io workers only read the others'. A torn read of a counter is harmless (the next
read is whole), which is why counters may live here while records go through the kernel
(see DESIGN.md).

An io worker's block ends with a short text, why it is degraded (a listener that cannot
bind), for the supervisor's status line. It is written between two bumps of
``IoSlot.FAULT_SEQ`` and read only when the sequence is even and did not move, so a
read that overlapped a write is skipped; at worst (stores reordered on a weakly ordered
CPU) a status line shows garbled text once. Alarms and health, which matter, go
through the io channel.
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
    IO_LINKS_UP = 5  # io workers the control process has a channel to
    SAFE_STATE = 6  # SafeState.kinds_mask(): a bit per kind of cause holding outputs safe


class IoSlot(IntEnum):
    """One io worker's slots (``Heartbeats.io_slot`` places them)."""

    BEATS = 0  # advanced by the worker's event loop
    DEGRADED = 1
    CONNECTIONS = 2  # network peers connected to this worker
    LAST_CONNECTION_ID = 3  # outlives the worker: its next process goes on from here
    CONFIG_CHANGED = 4  # 1: the config file differs from the appliance's; running nothing
    FAULT_SEQ = 5  # odd while the fault text after the slots is being written
    # The records to the control process this worker's outbox dropped, by why
    TO_CONTROL_CONFLATED = 6  # NORMAL: a later one of the same key replaced it
    TO_CONTROL_DROPPED_LOW = 7  # LOW: over the memory budget
    TO_CONTROL_DROPPED_URGENT = 8  # CRITICAL or HIGH: past the outbox's safety cap
    DATA_LOG_WRITTEN = 9  # samples the data log committed (its worker only)
    DATA_LOG_DROPPED = 10  # samples it dropped: behind, never declared, or no store


FAULT_TEXT_BYTES = 256  # UTF-8, NUL-padded; longer texts are cut
_IO_BLOCK_SLOTS = len(IoSlot) + FAULT_TEXT_BYTES // 8
FIGURE_SLOTS = 1024  # ~300 sets and systems timed, with the histograms (8 KiB)
FIGURE_NAMES_BYTES = 16384
_CONTROL_SLOTS = len(Slot) + FIGURE_SLOTS + FIGURE_NAMES_BYTES // 8


class Heartbeats:
    """The shared block; ``Heartbeats(io_workers=n)`` creates it, ``Heartbeats(fd)`` maps an
    inherited one (whose size says how many io workers it has)."""

    def __init__(self, fd: int | None = None, io_workers: int = 1) -> None:
        if fd is None:
            fd = os.memfd_create("edgeloop-heartbeats", 0)  # not CLOEXEC: children inherit it
            os.ftruncate(fd, (_CONTROL_SLOTS + io_workers * _IO_BLOCK_SLOTS) * 8)
        self.fd = fd
        size = os.fstat(fd).st_size
        self.io_workers = (size // 8 - _CONTROL_SLOTS) // _IO_BLOCK_SLOTS
        self._map = mmap.mmap(fd, size)
        self._bytes = memoryview(self._map)
        self.slots = self._bytes.cast("Q")
        self.figures = self.slots[len(Slot) : len(Slot) + FIGURE_SLOTS]
        names_at = (len(Slot) + FIGURE_SLOTS) * 8
        self.figure_names = self._bytes[names_at : names_at + FIGURE_NAMES_BYTES]

    @staticmethod
    def io_slot(worker: int, slot: IoSlot) -> int:
        """The index in ``slots`` of one io worker's slot."""
        return _CONTROL_SLOTS + worker * _IO_BLOCK_SLOTS + slot

    def io(self, worker: int, slot: IoSlot) -> int:
        return int(self.slots[self.io_slot(worker, slot)])

    def set_io(self, worker: int, slot: IoSlot, value: int) -> None:
        self.slots[self.io_slot(worker, slot)] = value

    def set_io_fault(self, worker: int, text: str) -> None:
        """Say why an io worker is degraded (``""``: it is not)."""
        data = text.encode()[:FAULT_TEXT_BYTES]
        start = self._fault_text_offset(worker)
        seq = self.io_slot(worker, IoSlot.FAULT_SEQ)
        self.slots[seq] += 1
        self._bytes[start : start + FAULT_TEXT_BYTES] = data.ljust(FAULT_TEXT_BYTES, b"\0")
        self.slots[seq] += 1

    def io_fault(self, worker: int) -> str | None:
        """Why an io worker is degraded (``""``: it is not), or None if it was being
        written just then (ask again)."""
        seq = self.io_slot(worker, IoSlot.FAULT_SEQ)
        before = int(self.slots[seq])
        start = self._fault_text_offset(worker)
        data = bytes(self._bytes[start : start + FAULT_TEXT_BYTES])
        if before % 2 or int(self.slots[seq]) != before:
            return None
        return data.rstrip(b"\0").decode(errors="ignore")

    def _fault_text_offset(self, worker: int) -> int:
        return (_CONTROL_SLOTS + worker * _IO_BLOCK_SLOTS + len(IoSlot)) * 8

    def io_total(self, slot: IoSlot) -> int:
        """The slot summed over every io worker."""
        return sum(self.io(worker, slot) for worker in range(self.io_workers))

    def __getitem__(self, slot: Slot) -> int:
        return int(self.slots[slot])

    def __setitem__(self, slot: Slot, value: int) -> None:
        self.slots[slot] = value

    def unmap(self) -> None:
        """Let go of the mapping, keeping the file descriptor (another mapping's)."""
        for view in (self.figure_names, self.figures, self.slots, self._bytes):
            view.release()
        self._map.close()

    def close(self) -> None:
        self.unmap()
        os.close(self.fd)
