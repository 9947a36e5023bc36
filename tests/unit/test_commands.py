from __future__ import annotations

import logging

import pytest

from edgeloop import Alarms, App, ControlLogic, DataProcessing, FixedUpdate, SensorInput, World
from tests.conftest import Position, Velocity


def test_commands_apply_at_the_end_of_the_set() -> None:
    app = App()
    counts: list[tuple[str, int]] = []
    spawned: list[int] = []

    def spawner(world: World) -> None:
        spawned.append(world.commands.spawn(Position()))
        counts.append(("same system", len(world.query(Position))))

    def same_set(world: World) -> None:
        counts.append(("same set", len(world.query(Position))))

    def next_set(world: World) -> None:
        counts.append(("next set", len(world.query(Position))))

    app.add_systems(FixedUpdate, spawner, same_set, in_set=SensorInput)
    app.add_systems(FixedUpdate, next_set, in_set=DataProcessing)
    app.run_for(1)
    assert counts == [("same system", 0), ("same set", 0), ("next set", 1)]
    assert app.world.is_alive(spawned[0])


def test_insert_remove_despawn_are_deferred() -> None:
    world = World()
    a = world.spawn(Position())
    b = world.spawn(Position())
    world.commands.insert(a, Velocity(1.0))
    world.commands.remove(a, Position)
    world.commands.despawn(b)
    assert world.has(a, Position) and world.is_alive(b)
    world.commands.apply()
    assert world.has(a, Velocity) and not world.has(a, Position)
    assert not world.is_alive(b)


def test_command_for_a_despawned_entity_is_skipped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    e = world.spawn(Position())
    world.commands.insert(e, Velocity())
    world.commands.despawn(e)
    world.commands.insert(e, Velocity())
    world.despawn(e)
    with caplog.at_level(logging.WARNING):
        world.commands.apply()
    assert world.commands.skipped == 3
    assert len(caplog.records) == 1
    assert "despawned before commands were applied" in caplog.text


def test_a_failing_system_leaves_no_half_applied_commands() -> None:
    app = App(on_system_error="skip")

    def half_done(world: World) -> None:
        world.commands.spawn(Position())
        raise RuntimeError("sensor table corrupt")

    def fine(world: World) -> None:
        world.commands.spawn(Velocity())

    app.add_systems(FixedUpdate, half_done, fine, in_set=ControlLogic)
    app.run_for(1)
    assert len(app.world.query(Position)) == 0
    assert len(app.world.query(Velocity)) == 1
    assert len(app.world) == 1, "the entity reserved by the failed system is released"
    assert app.world.resource(Alarms).active()


def test_a_bad_component_fails_in_the_system_that_queues_it() -> None:
    app = App(on_system_error="skip")
    shared = Position()
    app.world.spawn(shared)

    def queues_attached(world: World) -> None:
        world.commands.spawn(shared)

    app.add_systems(FixedUpdate, queues_attached, in_set=SensorInput)
    app.run_for(2)  # skip policy: reported as that system's fault, the loop goes on
    alarm = app.world.resource(Alarms).get("system:" + queues_attached.__qualname__)
    assert alarm is not None and "already belongs to an entity" in alarm.text
