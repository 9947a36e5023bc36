from __future__ import annotations

from edgeloop import App, ControlLogic, FixedUpdate, SensorInput, World
from edgeloop.blocks.pid import Pid, PidMode, pid_step, run_pid


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


def run_first_order_plant(pid: Pid, tau_s: float, seconds: float, dt: float = 0.01) -> list[float]:
    """The plant dx/dt = (u - x) / tau under ``pid``; the pv after every step."""
    seen = []
    for _ in range(round(seconds / dt)):
        pid.output = pid_step(pid, dt)
        pid.pv += (pid.output - pid.pv) * dt / tau_s
        seen.append(pid.pv)
    return seen


def test_pi_cancelling_the_plant_pole_settles_in_four_closed_loop_time_constants() -> None:
    # ki / kp = 1 / tau cancels the plant's pole: the closed loop is first order with
    # time constant tau / kp, so it reaches 2 % of the step in 4 of those, never above.
    tau, kp = 0.5, 2.0
    pid = Pid(kp=kp, ki=kp / tau, setpoint=0.4, out_min=0.0, out_max=1.0)
    closed_loop_tau = tau / kp
    settle_s = 4 * closed_loop_tau
    seen = run_first_order_plant(pid, tau, seconds=3.0)
    at_settle = seen[round(settle_s / 0.01) + 2]  # two steps of discretisation delay
    assert abs(at_settle - 0.4) <= 0.02 * 0.4
    assert abs(seen[round(1.5 * settle_s / 0.01)] - 0.4) < abs(at_settle - 0.4)
    assert max(seen) <= 0.4 * 1.001, "first order: no overshoot"
    assert abs(seen[-1] - 0.4) < 1e-4


def test_a_saturated_loop_does_not_overshoot_when_the_setpoint_comes_into_reach() -> None:
    # The first error asks for u = 4.5, the pump gives 1.0: the loop rides the limit for
    # about a second. Without anti-windup the integral piles up meanwhile and the level
    # overshoots to 0.985 (measured) before it comes back.
    pid = Pid(kp=5.0, ki=5.0, setpoint=0.9, out_min=0.0, out_max=1.0)
    seen = run_first_order_plant(pid, tau_s=0.5, seconds=20.0)
    assert max(seen) < 0.9 * 1.01
    assert abs(seen[-1] - 0.9) < 1e-3


def test_in_manual_the_output_follows_the_manual_value_within_the_limits() -> None:
    pid = Pid(kp=1.0, ki=1.0, setpoint=1.0, out_min=0.0, out_max=0.8, mode=PidMode.MANUAL)
    pid.manual_output = 0.3
    assert pid_step(pid, 0.01) == 0.3
    pid.manual_output = 5.0
    assert pid_step(pid, 0.01) == 0.8


def test_manual_to_auto_is_bumpless() -> None:
    pid = Pid(kp=2.0, ki=1.0, kd=0.1, setpoint=1.0, pv=0.4, mode=PidMode.MANUAL)
    pid.manual_output = 0.35
    for _ in range(50):
        assert pid_step(pid, 0.01) == 0.35
    pid.mode = PidMode.AUTO
    first_auto = pid_step(pid, 0.01)
    # Only one step of integral action (ki * error * dt = 0.006) separates them.
    assert abs(first_auto - 0.35) < 0.01


def test_auto_to_manual_holds_the_output() -> None:
    pid = Pid(kp=2.0, ki=1.0, setpoint=1.0, pv=0.8)
    for _ in range(10):
        last = pid_step(pid, 0.01)
    pid.mode = PidMode.MANUAL
    assert pid_step(pid, 0.01) == last
