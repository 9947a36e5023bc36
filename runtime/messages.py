"""Messages: double-buffered typed queues read through per-reader cursors.

As in Bevy: a message sent during tick N can be read during ticks N and N+1, then it is
dropped. Every reader keeps its own cursor, so each reader sees each message once. A
reader that runs less often than every other tick can miss messages; it counts them in
``MessageReader.missed`` instead of pretending nothing happened.
"""

from __future__ import annotations

from typing import Generic, TypeVar

M = TypeVar("M")


class Messages(Generic[M]):
    __slots__ = ("_current", "_previous", "_start")

    def __init__(self) -> None:
        self._previous: list[M] = []
        self._current: list[M] = []
        self._start = 0  # sequence number of _previous[0]

    def send(self, message: M) -> None:
        self._current.append(message)

    def update(self) -> None:
        """Drop the older buffer; what was sent since the last update becomes the older."""
        dropped = self._previous
        self._start += len(dropped)
        dropped.clear()
        self._previous, self._current = self._current, dropped

    @property
    def oldest(self) -> int:
        """The sequence number of the oldest message still held."""
        return self._start

    @property
    def end(self) -> int:
        """The sequence number the next message sent will get."""
        return self._start + len(self._previous) + len(self._current)

    def __len__(self) -> int:
        return len(self._previous) + len(self._current)

    def since(self, cursor: int) -> tuple[list[M], int]:
        """Messages with sequence number >= cursor, and how many older ones are gone."""
        missed = max(0, self._start - cursor)
        skip = max(0, cursor - self._start)
        older = len(self._previous)
        if skip >= older:
            return self._current[skip - older :], missed
        return self._previous[skip:] + self._current, missed


class MessageReader(Generic[M]):
    """A cursor into one queue. Starts at the oldest message still held, so a reader
    added late counts as missed only what it lost after it existed."""

    __slots__ = ("_cursor", "_queue", "missed")

    def __init__(self, queue: Messages[M]) -> None:
        self._queue = queue
        self._cursor = queue.oldest
        self.missed = 0

    def read(self) -> list[M]:
        fresh, missed = self._queue.since(self._cursor)
        self.missed += missed
        self._cursor = self._queue.end
        return fresh
