"""Interlock conditions: parsed without eval, compiled once, truth tables, errors by column."""

from __future__ import annotations

import itertools
import re

import pytest

from edgeloop import Component, World
from edgeloop.blocks.interlock import ExpressionError, Interlock, compile_condition, parse
from edgeloop.drivers.points import Quality
from edgeloop.field_ref import FieldIndex
from edgeloop.names import Name
from edgeloop.safety.safe_state import SafeState


class Door(Component):
    open: bool = False


class Level(Component):
    level_m: float = 0.0
    level_m_quality: Quality = Quality.GOOD


class Counter(Component):
    count: int = 0
    label: str = ""


@pytest.fixture
def world() -> World:
    world = World()
    world.spawn(Name("door"), Door())
    world.spawn(Name("tank-1"), Level())
    world.spawn(Name("network.tcp"), Counter())
    return world


def truth(world: World, text: str, rows: list[tuple[bool, float]]) -> list[bool]:
    condition = compile_condition(parse(text), FieldIndex(world))
    door = next(iter(world.query(Door)))
    level = next(iter(world.query(Level)))
    seen = []
    for is_open, level_m in rows:
        door.open, level.level_m = is_open, level_m
        seen.append(condition())
    return seen


ROWS = list(itertools.product([False, True], [1.0, 1.95]))


def test_or_of_a_flag_and_a_comparison(world: World) -> None:
    text = "door.Door.open or tank-1.Level.level_m > 1.9"
    assert truth(world, text, ROWS) == [False, True, True, True]


def test_and_binds_tighter_than_or_and_not_tighter_than_both(world: World) -> None:
    text = "not door.Door.open and tank-1.Level.level_m > 1.9 or false"
    assert truth(world, text, ROWS) == [False, True, False, False]
    text = "not (door.Door.open or tank-1.Level.level_m <= 1.0)"
    assert truth(world, text, ROWS) == [False, True, False, False]


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
        ("==", [False, True, False]),
        ("!=", [True, False, True]),
    ],
)
def test_every_comparison(world: World, op: str, expected: list[bool]) -> None:
    rows = [(False, 1.0), (False, 1.5), (False, 2.0)]
    assert truth(world, f"tank-1.Level.level_m {op} 1.5", rows) == expected


def test_numbers_in_every_spelling_and_bools_by_equality(world: World) -> None:
    rows = [(False, -0.002), (True, 0.0)]
    assert truth(world, "tank-1.Level.level_m < -1e-3", rows) == [True, False]
    assert truth(world, "door.Door.open == True", rows) == [False, True]
    assert truth(world, "network.tcp.Counter.count>=0", rows) == [True, True]


def test_compiled_once_reads_the_components_not_the_world_again(world: World) -> None:
    condition = compile_condition(parse("door.Door.open"), FieldIndex(world))
    world.query(Door).__iter__().__next__().open = True
    assert condition()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "door.Door.open or",
            "column 18: expected a field, a number, true/false or (, not the end",
        ),
        ("door.Door.open = true", "column 16: '=' is not a comparison; write =="),
        ("(door.Door.open", "column 16: expected ) to close column 1"),
        ("1 < tank-1.Level.level_m < 2", "column 26: one comparison at a time"),
        ("door.Door.open; true", "column 15: unexpected character ';'"),
        ("door.open", "column 1: 'door.open' is not a number"),
        ("door.Door.open true", "column 16: expected and/or, not 'true'"),
        ("__import__('os')", "column 1: '__import__' is not a number"),
        ("", "column 1: the condition is empty"),
    ],
)
def test_a_syntax_error_names_its_column(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("door.Door.opne", "door.Door.opne: Door has no field 'opne'"),
        ("dor.Door.open", "dor.Door.open: no entity named 'dor'"),
        ("door.Level.level_m > 1", "door.Level.level_m: door has no component Level"),
        ("tank-1.Level.level_m", "is a number, not a condition"),
        ("door.Door.open > 1", "> orders numbers"),
        ("door.Door.open == 1", "== compares a bool with a number"),
        ("network.tcp.Counter.label == 1", "holds '', not a number or true/false"),
    ],
)
def test_a_field_the_world_lacks_or_cannot_use_is_named(
    world: World, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compile_condition(parse(text), FieldIndex(world))


def test_interlock_trips_and_releases_its_safe_state_cause(world: World) -> None:
    world.insert_resource(SafeState())
    interlock = Interlock("door", "door.Door.open", FieldIndex(world))
    door = next(iter(world.query(Door)))
    safe = world.resource(SafeState)
    interlock.step(world, 1)
    assert not safe.active
    door.open = True
    interlock.step(world, 2)
    assert safe.causes["interlock:door"].detail == "door.Door.open"
    assert safe.causes["interlock:door"].since_tick == 2
    door.open = False
    interlock.step(world, 3)
    assert not safe.active


def test_a_field_of_bad_quality_holds_the_interlock(world: World) -> None:
    world.insert_resource(SafeState())
    interlock = Interlock("high", "tank-1.Level.level_m > 1.9", FieldIndex(world))
    level = next(iter(world.query(Level)))
    level.level_m_quality = Quality.STALE
    interlock.step(world, 1)
    assert "not of good quality" in world.resource(SafeState).describe()
    level.level_m_quality = Quality.GOOD
    interlock.step(world, 2)
    assert not world.resource(SafeState).active
