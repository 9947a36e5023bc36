"""The e-stop button of a simulated appliance: which lines it presses, and pressing them."""

from __future__ import annotations

import select
from pathlib import Path

import pytest

from edgeloop.config import Config, RuntimeConfig, Section
from edgeloop.drivers.gpio import GpioLine, open_input
from edgeloop.drivers.gpio.estop_switch import (
    NoSimEstop,
    estop_lines,
    set_pressed,
    simulated_lines,
)
from edgeloop.drivers.gpio.sim_client import NoSimChip

NORMALLY_CLOSED = GpioLine(chip="sim", offset=0, active_low=True, bias="pull_up")
NORMALLY_OPEN = GpioLine(chip="sim", offset=1)
REAL = GpioLine(chip="gpiochip0", offset=17)


class EstopInputs(Section):
    """What the estop section offers this module: its input lines."""

    inputs: list[GpioLine]


def config_with(sections: dict[str, Section]) -> Config:
    return Config(Path("config.yaml"), RuntimeConfig(), sections, [])


def test_the_estop_lines_are_the_estop_sections_inputs() -> None:
    lines = [NORMALLY_CLOSED, REAL]
    assert estop_lines(config_with({"estop": EstopInputs(inputs=lines)})) == lines
    assert estop_lines(config_with({})) == []


def test_every_simulated_line_is_pressed_unless_one_is_chosen() -> None:
    lines = [NORMALLY_CLOSED, REAL, NORMALLY_OPEN]
    assert simulated_lines(lines) == [NORMALLY_CLOSED, NORMALLY_OPEN]
    assert simulated_lines(lines, 2) == [NORMALLY_OPEN]


@pytest.mark.parametrize(
    ("lines", "index", "message"),
    [
        ([], None, "the config has no estop.inputs"),
        ([REAL], None, "no estop.inputs line is on the simulated chip"),
        ([NORMALLY_OPEN, REAL], 1, r"estop.inputs\[1\] is gpiochip0 line 17, not on the simul"),
        ([NORMALLY_OPEN], 1, "--line 1: estop.inputs has lines 0 to 0"),
    ],
)
def test_no_line_to_press_says_why(lines: list[GpioLine], index: int | None, message: str) -> None:
    with pytest.raises(NoSimEstop, match=message):
        simulated_lines(lines, index)


def test_press_drives_each_line_active_and_release_inactive(tmp_path: Path) -> None:
    inputs = [open_input(line, tmp_path) for line in (NORMALLY_CLOSED, NORMALLY_OPEN)]
    try:
        assert [line.active() for line in inputs] == [False, False]
        set_pressed(tmp_path, [NORMALLY_CLOSED, NORMALLY_OPEN], pressed=True)
        # set_pressed returns once the chip applied each level: the edges are pending
        assert select.select(inputs, [], [], 0)[0] == inputs
        assert [line.read_edges() for line in inputs] == [1, 1]
        assert [line.active() for line in inputs] == [True, True]
        set_pressed(tmp_path, [NORMALLY_CLOSED, NORMALLY_OPEN], pressed=False)
        assert [line.active() for line in inputs] == [False, False]
    finally:
        for line in inputs:
            line.close()


def test_press_without_a_running_chip_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoSimChip, match="is `edgeloop run` running with chip: sim"):
        set_pressed(tmp_path, [NORMALLY_OPEN], pressed=True)
