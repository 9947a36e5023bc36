from __future__ import annotations

from edgeloop import App, ControlLogic, FixedUpdate, SensorInput, World
from edgeloop.blocks.pid import Pid, pid_step, run_pid


def test_pid_settles_a_first_order_plant_on_its_setpoint() -> None:
    app = App(rate_hz=100)
    e = app.world.spawn(Pid(kp=2.0, ki=1.0, setpoint=0.5, out_min=0.0, out_max=1.0))

    def plant(world: World) -> None:
        pid = world.get(e, Pid)
        # dx/dt = (u - x) / tau, tau = 0.5 s
        pid.pv += (pid.output - pid.pv) * app.time.delta / 0.5

    app.add_systems(FixedUpdate, plant, in_set=SensorInput)
    app.add_systems(FixedUpdate, run_pid, in_set=ControlLogic)
    app.run_for(3000)  # 30 s: ten closed-loop time constants
    pid = app.world.get(e, Pid)
    assert abs(pid.pv - 0.5) < 1e-3
    assert 0.0 <= pid.output <= 1.0


def test_integral_does_not_wind_up_while_the_output_is_saturated() -> None:
    pid = Pid(kp=1.0, ki=10.0, setpoint=100.0, out_max=1.0)
    for _ in range(1000):
        pid.output = pid_step(pid, 0.01)
    assert pid.output == 1.0
    assert pid.integral <= 1.0
    pid.setpoint = 0.0
    pid.output = pid_step(pid, 0.01)
    assert pid.output == 0.0, "recovers at once, no windup to unwind"


def test_no_derivative_kick_on_setpoint_step() -> None:
    pid = Pid(kp=0.0, kd=1.0, setpoint=0.0, out_min=-10, out_max=10)
    pid_step(pid, 0.01)
    pid.setpoint = 5.0
    assert pid_step(pid, 0.01) == 0.0
