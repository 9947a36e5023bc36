"""PID controller block: a ``Pid`` component and the ``run_pid`` system.

Another system feeds ``pv`` (process value) before ControlLogic and forwards ``output`` to
an actuator after it, so the block knows nothing about where its signals come from.

In ``manual`` mode the output is the operator's ``manual_output`` and the integral
tracks it; in ``auto`` the manual value tracks the output. Either switch is bumpless:
the output carries on from where it was instead of jumping.

While the safe state holds a wired block's output field (``HeldOutputs``: its device
is at its safe value), the block tracks the held value the same way (``tracking``):
it does not wind up against an actuator that cannot move, and when the state ends it
carries on from the safe value instead of jumping back to where it was before.
"""

from __future__ import annotations

from enum import StrEnum

from edgeloop.blocks.wiring import Wire
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.safety.safe_state import FieldKey, HeldOutputs
from edgeloop.world import World


class PidMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Pid(Component):
    """Parallel-form PID with derivative on measurement and clamping anti-windup."""

    kp: float
    ki: float = 0.0
    kd: float = 0.0
    setpoint: float = 0.0
    out_min: float = 0.0
    out_max: float = 1.0
    pv: float = 0.0
    output: float = 0.0
    integral: float = 0.0
    last_pv: float | None = None
    mode: PidMode = PidMode.AUTO
    manual_output: float = 0.0
    tracking: bool = False  # the safe state holds the output: it follows the held value


def pid_step(pid: Pid, dt: float, track: float | None = None) -> float:
    """The next output for ``pid.pv``; updates the integral and derivative memory.
    ``track``: the value the output is held at (the safe state's), followed as-is."""
    error = pid.setpoint - pid.pv
    # Derivative on the measurement, not the error: a setpoint step gives no output kick.
    derivative = 0.0 if pid.last_pv is None else -(pid.pv - pid.last_pv) / dt
    pid.last_pv = pid.pv
    if track is not None or pid.mode == PidMode.MANUAL:
        output = _limited(pid, pid.manual_output) if track is None else track
        # What auto's first output would be at this pv and setpoint: no bump on the switch.
        pid.integral = output - pid.kp * error - pid.kd * derivative
        if track is not None and pid.mode == PidMode.AUTO:
            pid.manual_output = output
        return output
    integral = pid.integral + pid.ki * error * dt
    output = pid.kp * error + integral + pid.kd * derivative
    if output > pid.out_max:
        output = pid.out_max
        integral = min(integral, pid.integral)  # don't wind further into saturation
    elif output < pid.out_min:
        output = pid.out_min
        integral = max(integral, pid.integral)
    pid.integral = integral
    pid.manual_output = output  # a switch to manual holds the output where it is
    return output


def _limited(pid: Pid, value: float) -> float:
    if value > pid.out_max:
        return pid.out_max
    if value < pid.out_min:
        return pid.out_min
    return value


def run_pid(world: World) -> None:
    """ControlLogic: step every PID once per fixed tick."""
    dt = world.resource(Time).delta
    for pid in world.query(Pid):
        pid.output = pid_step(pid, dt)


class PidBlock(Pid):
    """A PID wired from the ``blocks`` config, on its own entity. A type of its own, so
    that ``run_pid`` (which steps every ``Pid``) leaves it to its block."""


class PidLoop:
    """A wired PID block: ``pv`` (and the setpoint, if wired) in, ``output`` out.

    The ``PidBlock`` component shows its state in the World, where an operator's
    command may set ``setpoint`` (unless wired), ``mode`` and ``manual_output``.
    """

    __slots__ = ("name", "output", "output_key", "pid", "pv", "setpoint")

    def __init__(
        self,
        name: str,
        pid: PidBlock,
        pv: Wire,
        output: tuple[Wire, FieldKey],
        setpoint: Wire | None,
    ) -> None:
        self.name = name
        self.pid = pid
        self.pv = pv
        self.output, self.output_key = output
        self.setpoint = setpoint

    def step(self, world: World, tick: int) -> None:
        pid = self.pid
        pid.pv = self.pv.read()
        if self.setpoint is not None:
            pid.setpoint = self.setpoint.read()
        held = world.get_resource(HeldOutputs)
        pid.tracking = held is not None and self.output_key in held.fields
        # The output side left the held value in the field (last tick's FieldOutput).
        track = self.output.read() if pid.tracking else None
        pid.output = pid_step(pid, world.resource(Time).delta, track)
        if not pid.tracking:
            self.output.write(pid.output)
