"""The alarms as the World shows them: an ``AlarmList`` on the ``safety`` entity, so a
dashboard subscribed to the World sees every alarm, its state and who acknowledged it.

Written in FixedUpdate (SafetyStatus) when an alarm changed state, from ticks only, so
a replay builds the same list at the same tick as the run it replays.

Bounded: at most ``MAX_ROWS`` rows, those an operator must see first (unacknowledged,
then active, newest first), texts cut to ``MAX_TEXT``; ``more`` says how many are left
out. A fleet whose robots all go silent lists a thousand alarms, and the list travels to
the io process as one record, which must stay far below its 64 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.alarms import Alarm, Alarms
from edgeloop.component import Component
from edgeloop.world import World

MAX_ROWS = 100
MAX_TEXT = 160  # characters of a text or a source; a row stays under ~400 bytes


@dataclass(frozen=True, slots=True)
class AlarmRow:
    source: str  # what acknowledges it: "watchdog:plc1", "alarm:tank_high"
    text: str
    severity: str  # warning, fault, critical
    state: str  # active_unacked, active_acked, cleared_unacked, normal
    raised_tick: int
    acked_by: str = ""


class AlarmList(Component):
    """Every alarm the appliance has raised and still lists, oldest first."""

    alarms: tuple[AlarmRow, ...] = ()
    more: int = 0  # alarms listed by the resource but left out here (see MAX_ROWS)
    generation: int = 0  # Alarms.generation this list shows


def show_alarms(world: World) -> None:
    """SafetyStatus: the list follows the resource (when an alarm changed state)."""
    alarms = world.resource(Alarms)
    for shown in world.query(AlarmList):
        if shown.generation == alarms.generation:
            continue
        shown.generation = alarms.generation
        every = sorted(alarms, key=_first_to_see)
        shown.alarms = tuple(_row(a) for a in every[:MAX_ROWS])
        shown.more = max(0, len(every) - MAX_ROWS)


def _first_to_see(alarm: Alarm) -> tuple[bool, bool, int]:
    return (alarm.acked, not alarm.active, -alarm.raised_tick)


def _row(alarm: Alarm) -> AlarmRow:
    return AlarmRow(
        alarm.source[:MAX_TEXT],
        alarm.text[:MAX_TEXT],
        alarm.severity.value,
        str(alarm.state),
        alarm.raised_tick,
        alarm.acked_by[:MAX_TEXT],
    )
