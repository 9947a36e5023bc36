"""Alarm block: a high or low limit on a World field, raised through ``Alarms``.

Hysteresis keeps a value hovering at the limit from raising and clearing the alarm
every tick: a high alarm raised above ``limit`` clears only below ``limit - deadband``
(a low one the mirror image). The on-delay asks the limit to be exceeded for so many
consecutive ticks before the alarm is raised; the off-delay asks the value to stay back
for so many before it clears. The alarm's ISA-18.2 states and acknowledge are the
``Alarms`` resource's, as for every alarm of the runtime.
"""

from __future__ import annotations

from edgeloop.alarms import Alarms, Severity
from edgeloop.blocks.wiring import Wire
from edgeloop.world import World


class LimitCondition:
    """Whether a limit alarm is on, tick by tick, with hysteresis and delays."""

    __slots__ = ("_count", "active", "deadband", "high", "limit", "off_delay", "on_delay")

    def __init__(
        self, limit: float, *, high: bool, deadband: float, on_delay: int, off_delay: int
    ) -> None:
        self.limit = limit
        self.high = high
        self.deadband = deadband
        self.on_delay = on_delay  # ticks
        self.off_delay = off_delay
        self.active = False
        self._count = 0  # consecutive ticks the value has been on the other side

    def update(self, value: float) -> bool:
        """Whether the alarm is on after ``value``. A NaN changes nothing."""
        if self.active:
            changing = (
                value < self.limit - self.deadband
                if self.high
                else value > self.limit + self.deadband
            )
            delay = self.off_delay
        else:
            changing = value > self.limit if self.high else value < self.limit
            delay = self.on_delay
        if not changing:
            self._count = 0
            return self.active
        self._count += 1
        if self._count > delay:
            self.active = not self.active
            self._count = 0
        return self.active


class LimitAlarm:
    """A wired alarm block: raises and clears the alarm of ``source`` in ``Alarms``."""

    __slots__ = ("condition", "input", "name", "severity", "source", "text")

    def __init__(
        self,
        name: str,
        source_field: Wire,
        condition: LimitCondition,
        severity: Severity,
        text: str,
    ) -> None:
        self.name = name
        self.source = f"alarm:{name}"
        self.input = source_field
        self.condition = condition
        self.severity = severity
        self.text = text

    def step(self, world: World, tick: int) -> None:
        was = self.condition.active
        now = self.condition.update(self.input.read())
        if now and not was:
            world.resource(Alarms).activate(self.source, self.text, self.severity, tick)
        elif was and not now:
            world.resource(Alarms).clear(self.source, tick)
