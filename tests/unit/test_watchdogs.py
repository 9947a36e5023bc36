"""Watchdogs on the control side: a silent device or robot is Disconnected, alarmed and
held safe; heard again, it recovers at once or at a reset, as configured."""

from __future__ import annotations

from typing import Any

import msgpack

from edgeloop.alarms import Alarms
from edgeloop.app import App
from edgeloop.drivers.field_bridge import DeviceSpec, FieldModel, add_field_devices
from edgeloop.drivers.field_link import TOPIC_VALUES, TOPIC_WRITE
from edgeloop.drivers.points import PointMap, Quality
from edgeloop.net.network import NET_EVENT, NET_MESSAGE, NET_SEND
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Record
from edgeloop.safety.safe_state import SafeState
from edgeloop.safety.watchdogs import CHECK_EVERY_TICKS, START_GRACE_S, Recovery
from edgeloop.sim.robots import Command, CommandResult, Robot, RobotsConfig, RobotsPlugin, Telemetry

RATE_HZ = 100
GRACE_TICKS = int(START_GRACE_S * RATE_HZ)
LEVEL = PointMap(entity="t1", component="Tank", field="level")
PUMP = PointMap(entity="t1", component="Tank", field="pump", direction="output",
                safe_value=0.0)  # fmt: skip


def _device_app(recovery: Recovery = "auto") -> tuple[App, IoLink]:
    app = App(rate_hz=RATE_HZ)
    link = IoLink()
    app.add_plugin(IoLinkPlugin(link))
    spec = DeviceSpec("plc1", "test", [LEVEL, PUMP], watchdog_s=0.5, watchdog_recovery=recovery)
    add_field_devices(app, "test", [spec])
    return app, link


def _read(link: IoLink, value: float) -> None:
    link.inbox.append(Record(TOPIC_VALUES, "plc1/b", int(Priority.NORMAL), [0, [value], 0]))


def _sent(link: IoLink, topic: str) -> list[tuple[Any, int]]:
    (outbox,) = link.outboxes
    found = []
    for queue, priority in ((outbox._critical, 0), (outbox._high, 1)):
        for raw in list(queue):
            got_topic, _, _, payload = msgpack.unpackb(raw)
            if got_topic == topic:
                found.append((payload, priority))
        queue.clear()
    return found


def _tank(app: App) -> Any:
    model = app.world.resource(FieldModel)
    return app.world.get(model.entities["t1"], model.component("Tank"))


def test_a_silent_device_goes_offline_alarmed_with_safe_outputs_and_recovers_when_heard() -> None:
    app, link = _device_app()
    app.startup()
    _tank(app).pump = 0.8
    _read(link, 1.0)
    app.run_for(GRACE_TICKS)
    assert _tank(app).level_quality is Quality.GOOD
    _sent(link, TOPIC_WRITE)
    _read(link, 1.0)  # the last it says
    app.run_for(50 + 2 * CHECK_EVERY_TICKS)
    safe = app.world.resource(SafeState)
    assert "watchdog:plc1" in safe.causes and safe.causes["watchdog:plc1"].scope == "plc1"
    model = app.world.resource(FieldModel)
    assert model.health["plc1"].state == "offline"
    assert "watchdog" in model.health["plc1"].last_error
    assert _tank(app).level_quality is Quality.STALE
    alarm = app.world.resource(Alarms).get("watchdog:plc1")
    assert alarm is not None and alarm.active
    assert _sent(link, TOPIC_WRITE) == [([[1, 0.0]], 0)], "its safe value, at CRITICAL"

    _read(link, 1.1)
    app.run_for(CHECK_EVERY_TICKS)
    assert not safe.active, "auto recovery: heard again, the state ends"
    assert not alarm.active


def test_values_the_io_side_ages_out_are_not_word_from_the_device() -> None:
    """A receive timeout (CAN) or an overdue poll (Modbus) sends the last values again
    as STALE: the device is no less silent for it."""
    app, link = _device_app()
    app.startup()
    _read(link, 1.0)
    app.run_for(GRACE_TICKS)
    _read(link, 1.0)  # the last it says
    app.run_for(50 + 2 * CHECK_EVERY_TICKS)
    safe = app.world.resource(SafeState)
    assert "watchdog:plc1" in safe.causes
    stale = int(Quality.STALE)
    for quality in (stale, [stale]):
        link.inbox.append(Record(TOPIC_VALUES, "plc1/b", int(Priority.NORMAL), [0, [1.0], quality]))
        app.run_for(2 * CHECK_EVERY_TICKS)
        assert "watchdog:plc1" in safe.causes, f"still silent after {quality!r}"
    assert app.world.resource(FieldModel).health["plc1"].state == "offline"


def test_with_reset_recovery_a_device_heard_again_waits_for_the_operator() -> None:
    app, link = _device_app("reset")
    app.startup()
    app.run_for(GRACE_TICKS + 50 + 2 * CHECK_EVERY_TICKS)  # never heard at all
    safe = app.world.resource(SafeState)
    assert "watchdog:plc1" in safe.causes
    _read(link, 1.0)
    app.run_for(CHECK_EVERY_TICKS)
    assert "watchdog:plc1" in safe.causes, "latched"
    assert safe.reset() == (["watchdog:plc1"], [])


def _robot_app() -> tuple[App, IoLink]:
    app = App(rate_hz=RATE_HZ)
    link = IoLink()
    app.insert_resource(Registry([Telemetry, Command, CommandResult]))
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    app.add_plugin(RobotsPlugin(RobotsConfig(watchdog_s=1.0)))
    return app, link


def _telemetry(connection: int) -> Record:
    payload = dict(robot_id="arm-1", position=1.0, velocity=0.0, temperature=30.0, status="idle")
    return Record(NET_MESSAGE, "t", 2, ["tcp", connection, "robot.Telemetry", payload])


def test_a_silent_robot_is_disconnected_stopped_at_critical_and_refuses_moves() -> None:
    app, link = _robot_app()
    app.startup()
    event = ["tcp", 7, True, "peer"]
    link.inbox.extend([Record(NET_EVENT, "7", 1, event), _telemetry(7)])
    app.run_for(GRACE_TICKS + 100 + 2 * CHECK_EVERY_TICKS)
    ((_, arm),) = app.world.query(Robot).items()
    assert arm.status == "disconnected" and arm.connection == 7, "connected, but silent"
    stops = [(p[4], prio) for p, prio in _sent(link, NET_SEND) if p[2] == "robot.Command"]
    assert len(stops) == 1 and stops[0][0]["action"] == "stop"
    assert stops[0][1] == Priority.CRITICAL
    move = dict(robot_id="arm-1", action="move", target=1.0, command_id=5)
    link.inbox.append(Record(NET_MESSAGE, "c", 1, ["tcp", 9, "robot.Command", move]))
    app.run_for(1)
    results = [p[4] for p, _ in _sent(link, NET_SEND) if p[2] == "robot.CommandResult"]
    assert len(results) == 1 and not results[0]["accepted"]
    assert "watchdog:arm-1" in results[0]["reason"]

    link.inbox.append(_telemetry(7))
    app.run_for(CHECK_EVERY_TICKS)
    assert not app.world.resource(SafeState).active
    assert arm.status == "idle"
