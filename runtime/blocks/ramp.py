"""Ramp (rate limiter) block: the output moves toward the input at a bounded rate.

A setpoint ramp is the usual use: an operator's new level is approached at so many
units per second instead of in one step that saturates the loop after it. The output
starts from the value its field holds at Startup, and holds while the input is NaN.
"""

from __future__ import annotations

from edgeloop.blocks.wiring import Wire
from edgeloop.world import World


def ramp_step(current: float, target: float, up: float, down: float) -> float:
    """``current`` moved toward ``target`` by at most ``up`` (rising) or ``down``
    (falling); a NaN target leaves it where it is."""
    if target > current:
        return min(current + up, target)
    if target < current:
        return max(current - down, target)
    return current  # equal, or the target is NaN


class Ramp:
    __slots__ = ("down_per_tick", "name", "output", "source", "up_per_tick", "value")

    def __init__(
        self,
        name: str,
        source: Wire,
        output: Wire,
        *,
        up_per_s: float,
        down_per_s: float,
        dt: float,
    ) -> None:
        self.name = name
        self.source = source
        self.output = output
        self.up_per_tick = up_per_s * dt
        self.down_per_tick = down_per_s * dt
        self.value: float = output.read()

    def step(self, world: World, tick: int) -> None:
        self.value = ramp_step(self.value, self.source.read(), self.up_per_tick, self.down_per_tick)
        self.output.write(self.value)
