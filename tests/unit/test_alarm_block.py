"""Limit alarm blocks: hysteresis, on/off delays, and the alarm they raise."""

from __future__ import annotations

from edgeloop import Component, World
from edgeloop.alarms import Alarms, Severity
from edgeloop.blocks.alarm import LimitAlarm, LimitCondition
from edgeloop.blocks.wiring import Wire


def run(condition: LimitCondition, values: list[float]) -> list[bool]:
    return [condition.update(value) for value in values]


def test_a_high_alarm_clears_only_below_the_deadband() -> None:
    high = LimitCondition(1.8, high=True, deadband=0.1, on_delay=0, off_delay=0)
    values = [1.7, 1.81, 1.79, 1.71, 1.8, 1.69, 1.75]
    assert run(high, values) == [False, True, True, True, True, False, False]


def test_a_low_alarm_mirrors_it() -> None:
    low = LimitCondition(0.2, high=False, deadband=0.05, on_delay=0, off_delay=0)
    values = [0.3, 0.19, 0.24, 0.26, 0.21]
    assert run(low, values) == [False, True, True, False, False]


def test_on_delay_asks_for_consecutive_ticks_beyond_the_limit() -> None:
    high = LimitCondition(1.0, high=True, deadband=0.0, on_delay=3, off_delay=0)
    assert run(high, [2, 2, 2, 0, 2, 2, 2]) == [False] * 7, "a dip restarts the count"
    assert run(high, [2]) == [True], "the fourth tick in a row: 3 ticks of delay passed"


def test_off_delay_asks_for_consecutive_ticks_back() -> None:
    high = LimitCondition(1.0, high=True, deadband=0.0, on_delay=0, off_delay=2)
    assert run(high, [2, 0, 0, 2, 0, 0, 0]) == [True, True, True, True, True, True, False]


def test_nan_changes_nothing() -> None:
    high = LimitCondition(1.0, high=True, deadband=0.0, on_delay=0, off_delay=0)
    assert run(high, [float("nan"), 2.0, float("nan")]) == [False, True, True]


class Level(Component):
    level_m: float = 0.0


def test_the_block_raises_and_clears_its_own_alarm() -> None:
    world = World()
    world.insert_resource(Alarms())
    level = Level()
    world.spawn(level)
    condition = LimitCondition(1.8, high=True, deadband=0.0, on_delay=0, off_delay=0)
    block = LimitAlarm("tank1_high", Wire(level, "level_m"), condition, Severity.FAULT, "high")
    level.level_m = 1.9
    block.step(world, 7)
    alarm = world.resource(Alarms).get("alarm:tank1_high")
    assert alarm is not None and alarm.state == "active_unacked" and alarm.raised_tick == 7
    assert alarm.severity is Severity.FAULT and alarm.text == "high"
    level.level_m = 1.0
    block.step(world, 8)
    assert alarm.state == "cleared_unacked"
