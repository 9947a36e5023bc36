from __future__ import annotations

import pytest

from edgeloop import (
    ActuatorOutput,
    App,
    ControlLogic,
    DataLogging,
    DataProcessing,
    FixedUpdate,
    HealthMonitoring,
    SensorInput,
    Startup,
    SystemSet,
    Update,
    WebUIUpdates,
    World,
    on_timer,
    resource_equals,
)
from edgeloop.schedule import ScheduleError


def _recorder(log: list[str], name: str):  # type: ignore[no-untyped-def]
    def system(world: World) -> None:
        log.append(name)

    system.__qualname__ = name
    return system


def test_default_sets_run_in_their_documented_order() -> None:
    app = App()
    assert app.schedule(FixedUpdate).order() == [
        SensorInput,
        DataProcessing,
        ControlLogic,
        ActuatorOutput,
    ]
    assert app.schedule(Update).order() == [WebUIUpdates, DataLogging, HealthMonitoring]


def test_systems_run_by_set_order_then_in_the_order_added() -> None:
    app = App()
    log: list[str] = []
    app.add_systems(FixedUpdate, _recorder(log, "out"), in_set=ActuatorOutput)
    app.add_systems(
        FixedUpdate, _recorder(log, "ctl1"), _recorder(log, "ctl2"), in_set=ControlLogic
    )
    app.add_systems(FixedUpdate, _recorder(log, "in"), in_set=SensorInput)
    app.add_systems(FixedUpdate, _recorder(log, "ctl3"), in_set=ControlLogic)
    app.run_for(1)
    assert log == ["in", "ctl1", "ctl2", "ctl3", "out"]


def test_a_plugin_set_can_be_chained_between_two_existing_sets() -> None:
    app = App()
    filtering = SystemSet("Filtering")
    app.configure_sets(FixedUpdate, SensorInput, filtering, DataProcessing)
    assert app.schedule(FixedUpdate).order() == [
        SensorInput,
        filtering,
        DataProcessing,
        ControlLogic,
        ActuatorOutput,
    ]


def test_a_cycle_in_set_order_is_refused_with_the_sets_named() -> None:
    app = App()
    with pytest.raises(ScheduleError, match="cycle among SensorInput"):
        app.configure_sets(FixedUpdate, ActuatorOutput, SensorInput)


def test_fixed_update_systems_must_name_their_set() -> None:
    app = App()
    with pytest.raises(ValueError, match="need in_set="):
        app.add_systems(FixedUpdate, _recorder([], "x"))
    with pytest.raises(ScheduleError, match="set Nowhere is not configured"):
        app.add_systems(FixedUpdate, _recorder([], "x"), in_set=SystemSet("Nowhere"))


def test_startup_runs_once_before_the_first_tick() -> None:
    app = App()
    log: list[str] = []
    app.add_systems(Startup, _recorder(log, "start"))
    app.add_systems(FixedUpdate, _recorder(log, "tick"), in_set=SensorInput)
    app.run_for(2)
    app.run_for(1)
    assert log == ["start", "tick", "tick", "tick"]


def test_on_timer_fires_at_its_rate_on_the_fixed_clock() -> None:
    app = App(rate_hz=100)
    log: list[str] = []
    app.add_systems(Update, _recorder(log, "ui"), in_set=WebUIUpdates)
    app.add_systems(Update, _recorder(log, "log"), in_set=DataLogging)
    app.add_systems(Update, _recorder(log, "fast"), in_set=HealthMonitoring, run_if=on_timer(0.05))
    app.run_for(300)  # 3 s
    assert log.count("ui") == 90
    assert log.count("log") == 300, "DataLogging: every pass (the logger wants each tick)"
    assert log.count("fast") == 60


def test_on_timer_after_a_stall_fires_once_and_realigns() -> None:
    app = App(rate_hz=100)
    timer = on_timer(0.1)
    assert not timer(app.world)
    app.time.tick = 100  # a 1 s jump, as after a long pause
    app.time.elapsed = 1.0
    assert timer(app.world)
    assert not timer(app.world)
    app.time.elapsed = 1.1
    assert timer(app.world), "back on the 0.1 s grid"


def test_resource_equals_and_plain_callables_gate_systems() -> None:
    app = App()
    log: list[str] = []
    app.insert_resource("manual")
    app.add_systems(
        FixedUpdate, _recorder(log, "auto"), in_set=ControlLogic, run_if=resource_equals("auto")
    )
    app.add_systems(
        FixedUpdate,
        _recorder(log, "even"),
        in_set=ControlLogic,
        run_if=lambda world: app.time.tick % 2 == 0,
    )
    app.run_for(2)
    app.insert_resource("auto")
    app.run_for(1)
    assert log == ["even", "auto"]


def test_one_timer_given_to_two_systems_fires_for_both() -> None:
    app = App(rate_hz=100)
    log: list[str] = []
    app.add_systems(
        Update,
        _recorder(log, "a"),
        _recorder(log, "b"),
        in_set=HealthMonitoring,
        run_if=on_timer(0.1),
    )
    app.run_for(100)
    assert (log.count("a"), log.count("b")) == (10, 10)


def test_a_refused_cycle_leaves_the_schedule_as_it_was() -> None:
    app = App()
    with pytest.raises(ScheduleError):
        app.configure_sets(FixedUpdate, ActuatorOutput, SensorInput)
    assert app.schedule(FixedUpdate).order()[0] == SensorInput
