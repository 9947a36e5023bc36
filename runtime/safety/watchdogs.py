"""Watchdogs: a deadline per device and robot, on the control side.

Whatever the io side thinks of a device, the control process expects to hear from it
(values from a device, telemetry from a robot) within its deadline. One that stays
silent longer, connected or not, trips ``watchdog:<name>`` in SafeState for its own
outputs (a device's safe values, a robot's stop), raises a FAULT alarm, and is marked
Disconnected by whoever registered it (``on_expired``). Hearing from it again ends the
condition: at once (``recovery: auto``) or at an operator's reset (``reset``).

Deadlines are counted in ticks, so replay with a manual clock gives the same outcome.
They run from the first tick with ``START_GRACE_S`` more for the first one (a device
connecting after a boot is not silent yet; one that never answers is, after that).
Names are checked every ``CHECK_EVERY_TICKS`` ticks (50 ms at 100 Hz), so a thousand
robots cost the tick little.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from edgeloop.alarms import Alarms, Severity
from edgeloop.clock import Time
from edgeloop.config import Section
from edgeloop.safety.safe_state import SafeState
from edgeloop.world import World

Recovery = Literal["auto", "reset"]
PREFIX = "watchdog:"
START_GRACE_S = 5.0
CHECK_EVERY_TICKS = 5


class WatchdogSettings(Section):
    """A device's or the robots' watchdog keys: ``watchdog_s`` (None: the driver's
    default) and how the safe state it trips ends."""

    watchdog_s: Annotated[float, Field(gt=0, le=3600, strict=True)] | None = None
    watchdog_recovery: Recovery = "auto"


@dataclass(slots=True)
class _Watched:
    deadline_ticks: int
    latched: bool
    on_expired: Callable[[World], None] | None
    heard_at: Callable[[], int] | None  # the tick it was heard last, kept by its owner
    last_tick: int = 0  # heard last (or started watching), without ``heard_at``
    expired: bool = False


class Watchdogs:
    """Resource: every watched name and when it was last heard from."""

    def __init__(self) -> None:
        self._watched: dict[str, _Watched] = {}
        self._started: int | None = None  # the first tick checked

    def watch(
        self,
        name: str,
        deadline_s: float,
        recovery: Recovery,
        period_s: float,
        *,
        on_expired: Callable[[World], None] | None = None,
        heard_at: Callable[[], int] | None = None,
    ) -> None:
        """Expect ``heard(name)`` (or ``heard_at()`` to move) at least every
        ``deadline_s`` (ticks of ``period_s``). Watching a name again replaces it."""
        ticks = max(1, math.ceil(deadline_s / period_s))
        watched = _Watched(ticks, recovery == "reset", on_expired, heard_at)
        if self._started is not None:
            watched.last_tick = self._started
        self._watched[name] = watched

    def heard(self, name: str, tick: int) -> None:
        watched = self._watched.get(name)
        if watched is not None:
            watched.last_tick = tick

    def expired(self, name: str) -> bool:
        watched = self._watched.get(name)
        return watched is not None and watched.expired

    def deadline_ticks(self, name: str) -> int | None:
        watched = self._watched.get(name)
        return None if watched is None else watched.deadline_ticks

    def check(self, world: World, tick: int) -> None:
        """Expire the silent, release the heard again."""
        period = world.resource(Time).delta
        if self._started is None:  # the deadlines run from the first tick, not Startup
            self._started = tick + math.ceil(START_GRACE_S / period)
            for watched in self._watched.values():
                watched.last_tick = self._started
        if tick % CHECK_EVERY_TICKS:
            return
        safe: SafeState | None = None
        for name, watched in self._watched.items():
            last = watched.last_tick
            if watched.heard_at is not None:
                last = max(last, watched.heard_at())
            silent = tick - last
            if silent > watched.deadline_ticks:
                if not watched.expired:
                    safe = safe or world.resource(SafeState)
                    self._expire(world, safe, name, watched, tick - last)
            elif watched.expired:
                watched.expired = False
                safe = safe or world.resource(SafeState)
                safe.release(PREFIX + name)
                world.resource(Alarms).clear(PREFIX + name, tick)

    def _expire(
        self, world: World, safe: SafeState, name: str, watched: _Watched, silent: int
    ) -> None:
        watched.expired = True
        tick = world.resource(Time).tick
        detail = f"{name} silent for {silent * world.resource(Time).delta:.1f} s"
        safe.trip(PREFIX + name, detail, tick, scope=name, latched=watched.latched)
        world.resource(Alarms).activate(PREFIX + name, detail, Severity.FAULT, tick)
        if watched.on_expired is not None:
            watched.on_expired(world)


def check_watchdogs(world: World) -> None:
    """SafetyChecks: every watchdog, after this tick's inputs are in."""
    watchdogs = world.get_resource(Watchdogs)
    if watchdogs is not None:
        watchdogs.check(world, world.resource(Time).tick)
