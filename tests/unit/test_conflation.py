"""NORMAL telemetry is conflated per connection, type and entity: a gateway streaming
several robots on one connection loses none of them to another's update."""

from __future__ import annotations

from typing import Any

from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.protocol import PROTOCOL_VERSION, Hello
from edgeloop.net.registry import MessageInfo, Registry
from edgeloop.net.session import Hub, Session
from edgeloop.sim.robots import Command, Telemetry


def _gateway() -> tuple[Hub, Session]:
    def deliver(session: Session, found: MessageInfo, msg: Any) -> bool:
        return True

    hub = Hub(
        "tcp",
        Registry([Telemetry, Command]),
        Authenticator([Grant("gw-secret", Role.DEVICE)]),
        deliver,
        hold=lambda: True,
    )
    session = Session(hub, "127.0.0.1:1", lambda frame: None, lambda: None)
    session.receive_frames(
        [memoryview(protocol.encode(Hello("gw", "gw-secret", "device", PROTOCOL_VERSION)))]
    )
    return hub, session


def _telemetry(robot: str, position: float) -> memoryview:
    return memoryview(protocol.encode(Telemetry(robot, position, 0.0, 30.0, "idle")))


def test_the_latest_is_kept_per_robot_not_per_connection() -> None:
    hub, session = _gateway()
    frames = [_telemetry("arm-1", 1.0), _telemetry("arm-2", 2.0), _telemetry("arm-1", 3.0)]
    session.receive_frames(frames)
    held = {key[2]: msg.position for key, msg in hub.take_latest().items()}
    assert held == {"arm-1": 3.0, "arm-2": 2.0}


def test_the_slow_path_conflates_the_same_way() -> None:
    hub, session = _gateway()
    for robot, position in (("arm-1", 1.0), ("arm-2", 2.0), ("arm-1", 3.0)):
        name, schema_hash, payload = protocol.split(bytes(_telemetry(robot, position)))
        session.receive(name, schema_hash, payload)
    held = {key[2]: msg.position for key, msg in hub.take_latest().items()}
    assert held == {"arm-1": 3.0, "arm-2": 2.0}
