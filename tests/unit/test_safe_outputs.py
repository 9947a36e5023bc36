"""The field bridge's output side under SafeState and output bounds: safe values at
CRITICAL, held outputs, refusals that never clamp, safe values again on reconnect."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from edgeloop.alarms import Alarms
from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.drivers.field_bridge import DeviceSpec, FieldModel, add_field_devices
from edgeloop.drivers.field_link import TOPIC_HEALTH, TOPIC_WRITE
from edgeloop.drivers.points import PointMap
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Record
from edgeloop.safety.safe_state import HeldOutputs, SafeState
from edgeloop.schedule import ControlLogic, FixedUpdate
from edgeloop.world import World

SPEED = PointMap(
    entity="m1", component="Motor", field="speed", direction="output",
    min=0.0, max=1500.0, safe_value=0.0,
)  # fmt: skip
RUN = PointMap(entity="m1", component="Motor", field="run", type="bool", direction="output",
               safe_value=False)  # fmt: skip
MODE = PointMap(entity="m1", component="Motor", field="mode", direction="output")  # no safe value
VALVE = PointMap(entity="v2", component="Valve", field="open", type="bool", direction="output",
                 safe_value=True)  # fmt: skip


def _app() -> tuple[App, IoLink]:
    app = App()
    link = IoLink()
    app.add_plugin(IoLinkPlugin(link))
    add_field_devices(
        app,
        "test",
        [DeviceSpec("drive1", "test", [SPEED, RUN, MODE]), DeviceSpec("valve2", "test", [VALVE])],
    )
    return app, link


def _writes(link: IoLink) -> list[tuple[str, Any, Priority]]:
    """The field.write records waiting for the io process, with priority (and clear them)."""
    (outbox,) = link.outboxes
    found = []
    for queue, priority in ((outbox._critical, Priority.CRITICAL), (outbox._high, Priority.HIGH)):
        for raw in list(queue):
            topic, key, _, payload = msgpack.unpackb(raw)
            if topic == TOPIC_WRITE:
                found.append((key, payload, priority))
        queue.clear()
    return found


def _motor(app: App) -> Any:
    model = app.world.resource(FieldModel)
    return app.world.get(model.entities["m1"], model.component("Motor"))


def _valve(app: App) -> Any:
    model = app.world.resource(FieldModel)
    return app.world.get(model.entities["v2"], model.component("Valve"))


def _running(app: App, link: IoLink) -> None:
    app.startup()
    app.run_for(1)
    motor = _motor(app)
    motor.speed, motor.run, motor.mode = 900.0, True, 2.0
    _valve(app).open = False
    app.run_for(1)
    _writes(link)


def test_safe_state_sends_safe_values_at_critical_and_holds_outputs_without_one() -> None:
    app, link = _app()
    _running(app, link)
    app.world.resource(SafeState).trip("estop", "pressed", app.world.resource(Time).tick)
    app.run_for(1)
    assert sorted(_writes(link)) == [
        ("drive1", [[0, 0.0], [1, False]], Priority.CRITICAL),
        ("valve2", [[0, True]], Priority.CRITICAL),
    ]
    motor = _motor(app)
    assert (motor.speed, motor.run, motor.mode) == (0.0, False, 2.0), "the World shows it"

    motor.speed, motor.mode = 1200.0, 3.0  # control logic keeps writing: nothing leaves
    app.run_for(2)
    assert _writes(link) == []
    assert motor.speed == 0.0 and motor.mode == 2.0


def test_after_the_state_ends_outputs_stay_safe_until_written_again() -> None:
    app, link = _app()
    _running(app, link)
    safe = app.world.resource(SafeState)
    safe.trip("interlock:door", "door open", 1)
    app.run_for(1)
    _writes(link)
    safe.release("interlock:door")
    app.run_for(2)
    assert _writes(link) == [], "no surprise restart: the safe values stay"
    assert _motor(app).speed == 0.0
    _motor(app).speed = 300.0
    app.run_for(1)
    assert _writes(link) == [("drive1", [[0, 300.0]], Priority.HIGH)]


def test_a_cause_scoped_to_one_device_holds_only_that_device() -> None:
    app, link = _app()
    _running(app, link)
    app.world.resource(SafeState).trip("watchdog:valve2", "silent 3 s", 1, scope="valve2")
    _motor(app).speed = 1000.0
    app.run_for(1)
    assert sorted(_writes(link)) == [
        ("drive1", [[0, 1000.0]], Priority.HIGH),
        ("valve2", [[0, True]], Priority.CRITICAL),
    ]


def test_held_outputs_lists_the_fields_of_the_devices_held_while_they_are() -> None:
    app, link = _app()
    _running(app, link)
    held = app.world.resource(HeldOutputs).fields
    assert held == set()
    safe = app.world.resource(SafeState)
    safe.trip("watchdog:valve2", "silent 3 s", 1, scope="valve2")
    app.run_for(1)
    assert held == {("v2", "Valve", "open")}
    safe.trip("estop", "pressed", 2)
    app.run_for(1)
    motor = {("m1", "Motor", "speed"), ("m1", "Motor", "run"), ("m1", "Motor", "mode")}
    assert held == motor | {("v2", "Valve", "open")}
    safe.release("watchdog:valve2")
    safe.release("estop")
    app.run_for(1)
    assert held == set()


def test_a_write_outside_the_bounds_is_refused_not_clamped() -> None:
    app, link = _app()
    _running(app, link)
    _motor(app).speed = 2000.0
    app.run_for(1)
    assert _writes(link) == [], "not sent, and not sent as 1500 either"
    assert _motor(app).speed == 900.0, "the field shows what the device holds"
    model = app.world.resource(FieldModel)
    assert model.refused_writes == 1
    alarm = app.world.resource(Alarms).get("output:drive1")
    assert alarm is not None and alarm.active
    assert "m1.Motor.speed = 2000.0 refused: 2000 is above max 1500" in alarm.text
    _motor(app).speed = 1500.0
    app.run_for(1)
    assert _writes(link) == [("drive1", [[0, 1500.0]], Priority.HIGH)], "the bound itself is in"


def test_a_device_back_online_while_held_gets_its_safe_values_again() -> None:
    app, link = _app()
    _running(app, link)
    app.world.resource(SafeState).trip("estop", "pressed", 1)
    app.run_for(1)
    _writes(link)
    for state in ("offline", "online"):
        snapshot = {
            "state": state, "last_good_read": None, "consecutive_errors": 0, "errors": [],
            "last_error": "", "rtt_ms": None, "requests_per_cycle": 0,
        }  # fmt: skip
        link.inbox.append(Record(TOPIC_HEALTH, "drive1", int(Priority.HIGH), snapshot))
        app.run_for(1)
    assert _writes(link) == [("drive1", [[0, 0.0], [1, False]], Priority.CRITICAL)]


def test_shutdown_sends_every_safe_value() -> None:
    app, link = _app()
    _running(app, link)
    app.shutdown()
    assert sorted(_writes(link)) == [
        ("drive1", [[0, 0.0], [1, False]], Priority.CRITICAL),
        ("valve2", [[0, True]], Priority.CRITICAL),
    ]
    assert "shutdown" in app.world.resource(SafeState).causes


def test_control_logic_writing_every_tick_is_held_too() -> None:
    app, link = _app()

    def logic(world: World) -> None:
        _motor(app).speed = 700.0

    app.add_systems(FixedUpdate, logic, in_set=ControlLogic)
    app.startup()
    app.run_for(2)
    assert ("drive1", [[0, 700.0], [1, False], [2, 0.0]], Priority.HIGH) in _writes(link)
    app.world.resource(SafeState).trip("estop", "pressed", 2)
    app.run_for(3)
    assert sorted(_writes(link)) == [
        ("drive1", [[0, 0.0], [1, False]], Priority.CRITICAL),
        ("valve2", [[0, True]], Priority.CRITICAL),
    ], "once, not once per tick"


def test_a_safe_value_already_written_is_sent_again_as_the_hold_begins() -> None:
    """The device may have been changed there since (its program, a local panel): the
    appliance sends its safe values, it does not assume them."""
    app, link = _app()
    app.startup()
    app.run_for(1)
    assert ("valve2", [[0, False]], Priority.HIGH) in _writes(link)
    _valve(app).open = True  # the safe value, written before anything holds
    app.run_for(1)
    assert _writes(link) == [("valve2", [[0, True]], Priority.HIGH)]
    safe = app.world.resource(SafeState)
    safe.trip("interlock:door", "door open", 2)
    app.run_for(2)
    assert sorted(_writes(link)) == [
        ("drive1", [[0, 0.0], [1, False]], Priority.CRITICAL),
        ("valve2", [[0, True]], Priority.CRITICAL),
    ], "every safe value, once"
    safe.release("interlock:door")
    app.run_for(1)
    safe.trip("interlock:door", "door open again", 4)
    app.run_for(1)
    assert ("valve2", [[0, True]], Priority.CRITICAL) in _writes(link), "each hold"


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"direction": "output", "min": 0.0, "max": 10.0, "safe_value": 11.0},
         "safe_value 11.0: 11 is above max 10"),
        ({"safe_value": 0.0}, "safe_value is what an output gets"),
        ({"min": 0.0}, "min and max limit writes"),
        ({"direction": "output", "safe_value": True}, "must be a number"),
        ({"direction": "output", "type": "bool", "safe_value": 0.0}, "must be true or false"),
        ({"direction": "output", "type": "bool", "min": 0.0}, "min and max are for numbers"),
        ({"direction": "output", "type": "uint16", "safe_value": -1.0}, "out of range"),
        ({"direction": "output", "min": 5.0, "max": 1.0}, "min 5.0 is above max 1.0"),
    ],
)  # fmt: skip
def test_bounds_and_safe_values_that_cannot_hold_are_config_errors(
    point: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        PointMap(entity="m1", component="Motor", field="speed", **point)
