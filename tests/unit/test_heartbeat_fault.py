"""An io worker's fault text in the heartbeat block, as the supervisor reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeloop.realtime.heartbeat import FAULT_TEXT_BYTES, Heartbeats, IoSlot


@pytest.fixture
def heartbeats() -> Iterator[Heartbeats]:
    made = Heartbeats(io_workers=2)
    yield made
    made.close()


def test_each_worker_has_its_own_fault_text_next_to_its_counters(heartbeats: Heartbeats) -> None:
    heartbeats.set_io(1, IoSlot.CONNECTIONS, 7)
    heartbeats.set_io_fault(1, "tcp 127.0.0.1:7700 not listening (address in use)")
    assert heartbeats.io_fault(1) == "tcp 127.0.0.1:7700 not listening (address in use)"
    assert heartbeats.io_fault(0) == ""
    assert heartbeats.io(1, IoSlot.CONNECTIONS) == 7
    heartbeats.set_io_fault(1, "")
    assert heartbeats.io_fault(1) == ""


def test_a_text_being_written_is_not_read(heartbeats: Heartbeats) -> None:
    heartbeats.set_io_fault(0, "old")
    heartbeats.slots[heartbeats.io_slot(0, IoSlot.FAULT_SEQ)] += 1  # a writer midway
    assert heartbeats.io_fault(0) is None


def test_a_long_text_is_cut_and_a_mapped_copy_sees_it(heartbeats: Heartbeats) -> None:
    heartbeats.set_io_fault(1, "é" * FAULT_TEXT_BYTES)
    mapped = Heartbeats(heartbeats.fd)
    try:
        assert mapped.io_workers == 2
        assert mapped.io_fault(1) == "é" * (FAULT_TEXT_BYTES // 2)
    finally:
        mapped.unmap()
