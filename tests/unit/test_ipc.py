from __future__ import annotations

import socket

import pytest

from edgeloop.priority import Priority
from edgeloop.realtime.ipc import (
    MAX_LOW_BACKLOG,
    MAX_MESSAGE_BYTES,
    Channel,
    Outbox,
    Record,
    encode,
    socketpair,
)


def _record(key: str, priority: Priority, payload: object = 0) -> Record:
    return Record("t", key, int(priority), payload)


def _fill(sock: socket.socket) -> int:
    """Fill the socket buffer until the kernel refuses; returns messages written."""
    sent = 0
    while True:
        try:
            sock.send(b"\x00" * 4096)
        except BlockingIOError:
            return sent
        sent += 1


def test_a_batch_round_trips_with_its_tick() -> None:
    a, b = socketpair()
    sender, receiver = Channel(a), Channel(b)
    records = [_record("pump1", Priority.HIGH, {"speed": 0.5}), _record("x", Priority.LOW, [1, 2])]
    assert sender.send(42, records)
    (batch,) = receiver.receive()
    assert batch.tick == 42
    assert batch.records == records
    assert receiver.receive() == []


def test_a_large_batch_is_split_into_messages_that_fit() -> None:
    a, b = socketpair()
    sender, receiver = Channel(a), Channel(b)
    records = [_record(str(i), Priority.HIGH, "x" * 1000) for i in range(150)]  # ~150 KiB
    assert sender.send(1, records)
    batches = receiver.receive()
    assert len(batches) > 1
    assert [r for batch in batches for r in batch.records] == records


def test_when_the_peer_is_not_reading_urgent_waits_normal_conflates_low_drops_last() -> None:
    a, b = socketpair()
    sender = Channel(a)
    _fill(a)
    urgent = [_record(f"cmd{i}", Priority.CRITICAL) for i in range(5)]
    normal = [_record("level", Priority.NORMAL, value) for value in range(100)]
    assert not sender.send(1, urgent + normal)
    assert sender.outbox.urgent_backlog == 5
    assert sender.outbox.conflated == 99
    assert len(sender.outbox) == 6
    receiver = Channel(b)
    _drain(receiver)  # the reader catches up with the filler
    assert sender.send(2, [])
    got = [r for batch in receiver.receive() for r in batch.records]
    assert got == [*urgent, _record("level", Priority.NORMAL, 99)]


def _drain(channel: Channel) -> None:
    try:
        while channel.sock.recv(MAX_MESSAGE_BYTES):
            pass
    except BlockingIOError:
        pass


def test_low_priority_backlog_is_bounded_and_counted() -> None:
    outbox = Outbox()
    for i in range(MAX_LOW_BACKLOG + 10):
        outbox.put(_record(str(i), Priority.LOW))
    assert len(outbox) == MAX_LOW_BACKLOG
    assert outbox.dropped_low == 10


def test_a_closed_peer_is_detected_and_never_raises() -> None:
    a, b = socketpair()
    channel = Channel(a)
    b.close()
    assert channel.receive() == []
    assert channel.closed
    assert not channel.send(1, [_record("k", Priority.HIGH)])
    assert channel.outbox.urgent_backlog == 1, "kept for the replacement channel"


def test_a_replacement_channel_takes_over_the_backlog() -> None:
    a, b = socketpair()
    old = Channel(a)
    b.close()
    old.send(1, [_record("k", Priority.HIGH)])
    c, d = socketpair()
    new = Channel(c, outbox=old.outbox)
    assert new.send(2, [])
    (batch,) = Channel(d).receive()
    assert batch.records == [_record("k", Priority.HIGH)]


def test_a_malformed_message_is_dropped_and_counted_and_the_rest_still_arrive() -> None:
    a, b = socketpair()
    receiver = Channel(b)
    a.send(b"\xc1\xc1 not msgpack")
    a.send(encode(1, [b"\x93\xa1t"]))  # a record with fields missing
    Channel(a).send(2, [_record("ok", Priority.HIGH, {40001: 12.5})])  # int keys are fine
    batches = receiver.receive()
    assert [b.tick for b in batches] == [2]
    assert batches[0].records[0].payload == {40001: 12.5}
    assert receiver.malformed == 2


def test_a_payload_that_cannot_be_encoded_fails_where_it_is_sent() -> None:
    a, b = socketpair()
    sender = Channel(a)
    with pytest.raises(TypeError, match="t/bad cannot be encoded"):
        sender.outbox.put(_record("bad", Priority.HIGH, object()))
    assert sender.send(1, [_record("good", Priority.HIGH)])
    (batch,) = Channel(b).receive()
    assert [r.key for r in batch.records] == ["good"], "nothing blocked behind it"


def test_critical_records_overtake_waiting_high_ones() -> None:
    outbox = Outbox()
    outbox.put(_record("cmd", Priority.HIGH))
    outbox.put(_record("estop", Priority.CRITICAL))
    a, b = socketpair()
    assert outbox.flush(a, 1)
    (batch,) = Channel(b).receive()
    assert [r.key for r in batch.records] == ["estop", "cmd"]


def test_outbox_counts_its_bytes_and_sheds_low_records_to_a_budget() -> None:
    outbox = Outbox()
    for i in range(10):
        outbox.put(_record(f"log{i}", Priority.LOW, "x" * 100))
    outbox.put(_record("level", Priority.NORMAL, 1.0))
    outbox.put(_record("level", Priority.NORMAL, 2.0))  # conflated: counted once
    total = outbox.bytes
    assert total > 1000
    assert outbox.shed_low(total - 500) >= 4
    assert outbox.bytes <= total - 500
    a, _reader = socketpair()
    assert outbox.flush(a, 1)
    assert outbox.bytes == 0
