"""Alarms: conditions an operator must see, raised and cleared by the runtime and systems."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum


class Severity(Enum):
    WARNING = "warning"
    FAULT = "fault"
    CRITICAL = "critical"


@dataclass(slots=True)
class Alarm:
    source: str
    text: str
    severity: Severity
    raised_tick: int
    last_tick: int
    count: int = 1
    active: bool = True


class Alarms:
    """Resource: one alarm per source; raising an active alarm again counts it.

    A cleared alarm stays listed (inactive) so the operator sees what happened.
    """

    __slots__ = ("_by_source",)

    def __init__(self) -> None:
        self._by_source: dict[str, Alarm] = {}

    def activate(self, source: str, text: str, severity: Severity, tick: int) -> Alarm:
        alarm = self._by_source.get(source)
        if alarm is None or not alarm.active:
            alarm = self._by_source[source] = Alarm(source, text, severity, tick, tick)
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

    def get(self, source: str) -> Alarm | None:
        return self._by_source.get(source)

    def active(self) -> list[Alarm]:
        return [a for a in self._by_source.values() if a.active]

    def __iter__(self) -> Iterator[Alarm]:
        return iter(list(self._by_source.values()))
