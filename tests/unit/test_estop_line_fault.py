"""An e-stop line that cannot be read or driven (its chip gone: a USB GPIO expander
unplugged) is a stop: the safe state latches and holds, whatever on_system_error says
(skip here), and the loop runs on. Such a chip is what this machine cannot have: the
failing line is a stand-in behind InputLine/OutputLine, beside real simulated lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.app import App
from edgeloop.config import parse_config_text
from edgeloop.drivers.gpio import GpioError
from edgeloop.drivers.gpio.sim_client import set_level
from edgeloop.safety.estop import EStop, reset
from edgeloop.safety.safe_state import SafeState

CONFIG = """
runtime: {{state_dir: {state_dir}, on_system_error: skip}}
estop:
  inputs: [{{chip: sim, offset: 0}}]
  outputs_enabled: {{chip: sim, offset: 5}}
"""


class UnpluggedLine:
    """A line whose chip went away: every access fails, as the chardev backend's."""

    def fileno(self) -> int:
        return -1

    def read_edges(self) -> int:
        raise GpioError("/dev/gpiochip1 line 0: no such device")

    def active(self) -> bool:
        raise GpioError("/dev/gpiochip1 line 0: no such device")

    def set(self, active: bool) -> None:
        raise GpioError("/dev/gpiochip1 line 5: no such device")

    def close(self) -> None:
        pass


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    text = CONFIG.format(state_dir=tmp_path)
    app = App.from_config(parse_config_text(text, tmp_path / "config.yaml"))
    app.startup()
    estop = app.world.resource(EStop)
    real = estop.inputs[0], estop.enabled
    try:
        app.run_for(2)
        assert not app.world.resource(SafeState).everything, "released at start"
        yield app
    finally:
        estop.inputs[0], estop.enabled = real  # the real lines close at shutdown
        app.shutdown()


def test_an_input_that_cannot_be_read_latches_the_safe_state_for_good(app: App) -> None:
    estop, safe = app.world.resource(EStop), app.world.resource(SafeState)
    estop.inputs[0] = UnpluggedLine()  # type: ignore[assignment]
    app.run_for(3)  # no exception: the loop runs on
    assert safe.everything
    assert safe.causes["estop"].detail.startswith("input fault: /dev/gpiochip1 line 0")
    accepted, reason = reset(app.world, "an operator")
    assert not accepted and reason.startswith("still active: estop (input fault")


def test_an_enable_output_that_cannot_be_driven_holds_the_safe_state(
    app: App, tmp_path: Path
) -> None:
    estop, safe = app.world.resource(EStop), app.world.resource(SafeState)
    estop.enabled = UnpluggedLine()  # type: ignore[assignment]
    set_level(tmp_path, 0, 1)  # a press: the enable line must drop, and cannot
    app.run_for(3)
    assert safe.everything
    assert estop.fault.startswith("outputs_enabled fault: /dev/gpiochip1 line 5")
    set_level(tmp_path, 0, 0)  # released
    app.run_for(3)
    accepted, _ = reset(app.world, "an operator")
    app.run_for(2)
    assert (accepted, safe.everything) == (False, True), "a line that failed is not trusted"
