"""The ``blocks`` section: loaded from YAML, wired at Startup, run by an App."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import TypeVar

import pytest

from edgeloop import (
    ActuatorOutput,
    Alarms,
    App,
    Component,
    FixedUpdate,
    SensorInput,
    Startup,
    SystemFailure,
    World,
)
from edgeloop.blocks.pid import PidBlock, PidMode
from edgeloop.blocks.plugin import SECTION as BLOCKS
from edgeloop.config import ConfigError, ConfigSection, Section, load_config
from edgeloop.names import Name, find_entity
from edgeloop.safety.safe_state import HeldOutputs, SafeState

C = TypeVar("C", bound=Component)
TAU_S = 2.0  # the oven's time constant


class Door(Component):
    open: bool = False


class Oven(Component):
    temp_c: float = 20.0
    wall_c: float = 20.0
    setpoint_c: float = 20.0
    ramped_c: float = 20.0
    heater: float = 0.0  # 0..1
    heater_pct: float = 0.0


class RigConfig(Section):
    pass


class RigPlugin:
    """A door and an oven (heater of 300 K at full power, first order) for blocks to wire."""

    def __init__(self, config: RigConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        app.add_systems(Startup, spawn_rig)
        app.add_systems(FixedUpdate, heat_oven, in_set=SensorInput)


def spawn_rig(world: World) -> None:
    # by command, as drivers do: the blocks must find what is spawned in Startup
    world.commands.spawn(Name("door"), Door())
    world.commands.spawn(Name("oven"), Oven())


def heat_oven(world: World) -> None:
    dt = 0.01
    for oven in world.query(Oven):
        oven.temp_c += (20.0 + 300.0 * oven.heater - oven.temp_c) * dt / TAU_S


SECTIONS = [BLOCKS, ConfigSection("rig", RigConfig, RigPlugin)]

CONFIG = """\
rig: {}
blocks:
  interlock:
    - name: door
      when: "door.Door.open or oven.Oven.temp_c > 250"
  alarm:
    - name: wall_hot
      input: oven.Oven.wall_c
      high: 60
      deadband: 5
      on_delay_s: 0.05
      severity: fault
  pid:
    - name: oven_pid
      pv: oven.Oven.temp_c
      setpoint_from: oven.Oven.ramped_c
      output: oven.Oven.heater
      kp: 0.05
      ki: 0.025
  ramp:
    - name: oven_ramp
      input: oven.Oven.setpoint_c
      output: oven.Oven.ramped_c
      rate: 20
  scale:
    - name: heater_pct
      input: oven.Oven.heater
      output: oven.Oven.heater_pct
      k: 100
      min: 0
      max: 100
"""


def app_of(tmp_path: Path, text: str = CONFIG) -> App:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(text, encoding="utf-8")
    return App.from_config(load_config(path, SECTIONS), SECTIONS)


def started(tmp_path: Path) -> App:
    app = app_of(tmp_path)
    app.startup()
    return app


def component(app: App, name: str, ctype: type[C]) -> C:
    entity = find_entity(app.world, name)
    assert entity is not None
    return app.world.get(entity, ctype)


def test_an_interlock_trips_safe_state_and_releases_it(tmp_path: Path) -> None:
    app = app_of(tmp_path)
    app.run_for(10)
    safe = app.world.resource(SafeState)
    assert not safe.active
    door = component(app, "door", Door)
    door.open = True
    app.run_for(1)
    cause = safe.causes["interlock:door"]
    assert cause.since_tick == 11 and "door.Door.open" in cause.detail
    door.open = False
    app.run_for(1)
    assert not safe.active


def test_an_alarm_goes_through_its_three_states_with_an_acknowledge(tmp_path: Path) -> None:
    app = started(tmp_path)
    oven = component(app, "oven", Oven)
    alarms = app.world.resource(Alarms)
    oven.wall_c = 61.0
    app.run_for(5)
    assert alarms.get("alarm:wall_hot") is None, "on-delay: 5 ticks, not yet past"
    app.run_for(1)
    alarm = alarms.get("alarm:wall_hot")
    assert alarm is not None and alarm.state == "active_unacked"
    assert alarm.text == "oven.Oven.wall_c above 60"
    oven.wall_c = 57.0
    app.run_for(1)
    assert alarm.state == "active_unacked", "within the deadband"
    oven.wall_c = 50.0
    app.run_for(1)
    assert alarm.state == "cleared_unacked"
    assert alarms.acknowledge("alarm:wall_hot", by="operator1", tick=app.time.tick)
    assert alarm.state == "normal"
    # The audit system took the earlier transitions at the end of their ticks.
    sources = [(t.source, t.state, t.by) for t in alarms.transitions()]
    assert sources == [("alarm:wall_hot", "normal", "operator1")]


def test_a_ramped_setpoint_drives_the_pid_and_the_scale_shows_its_output(tmp_path: Path) -> None:
    app = started(tmp_path)
    oven = component(app, "oven", Oven)
    app.run_for(1)
    oven.setpoint_c = 120.0
    app.run_for(1)
    pid = component(app, "oven_pid", PidBlock)
    # the ramp (listed after the PID) ran first: its output is this tick's setpoint
    assert oven.ramped_c == pytest.approx(20.2)
    assert pid.setpoint == oven.ramped_c
    app.run_for(3000)  # 30 s: the ramp takes 5
    assert oven.temp_c == pytest.approx(120.0, abs=0.5)
    assert oven.heater_pct == pytest.approx(100 * oven.heater)


def test_manual_mode_from_the_world_holds_the_output(tmp_path: Path) -> None:
    app = started(tmp_path)
    app.run_for(1)
    pid = component(app, "oven_pid", PidBlock)
    pid.mode = PidMode.MANUAL
    pid.manual_output = 0.4
    app.run_for(10)
    assert component(app, "oven", Oven).heater == 0.4


def hold_heater(world: World) -> None:
    """ActuatorOutput: an output side holding the heater at 0 while the state holds,
    as the field bridge does for a device's output."""
    held = world.resource(HeldOutputs).fields
    if world.resource(SafeState).active:
        held.add(HEATER)
        for oven in world.query(Oven):
            oven.heater = 0.0
    else:
        held.discard(HEATER)


