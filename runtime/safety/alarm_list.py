"""The alarms as the World shows them: an ``AlarmList`` on the ``safety`` entity, so a
dashboard subscribed to the World sees every alarm, its state and who acknowledged it.

Written in FixedUpdate (SafetyStatus) when an alarm changed state, from ticks only, so
a replay builds the same list at the same tick as the run it replays.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.alarms import Alarms
from edgeloop.component import Component
from edgeloop.world import World


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
    generation: int = 0  # Alarms.generation this list shows


def show_alarms(world: World) -> None:
    """SafetyStatus: the list follows the resource (when an alarm changed state)."""
    alarms = world.resource(Alarms)
    for shown in world.query(AlarmList):
        if shown.generation == alarms.generation:
            continue
        shown.generation = alarms.generation
        shown.alarms = tuple(
            AlarmRow(a.source, a.text, a.severity.value, str(a.state), a.raised_tick, a.acked_by)
            for a in alarms
        )
