"""A peer's output queue: NORMAL conflated in place, LOW dropped, the rest bounded."""

from __future__ import annotations

from collections import Counter

from edgeloop.net.output_queue import CONFLATED, DROPPED_LOW, OVERFLOW, OutputQueue
from edgeloop.priority import Priority

HIGH, NORMAL, LOW = int(Priority.HIGH), int(Priority.NORMAL), int(Priority.LOW)


def _queue(max_bytes: int = 100) -> OutputQueue[bytes]:
    return OutputQueue(max_bytes, Counter())


def _drain(queue: OutputQueue[bytes]) -> list[bytes]:
    return [queue.popleft()[1] for _ in range(len(queue))]


def test_normal_with_a_key_is_replaced_in_place_and_keeps_its_age() -> None:
    queue = _queue()
    assert queue.put(b"a1", NORMAL, "a", now=1.0) is None
    assert queue.put(b"h", HIGH, None, now=2.0) is None
    assert queue.put(b"a2", NORMAL, "a", now=3.0) is None
    assert queue.oldest == 1.0, "still behind since a1"
    assert queue.counters[CONFLATED] == 1
    assert queue.bytes == 3
    assert _drain(queue) == [b"a2", b"h"]
    assert queue.put(b"a3", NORMAL, "a", now=4.0) is None  # its key was freed when sent
    assert _drain(queue) == [b"a3"]


def test_normal_without_a_key_keeps_every_message_in_order() -> None:
    queue = _queue()
    for data in (b"d1", b"d2"):
        queue.put(data, NORMAL, None, now=0.0)
    assert _drain(queue) == [b"d1", b"d2"]
    assert queue.counters[CONFLATED] == 0


def test_low_is_dropped_and_counted_when_the_queue_is_full() -> None:
    queue = _queue(max_bytes=10)
    assert queue.put(b"x" * 8, HIGH, None, now=0.0) is None
    assert queue.put(b"y" * 8, LOW, None, now=0.0) is None
    assert queue.counters[DROPPED_LOW] == 1
    assert _drain(queue) == [b"x" * 8]


def test_high_that_does_not_fit_means_the_peer_is_cut_off() -> None:
    queue = _queue(max_bytes=10)
    assert queue.put(b"x" * 8, HIGH, None, now=0.0) is None
    assert queue.put(b"z" * 8, HIGH, None, now=0.0) == OVERFLOW
    assert queue.put(b"n" * 8, NORMAL, "k", now=0.0) == OVERFLOW


def test_an_empty_queue_takes_one_message_bigger_than_its_bound() -> None:
    queue = _queue(max_bytes=10)
    assert queue.put(b"w" * 50, HIGH, None, now=0.0) is None
    assert queue.bytes == 50
