"""A simulated process plant: tanks filled by a pump, drained through a varying outlet.

Each tank is an entity with a level sensor (``TankLevel``), a pump (``Pump``) and a PID
(``edgeloop.blocks.pid.Pid``) holding its level at a setpoint while the outlet valve
swings sinusoidally. Config section ``tank_plant``; the demo uses it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edgeloop.app import App
from edgeloop.blocks.pid import Pid, run_pid
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.conditions import on_timer
from edgeloop.config import ConfigSection, Section
from edgeloop.names import Name
from edgeloop.safety.safe_state import SafeState
from edgeloop.safety.systems import add_safe_state, safe_output
from edgeloop.schedule import (
    ActuatorOutput,
    ControlLogic,
    DataLogging,
    DataProcessing,
    FixedUpdate,
    SensorInput,
    Startup,
    Update,
)
from edgeloop.wiring import Claim, read, write
from edgeloop.world import World

log = logging.getLogger("edgeloop.plant")

PUMP_SAFE_SPEED = 0.0

# strict: YAML reads "yes" as true, which lax pydantic would turn into 1.0
Positive = Annotated[float, Field(gt=0, strict=True)]
NonNegative = Annotated[float, Field(ge=0, strict=True)]


class PidGains(Section):
    kp: NonNegative = 2.0
    ki: NonNegative = 0.2
    kd: NonNegative = 0.0


class Disturbance(Section):
    amplitude: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.3
    period_s: Positive = 60.0


class TankConfig(Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    area_m2: Positive = 1.0
    height_m: Positive = 2.0
    initial_level_m: NonNegative = 0.5
    setpoint_m: NonNegative = 1.0
    pump_max_flow_m3s: Positive = 0.05
    outflow_coeff: NonNegative = 0.02
    disturbance: Disturbance = Disturbance()
    pid: PidGains = PidGains()

    @model_validator(mode="after")
    def _levels_fit_in_tank(self) -> TankConfig:
        for key in ("initial_level_m", "setpoint_m"):
            if getattr(self, key) > self.height_m:
                raise ValueError(f"{key} {getattr(self, key)} is above height_m {self.height_m}")
        return self


class TankPlantConfig(Section):
    tanks: Annotated[list[TankConfig], Field(min_length=1)]
    log_every_s: Annotated[float, Field(ge=0, strict=True)] = 0.0  # 0: don't log the plant

    @field_validator("tanks")
    @classmethod
    def _names_unique(cls, tanks: list[TankConfig]) -> list[TankConfig]:
        names = [t.name for t in tanks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tank names must be unique: {', '.join(dupes)}")
        return tanks


class TankLevel(Component):
    level_m: float = 0.0


class Pump(Component):
    speed: float = PUMP_SAFE_SPEED  # 0..1 of pump_max_flow_m3s


class Tank(Component):
    """The physics of one tank (the part a real plant has instead of a simulator)."""

    area_m2: float
    height_m: float
    pump_max_flow_m3s: float
    outflow_coeff: float
    disturbance_amplitude: float
    disturbance_period_s: float


class TankPlantPlugin:
    def __init__(self, config: TankPlantConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_safe_state(app)
        app.add_systems(Startup, self.spawn_tanks)
        app.add_systems(FixedUpdate, simulate_tanks, in_set=SensorInput)
        app.add_systems(FixedUpdate, level_to_pid, in_set=DataProcessing)
        app.add_systems(FixedUpdate, run_pid, in_set=ControlLogic)
        app.add_systems(FixedUpdate, pid_to_pump, in_set=ActuatorOutput)
        safe_output(app, pid_to_pump)
        if self.config.log_every_s > 0:
            app.add_systems(
                Update,
                log_plant_status,
                in_set=DataLogging,
                run_if=on_timer(self.config.log_every_s),
            )

    def spawn_tanks(self, world: World) -> None:
        for tank in self.config.tanks:
            world.spawn(
                Name(tank.name),
                Tank(
                    tank.area_m2,
                    tank.height_m,
                    tank.pump_max_flow_m3s,
                    tank.outflow_coeff,
                    tank.disturbance.amplitude,
                    tank.disturbance.period_s,
                ),
                TankLevel(tank.initial_level_m),
                Pump(),
                Pid(kp=tank.pid.kp, ki=tank.pid.ki, kd=tank.pid.kd, setpoint=tank.setpoint_m),
            )


def simulate_tanks(world: World) -> None:
    """SensorInput: integrate each tank over one tick with the pump speed last commanded."""
    time = world.resource(Time)
    for tank, level, pump in world.query(Tank, TankLevel, Pump):
        valve = 1.0 + tank.disturbance_amplitude * math.sin(
            2 * math.pi * time.elapsed / tank.disturbance_period_s
        )
        inflow = pump.speed * tank.pump_max_flow_m3s
        outflow = tank.outflow_coeff * valve * math.sqrt(level.level_m)
        new_level = level.level_m + (inflow - outflow) * time.delta / tank.area_m2
        level.level_m = min(max(new_level, 0.0), tank.height_m)


def level_to_pid(world: World) -> None:
    """DataProcessing: the level sensor is the process value of the tank's PID."""
    for level, pid in world.query(TankLevel, Pid):
        pid.pv = level.level_m


def pid_to_pump(world: World) -> None:
    """ActuatorOutput: the PID output is the pump speed, unless the safe state holds
    (e-stop, Shutdown, ...): then no pump runs."""
    held = world.resource(SafeState).everything
    for pid, pump in world.query(Pid, Pump):
        pump.speed = PUMP_SAFE_SPEED if held else pid.output


def log_plant_status(world: World) -> None:
    """DataLogging: the plant's state on the console, for the demo and commissioning."""
    log.info("%s", status_line(world))


def status_line(world: World) -> str:
    """One line per plant state, for the demo's console."""
    time = world.resource(Time)
    tanks = " ".join(
        f"{name.value}: level {level.level_m:.3f} m (sp {pid.setpoint:.2f}) pump {pump.speed:.0%}"
        for name, level, pid, pump in world.query(Name, TankLevel, Pid, Pump)
    )
    return f"t={time.elapsed:7.2f}s tick={time.tick} {tanks}"


def wiring(config: TankPlantConfig) -> Iterator[Claim]:
    """Per tank: the simulated level, its PID (setpoint read, for an HMI to write) and
    the pump it drives."""
    for index, tank in enumerate(config.tanks):
        at, name = ("tanks", index, "name"), tank.name
        yield write(f"{name}.TankLevel.level_m", "simulate_tanks", "simulated sensor", at)
        yield read(f"{name}.TankLevel.level_m", "level_to_pid", "system", at)
        yield write(f"{name}.Pid.pv", "level_to_pid", "system", at)
        yield read(f"{name}.Pid.setpoint", "run_pid", "system", at)
        for field in ("output", "integral", "last_pv"):
            yield write(f"{name}.Pid.{field}", "run_pid", "system", at)
        yield read(f"{name}.Pid.output", "pid_to_pump", "system", at)
        yield Claim(
            f"{name}.Pump.speed", "write", "pid_to_pump", "system", at, safe_value=PUMP_SAFE_SPEED
        )


SECTION = ConfigSection("tank_plant", TankPlantConfig, TankPlantPlugin, wiring=wiring)
