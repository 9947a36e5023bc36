"""The GpioLine config entry: its defaults, the chip forms it takes, strict values."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from edgeloop.drivers.gpio import GpioLine


def test_defaults_are_a_plain_input() -> None:
    line = GpioLine(chip="gpiochip0", offset=17)
    assert (line.active_low, line.bias, line.debounce_ms) == (False, "as_is", 0)


@pytest.mark.parametrize(
    ("chip", "path"),
    [("gpiochip4", Path("/dev/gpiochip4")), ("/dev/gpiochip0", Path("/dev/gpiochip0"))],
)
def test_a_chip_name_is_found_in_dev(chip: str, path: Path) -> None:
    assert GpioLine(chip=chip, offset=0).chip_path == path


def test_sim_is_the_simulated_chip() -> None:
    assert GpioLine(chip="sim", offset=0).simulated
    assert not GpioLine(chip="gpiochip0", offset=0).simulated


@pytest.mark.parametrize("chip", ["dev/gpiochip0", "gpiochip", "pinctrl-bcm2711", "SIM", ""])
def test_an_unknown_chip_form_says_what_is_expected(chip: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"give a path \(/dev/gpiochip0\)"):
        GpioLine(chip=chip, offset=0)


@pytest.mark.parametrize(
    "fields",
    [
        {"offset": -1},
        {"offset": "3"},
        {"offset": 1.0},
        {"active_low": "yes"},
        {"active_low": 1},
        {"bias": "pullup"},
        {"debounce_ms": 1001},
        {"debounce_ms": -1},
        {"debounce_ms": "5"},
        {"colour": "red"},
    ],
)
def test_values_are_strict(fields: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        GpioLine.model_validate({"chip": "sim", "offset": 0, **fields})


def test_the_longest_debounce_is_a_second() -> None:
    assert GpioLine(chip="sim", offset=0, debounce_ms=1000).debounce_ms == 1000
