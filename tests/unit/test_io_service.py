from __future__ import annotations

from edgeloop.priority import Priority
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Batch, Channel, Record, socketpair


async def test_senders_are_paused_past_the_byte_budget_and_low_is_shed_first() -> None:
    control_end, io_end = socketpair()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats, budget_bytes=20_000)
    rooms: list[bool] = []
    service.on_room(lambda: rooms.append(True))
    # The control process is not reading: everything stays in the outbox.
    accepted = [
        service.send(Record("log", str(i), int(Priority.LOW), "x" * 1000)) for i in range(15)
    ]
    assert all(accepted), "under the budget"
    accepted = [
        service.send(Record("cmd", str(i), int(Priority.HIGH), "y" * 1000)) for i in range(200)
    ]
    assert not all(accepted), "past the budget the sender is told to pause"
    assert service.channel.outbox.dropped_low > 0, "LOW went first"
    heartbeats.close()
    control_end.close()


async def test_a_failing_part_handler_costs_neither_the_batch_nor_the_loop() -> None:
    control_end, io_end = socketpair()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats)
    seen: list[str] = []

    def broken(record: Record) -> None:
        raise OverflowError("a value the part did not expect")

    service.on_topic("a", broken)
    service.on_topic("a", lambda record: seen.append(record.key))
    service.on_topic("b", lambda record: seen.append(record.key))
    records = [Record("a", "1", int(Priority.HIGH), 0), Record("b", "2", int(Priority.HIGH), 0)]
    service.handle(Batch(1, records))
    assert seen == ["1", "2"], "every handler got its record"
    assert service.handler_errors == 1
    heartbeats.close()
    control_end.close()
    io_end.close()
