from __future__ import annotations

import pytest

from edgeloop import (
    ActuatorOutput,
    App,
    ControlLogic,
    FixedUpdate,
    QueryError,
    SensorInput,
    World,
)
from edgeloop.world import Storage
from tests.conftest import Frozen, Position, Velocity


def test_terms_with_and_without_filters() -> None:
    world = World()
    moving = world.spawn(Position(), Velocity())
    frozen = world.spawn(Position(), Velocity(), Frozen())
    still = world.spawn(Position())
    assert world.query(Position).entities() == [moving, frozen, still]
    assert world.query(Position, Velocity).entities() == [moving, frozen]
    assert world.query(Position, without=(Frozen,)).entities() == [moving, still]
    assert world.query(Position, with_=(Frozen,)).entities() == [frozen]
    rows = list(world.query(Position, Velocity).items())
    assert rows[0] == (moving, (world.get(moving, Position), world.get(moving, Velocity)))


def test_a_system_sees_each_change_once() -> None:
    app = App()
    a = app.world.spawn(Position())
    b = app.world.spawn(Position())
    seen: list[list[int]] = []
    writes = {3: [a], 5: [a, b]}

    def writer(world: World) -> None:
        for e in writes.get(app.time.tick, []):
            world.get(e, Position).x += 1.0

    def watcher(world: World) -> None:
        seen.append(world.query(Position, changed=(Position,)).entities())

    app.add_systems(FixedUpdate, writer, in_set=SensorInput)
    app.add_systems(FixedUpdate, watcher, in_set=ControlLogic)
    app.run_for(6)
    # Tick 1 sees both as new (added counts as changed); then only real writes.
    assert seen == [[a, b], [], [a], [], [a, b], []]


def test_a_write_between_ticks_is_seen_by_the_last_system_of_the_tick() -> None:
    app = App()
    e = app.world.spawn(Position())
    seen: list[int] = []

    def last(world: World) -> None:
        seen.append(len(world.query(Position, changed=(Position,))))

    app.add_systems(FixedUpdate, last, in_set=ActuatorOutput)
    app.run_for(1)
    app.world.get(e, Position).x = 5.0  # as the io side or a test would, outside systems
    app.run_for(1)
    assert seen == [1, 1]


def test_entities_spawned_earlier_in_a_set_are_added_for_its_last_system() -> None:
    app = App()
    seen: list[int] = []

    def spawner(world: World) -> None:
        world.commands.spawn(Position())

    def watcher(world: World) -> None:
        seen.append(len(world.query(Position, added=(Position,))))

    app.add_systems(FixedUpdate, spawner, watcher, in_set=SensorInput)
    app.run_for(3)
    assert seen == [0, 1, 1]


def test_added_filter_reports_inserts_not_writes() -> None:
    app = App()
    seen: list[int] = []

    def spawner(world: World) -> None:
        if app.time.tick == 2:
            world.commands.spawn(Position())
        for pos in world.query(Position):
            pos.x += 1.0

    def watcher(world: World) -> None:
        seen.append(len(world.query(Position, added=(Position,))))

    app.world.spawn(Position())
    app.add_systems(FixedUpdate, spawner, in_set=SensorInput)
    app.add_systems(FixedUpdate, watcher, in_set=ControlLogic)
    app.run_for(4)
    assert seen == [1, 1, 0, 0]


def test_changed_query_reads_only_recent_stamps_not_every_entity() -> None:
    class NoScan(dict[int, object]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("changed= query scanned all entities")

        def items(self):  # type: ignore[no-untyped-def]
            raise AssertionError("changed= query scanned all entities")

    world = World()
    entities = [world.spawn(Position()) for _ in range(1000)]
    world.change_tick = 10
    storage: Storage[Position] = world.storage(Position)
    storage.items = NoScan(storage.items)
    world.get(entities[500], Position).x = 1.0
    assert world.query(Position, changed=(Position,), since=9).entities() == [entities[500]]


def test_writing_while_iterating_a_changed_query_is_safe() -> None:
    world = World()
    for _ in range(10):
        world.spawn(Position())
    world.change_tick = 2
    for pos in world.query(Position, changed=(Position,)):
        pos.x = 7.0  # re-stamps the very dict the query reads
    assert all(p.x == 7.0 for p in world.query(Position))


def test_single_names_the_count_when_not_exactly_one() -> None:
    world = World()
    with pytest.raises(QueryError, match=r"exactly one entity with \(Position\), found 0"):
        world.query(Position).single()
    world.spawn(Position(3.0))
    assert world.query(Position).single().x == 3.0


def test_a_query_needs_a_component_type() -> None:
    world = World()
    with pytest.raises(TypeError, match="not a Component subclass"):
        world.query(int)  # type: ignore[type-var]