HEATER = ("oven", "Oven", "heater")


def test_a_pid_tracks_its_held_output_and_carries_on_from_it(tmp_path: Path) -> None:
    app = started(tmp_path)
    app.add_systems(FixedUpdate, hold_heater, in_set=ActuatorOutput)
    oven = component(app, "oven", Oven)
    pid = component(app, "oven_pid", PidBlock)
    oven.setpoint_c = 150.0
    app.run_for(500)
    before = pid.output
    assert before > 0.3, "heating"
    safe = app.world.resource(SafeState)
    safe.trip("estop", "pressed", app.time.tick, latched=True)
    app.run_for(1000)  # 10 s at 0 heat: the error grows, the integral must not
    assert pid.tracking and pid.output == 0.0 and oven.heater == 0.0
    assert pid.integral < before, "no wind-up while held"
    safe.release("estop")
    assert safe.reset() == (["estop"], [])
    app.run_for(2)  # the output side lets go in the first tick's ActuatorOutput
    assert not pid.tracking
    # From the safe value on: a step of one tick's P and I, not back to the old output.
    assert 0.0 < oven.heater < 0.05


def test_an_unknown_field_stops_the_app_naming_block_and_field(tmp_path: Path) -> None:
    app = app_of(tmp_path, CONFIG.replace("oven.Oven.wall_c", "oven.Oven.wal_c"))
    with pytest.raises(SystemFailure, match=r"blocks.alarm 'wall_hot': input oven.Oven.wal_c: "):
        app.run_for(1)
    cause = app.world.resource(SafeState).causes["blocks"]
    assert "Oven has no field 'wal_c'" in cause.detail


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, SECTIONS)
    return [f"{p.line}: {p.message}" for p in caught.value.problems]


def test_two_blocks_writing_one_field_is_an_error_naming_both(tmp_path: Path) -> None:
    text = CONFIG.replace("output: oven.Oven.heater_pct", "output: oven.Oven.heater")
    assert problems(tmp_path, text) == [
        "2: blocks: oven.Oven.heater is written by blocks.pid 'oven_pid' and by "
        "blocks.scale 'heater_pct'; a field has one writer"
    ]


def test_a_syntax_error_in_a_condition_points_at_its_line_and_column(tmp_path: Path) -> None:
    text = CONFIG.replace("door.Door.open or oven", "door.Door.open or or oven")
    assert problems(tmp_path, text) == [
        "5: blocks.interlock[0].when: column 19: expected a field, a number, "
        "true/false or (, not 'or'"
    ]


def test_blocks_reading_each_other_in_a_loop_is_an_error(tmp_path: Path) -> None:
    text = CONFIG.replace("input: oven.Oven.setpoint_c", "input: oven.Oven.heater_pct")
    text = text.replace("input: oven.Oven.heater\n", "input: oven.Oven.ramped_c\n")
    (message,) = problems(tmp_path, text)
    assert "read each other's outputs in a loop" in message
    assert "blocks.pid 'oven_pid'" in message and "blocks.scale 'heater_pct'" in message


def test_bad_values_are_refused_at_their_lines(tmp_path: Path) -> None:
    text = dedent("""\
        rig: {}
        blocks:
          alarm:
            - name: a
              input: oven.Oven.wall_c
          pid:
            - name: p
              pv: oven.Oven.temp_c
              output: oven-heater
              kp: 1
            - name: q
              pv: oven.Oven.temp_c
              output: oven.Oven.heater
              kp: 1
              out_min: 1
    """)
    assert problems(tmp_path, text) == [
        "4: blocks.alarm[0]: an alarm has one limit: set high or low",
        "9: blocks.pid[0].output: 'oven-heater' is not a field: write entity.Component.field "
        "(e.g. tank1.TankLevel.level_m)",
        "11: blocks.pid[1]: out_min 1 must be below out_max 1",
    ]
