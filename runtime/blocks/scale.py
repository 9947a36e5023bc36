"""Scale/clamp block: ``out = clamp(in * k + offset, min, max)``.

For a raw count to engineering units, a sign flip, or a limit on what control logic may
command. A NaN input gives a NaN output: a clamp must not turn "no value" into a
plausible one.
"""

from __future__ import annotations

from edgeloop.blocks.wiring import Wire
from edgeloop.world import World


def scaled(value: float, k: float, offset: float, low: float | None, high: float | None) -> float:
    out = value * k + offset
    if high is not None and out > high:
        return high
    if low is not None and out < low:
        return low
    return out


class Scale:
    __slots__ = ("high", "k", "low", "name", "offset", "output", "source")

    def __init__(
        self,
        name: str,
        source: Wire,
        output: Wire,
        *,
        k: float,
        offset: float,
        low: float | None,
        high: float | None,
    ) -> None:
        self.name = name
        self.source = source
        self.output = output
        self.k = k
        self.offset = offset
        self.low = low
        self.high = high

    def step(self, world: World, tick: int) -> None:
        self.output.write(scaled(self.source.read(), self.k, self.offset, self.low, self.high))
