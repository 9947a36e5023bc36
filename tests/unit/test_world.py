from __future__ import annotations

import pytest

from edgeloop import ComponentNotFoundError, EntityNotFoundError, ResourceNotFoundError, World
from edgeloop.entity import entity_str
from tests.conftest import Position, Velocity, output_of_another_process


def test_spawn_get_insert_remove_despawn() -> None:
    world = World()
    e = world.spawn(Position(1.0))
    assert world.get(e, Position).x == 1.0
    world.insert(e, Velocity(2.0))
    assert world.has(e, Velocity)
    assert world.remove(e, Velocity) == Velocity(2.0)
    assert not world.has(e, Velocity)
    with pytest.raises(ComponentNotFoundError, match="has no Velocity"):
        world.get(e, Velocity)
    world.despawn(e)
    assert not world.is_alive(e)
    assert len(world) == 0


def test_stale_id_is_detected_after_its_slot_is_reused() -> None:
    world = World()
    old = world.spawn(Position(1.0))
    world.despawn(old)
    new = world.spawn(Position(2.0))
    assert new & 0xFFFFFFFF == old & 0xFFFFFFFF, "the index is reused"
    assert new != old
    with pytest.raises(EntityNotFoundError, match=f"entity {entity_str(old)} is not alive"):
        world.get(old, Position)
    with pytest.raises(EntityNotFoundError):
        world.insert(old, Velocity())
    with pytest.raises(EntityNotFoundError):
        world.despawn(old)
    assert world.get(new, Position).x == 2.0


def test_freed_slots_are_reused_oldest_first() -> None:
    world = World()
    a, b = world.spawn(), world.spawn()
    world.despawn(a)
    world.despawn(b)
    assert world.spawn() & 0xFFFFFFFF == a & 0xFFFFFFFF


def test_insert_replaces_and_detaches_the_old_component() -> None:
    world = World()
    e = world.spawn(Position(1.0))
    old = world.get(e, Position)
    world.insert(e, Position(5.0))
    assert world.get(e, Position).x == 5.0
    assert not old.attached()


def test_missing_resource_error_says_how_to_add_it() -> None:
    world = World()
    with pytest.raises(ResourceNotFoundError, match=r"insert one with app\.insert_resource"):
        world.resource(int)
    assert world.get_resource(int) is None
    world.insert_resource(42)
    assert world.resource(int) == 42
    assert world.remove_resource(int) == 42


def _build_world() -> World:
    world = World()
    for i in range(50):
        world.spawn(Position(i * 0.1, -i / 3), Velocity(1.0 / (i + 1)))
    world.despawn(7)
    return world


def test_state_hash_is_equal_for_equal_worlds_and_changes_with_any_field() -> None:
    a, b = _build_world(), _build_world()
    assert a.state_hash() == b.state_hash()
    b.get(3, Velocity).dy = 1e-12
    assert a.state_hash() != b.state_hash()


def test_state_hash_covers_entity_identity() -> None:
    a, b = World(), World()
    a.spawn(Position(1.0))
    b.spawn()
    b.spawn(Position(1.0))
    assert a.state_hash() != b.state_hash()


def test_state_hash_is_the_same_in_another_process() -> None:
    code = "from tests.unit.test_world import _build_world; print(_build_world().state_hash())"
    assert output_of_another_process(code) == _build_world().state_hash()
