from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pytest

from edgeloop import Component, World
from tests.conftest import Position, Velocity


def test_fields_become_slots_with_generated_init() -> None:
    p = Position(1.0, y=2.0)
    assert (p.x, p.y) == (1.0, 2.0)
    assert p == Position(1.0, 2.0)
    assert repr(p) == "Position(x=1.0, y=2.0)"
    with pytest.raises(AttributeError):
        p.z = 3.0  # type: ignore[attr-defined]


def test_assignment_marks_change_only_when_the_value_differs() -> None:
    world = World()
    e = world.spawn(Position())
    world.change_tick = 5
    pos = world.get(e, Position)
    pos.x = 0.0
    assert list(world.query(Position, changed=(Position,), since=1)) == []
    pos.x = 1.0
    assert list(world.query(Position, changed=(Position,), since=1)) == [pos]
    assert world.storage(Position).changed[e] == 5


def test_removed_component_no_longer_marks() -> None:
    world = World()
    e = world.spawn(Position())
    pos = world.remove(e, Position)
    assert pos is not None and not pos.attached()
    pos.x = 4.0  # must not raise or touch the world
    assert pos.x == 4.0 and not world.has(e, Position)


def test_one_instance_cannot_belong_to_two_entities() -> None:
    world = World()
    pos = Position()
    world.spawn(pos)
    with pytest.raises(ValueError, match="already belongs to entity"):
        world.spawn(pos)


def test_mutable_field_types_are_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"Samples\.values: .*not a state type"):

        class Samples(Component):
            values: list[float]


class Mode(Enum):
    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True)
class Vec2:
    x: float
    y: float


def test_enums_tuples_optionals_and_frozen_dataclasses_are_state() -> None:
    class Rich(Component):
        mode: Mode = Mode.AUTO
        history: tuple[float, ...] = ()
        target: Vec2 | None = None

    rich = Rich(history=(1.0, 2.0), target=Vec2(1.0, 2.0))
    assert rich.values() == (Mode.AUTO, (1.0, 2.0), Vec2(1.0, 2.0))


def test_field_without_default_after_default_is_an_error() -> None:
    with pytest.raises(TypeError, match="without default follows"):

        class Bad(Component):
            a: float = 0.0
            b: float


def test_subclass_inherits_fields() -> None:
    class Position3(Position):
        z: float = 0.0

    p = Position3(1.0, 2.0, 3.0)
    assert p.values() == (1.0, 2.0, 3.0)
    assert Position3.__el_fields__ == ("x", "y", "z")


def test_components_of_different_types_are_never_equal() -> None:
    assert Position(0.0, 0.0) != Velocity(0.0, 0.0)


def test_a_subclass_can_give_an_inherited_field_a_new_default() -> None:
    class Raised(Position):
        x: float = 5.0

    assert Raised().values() == (5.0, 0.0)


def test_forward_referenced_field_types_are_checked_when_first_stored() -> None:
    class Later(Component):
        samples: Samples  # type: ignore[name-defined]  # noqa: F821 - defined below

    globals()["Samples"] = list
    try:
        with pytest.raises(TypeError, match=r"Later\.samples: .*not a state type"):
            World().spawn(Later([]))
    finally:
        del globals()["Samples"]
