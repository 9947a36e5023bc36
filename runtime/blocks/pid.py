"""PID controller block: a ``Pid`` component and the ``run_pid`` system.

Another system feeds ``pv`` (process value) before ControlLogic and forwards ``output`` to
an actuator after it, so the block knows nothing about where its signals come from.
"""

from __future__ import annotations

from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.world import World


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


def pid_step(pid: Pid, dt: float) -> float:
    """The next output for ``pid.pv``; updates the integral and derivative memory."""
    error = pid.setpoint - pid.pv
    # Derivative on the measurement, not the error: a setpoint step gives no output kick.
    derivative = 0.0 if pid.last_pv is None else -(pid.pv - pid.last_pv) / dt
    integral = pid.integral + pid.ki * error * dt
    output = pid.kp * error + integral + pid.kd * derivative
    if output > pid.out_max:
        output = pid.out_max
        integral = min(integral, pid.integral)  # don't wind further into saturation
    elif output < pid.out_min:
        output = pid.out_min
        integral = max(integral, pid.integral)
    pid.integral = integral
    pid.last_pv = pid.pv
    return output


def run_pid(world: World) -> None:
    """ControlLogic: step every PID once per fixed tick."""
    dt = world.resource(Time).delta
    for pid in world.query(Pid):
        pid.output = pid_step(pid, dt)
