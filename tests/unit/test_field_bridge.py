"""The control side of the field drivers: entities, values with quality, writes on change."""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest

from edgeloop.app import App
from edgeloop.drivers.field_bridge import DeviceSpec, FieldModel, add_field_devices
from edgeloop.drivers.field_link import TOPIC_HEALTH, TOPIC_VALUES, TOPIC_WRITE
from edgeloop.drivers.points import PointMap, Quality
from edgeloop.names import Name
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, Record, socketpair
from edgeloop.safety.safe_state import SafeState
from edgeloop.schedule import ControlLogic, FixedUpdate
from edgeloop.world import World

LEVEL = PointMap(entity="tank1", component="Tank", field="level", unit="m")
PUMP = PointMap(entity="tank1", component="Tank", field="pump", type="bool", direction="output")
SETPOINT = PointMap(entity="tank1", component="Tank", field="setpoint", direction="both")


def _app(*points: PointMap) -> tuple[App, IoLink]:
    app = App()
    link = IoLink()
    app.add_plugin(IoLinkPlugin(link))
    add_field_devices(app, "test", [DeviceSpec("plc1", "test", list(points))])
    return app, link


def _writes(link: IoLink) -> list[tuple[str, Any]]:
    """The field.write records waiting to go to the io process (and clear them)."""
    found = []
    (outbox,) = link.outboxes
    for raw in list(outbox._high):
        topic, key, _, payload = msgpack.unpackb(raw)
        if topic == TOPIC_WRITE:
            found.append((key, payload))
    outbox._high.clear()
    return found


def _tank(app: App) -> Any:
    model = app.world.resource(FieldModel)
    return app.world.get(model.entities["tank1"], model.component("Tank"))


def test_points_become_entities_with_fields_and_qualities_stale_until_read() -> None:
    app, _ = _app(LEVEL, PUMP)
    app.startup()
    app.run_for(1)
    tank = _tank(app)
    assert tank.level == 0.0
    assert tank.level_quality is Quality.STALE, "nothing read yet: never presented as fresh"
    assert not hasattr(tank, "pump_quality"), "an output-only point has no quality"
    model = app.world.resource(FieldModel)
    assert app.world.get(model.entities["plc1"], Name).value == "plc1"
    assert model.health["plc1"].state == "connecting"


def test_values_and_health_from_the_io_process_land_in_the_world() -> None:
    app, link = _app(LEVEL)
    app.startup()
    link.inbox.append(Record(TOPIC_VALUES, "plc1/block0", 2, [[0], [1.25], int(Quality.GOOD)]))
    snapshot = {
        "driver": "test",
        "state": "degraded",
        "last_good_read": 12.5,
        "consecutive_errors": 1,
        "errors": [["timeout", 1]],
        "last_error": "timeout: no answer",
        "rtt_ms": 3.0,
        "requests_per_cycle": 2,
    }
    link.inbox.append(Record(TOPIC_HEALTH, "plc1", 2, snapshot))
    app.run_for(1)
    tank = _tank(app)
    assert (tank.level, tank.level_quality) == (1.25, Quality.GOOD)
    health = app.world.resource(FieldModel).health["plc1"]
    assert (health.state, health.requests_per_cycle) == ("degraded", 2)
    assert health.error_count("timeout") == 1
    link.inbox.append(Record(TOPIC_VALUES, "plc1/block0", 2, [0, [1.25], [int(Quality.STALE)]]))
    app.run_for(1)
    assert tank.level_quality is Quality.STALE


def test_outputs_are_written_when_control_changes_them_not_every_tick() -> None:
    app, link = _app(LEVEL, PUMP)

    def logic(world: World) -> None:
        tank = _tank(app)
        tank.pump = tank.level > 1.0

    app.add_systems(FixedUpdate, logic, in_set=ControlLogic)
    app.startup()
    app.run_for(1)
    assert _writes(link) == [("plc1", [[1, False]])], "an output-only point is written at start"
    app.run_for(3)
    assert _writes(link) == [], "no change, no write"
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [1.5], 0]))
    app.run_for(1)
    assert _writes(link) == [("plc1", [[1, True]])]


def test_a_point_read_and_written_does_not_echo_what_it_read() -> None:
    app, link = _app(SETPOINT)
    app.startup()
    app.run_for(1)
    assert _writes(link) == [], "not written before control logic changes it"
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [[0], [4.0], [0]]))
    app.run_for(2)
    assert _tank(app).setpoint == 4.0
    assert _writes(link) == [], "a value read from the device is not written back"
    _tank(app).setpoint = 5.0
    app.run_for(1)
    assert _writes(link) == [("plc1", [[0, 5.0]])]


