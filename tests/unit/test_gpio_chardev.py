"""Lines of a kernel GPIO chip (libgpiod v2): what can be shown without a chip here.

The image boot test runs them on gpio-sim; this machine's kernel has none.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import gpiod
import pytest
from gpiod.line import Bias, Direction, Edge, Value

from edgeloop.drivers.gpio import GpioError, GpioLine, open_input, open_output
from edgeloop.drivers.gpio.chardev import input_settings, output_settings
from tests.conftest import output_of_another_process


def test_an_input_detects_both_edges_with_its_settings() -> None:
    line = GpioLine(chip="gpiochip0", offset=17, active_low=True, bias="pull_up", debounce_ms=5)
    settings = input_settings(line)
    assert settings.direction is Direction.INPUT
    assert settings.edge_detection is Edge.BOTH
    assert settings.bias is Bias.PULL_UP
    assert settings.active_low is True
    assert settings.debounce_period == timedelta(milliseconds=5)


@pytest.mark.parametrize(
    ("bias", "expected"),
    [
        ("as_is", Bias.AS_IS),
        ("pull_up", Bias.PULL_UP),
        ("pull_down", Bias.PULL_DOWN),
        ("disabled", Bias.DISABLED),
    ],
)
def test_every_bias_maps_to_its_libgpiod_bias(bias: str, expected: Bias) -> None:
    assert input_settings(GpioLine(chip="gpiochip0", offset=0, bias=bias)).bias is expected


@pytest.mark.parametrize(("initial", "value"), [(True, Value.ACTIVE), (False, Value.INACTIVE)])
def test_an_output_starts_at_its_initial_value(initial: bool, value: Value) -> None:
    settings = output_settings(GpioLine(chip="gpiochip0", offset=4, active_low=True), initial)
    assert settings.direction is Direction.OUTPUT
    assert settings.output_value is value
    assert settings.active_low is True
    assert settings.edge_detection is Edge.NONE


def test_a_missing_chip_is_an_error_naming_chip_and_offset(tmp_path: Path) -> None:
    chip = tmp_path / "gpiochip9"
    with pytest.raises(GpioError, match=f"^{re.escape(str(chip))} line 3: no such GPIO chip$"):
        open_input(GpioLine(chip=str(chip), offset=3), tmp_path)
    with pytest.raises(GpioError, match=f"^{re.escape(str(chip))} line 4: no such GPIO chip$"):
        open_output(GpioLine(chip=str(chip), offset=4), tmp_path, initial=False)


@pytest.mark.skipif(gpiod.is_gpiochip_device("/dev/gpiochip0"), reason="this machine has one")
def test_a_chip_name_is_looked_for_in_dev(tmp_path: Path) -> None:
    with pytest.raises(GpioError, match=r"^/dev/gpiochip0 line 17: no such GPIO chip$"):
        open_input(GpioLine(chip="gpiochip0", offset=17), tmp_path)


def test_a_device_that_is_no_gpio_chip_says_so(tmp_path: Path) -> None:
    with pytest.raises(GpioError, match=r"^/dev/null line 0: not a GPIO chip$"):
        open_input(GpioLine(chip="/dev/null", offset=0), tmp_path)


def test_libgpiod_is_loaded_only_for_a_real_chip(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from edgeloop.drivers.gpio import GpioError, GpioLine, open_input\n"
        "import edgeloop.cli\n"
        f"line = open_input(GpioLine(chip='sim', offset=0), Path({str(tmp_path)!r}))\n"
        "line.close()\n"
        "print('gpiod' in sys.modules)\n"
        "try:\n"
        "    open_input(GpioLine(chip='/dev/null', offset=0), Path('.'))\n"
        "except GpioError:\n"
        "    pass\n"
        "print('gpiod' in sys.modules)\n"
    )
    assert output_of_another_process(code).split() == ["False", "True"]
