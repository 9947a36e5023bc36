"""Several io workers: one channel each, records routed to the worker that needs them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeloop import Alarms, App, ControlLogic, FixedUpdate, World
from edgeloop.config import ConfigSection, parse_config_text
from edgeloop.names import Name
from edgeloop.net.connection_ids import WORKER_SHIFT, ConnectionIds, worker_of
from edgeloop.net.network import NET_EVENT, NET_MESSAGE, NET_SEND, ConnectionEvent, Network
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry, message
from edgeloop.net.world_feed import WORLD_REMOVED, WORLD_VALUE
from edgeloop.priority import Priority
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.realtime.control_process import IoChannelWatch
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_link import IoInput, IoLink, IoLinkPlugin
from edgeloop.realtime.io_process import IoService, io_parts
from edgeloop.realtime.ipc import Channel, Record, socketpair
from edgeloop.sim.robots import Robot, RobotsConfig, RobotsPlugin, Telemetry


@message(name="test.Ping", priority=Priority.HIGH)
@dataclass
class Ping:
    n: int


_opened: list[Channel] = []


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _channel(sock: socket.socket) -> Channel:
    channel = Channel(sock)
    _opened.append(channel)
    return channel


def _two_workers(
    records_per_tick: int = 1000, workers: int = 2, broadcast_from: int = 0
) -> tuple[App, IoLink, list[Channel]]:
    pairs = [socketpair() for _ in range(workers)]
    link = IoLink(
        *(_channel(c) for c, _ in pairs),
        records_per_tick=records_per_tick,
        broadcast_from=broadcast_from,
    )
    app = App(rate_hz=100)
    app.insert_resource(Registry([Ping]))
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    return app, link, [_channel(io) for _, io in pairs]


def _event(connection: int, connected: bool) -> Record:
    payload = ["tcp", connection, connected, "peer" if connected else "closed"]
    return Record(NET_EVENT, str(connection), int(Priority.HIGH), payload)


def _received(io: Channel) -> list[Record]:
    return [record for batch in io.receive() for record in batch.records]


def test_a_record_goes_to_its_worker_and_a_broadcast_to_every_worker() -> None:
    app, link, (io0, io1) = _two_workers()
    link.send("field.write", "plc1", [[0, 1.0]], Priority.HIGH, worker=0)
    link.send("world.value", "1:Tank", [1, "Tank", {}])
    app.run_for(1)
    assert [r.topic for r in _received(io0)] == ["field.write", "world.value"]
    assert [r.topic for r in _received(io1)] == ["world.value"]
    with pytest.raises(IndexError):
        link.send("t", "k", 0, worker=2)


def test_with_the_drivers_alone_no_broadcast_reaches_their_worker() -> None:
    app, link, (io0, io1) = _two_workers(broadcast_from=1)  # runtime.io_drivers_alone
    robot = app.world.spawn(Name("robot-1"))
    link.send("field.write", "plc1", [[0, 1.0]], Priority.CRITICAL, worker=0)
    link.send("net.broadcast", "", None)
    app.run_for(5)  # past a 30 Hz WebUIUpdates: the world feed too
    assert [r.topic for r in _received(io0)] == ["field.write"]
    to_network = _received(io1)
    assert "net.broadcast" in [r.topic for r in to_network]
    assert robot in [r.payload[0] for r in to_network if r.topic == WORLD_VALUE]

    control_end, io_end = socketpair()  # the drivers' worker restarted: no world for it
    new_io0 = _channel(io_end)
    link.replace(control_end, worker=0)
    app.run_for(5)
    assert not [r for r in _received(new_io0) if r.topic == WORLD_VALUE]


def test_network_sends_reach_the_worker_holding_the_connection() -> None:
    app, _, (io0, io1) = _two_workers()
    on_worker_1 = (1 << WORKER_SHIFT) + 5

    def send(world: World) -> None:
        network = world.resource(Network)
        network.send(world, 3, Ping(1))
        network.send(world, on_worker_1, Ping(2))
        network.send(world, 7 << WORKER_SHIFT, Ping(3))  # no such worker: dropped
        network.broadcast(world, Ping(4))

    app.add_systems(FixedUpdate, send, in_set=ControlLogic)
    app.run_for(1)
    sent0 = [r.payload[4]["n"] for r in _received(io0) if r.topic == NET_SEND]
    sent1 = [r.payload[4]["n"] for r in _received(io1) if r.topic == NET_SEND]
    assert (sent0, sent1) == ([1, 4], [2, 4])
    assert app.world.resource(Network).dropped == 1


def test_inputs_from_every_worker_reach_the_systems() -> None:
    app, link, (io0, io1) = _two_workers()
    seen: list[IoInput] = []
    app.add_systems(FixedUpdate, lambda w: seen.extend(w.read(IoInput)), in_set=ControlLogic)
    io0.send(0, [Record("t", "a", int(Priority.HIGH), 0)])
    io1.send(0, [Record("t", "b", int(Priority.HIGH), 1)])
    link.read_available(0)
    link.read_available(1)
    app.run_for(1)
    assert sorted(r.key for r in seen) == ["a", "b"]


def test_a_lost_worker_raises_the_alarm_by_name_and_disconnects_only_its_peers() -> None:
    app, link, (io0, io1) = _two_workers()
    events: list[ConnectionEvent] = []
    app.add_systems(
        FixedUpdate, lambda w: events.extend(w.read(ConnectionEvent)), in_set=ControlLogic
    )
    peer0, peer1 = 1, (1 << WORKER_SHIFT) + 1
    io0.send(0, [Record(NET_EVENT, "1", int(Priority.HIGH), ["tcp", peer0, True, "r0"])])
    io1.send(0, [Record(NET_EVENT, "2", int(Priority.HIGH), ["ws", peer1, True, "r1"])])
    link.read_available(0)
    link.read_available(1)
    app.run_for(1)
    assert [(e.connection, e.connected) for e in events] == [(peer0, True), (peer1, True)]
    assert link.up and app.world.resource(Alarms).get("io-link") is None

    io1.close()  # worker 1 died
    link.read_available(1)
    events.clear()
    app.run_for(1)
    assert [(e.provider, e.connection, e.connected) for e in events] == [("ws", peer1, False)]
    assert not link.up and link.links_up == 1
    alarm = app.world.resource(Alarms).get("io-link")
    assert alarm is not None and alarm.active and "io worker 1 of 2" in alarm.text

    control_end, io_end = socketpair()
    _opened.append(Channel(io_end))
    link.replace(control_end, worker=1)  # the supervisor started a new worker 1
    events.clear()
    app.run_for(1)
    assert events == [], "a peer is disconnected once"
    assert link.up and not app.world.resource(Alarms).get("io-link").active  # type: ignore[union-attr]


def test_connection_ids_name_their_worker_and_go_on_after_a_restart() -> None:
    heartbeats = Heartbeats(io_workers=3)
    try:
        assert [next(ConnectionIds(0, heartbeats)) for _ in range(1)] == [1]
        worker2 = ConnectionIds(2, heartbeats)
        first = [next(worker2), next(worker2)]
        assert first == [(2 << WORKER_SHIFT) + 1, (2 << WORKER_SHIFT) + 2]
        assert {worker_of(i) for i in first} == {2}
        restarted = ConnectionIds(2, heartbeats)  # the worker's next process
        assert next(restarted) == (2 << WORKER_SHIFT) + 3, "an old peer's id is never reused"
        assert next(ConnectionIds(0, heartbeats)) == 2
        assert max(first) < 2**53
    finally:
        heartbeats.close()


def test_only_the_first_worker_runs_the_parts_that_must_exist_once() -> None:
    started: list[tuple[str, int]] = []

    def part(name: str) -> object:
        def make(_model: object, context: IoService) -> object:
            started.append((name, context.worker))
            return object()

        return make

    sections = [
        ConfigSection(
            "network", NetworkConfig, NetworkPlugin, io=part("network"), io_in_every_worker=True
        ),
        ConfigSection("devices", NetworkConfig, NetworkPlugin, io=part("devices")),
    ]
    config = parse_config_text("network: {}\ndevices: {}\n", Path("test.yaml"), sections)
    for worker in range(2):
        control_end, io_end = socketpair()
        _opened.append(Channel(control_end))
        heartbeats = Heartbeats(io_workers=2)
        service = IoService(_channel(io_end), heartbeats, worker=worker, workers=2)
        io_parts(config, sections, service)  # type: ignore[arg-type]
        heartbeats.close()
    assert started == [("network", 0), ("devices", 0), ("network", 1)]

    started.clear()  # runtime.io_drivers_alone: worker 0 runs the devices alone
    for worker in range(3):
        control_end, io_end = socketpair()
        _opened.append(Channel(control_end))
        heartbeats = Heartbeats(io_workers=3)
        service = IoService(
            _channel(io_end), heartbeats, worker=worker, workers=3, network_workers=2
        )
        io_parts(config, sections, service)  # type: ignore[arg-type]
        heartbeats.close()
    assert started == [("devices", 0), ("network", 1), ("network", 2)]


def test_the_control_loop_reads_every_worker_in_turn_under_a_flood() -> None:
    app, link, (io0, io1) = _two_workers(records_per_tick=4)
    per_tick: list[set[str]] = []
    app.add_systems(
        FixedUpdate,
        lambda w: per_tick.append({r.key for r in w.read(IoInput)}),
        in_set=ControlLogic,
    )
    for n in range(20):
        io0.send(0, [Record("t", "a", int(Priority.HIGH), n)] * 4)
        io1.send(0, [Record("t", "b", int(Priority.HIGH), n)] * 4)
    loop = ControlLoop(app)
    IoChannelWatch(loop, link)
    loop.run(max_ticks=16)
    loop.close()
    assert len(per_tick) > 8, f"ticks were skipped (a stall on this machine?): {per_tick}"
    later = set().union(*per_tick[8:])  # past what was read before the inbox filled
    assert later == {"a", "b"}, f"one worker waited for the other's flood to end: {per_tick}"


def test_a_worker_that_dies_right_after_a_connect_leaves_no_peer_behind() -> None:
    app, link, (_, io1) = _two_workers()
    events: list[tuple[int, bool]] = []
    app.add_systems(
        FixedUpdate,
        lambda w: events.extend((e.connection, e.connected) for e in w.read(ConnectionEvent)),
        in_set=ControlLogic,
    )
    peer = (1 << WORKER_SHIFT) + 9
    io1.send(0, [_event(peer, True)])
    io1.close()  # its last words, then the end: read together
    link.read_available(1)
    app.run_for(1)
    assert events == [(peer, True), (peer, False)], "in the order they happened"
    assert app.world.resource(Network).connections == {}


def test_with_one_io_process_its_peers_are_disconnected_when_it_is_replaced() -> None:
    app, link, (io,) = _two_workers(workers=1)
    events: list[ConnectionEvent] = []
    app.add_systems(
        FixedUpdate, lambda w: events.extend(w.read(ConnectionEvent)), in_set=ControlLogic
    )
    io.send(0, [_event(1, True), _event(2, True), _event(2, False)])
    link.read_available()
    app.run_for(1)
    control_end, io_end = socketpair()
    _opened.append(Channel(io_end))
    link.replace(control_end)  # a hung io process killed: its EOF was never read
    events.clear()
    app.run_for(1)
    assert [(e.connection, e.connected, e.detail) for e in events] == [
        (1, False, "io process lost")
    ]


def test_a_restarted_worker_gets_the_whole_world_and_the_others_only_changes() -> None:
    app, link, (io0, io1) = _two_workers()
    names = [app.world.spawn(Name(f"robot-{i}")) for i in range(3)]
    app.run_for(5)  # past a 30 Hz WebUIUpdates, whose records leave with the next tick
    # The robots' entities (the network's listeners have entities of their own).
    assert len([r for r in _received(io0) if r.topic == WORLD_VALUE and r.payload[0] in names]) == 3
    assert len([r for r in _received(io1) if r.topic == WORLD_VALUE and r.payload[0] in names]) == 3

    app.world.despawn(names[0])
    control_end, io_end = socketpair()
    new_io1 = _channel(io_end)
    link.replace(control_end, worker=1)
    app.run_for(5)
    to_worker0 = _received(io0)
    assert [r.payload for r in to_worker0 if r.topic == WORLD_REMOVED] == [names[0]]
    assert not [r for r in to_worker0 if r.topic == WORLD_VALUE], "nothing changed for it"
    fresh = [
        r.payload[0] for r in _received(new_io1) if r.topic == WORLD_VALUE and r.payload[0] in names
    ]
    assert sorted(fresh) == sorted(names[1:]), "the new worker's mirror starts empty"


def test_a_robot_whose_worker_died_just_after_its_telemetry_is_shown_disconnected() -> None:
    app, link, (_, io1) = _two_workers()
    app.world.resource(Registry).add(Telemetry)
    app.add_plugin(RobotsPlugin(RobotsConfig()))
    robot = (1 << WORKER_SHIFT) + 1
    telemetry = [
        "tcp",
        robot,
        "robot.Telemetry",
        dict(robot_id="arm-1", position=1.0, velocity=0.0, temperature=30.0, status="moving"),
    ]
    io1.send(0, [_event(robot, True), Record(NET_MESSAGE, "t", int(Priority.NORMAL), telemetry)])
    io1.close()
    link.read_available(1)
    app.run_for(2)
    ((_, arm),) = app.world.query(Robot).items()
    assert (arm.connection, arm.status) == (0, "fault")