def test_a_nan_output_is_refused_once_and_the_field_shows_the_device_value() -> None:
    app, link = _app(PointMap(entity="v1", component="Valve", field="pos", direction="output"))
    app.startup()
    app.run_for(1)
    _writes(link)
    model = app.world.resource(FieldModel)
    valve = app.world.get(model.entities["v1"], model.component("Valve"))
    valve.pos = math.nan
    app.run_for(3)
    assert _writes(link) == []
    assert valve.pos == 0.0
    assert model.refused_writes == 1


def test_a_device_name_used_twice_is_refused() -> None:
    app, _ = _app(LEVEL)
    with pytest.raises(ValueError, match="used twice"):
        add_field_devices(app, "other", [DeviceSpec("plc1", "other", [LEVEL])])


def test_one_field_with_two_types_is_refused() -> None:
    app, _ = _app(LEVEL)
    as_bool = PointMap(entity="tank2", component="Tank", field="level", type="bool")
    with pytest.raises(ValueError, match=r"Tank\.level is float .* and bool"):
        add_field_devices(app, "other", [DeviceSpec("plc2", "other", [as_bool])])


@pytest.mark.parametrize(
    ("point", "value", "raw"),
    [
        (PointMap(entity="e", component="C", field="f", type="int16", scale=0.1), 12.3, 123),
        (PointMap(entity="e", component="C", field="f", type="uint16", offset=-40), -40.0, 0),
        (PointMap(entity="e", component="C", field="f", type="float32", scale=2.0), 3.0, 1.5),
        (PointMap(entity="e", component="C", field="f", type="bool"), 1, True),
    ],
)
def test_scaling_round_trips(point: PointMap, value: float, raw: Any) -> None:
    assert point.to_raw(value) == raw
    assert point.to_value(raw) == pytest.approx(value)


def test_an_output_out_of_its_type_range_is_refused() -> None:
    point = PointMap(entity="e", component="C", field="f", type="uint16")
    with pytest.raises(ValueError, match="out of range for uint16"):
        point.to_raw(70000)
    with pytest.raises(ValueError, match="not a finite"):
        point.to_raw(math.inf)


def test_values_read_mark_their_component_changed_for_change_queries() -> None:
    app, link = _app(LEVEL)
    seen: list[list[int]] = []

    def watch(world: World) -> None:
        tank = world.resource(FieldModel).component("Tank")
        seen.append(list(world.query(tank, changed=(tank,)).entities()))

    app.add_systems(FixedUpdate, watch, in_set=ControlLogic)
    app.startup()
    app.run_for(1)
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [3.0], 0]))
    app.run_for(1)
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [3.0], 0]))
    app.run_for(1)
    tank_entity = app.world.resource(FieldModel).entities["tank1"]
    assert seen[1] == [tank_entity], "a new value is a change"
    assert seen[2] == [], "the same value again is not"


def test_a_value_the_device_rounds_is_not_written_again_after_each_read() -> None:
    app, link = _app(SETPOINT)  # float32, read and written

    def hold_setpoint(world: World) -> None:
        _tank(app).setpoint = 0.1  # as a controller re-asserting its output every tick

    app.add_systems(FixedUpdate, hold_setpoint, in_set=ControlLogic)
    app.startup()
    app.run_for(1)
    assert _writes(link) == [("plc1", [[0, 0.1]])]
    held = struct.unpack("<f", struct.pack("<f", 0.1))[0]  # 0.10000000149...
    for _ in range(20):
        link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [held], 0]))
        app.run_for(1)
    assert _writes(link) == [], "the device's float32 rounding is no change"
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [7.0], 0]))  # changed at the HMI
    app.run_for(1)
    assert _writes(link) == [("plc1", [[0, 0.1]])], "a change on the device is overruled"


def _sent_to_io(io_end: Channel) -> list[tuple[str, Any]]:
    return [
        (record.key, record.payload)
        for batch in io_end.receive()
        for record in batch.records
        if record.topic == TOPIC_WRITE
    ]


