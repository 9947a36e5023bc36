"""One peer's unsent messages, bounded: what both providers hold for a peer that reads
slower than the appliance writes.

- NORMAL messages with a conflation key are conflated: a newer one replaces the queued
  one in place (it goes out where the first stood, which still counts as the oldest).
  Those without a key (a WorldUpdate, which is a delta) keep their place and order.
- LOW messages are dropped while the queue is over ``max_bytes``.
- CRITICAL/HIGH, and NORMAL that conflation cannot make room for, are never dropped:
  a message that would take the queue over ``max_bytes`` means the peer is cut off
  (``OVERFLOW``). Its provider also cuts off a peer whose oldest unsent message is
  older than ``max_lag_s`` (``SLOW``).

An empty queue takes any one message, however big, so a single large message is never
refused outright: memory is bounded by ``max_bytes`` plus one message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

from edgeloop.priority import Priority

if TYPE_CHECKING:
    from edgeloop.net.session import Session

log = logging.getLogger("edgeloop.net")

DEFAULT_MAX_BYTES = 4 << 20
OVERFLOW = "output_overflow"  # counted, and the reason the peer is given as disconnected
SLOW = "slow_consumer"
CONFLATED = "output_conflated"
DROPPED_LOW = "output_dropped_low"
SENT = "messages_sent"  # written to a peer, or queued for it

D = TypeVar("D", bound=str | bytes)  # what the transport sends: bytes, or text too


class _Item(Generic[D]):
    __slots__ = ("data", "key", "queued_at")

    def __init__(self, queued_at: float, data: D, key: Hashable | None) -> None:
        self.queued_at = queued_at
        self.data = data
        self.key = key


class OutputQueue(Generic[D]):
    __slots__ = ("_by_key", "_items", "bytes", "counters", "max_bytes")

    def __init__(self, max_bytes: int, counters: Counter[str]) -> None:
        self.max_bytes = max_bytes
        self.counters = counters  # the provider's: every drop and cut is counted there
        self._items: deque[_Item[D]] = deque()
        self._by_key: dict[Hashable, _Item[D]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def oldest(self) -> float | None:
        """When the oldest unsent message was queued (None: nothing waits)."""
        return self._items[0].queued_at if self._items else None

    def put(self, data: D, priority: int, key: Hashable | None, now: float) -> str | None:
        """Queue ``data``; None, or why the peer must be cut off (``OVERFLOW``).

        ``key``: for NORMAL, what it is conflated by (None: it is not)."""
        conflatable = priority == Priority.NORMAL and key is not None
        if conflatable:
            queued = self._by_key.get(key)
            if queued is not None:
                self.counters[CONFLATED] += 1
                self.bytes += len(data) - len(queued.data)
                queued.data = data
                return OVERFLOW if self.bytes > self.max_bytes else None
        if self._items and self.bytes + len(data) > self.max_bytes:
            if priority >= Priority.LOW:
                self.counters[DROPPED_LOW] += 1
                return None
            return OVERFLOW
        item = _Item(now, data, key if conflatable else None)
        self._items.append(item)
        if item.key is not None:
            self._by_key[item.key] = item
        self.bytes += len(data)
        return None

    def popleft(self) -> tuple[float, D]:
        item = self._items.popleft()
        if item.key is not None:
            del self._by_key[item.key]
        self.bytes -= len(item.data)
        return item.queued_at, item.data

    def clear(self) -> None:
        self._items.clear()
        self._by_key.clear()
        self.bytes = 0


def count_cut_off(session: Session, reason: str, detail: str) -> None:
    """Count and log why a peer is cut off (one line per peer: it is the operator's clue
    to a robot that stopped reading)."""
    counters = session.hub.counters
    counters[reason] += 1
    log.warning(
        "%s connection %d from %s: %s; cut off (%s, %d so far)",
        session.hub.name,
        session.id,
        session.peer,
        detail,
        reason,
        counters[reason],
    )


class LagWatch:
    """Cuts a peer off once the oldest message it has not been sent is ``max_lag_s``
    old: one timer per peer, running only while something waits (a timeout around
    every send would cost a task per message)."""

    def __init__(
        self,
        max_lag_s: float,
        oldest: Callable[[], float | None],
        cut_off: Callable[[str, str], None],
    ) -> None:
        """``oldest``: when the oldest unsent message was queued (None: nothing waits,
        or the peer is gone); ``cut_off(reason, detail)`` drops the peer."""
        self.max_lag_s = max_lag_s
        self._oldest = oldest
        self._cut_off = cut_off
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Something was queued: watch it, unless the watch runs already."""
        if self._timer is None:
            self._check()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        oldest = self._oldest()
        if oldest is None:
            return
        waited = time.monotonic() - oldest
        if waited >= self.max_lag_s:
            self._cut_off(SLOW, f"more than {self.max_lag_s:g} s behind")
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.max_lag_s - waited, self._check)
