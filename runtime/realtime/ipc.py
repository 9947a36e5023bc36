"""The io <-> control channel: records batched per tick over a SEQPACKET socketpair.

A record is ``(topic, key, priority, payload)``. One SEQPACKET message carries a batch:
the msgpack-encoded tick number followed by msgpack-encoded records, concatenated (so a
batch is split without re-encoding when it outgrows one message). The kernel keeps
message boundaries and does the locking; nothing is shared but the socket.

Neither side ever blocks on the other. When the socket is full, records wait in an
``Outbox`` by priority: CRITICAL and HIGH wait in order and are not dropped (up to a
safety cap), NORMAL is conflated to the latest record per (topic, key), LOW is dropped
first. Every drop is counted.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack

from edgeloop.priority import Priority

log = logging.getLogger("edgeloop.ipc")

# Well under the default socket buffer (~208 KiB), so one message always fits when empty.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_URGENT_BACKLOG = 100_000  # CRITICAL/HIGH records; past this the peer is not reading
MAX_LOW_BACKLOG = 10_000


class Record(NamedTuple):
    topic: str
    key: str
    priority: int
    payload: Any


class Batch(NamedTuple):
    tick: int  # the sender's tick (control) or 0 (io: stamped by the consuming tick)
    records: list[Record]


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(control end, io end), both non-blocking and inheritable by a child process."""
    control, io = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (control, io):
        end.setblocking(False)
        end.set_inheritable(True)
    return control, io


def encode(tick: int, records: list[bytes]) -> bytes:
    return pack(tick) + b"".join(records)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value)
    return packed


def decode(message: bytes) -> Batch:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(message)
    items = iter(unpacker)
    tick = next(items)
    return Batch(tick, [Record(*fields) for fields in items])


class Outbox:
    """Records waiting to be sent, by priority; see the module docstring for the policy."""

    def __init__(self) -> None:
        self._urgent: deque[Record] = deque()
        self._latest: dict[tuple[str, str], Record] = {}
        self._low: deque[Record] = deque()
        self.conflated = 0
        self.dropped_low = 0
        self.dropped_urgent = 0
        self.dropped_oversize = 0

    def put(self, record: Record) -> None:
        if record.priority <= Priority.HIGH:
            if len(self._urgent) >= MAX_URGENT_BACKLOG:
                self.dropped_urgent += 1
                if self.dropped_urgent == 1:
                    log.error(
                        "io channel: %d urgent records waiting; dropping more",
                        MAX_URGENT_BACKLOG,
                    )
                return
            self._urgent.append(record)
        elif record.priority == Priority.NORMAL:
            key = (record.topic, record.key)
            if key in self._latest:
                self.conflated += 1
            self._latest[key] = record
        else:
            if len(self._low) >= MAX_LOW_BACKLOG:
                self._low.popleft()
                self.dropped_low += 1
            self._low.append(record)

    def __len__(self) -> int:
        return len(self._urgent) + len(self._latest) + len(self._low)

    @property
    def urgent_backlog(self) -> int:
        return len(self._urgent)

    def flush(self, sock: socket.socket, tick: int) -> bool:
        """Send what fits without blocking; True when nothing is left waiting."""
        while len(self) > 0:
            message, taken = self._next_message(tick)
            if taken == 0:
                return True
            try:
                sock.send(message)
            except BlockingIOError:
                return False
            self._consume(taken)
        return True

    def _ordered(self) -> Iterator[Record]:
        yield from self._urgent
        yield from self._latest.values()
        yield from self._low

    def _next_message(self, tick: int) -> tuple[bytes, int]:
        packed: list[bytes] = []
        size = 0
        taken = 0
        for record in self._ordered():
            data = pack(tuple(record))
            if len(data) > MAX_MESSAGE_BYTES - 16:
                # Cannot ever be sent: count it and let it be consumed with this message.
                self.dropped_oversize += 1
                taken += 1
                continue
            if size + len(data) > MAX_MESSAGE_BYTES - 16:
                break
            packed.append(data)
            size += len(data)
            taken += 1
        return encode(tick, packed), taken

    def _consume(self, count: int) -> None:
        for queue in (self._urgent, self._latest, self._low):
            while count and queue:
                if isinstance(queue, dict):
                    del queue[next(iter(queue))]
                else:
                    queue.popleft()
                count -= 1


class Channel:
    """One end of the socketpair: drain whole batches in, flush the outbox out."""

    def __init__(self, sock: socket.socket, outbox: Outbox | None = None) -> None:
        self.sock = sock
        # A replacement channel (after an io restart) takes over the old one's backlog.
        self.outbox = Outbox() if outbox is None else outbox
        self.closed = False
        self.received = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, max_batches: int | None = None) -> list[Batch]:
        """The batches waiting now (at most ``max_batches``); marks the channel closed when
        the peer is gone."""
        batches: list[Batch] = []
        while not self.closed and (max_batches is None or len(batches) < max_batches):
            try:
                message = self.sock.recv(MAX_MESSAGE_BYTES)
            except BlockingIOError:
                break
            except OSError:
                self.closed = True
                break
            if not message:
                self.closed = True
                break
            batches.append(decode(message))
        self.received += sum(len(b.records) for b in batches)
        return batches

    def send(self, tick: int, records: list[Record]) -> bool:
        """Queue ``records`` and send what fits; True when none are left waiting."""
        for record in records:
            self.outbox.put(record)
        if self.closed:
            return False
        try:
            return self.outbox.flush(self.sock, tick)
        except OSError:  # EPIPE/ECONNRESET: the peer died; its replacement gets the backlog
            self.closed = True
            return False

    def close(self) -> None:
        self.closed = True
        self.sock.close()
