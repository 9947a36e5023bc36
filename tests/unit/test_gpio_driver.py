"""The ``gpio`` section: lines of the simulated chip as World fields, through the field
bridge, driven and read from outside through the chip's socket (``sim_client``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from edgeloop.app import App
from edgeloop.config import ConfigError, parse_config_text
from edgeloop.drivers.field_bridge import FieldModel
from edgeloop.drivers.gpio import GpioLine, open_input
from edgeloop.drivers.gpio.config import GpioConfig
from edgeloop.drivers.gpio.sim import SOCKET_NAME
from edgeloop.drivers.gpio.sim_client import get_level, set_level
from edgeloop.drivers.points import Quality
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.safety.safe_state import HeldOutputs, SafeState
from edgeloop.safety.systems import apply_safe_state_now
from edgeloop.schedule import ControlLogic, FixedUpdate
from edgeloop.world import World

PANEL = """
gpio:
  devices:
    - name: panel
      chip: sim
      reopen_initial_s: 0.05
      reopen_max_s: 0.1
      points:
        - {offset: 1, entity: cell1, component: Door, field: open}
        - {offset: 2, entity: cell1, component: Door, field: closed, active_low: true,
           bias: pull_up}
        - {offset: 3, entity: cell1, component: Beacon, field: lit, direction: output,
           safe_value: false}
        - {offset: 4, entity: cell1, component: Brake, field: released, direction: output,
           active_low: true}
"""
ESTOP = """
estop:
  inputs:
    - {chip: sim, offset: 0}
