from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeloop import App, ControlLogic, DataProcessing, FixedUpdate, SensorInput, World
from edgeloop.messages import MessageReader, Messages


@dataclass(frozen=True)
class Alert:
    n: int


def test_each_reader_sees_each_message_once() -> None:
    queue: Messages[Alert] = Messages()
    first, second = MessageReader(queue), MessageReader(queue)
    queue.send(Alert(1))
    assert first.read() == [Alert(1)]
    queue.send(Alert(2))
    assert first.read() == [Alert(2)]
    assert second.read() == [Alert(1), Alert(2)]
    assert first.read() == [] and second.read() == []


def test_messages_live_two_updates_and_a_late_reader_counts_what_it_missed() -> None:
    queue: Messages[Alert] = Messages()
    reader = MessageReader(queue)
    queue.send(Alert(1))
    queue.update()
    queue.send(Alert(2))
    assert MessageReader(queue).read() == [Alert(1), Alert(2)]
    queue.update()
    queue.update()
    queue.send(Alert(3))
    assert reader.read() == [Alert(3)]
    assert reader.missed == 2


def test_systems_read_with_their_own_cursor_across_ticks() -> None:
    app = App()
    got: dict[str, list[int]] = {"early": [], "late": []}

    def early_reader(world: World) -> None:
        got["early"] += [m.n for m in world.read(Alert)]

    def sender(world: World) -> None:
        world.send(Alert(app.time.tick))

    def late_reader(world: World) -> None:
        got["late"] += [m.n for m in world.read(Alert)]

    app.add_systems(FixedUpdate, early_reader, in_set=SensorInput)
    app.add_systems(FixedUpdate, sender, in_set=DataProcessing)
    app.add_systems(FixedUpdate, late_reader, in_set=ControlLogic)
    app.run_for(4)
    # The reader before the sender gets each message one tick later; none is lost or doubled.
    assert got["late"] == [1, 2, 3, 4]
    assert got["early"] == [1, 2, 3]


def test_read_outside_a_system_points_to_message_reader() -> None:
    with pytest.raises(RuntimeError, match="message_reader"):
        World().read(Alert)


def test_a_reader_added_late_does_not_count_earlier_drops_as_missed() -> None:
    queue: Messages[Alert] = Messages()
    for n in range(5):
        queue.send(Alert(n))
        queue.update()
    reader = MessageReader(queue)
    assert reader.read() == [Alert(4)]
    assert reader.missed == 0
