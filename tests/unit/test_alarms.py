"""Alarms: the ISA-18.2 states every alarm of the runtime goes through, and their record."""

from __future__ import annotations

import pytest

from edgeloop.alarms import MAX_TRANSITIONS, Alarms, AlarmState, Severity


def states(alarms: Alarms) -> list[tuple[int, str, str, str]]:
    return [(t.tick, t.source, t.state, t.by) for t in alarms.transitions()]


def test_acknowledged_while_active_then_cleared_is_normal() -> None:
    alarms = Alarms()
    alarm = alarms.activate("tank1.high", "level high", Severity.WARNING, tick=1)
    assert alarm.state == "active_unacked"
    assert alarms.acknowledge("tank1.high", by="ana", tick=2)
    assert alarm.state == "active_acked" and alarm.acked_by == "ana"
    alarms.clear("tank1.high", tick=3)
    assert alarm.state is AlarmState.NORMAL
    assert states(alarms) == [
        (1, "tank1.high", "active_unacked", ""),
        (2, "tank1.high", "active_acked", "ana"),
        (3, "tank1.high", "normal", ""),
    ]


def test_cleared_before_anyone_looked_waits_for_an_acknowledge() -> None:
    alarms = Alarms()
    alarm = alarms.activate("pump", "overload", Severity.FAULT, tick=1)
    alarms.clear("pump", tick=2)
    assert alarm.state == "cleared_unacked"
    assert [a.source for a in alarms.unacknowledged()] == ["pump"]
    assert alarms.acknowledge("pump", by="ben", tick=5)
    assert alarm.state == "normal" and not alarms.unacknowledged()
    seen = [t.state for t in alarms.transitions()]
    assert seen == ["active_unacked", "cleared_unacked", "normal"]


def test_nothing_to_acknowledge_twice_or_for_an_unknown_source() -> None:
    alarms = Alarms()
    alarms.activate("pump", "overload", Severity.FAULT, tick=1)
    assert alarms.acknowledge("pump", by="ana", tick=2)
    assert not alarms.acknowledge("pump", by="ben", tick=3)
    assert alarms.get("pump").acked_by == "ana"  # type: ignore[union-attr]
    assert not alarms.acknowledge("valve", by="ana", tick=3)
    with pytest.raises(ValueError, match="operator"):
        alarms.acknowledge("pump", by="", tick=3)


def test_raised_again_after_it_cleared_is_a_new_unacknowledged_alarm() -> None:
    alarms = Alarms()
    alarms.activate("pump", "overload", Severity.FAULT, tick=1)
    alarms.acknowledge("pump", by="ana", tick=2)
    alarms.clear("pump", tick=3)
    again = alarms.activate("pump", "overload", Severity.FAULT, tick=4)
    assert again.state == "active_unacked" and again.count == 1 and again.raised_tick == 4


def test_raising_an_active_alarm_again_counts_it_without_a_transition() -> None:
    alarms = Alarms()
    alarms.activate("io-link", "lost", Severity.FAULT, tick=1)
    alarms.transitions()
    alarm = alarms.activate("io-link", "lost again", Severity.FAULT, tick=2)
    assert alarm.count == 2 and alarm.text == "lost again"
    assert alarms.transitions() == []


def test_transitions_are_bounded_and_the_dropped_counted() -> None:
    alarms = Alarms()
    for tick in range(MAX_TRANSITIONS + 5):
        alarms.activate(f"a{tick}", "x", Severity.WARNING, tick)
    taken = alarms.transitions()
    assert len(taken) == MAX_TRANSITIONS and taken[0].source == "a5"
    assert alarms.transitions_dropped == 5
