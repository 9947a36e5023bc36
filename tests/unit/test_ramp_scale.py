"""Ramp and scale/clamp blocks: pure steps and their wired form."""

from __future__ import annotations

import math

from edgeloop import Component, World
from edgeloop.blocks.ramp import Ramp, ramp_step
from edgeloop.blocks.scale import Scale, scaled
from edgeloop.blocks.wiring import Wire


class Signal(Component):
    value: float = 0.0


def test_ramp_rises_and_falls_at_its_own_rates_and_stops_on_the_target() -> None:
    assert ramp_step(0.0, 1.0, up=0.3, down=0.1) == 0.3
    assert ramp_step(0.9, 1.0, up=0.3, down=0.1) == 1.0
    assert ramp_step(1.0, 0.0, up=0.3, down=0.1) == 0.9
    assert ramp_step(0.05, 0.0, up=0.3, down=0.1) == 0.0
    assert ramp_step(0.5, 0.5, up=0.3, down=0.1) == 0.5


def test_ramp_holds_on_a_nan_input() -> None:
    assert ramp_step(0.5, math.nan, up=0.3, down=0.1) == 0.5


def test_wired_ramp_starts_from_its_output_and_moves_at_rate_per_second() -> None:
    world = World()
    source, out = Signal(10.0), Signal(2.0)
    world.spawn(source)
    world.spawn(out)
    ramp = Ramp(
        "sp", Wire(source, "value"), Wire(out, "value"), up_per_s=1.0, down_per_s=4.0, dt=0.01
    )
    for tick in range(100):
        ramp.step(world, tick)
    assert math.isclose(out.value, 3.0)  # 1 s at 1 unit/s
    source.value = 0.0
    for tick in range(50):
        ramp.step(world, tick)
    assert math.isclose(out.value, 1.0)  # 0.5 s at 4 units/s


def test_scale_then_clamp() -> None:
    assert scaled(512, k=0.01, offset=-1.0, low=None, high=None) == 4.12
    assert scaled(2.0, k=2.0, offset=0.0, low=0.0, high=3.0) == 3.0
    assert scaled(-2.0, k=2.0, offset=0.0, low=0.0, high=3.0) == 0.0
    assert math.isnan(scaled(math.nan, k=1.0, offset=0.0, low=0.0, high=1.0))


def test_wired_scale_writes_its_output_each_step() -> None:
    world = World()
    raw, out = Signal(27648.0), Signal()
    world.spawn(raw)
    world.spawn(out)
    scale = Scale(
        "level", Wire(raw, "value"), Wire(out, "value"), k=2.0 / 27648, offset=0.0, low=0, high=2
    )
    scale.step(world, 1)
    assert out.value == 2.0
