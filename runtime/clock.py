"""The fixed-timestep clock that systems read time from (never from ``time.time()``)."""

from __future__ import annotations


class Time:
    """Resource: the fixed tick being run.

    ``tick`` counts fixed ticks from 1 (0 before the first), ``delta`` is the fixed step in
    seconds, ``elapsed`` is ``tick * delta`` — computed, not summed, so it does not drift.
    The real-time runner advances this same clock, so simulation, replay and the appliance
    see the same time for the same tick.
    """

    __slots__ = ("delta", "elapsed", "tick")

    def __init__(self, rate_hz: float) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.delta = 1.0 / rate_hz
        self.tick = 0
        self.elapsed = 0.0

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.delta

    def advance(self) -> None:
        self.tick += 1
        self.elapsed = self.tick * self.delta

    def __repr__(self) -> str:
        return f"Time(tick={self.tick}, delta={self.delta}, elapsed={self.elapsed})"
