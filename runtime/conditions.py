"""Run conditions: ``run_if=`` callables deciding whether a system or set runs this pass.

Any ``Callable[[World], bool]`` is a run condition; these are the common ones.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edgeloop.clock import Time

if TYPE_CHECKING:
    from edgeloop.schedule import Condition
    from edgeloop.world import World


class on_timer:  # noqa: N801 - reads as a function at the call site, like Bevy's on_timer
    """True once each time the fixed clock crosses a multiple of ``seconds``.

    Firing is phase-aligned to the clock origin (a 1 s timer fires at 1 s, 2 s, ...), so
    it does not depend on when the system was added. Each call makes a new timer: share
    one instance between two systems and they share its firing. After a stall the timer
    fires once and skips to the next multiple rather than bursting to catch up.
    """

    __slots__ = ("_count", "period")

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"on_timer period must be > 0 s, got {seconds}")
        self.period = seconds
        self._count = 1  # index of the next multiple of period to fire at

    def __call__(self, world: World) -> bool:
        now = world.resource(Time).elapsed
        # The tolerance keeps 30 Hz on a 100 Hz clock from slipping a tick to rounding;
        # multiplying (not summing) keeps the deadlines from drifting.
        if now + 1e-9 < self._count * self.period:
            return False
        self._count = math.floor((now + 1e-9) / self.period) + 1
        return True


def resource_equals(value: object) -> Condition:
    """True while the resource of ``type(value)`` equals ``value``."""
    rtype = type(value)

    def condition(world: World) -> bool:
        return world.get_resource(rtype) == value

    condition.__qualname__ = f"resource_equals({value!r})"
    return condition
