from __future__ import annotations

from edgeloop.priority import Priority
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Channel, Record, socketpair


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