"""


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # every test shuts its App down: the lines close, and the chip with the last one
    assert not (tmp_path / SOCKET_NAME).exists()


def _app(state_dir: Path, text: str = PANEL, link: IoLink | None = None) -> App:
    config = parse_config_text(
        f"runtime: {{state_dir: {state_dir}}}\n{text}", state_dir / "config.yaml"
    )
    app = App.from_config(config)
    if link is not None:
        app.add_plugin(IoLinkPlugin(link))
    return app


def _component(app: App, entity: str, name: str) -> Any:
    model = app.world.resource(FieldModel)
    return app.world.get(model.entities[entity], model.component(name))


def _writing(app: App, entity: str, component: str, **fields: Any) -> None:
    """Control logic that writes ``fields`` every tick."""

    def logic(world: World) -> None:
        target = _component(app, entity, component)
        for name, value in fields.items():
            setattr(target, name, value)

    app.add_systems(FixedUpdate, logic, in_set=ControlLogic)


def test_input_levels_land_in_their_fields_good_with_active_low_applied(
    state_dir: Path,
) -> None:
    app = _app(state_dir)
    app.startup()
    try:
        door = _component(app, "cell1", "Door")
        assert door.open_quality is Quality.STALE, "nothing read before the first tick"
        app.run_for(1)
        assert (door.open, door.open_quality) == (False, Quality.GOOD)
        assert (door.closed, door.closed_quality) == (False, Quality.GOOD), "pulled up: high"
        set_level(state_dir, 1, 1)
        set_level(state_dir, 2, 0)
        app.run_for(1)
        assert door.open and door.closed, "active_low: the low level is true"
        assert app.world.resource(FieldModel).health["panel"].state == "online"
    finally:
        app.shutdown()


def test_an_output_field_drives_its_line_once_changed(state_dir: Path) -> None:
    app = _app(state_dir)
    beacon: dict[str, Any] = {"on": False}

    def logic(world: World) -> None:
        _component(app, "cell1", "Beacon").lit = beacon["on"]

    app.add_systems(FixedUpdate, logic, in_set=ControlLogic)
    app.startup()
    try:
        app.run_for(1)
        assert get_level(state_dir, 3) == 0
        assert get_level(state_dir, 4) == 1, "active_low, not released: high"
        beacon["on"] = True
        _component(app, "cell1", "Brake").released = True
        app.run_for(1)
        assert get_level(state_dir, 3) == 1
        assert get_level(state_dir, 4) == 0
    finally:
        app.shutdown()


def test_an_output_is_at_its_safe_value_from_the_moment_it_is_opened(state_dir: Path) -> None:
    safe_on = PANEL.replace("safe_value: false", "safe_value: true")
    app = _app(state_dir, safe_on)
    app.startup()
    try:
        assert get_level(state_dir, 3) == 1, "before the first tick writes the field"
        app.run_for(1)
        assert get_level(state_dir, 3) == 0, "then the field's value (False)"
    finally:
        app.shutdown()


def test_a_trip_drives_the_safe_value_at_once_and_holds_it_until_written_after_reset(
    state_dir: Path,
) -> None:
    app = _app(state_dir)
    _writing(app, "cell1", "Beacon", lit=True)
    app.startup()
    try:
        app.run_for(1)
        assert get_level(state_dir, 3) == 1
        safe = app.world.resource(SafeState)
        safe.trip("estop", "pressed", app.time.tick, latched=True)
        apply_safe_state_now(app.world)  # as an e-stop edge does, between ticks
        assert get_level(state_dir, 3) == 0, "at once, not at the next tick"
        held = app.world.resource(HeldOutputs).fields
        assert ("cell1", "Beacon", "lit") in held
        app.run_for(3)  # control logic writes True every tick meanwhile
        assert get_level(state_dir, 3) == 0
        assert _component(app, "cell1", "Beacon").lit is False, "the World shows it held"
        assert get_level(state_dir, 4) == 1, "no safe_value: keeps what it has"
        safe.release("estop")
        safe.reset()
        app.run_for(1)
        assert ("cell1", "Beacon", "lit") not in held
        assert get_level(state_dir, 3) == 1, "control logic's value once the state ended"
    finally:
        app.shutdown()


def test_estop_and_gpio_lines_share_the_simulated_chip(state_dir: Path) -> None:
    app = _app(state_dir, ESTOP + PANEL)
    _writing(app, "cell1", "Beacon", lit=True)
    app.startup()
    try:
        app.run_for(1)
        assert get_level(state_dir, 3) == 1
        set_level(state_dir, 0, 1)  # the e-stop pressed
        set_level(state_dir, 1, 1)
        app.run_for(1)
        assert app.world.resource(SafeState).everything
        assert get_level(state_dir, 3) == 0, "the beacon at its safe value"
        door = _component(app, "cell1", "Door")
        assert (door.open, door.open_quality) == (True, Quality.GOOD), "inputs read on"
    finally:
        app.shutdown()


def test_the_io_process_lost_leaves_the_lines_read_but_holds_their_outputs_safe(
    state_dir: Path,
) -> None:
    control_end, io_end = socketpair()
    link = IoLink(Channel(control_end))
    app = _app(state_dir, link=link)
    _writing(app, "cell1", "Beacon", lit=True)
    app.startup()
    try:
        app.run_for(1)
        assert get_level(state_dir, 3) == 1
        io_end.close()
        link.read_available()
        set_level(state_dir, 1, 1)
        app.run_for(1)
        assert "io_lost" in app.world.resource(SafeState).causes
        assert get_level(state_dir, 3) == 0
        door = _component(app, "cell1", "Door")
        assert (door.open, door.open_quality) == (True, Quality.GOOD)
        assert app.world.resource(FieldModel).health["panel"].state == "online"
    finally:
        app.shutdown()
        control_end.close()


def test_a_busy_line_makes_the_device_offline_and_stale_until_it_can_be_had(
    state_dir: Path,
) -> None:
    other = open_input(GpioLine(chip="sim", offset=2), state_dir)  # another user of line 2
    app = _app(state_dir)
    app.startup()
    try:
        app.run_for(1)
        health = app.world.resource(FieldModel).health["panel"]
        door = _component(app, "cell1", "Door")
        assert health.state == "offline"
        assert "sim line 2: busy" in health.last_error
        assert door.open_quality is Quality.STALE
        other.close()
        for _ in range(100):  # reopen_initial_s 0.05: a few ticks of the manual clock
            app.run_for(1)
            if health.state == "online":
                break
        assert health.state == "online"
        assert door.open_quality is Quality.GOOD
        assert health.error_count("disconnect") >= 1
    finally:
        app.shutdown()


def test_the_shutdown_drives_the_safe_values_before_the_lines_close(state_dir: Path) -> None:
    watcher = open_input(GpioLine(chip="sim", offset=9), state_dir)  # keeps the chip open
    app = _app(state_dir, PANEL.replace("safe_value: false", "safe_value: true"))
    levels: list[int] = []
    app.startup()
    try:
        app.run_for(1)
        assert get_level(state_dir, 3) == 0
        model = app.world.resource(FieldModel)
        local_writer = model.devices["panel"].local_writer
        assert local_writer is not None

        def seen(writes: list[tuple[int, Any]]) -> None:
            local_writer(writes)
            levels.append(get_level(state_dir, 3))

        model.devices["panel"] = dataclasses.replace(model.devices["panel"], local_writer=seen)
    finally:
        app.shutdown()
        watcher.close()
    assert levels == [1], "the safe value was driven at Shutdown, while the line was open"


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"safe_value": True}, "safe_value is what an output gets in the safe state"),
        ({"direction": "output", "debounce_ms": 5}, "debounce_ms is for inputs"),
        ({"type": "float32"}, "Input should be 'bool'"),
        ({"min": 0}, "Extra inputs are not permitted"),
        ({"field": "open_quality"}, "reserved for the quality flag"),
    ],
)
def test_a_point_that_does_not_fit_a_line_is_refused(point: dict[str, Any], message: str) -> None:
    base = {"offset": 1, "entity": "cell1", "component": "Door", "field": "open"}
    device = {"name": "panel", "chip": "sim", "points": [{**base, **point}]}
    with pytest.raises(pydantic.ValidationError, match=message):
        GpioConfig.model_validate({"devices": [device]})


def test_a_line_used_twice_in_the_section_is_refused_whatever_the_chip_is_called() -> None:
    point = {"offset": 7, "entity": "cell1", "component": "Door", "field": "open"}
    other = {**point, "field": "shut"}
    devices = [
        {"name": "a", "chip": "gpiochip0", "points": [point]},
        {"name": "b", "chip": "/dev/gpiochip0", "points": [other]},
    ]
    with pytest.raises(
        pydantic.ValidationError,
        match=r"devices\[1\].points\[0\]: "
        r"/dev/gpiochip0 line 7 is also devices\[0\].points\[0\]",
    ):
        GpioConfig.model_validate({"devices": devices})


def test_a_line_of_the_estop_that_is_also_a_gpio_point_is_refused(state_dir: Path) -> None:
    clash = PANEL.replace("{offset: 1,", "{offset: 0,")
    config = parse_config_text(
        f"runtime: {{state_dir: {state_dir}}}\n{ESTOP}{clash}", state_dir / "config.yaml"
    )
    with pytest.raises(
        ValueError,
        match=r"gpio.devices\[0\].points\[0\]: sim line 0 is also "
        r"estop.inputs\[0\]: one line, one job",
    ):
        App.from_config(config)


def test_a_config_file_says_where_an_input_has_a_safe_value(state_dir: Path) -> None:
    text = PANEL.replace("field: open}", "field: open, safe_value: false}")
    with pytest.raises(ConfigError, match=r"gpio.devices\[0\].points\[0\].*safe_value"):
        parse_config_text(text, state_dir / "config.yaml")
