"""The e-stop button of a simulated appliance: press and release the ``estop`` section's
input lines on the simulated chip of a running ``edgeloop run``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgeloop.config import Config
from edgeloop.drivers.gpio.config import GpioLine
from edgeloop.drivers.gpio.sim_client import set_level

SECTION = "estop"


class NoSimEstop(Exception):
    """The config has no e-stop input on the simulated chip to press (or not that one)."""


def estop_lines(config: Config) -> list[GpioLine]:
    """The e-stop input lines of ``config`` (its ``estop`` section's ``inputs``)."""
    section = config.sections.get(SECTION)
    inputs: list[GpioLine] = getattr(section, "inputs", [])
    return list(inputs)


def simulated_lines(lines: Sequence[GpioLine], index: int | None = None) -> list[GpioLine]:
    """The lines to drive: all the simulated ones, or the one at ``index``."""
    if not lines:
        raise NoSimEstop(f"the config has no {SECTION}.inputs")
    if index is not None:
        if not 0 <= index < len(lines):
            raise NoSimEstop(f"--line {index}: {SECTION}.inputs has lines 0 to {len(lines) - 1}")
        if not lines[index].simulated:
            raise NoSimEstop(
                f"{SECTION}.inputs[{index}] is {lines[index]}, not on the simulated chip: "
                "press the real button"
            )
        return [lines[index]]
    chosen = [line for line in lines if line.simulated]
    if not chosen:
        raise NoSimEstop(f"no {SECTION}.inputs line is on the simulated chip (chip: sim)")
    return chosen


def pressed_level(line: GpioLine, pressed: bool) -> int:
    """The physical level of ``line`` when the button is pressed (its active level) or
    released."""
    return int(pressed != line.active_low)


def set_pressed(state_dir: Path, lines: Sequence[GpioLine], pressed: bool) -> None:
    """Press (or release) the button on each of ``lines``; returns once the chip has
    applied every level. Raises ``sim_client.NoSimChip`` when no chip listens."""
    for line in lines:
        set_level(state_dir, line.offset, pressed_level(line, pressed))
