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

from edgeloop.logs import every_power_of_ten
from edgeloop.priority import Priority

log = logging.getLogger("edgeloop.ipc")

# Well under the default socket buffer (~208 KiB), so one message always fits when empty.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RECORD_BYTES = MAX_MESSAGE_BYTES - 16  # room for the tick number in front
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
    """A batch from one message; ``ValueError`` if it is not one (the caller drops it)."""
    # Integer map keys are fine between our own processes (a register number as a key).
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(message)
    items = iter(unpacker)
    try:
        tick = next(items)
        records = [Record(*fields) for fields in items]
        # Raises while a record is cut short (the iteration above just stops there).
        unpacker.read_bytes(1)
    except (StopIteration, TypeError, ValueError, msgpack.UnpackException) as error:
        raise ValueError(f"malformed batch: {error}") from None
    if not isinstance(tick, int) or not all(
        isinstance(r.topic, str) and isinstance(r.key, str) and isinstance(r.priority, int)
        for r in records
    ):
        raise ValueError("malformed batch: wrong field types")
    return Batch(tick, records)


def encode_record(record: Record) -> bytes:
    """``record`` as it travels; ``TypeError``/``ValueError`` if it cannot be sent at all."""
    try:
        data = pack(tuple(record))
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"record {record.topic}/{record.key} cannot be encoded: {error}") from None
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(
            f"record {record.topic}/{record.key} is {len(data)} bytes, over {MAX_RECORD_BYTES}"
        )
    return data


class Outbox:
    """Records waiting to be sent, by priority; see the module docstring for the policy.

    Records are encoded when they are put, so a payload that cannot be encoded fails in
    the code that sent it, not later in a flush where it would block everything behind.
    CRITICAL records go out before everything else, HIGH next.
    """

    def __init__(self) -> None:
        self._critical: deque[bytes] = deque()
        self._high: deque[bytes] = deque()
        self._latest: dict[tuple[str, str], bytes] = {}
        self._low: deque[bytes] = deque()
        self.bytes = 0  # encoded size of everything waiting
        self.conflated = 0
        self.dropped_low = 0
        self.dropped_urgent = 0

    def put(self, record: Record) -> None:
        """Queue ``record``; ``TypeError``/``ValueError`` if it cannot be sent at all."""
        self.put_encoded(record, encode_record(record))

    def put_encoded(self, record: Record, data: bytes) -> None:
        """Queue ``record`` already encoded by ``encode_record`` (once for several outboxes)."""
        if record.priority <= Priority.HIGH:
            if self.urgent_backlog >= MAX_URGENT_BACKLOG:
                self.dropped_urgent += 1
                if self.dropped_urgent == 1:
                    log.error(
                        "io channel: %d urgent records waiting; dropping more",
                        MAX_URGENT_BACKLOG,
                    )
                return
            queue = self._critical if record.priority == Priority.CRITICAL else self._high
            queue.append(data)
        elif record.priority == Priority.NORMAL:
            key = (record.topic, record.key)
            old = self._latest.pop(key, None)  # re-inserted at the end: order of last change
            if old is not None:
                self.conflated += 1
                self.bytes -= len(old)
            self._latest[key] = data
        else:
            if len(self._low) >= MAX_LOW_BACKLOG:
                self.bytes -= len(self._low.popleft())
                self.dropped_low += 1
            self._low.append(data)
        self.bytes += len(data)

    def shed_low(self, budget: int) -> int:
        """Drop LOW records, oldest first, until under ``budget`` bytes; how many."""
        dropped = 0
        while self.bytes > budget and self._low:
            self.bytes -= len(self._low.popleft())
            dropped += 1
        self.dropped_low += dropped
        return dropped

    def __len__(self) -> int:
        return self.urgent_backlog + len(self._latest) + len(self._low)

    @property
    def urgent_backlog(self) -> int:
        return len(self._critical) + len(self._high)

    def flush(self, sock: socket.socket, tick: int) -> bool:
        """Send what fits without blocking; True when nothing is left waiting."""
        while len(self) > 0:
            message, taken = self._next_message(tick)
            try:
                sock.send(message)
            except BlockingIOError:
                return False
            self._consume(taken)
        return True

    def _ordered(self) -> Iterator[bytes]:
        yield from self._critical
        yield from self._high
        yield from self._latest.values()
        yield from self._low

    def _next_message(self, tick: int) -> tuple[bytes, int]:
        packed: list[bytes] = []
        size = 0
        for data in self._ordered():
            if packed and size + len(data) > MAX_RECORD_BYTES:
                break
            packed.append(data)
            size += len(data)
        return encode(tick, packed), len(packed)

    def _consume(self, count: int) -> None:
        for queue in (self._critical, self._high, self._latest, self._low):
            while count and queue:
                if isinstance(queue, dict):
                    self.bytes -= len(queue.pop(next(iter(queue))))
                else:
                    self.bytes -= len(queue.popleft())
                count -= 1


class Channel:
    """One end of the socketpair: drain whole batches in, flush the outbox out."""

    def __init__(self, sock: socket.socket, outbox: Outbox | None = None) -> None:
        self.sock = sock
        # A replacement channel (after an io restart) takes over the old one's backlog.
        self.outbox = Outbox() if outbox is None else outbox
        self.closed = False
        self.received = 0
        self.malformed = 0

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
            try:
                batches.append(decode(message))
            except ValueError as error:
                # Our own peer sent it, so it is a bug there; it must not stop this side.
                self.malformed += 1
                if every_power_of_ten(self.malformed):
                    log.error(
                        "io channel: dropped a malformed message (%d so far): %s",
                        self.malformed,
                        error,
                    )
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
