from __future__ import annotations

import logging

import pytest

from edgeloop import (
    Alarms,
    App,
    AppState,
    ControlLogic,
    FixedUpdate,
    SensorInput,
    Shutdown,
    SystemFailure,
    Time,
    World,
)
from tests.conftest import Position


class Boom(RuntimeError):
    pass


def _fails_on_tick(app: App, ticks: set[int]):  # type: ignore[no-untyped-def]
    def flaky_sensor(world: World) -> None:
        if app.time.tick in ticks:
            raise Boom(f"no answer on tick {app.time.tick}")

    return flaky_sensor


def test_time_counts_fixed_ticks_without_drift() -> None:
    app = App(rate_hz=250)
    app.run_for(1000)
    time = app.world.resource(Time)
    assert (time.tick, time.delta, time.elapsed) == (1000, 0.004, 4.0)


def test_stop_policy_runs_shutdown_and_raises_naming_system_and_set() -> None:
    app = App(on_system_error="stop")
    shutdown_ran: list[bool] = []
    app.add_systems(FixedUpdate, _fails_on_tick(app, {3}), in_set=SensorInput)
    app.add_systems(Shutdown, lambda world: shutdown_ran.append(True))
    with pytest.raises(SystemFailure, match=r"flaky_sensor in FixedUpdate/SensorInput raised Boom"):
        app.run_for(10)
    assert app.time.tick == 3
    assert shutdown_ran == [True]
    assert app.state is AppState.STOPPED
    with pytest.raises(RuntimeError, match="stopped"):
        app.tick()


def test_skip_policy_keeps_the_loop_running_and_raises_then_clears_an_alarm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(on_system_error="skip")
    ran_after: list[int] = []
    app.add_systems(FixedUpdate, _fails_on_tick(app, {2, 3}), in_set=SensorInput)
    app.add_systems(FixedUpdate, lambda world: ran_after.append(app.time.tick), in_set=ControlLogic)
    alarms = app.world.resource(Alarms)
    with caplog.at_level(logging.ERROR):
        app.run_for(3)
    alarm = alarms.get("system:_fails_on_tick.<locals>.flaky_sensor")
    assert alarm is not None and alarm.active
    assert "in FixedUpdate/SensorInput: Boom: no answer on tick 3" in alarm.text
    assert alarm.count == 2
    assert "flaky_sensor in FixedUpdate/SensorInput" in caplog.text
    app.run_for(1)
    assert not alarm.active
    assert ran_after == [1, 2, 3, 4]


def test_repeated_failures_are_logged_sparsely(caplog: pytest.LogCaptureFixture) -> None:
    app = App(on_system_error="skip")
    app.add_systems(FixedUpdate, _fails_on_tick(app, set(range(1, 1001))), in_set=SensorInput)
    with caplog.at_level(logging.ERROR):
        app.run_for(1000)
    assert len(caplog.records) == 4  # 1st, 10th, 100th, 1000th


def test_a_failing_shutdown_system_does_not_stop_the_others() -> None:
    app = App()
    ran: list[str] = []

    def broken(world: World) -> None:
        raise Boom("relay driver gone")

    app.add_systems(Shutdown, broken, lambda world: ran.append("pumps off"))
    app.run_for(1)
    app.shutdown()
    assert ran == ["pumps off"]


def test_failed_system_sees_the_changes_it_missed_on_its_next_run() -> None:
    app = App(on_system_error="skip")
    e = app.world.spawn(Position())
    seen: list[int] = []

    def writer(world: World) -> None:
        if app.time.tick == 2:
            world.get(e, Position).x = 1.0

    def reader(world: World) -> None:
        changed = world.query(Position, changed=(Position,)).entities()
        if app.time.tick == 2:
            raise Boom("interrupted")
        seen.append(len(changed))

    app.add_systems(FixedUpdate, writer, in_set=SensorInput)
    app.add_systems(FixedUpdate, reader, in_set=ControlLogic)
    app.run_for(3)
    assert seen == [1, 1]  # tick 1: added; tick 3: the tick-2 write, not lost


class CountingPlugin:
    def __init__(self) -> None:
        self.built = 0

    def build(self, app: App) -> None:
        self.built += 1
        app.insert_resource(self)


def test_plugins_build_once_and_add_resources() -> None:
    app = App()
    plugin = CountingPlugin()
    app.add_plugin(plugin)
    assert app.world.resource(CountingPlugin) is plugin
    with pytest.raises(ValueError, match="already added"):
        app.add_plugin(CountingPlugin())
    assert plugin.built == 1


def test_two_apps_in_one_process_are_independent() -> None:
    first, second = App(), App()
    first.world.spawn(Position(1.0))
    first.run_for(5)
    assert len(second.world) == 0 and second.time.tick == 0


def test_bad_policy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'stop' or 'skip'"):
        App(on_system_error="ignore")  # type: ignore[arg-type]
