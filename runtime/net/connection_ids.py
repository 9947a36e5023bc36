"""Connection ids: one id names one peer, across io workers and io restarts.

An id is ``worker << WORKER_SHIFT | n``: the control process knows from an id which io
worker holds the connection when a system sends to it. n counts from 1 in each worker
(worker 0, the only one by default, hands out 1, 2, 3, ...) and goes on where the
worker's previous process stopped, read from its heartbeat slot, which outlives it: a
robot's old id never reaches a peer that connected after an io restart. All ids stay
below 2**53, so JSON and JavaScript numbers carry them exactly. Id 0 means every
connection (a broadcast).
"""

from __future__ import annotations

from collections.abc import Iterator

from edgeloop.realtime.heartbeat import Heartbeats, IoSlot

WORKER_SHIFT = 40  # 10**12 connections per worker before an id could reach the next


class ConnectionIds(Iterator[int]):
    """The ids one io worker hands out, in order."""

    def __init__(self, worker: int = 0, heartbeats: Heartbeats | None = None) -> None:
        base = worker << WORKER_SHIFT
        self._slots = None if heartbeats is None else heartbeats.slots
        self._slot = Heartbeats.io_slot(worker, IoSlot.LAST_CONNECTION_ID)
        last = base if self._slots is None else max(base, int(self._slots[self._slot]))
        self._next = last + 1

    def __next__(self) -> int:
        value = self._next
        self._next += 1
        if self._slots is not None:
            self._slots[self._slot] = value
        return value


def worker_of(connection: int) -> int:
    """The io worker holding ``connection`` (a positive id)."""
    return connection >> WORKER_SHIFT