def test_io_process_down_makes_values_stale_and_a_new_one_gets_the_outputs_again() -> None:
    control_end, io_end = socketpair()
    app = App()
    link = IoLink(Channel(control_end))
    app.add_plugin(IoLinkPlugin(link))
    add_field_devices(app, "test", [DeviceSpec("plc1", "test", [LEVEL, PUMP, SETPOINT])])
    app.startup()
    app.run_for(1)
    _tank(app).setpoint = 2.0
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [[0], [1.0], 0]))
    app.run_for(1)
    io = Channel(io_end)
    assert _sent_to_io(io) == [("plc1", [[1, False]]), ("plc1", [[2, 2.0]])]
    assert _tank(app).level_quality is Quality.GOOD

    io.close()  # the io process died
    link.read_available()  # the loop reads the EOF as soon as it comes
    app.run_for(1)
    model = app.world.resource(FieldModel)
    assert _tank(app).level_quality is Quality.STALE, "nothing is read while io is down"
    assert model.health["plc1"].state == "offline"

    control_end, io_end = socketpair()
    link.replace(control_end)  # the supervisor started a new io process
    app.run_for(1)
    io = Channel(io_end)
    assert _sent_to_io(io) == [], "held by the safe state (io_lost) until a reset"
    safe = app.world.resource(SafeState)
    assert safe.reset() == (["io_lost"], [])
    app.run_for(1)
    assert _sent_to_io(io) == [("plc1", [[1, False], [2, 2.0]])], (
        "the outputs control logic owns are sent to the new io process"
    )


def test_a_record_that_does_not_fit_the_points_is_dropped_not_a_stop() -> None:
    app, link = _app(LEVEL)
    app.startup()
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [[5], [1.0], 0]))  # no point 5
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, "garbage"))
    link.inbox.append(Record(TOPIC_HEALTH, "plc1", 2, {"state": "online"}))
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [[0], [2.0], 0]))
    app.run_for(1)
    assert app.world.resource(FieldModel).bad_records == 3
    assert _tank(app).level == 2.0, "the records that fit still apply"
    assert app.world.resource(FieldModel).health["plc1"].state == "connecting", "no half snapshot"


@pytest.mark.parametrize(
    "payload",
    [
        [0, [3.0], 99],  # no such quality
        [0, [3.0], -1],
        [0, [3.0], [99]],
        [[-1], [3.0], 0],  # a negative index would land on another point
    ],
)
def test_a_record_that_does_not_fit_changes_nothing_so_the_good_one_after_it_is_seen(
    payload: list[Any],
) -> None:
    app, link = _app(LEVEL)
    seen: list[list[int]] = []

    def watch(world: World) -> None:
        tank = world.resource(FieldModel).component("Tank")
        seen.append(list(world.query(tank, changed=(tank,)).entities()))

    app.add_systems(FixedUpdate, watch, in_set=ControlLogic)
    app.startup()
    app.run_for(1)
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, payload))
    app.run_for(1)
    assert app.world.resource(FieldModel).bad_records == 1
    assert _tank(app).level == 0.0, "dropped whole, not half applied"
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [0, [3.0], int(Quality.GOOD)]))
    app.run_for(1)
    assert _tank(app).level == 3.0
    assert seen[-1] == [app.world.resource(FieldModel).entities["tank1"]], "marked changed"


def test_a_field_read_from_a_device_has_no_second_writer() -> None:
    # The bridge compares a block with what it last wrote: a second point writing the
    # field (or reading it from another device) would make it skip real changes.
    app, _ = _app(LEVEL)
    written_elsewhere = PointMap(
        entity="tank1", component="Tank", field="level", unit="m", direction="output"
    )
    with pytest.raises(ValueError, match=r"plc2 points\[0\]: tank1.Tank.level is already read"):
        add_field_devices(app, "other", [DeviceSpec("plc2", "other", [written_elsewhere])])
    with pytest.raises(ValueError, match="already read by plc1 points"):
        add_field_devices(app, "other", [DeviceSpec("plc3", "other", [LEVEL])])


def test_a_field_written_by_one_point_may_not_then_be_read_by_another() -> None:
    app, _ = _app(PUMP)
    pump_read = PointMap(entity="tank1", component="Tank", field="pump", type="bool")
    with pytest.raises(ValueError, match="already written by plc1 points"):
        add_field_devices(app, "other", [DeviceSpec("plc2", "other", [pump_read])])


def test_with_several_io_workers_the_drivers_worker_alone_matters() -> None:
    (control0, io0), (control1, io1) = socketpair(), socketpair()
    app = App()
    link = IoLink(Channel(control0), Channel(control1))
    app.add_plugin(IoLinkPlugin(link))
    add_field_devices(app, "test", [DeviceSpec("plc1", "test", [LEVEL, PUMP])])
    app.startup()
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", 2, [[0], [1.0], 0]))
    app.run_for(1)
    assert _sent_to_io(Channel(io0)) == [("plc1", [[1, False]])]
    assert _sent_to_io(Channel(io1)) == [], "field writes go to the worker running the drivers"

    io1.close()  # a worker that only serves network peers died
    link.read_available(1)
    app.run_for(1)
    assert _tank(app).level_quality is Quality.GOOD
    assert app.world.resource(FieldModel).health["plc1"].state != "offline"
