from __future__ import annotations

from dataclasses import dataclass

from edgeloop import App, ControlLogic, FixedUpdate, World
from edgeloop.net.network import (
    NET_MESSAGE,
    NET_SEND,
    Network,
    RequestTimeout,
    Response,
)
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry, message
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, Record, socketpair


@message(name="robot.GetStatus", priority=Priority.HIGH)
@dataclass
class GetStatus:
    request_id: int = 0


@message(name="robot.Status")
@dataclass
class Status:
    request_id: int
    state: str


def _app() -> tuple[App, IoLink, Channel, list[object]]:
    control_end, io_end = socketpair()
    link = IoLink(Channel(control_end))
    app = App(rate_hz=100)
    app.insert_resource(Registry([GetStatus, Status]))
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    seen: list[object] = []

    def ask_once(world: World) -> None:
        if app.time.tick == 1:
            world.resource(Network).request(world, 7, GetStatus(), timeout_s=0.05)
        seen.extend(world.read(Response))
        seen.extend(world.read(RequestTimeout))

    app.add_systems(FixedUpdate, ask_once, in_set=ControlLogic)
    return app, link, Channel(io_end), seen


def test_a_reply_with_the_request_id_arrives_as_a_response() -> None:
    app, link, io, seen = _app()
    app.run_for(1)
    (batch,) = io.receive()
    (sent,) = [r for r in batch.records if r.topic == NET_SEND]
    request_id = sent.payload[4]["request_id"]
    reply = ["tcp", 7, "robot.Status", {"request_id": request_id, "state": "idle"}]
    io.send(0, [Record(NET_MESSAGE, "7", int(Priority.NORMAL), reply)])
    link.read_available()
    app.run_for(10)
    assert seen == [Response(request_id, Status(request_id, "idle"), 7, 2)]


def test_no_reply_within_the_timeout_is_a_request_timeout() -> None:
    app, _, _, seen = _app()
    app.run_for(10)
    assert seen == [RequestTimeout(1, 7, 6)]  # asked at tick 1, 5 ticks of 10 ms
