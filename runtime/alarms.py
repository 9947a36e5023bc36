"""Alarms: conditions an operator must see, raised and cleared by the runtime and systems.

Every alarm has the ISA-18.2 states: it is raised unacknowledged, an operator
acknowledges it, and it returns to normal only once it is both cleared and acknowledged,
so an alarm that came and went before anyone looked still waits to be seen::

    active_unacked --ack--> active_acked
         | clear                | clear
         v                      v
    cleared_unacked --ack--> normal

Every change of state is kept as a transition (bounded) for the audit log to take.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum

MAX_TRANSITIONS = 1000  # kept until taken; the oldest are dropped (and counted) beyond


class Severity(Enum):
    WARNING = "warning"
    FAULT = "fault"
    CRITICAL = "critical"


class AlarmState(StrEnum):
    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    CLEARED_UNACKED = "cleared_unacked"
    NORMAL = "normal"


@dataclass(slots=True)
class Alarm:
    source: str
    text: str
    severity: Severity
    raised_tick: int
    last_tick: int
    count: int = 1
    active: bool = True
    acked: bool = False
    acked_by: str = ""
    acked_tick: int | None = None

    @property
    def state(self) -> AlarmState:
        if self.active:
            return AlarmState.ACTIVE_ACKED if self.acked else AlarmState.ACTIVE_UNACKED
        return AlarmState.NORMAL if self.acked else AlarmState.CLEARED_UNACKED


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """An alarm entered ``state`` at ``tick``; ``by`` is the operator of an acknowledge."""

    tick: int
    source: str
    state: AlarmState
    text: str
    severity: Severity
    by: str = ""


class Alarms:
    """Resource: one alarm per source; raising an active alarm again counts it.

    A cleared alarm stays listed so the operator sees what happened; raised again after
    it cleared, it is a new alarm (unacknowledged, counted from 1).
    """

    __slots__ = ("_by_source", "_transitions", "generation", "transitions_dropped")

    def __init__(self) -> None:
        self._by_source: dict[str, Alarm] = {}
        self._transitions: deque[AlarmTransition] = deque(maxlen=MAX_TRANSITIONS)
        self.transitions_dropped = 0
        self.generation = 0  # advanced by every change of state: what a view compares

    def activate(self, source: str, text: str, severity: Severity, tick: int) -> Alarm:
        alarm = self._by_source.get(source)
        if alarm is None or not alarm.active:
            alarm = self._by_source[source] = Alarm(source, text, severity, tick, tick)
            self._record(tick, alarm)
        else:
            alarm.text = text
            alarm.last_tick = tick
            alarm.count += 1
        return alarm

    def clear(self, source: str, tick: int) -> None:
        alarm = self._by_source.get(source)
        if alarm is not None and alarm.active:
            alarm.active = False
            alarm.last_tick = tick
            self._record(tick, alarm)

    def acknowledge(self, source: str, by: str, tick: int) -> bool:
        """An operator (``by``) has seen the alarm of ``source``; False if it has none
        waiting to be acknowledged."""
        if not by:
            raise ValueError("an acknowledge names the operator who gave it")
        alarm = self._by_source.get(source)
        if alarm is None or alarm.acked:
            return False
        alarm.acked, alarm.acked_by, alarm.acked_tick = True, by, tick
        self._record(tick, alarm, by)
        return True

    def transitions(self) -> list[AlarmTransition]:
        """The transitions since the last call, oldest first (the caller takes them)."""
        taken = list(self._transitions)
        self._transitions.clear()
        return taken

    def _record(self, tick: int, alarm: Alarm, by: str = "") -> None:
        self.generation += 1
        if len(self._transitions) == MAX_TRANSITIONS:
            self.transitions_dropped += 1  # the append drops the oldest
        self._transitions.append(
            AlarmTransition(tick, alarm.source, alarm.state, alarm.text, alarm.severity, by)
        )

    def get(self, source: str) -> Alarm | None:
        return self._by_source.get(source)

    def active(self) -> list[Alarm]:
        return [a for a in self._by_source.values() if a.active]

    def unacknowledged(self) -> list[Alarm]:
        """Alarms an operator has still to acknowledge, active or cleared."""
        return [a for a in self._by_source.values() if not a.acked]

    def __iter__(self) -> Iterator[Alarm]:
        return iter(list(self._by_source.values()))
