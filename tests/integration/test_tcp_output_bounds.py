"""A robot that stops reading: what the appliance holds for it stays bounded, it is cut
off with a counted reason, and the other peers keep being served."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from websockets.asyncio.client import connect

from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.network import Network
from edgeloop.net.output_queue import CONFLATED, OVERFLOW, SLOW
from edgeloop.net.registry import MessageInfo, Registry, message
from edgeloop.net.session import Hub, Session
from edgeloop.net.tcp_provider import WRITE_HIGH_BYTES, TcpConnection, TcpProvider
from edgeloop.net.ws_provider import WebSocketProvider
from edgeloop.priority import Priority
from edgeloop.world import World
from tests.net_harness import running_network, tcp_and_ws_on_any_port

HIGH, NORMAL = int(Priority.HIGH), int(Priority.NORMAL)
GRANTS = [Grant("robot-secret", Role.DEVICE)]
FRAME_BYTES = 16 * 1024
MAX_OUTPUT = 256 * 1024


@dataclass
class Server:
    provider: TcpProvider
    port: int
    ended: dict[int, str] = field(default_factory=dict)  # connection -> reason


async def _server(**limits: Any) -> Server:
    def deliver(_session: Session, _found: MessageInfo, _msg: Any) -> bool:
        return True

    ended: dict[int, str] = {}

    def events(session: Session, connected: bool, detail: str) -> None:
        if not connected:
            ended[session.id] = detail

    hub = Hub("tcp", Registry(), Authenticator(GRANTS), deliver, events=events)
    provider = TcpProvider(hub, **limits)
    port = await provider.start("127.0.0.1", 0)
    return Server(provider, port, ended)


@pytest_asyncio.fixture
async def bounded() -> AsyncIterator[Server]:
    server = await _server(max_output_bytes=MAX_OUTPUT, max_lag_s=60.0)
    yield server
    await server.provider.close()


@pytest_asyncio.fixture
async def laggy() -> AsyncIterator[Server]:
    server = await _server(max_output_bytes=64 << 20, max_lag_s=0.5)
    yield server
    await server.provider.close()


class Robot:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.id = 0

    @classmethod
    async def hello(cls, port: int, *, small_buffer: bool = False) -> Robot:
        sock = socket.socket()
        if small_buffer:  # fills at once, so the appliance's side is what holds the rest
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        robot = cls(*await asyncio.open_connection(sock=sock, limit=4096))
        hello = protocol.Hello("r", "robot-secret", "device", protocol.PROTOCOL_VERSION)
        robot.writer.write(protocol.frame(protocol.encode(hello)))
        name, payload = await robot.receive()
        assert name == "edgeloop.Welcome", payload
        robot.id = payload["connection_id"]
        return robot

    async def receive(self) -> tuple[str, Any]:
        header = await asyncio.wait_for(self.reader.readexactly(4), 10)
        body = await asyncio.wait_for(self.reader.readexactly(struct.unpack(">I", header)[0]), 10)
        name, _, payload = protocol.split(body)
        return name, payload


def _held(connection: TcpConnection) -> int:
    """What the io process holds for a peer: its queue and its transport's buffer."""
    transport = connection._transport
    buffered = 0 if transport is None else transport.get_write_buffer_size()
    return connection.output.bytes + buffered


def _frame(n: int) -> bytes:
    return protocol.encode_parts("robot.Blob", 1, {"n": n, "data": "x" * FRAME_BYTES})


async def _stream(
    server: Server,
    slow: Robot,
    fast: Robot,
    *,
    send: Callable[[int], None],
    done: Callable[[], bool],
    most: int = 2000,
) -> int:
    """``send`` frame after frame, the fast robot reading each, until ``done``; the most
    the io side held for the slow robot meanwhile."""
    connection = server.provider.connections[slow.id]
    held = 0
    for n in range(most):
        if done():
            break
        send(n)
        held = max(held, _held(connection))
        name, payload = await fast.receive()  # served throughout
        assert (name, payload["n"]) == ("robot.Blob", n)
    return held


async def test_a_robot_that_stops_reading_is_cut_off_at_the_byte_bound(bounded: Server) -> None:
    slow = await Robot.hello(bounded.port, small_buffer=True)
    fast = await Robot.hello(bounded.port)
    counters = bounded.provider.counters
    held = await _stream(
        bounded,
        slow,
        fast,
        send=lambda n: bounded.provider.broadcast_body(_frame(n), HIGH),
        done=lambda: counters[OVERFLOW] > 0,
    )
    assert counters[OVERFLOW] == 1, "HIGH is never dropped: the peer is cut off instead"
    assert held <= MAX_OUTPUT + WRITE_HIGH_BYTES + 2 * FRAME_BYTES, held
    await _until(lambda: bounded.ended.get(slow.id) == OVERFLOW)
    assert slow.id not in bounded.provider.connections
    bounded.provider.broadcast_body(_frame(-1), HIGH)
    assert (await fast.receive())[1]["n"] == -1


async def test_normal_to_a_stalled_robot_is_conflated_then_cut_off_after_the_lag(
    laggy: Server,
) -> None:
    slow = await Robot.hello(laggy.port, small_buffer=True)
    fast = await Robot.hello(laggy.port)
    counters = laggy.provider.counters
    connection = laggy.provider.connections[slow.id]
    queued: list[int] = []

    def send(n: int) -> None:
        laggy.provider.broadcast_body(_frame(n), NORMAL, ("robot.Blob", n % 4))
        queued.append(len(connection.output))

    await _stream(laggy, slow, fast, send=send, done=lambda: counters[SLOW] > 0, most=100_000)
    assert max(queued) <= 4, "one per entity waits, the latest"
    assert counters[CONFLATED] > 0
    assert counters[SLOW] == 1
    await _until(lambda: laggy.ended.get(slow.id) == SLOW)


async def test_a_stalled_dashboard_is_cut_off_at_the_byte_bound_too() -> None:
    hub = Hub("ws", Registry(), Authenticator([Grant("viewer", Role.VIEWER)]), lambda *_: True)
    provider = WebSocketProvider(hub, max_output_bytes=MAX_OUTPUT, max_lag_s=60.0)
    port = await provider.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", max_queue=1, close_timeout=1) as slow:
            await slow.send(protocol.encode(protocol.Hello("d", "viewer", "viewer", 1)))
            await asyncio.wait_for(slow.recv(), 10)
            for n in range(2000):
                if hub.counters[OVERFLOW]:
                    break
                provider.broadcast_parts("hmi.Blob", 1, {"n": n, "data": "x" * FRAME_BYTES})
                for connection in provider.connections.values():
                    assert connection.output.bytes <= MAX_OUTPUT + FRAME_BYTES + 64
                await asyncio.sleep(0)
            assert hub.counters[OVERFLOW] == 1
            await _until(lambda: not provider.connections)
    finally:
        await provider.close()


@message(name="test.Scan", priority=Priority.NORMAL, key="robot")
@dataclass
class Scan:
    robot: str
    points: str


async def test_what_the_control_loop_sends_a_stalled_robot_is_conflated_by_entity() -> None:
    """Through the io channel: the key comes from the type's ``key`` field."""

    def stream(world: World) -> None:
        network = world.resource(Network)
        for robot in range(3):
            network.broadcast(world, Scan(f"r{robot}", "x" * 20_000))

    config = tcp_and_ws_on_any_port(max_lag_s=600.0)
    async with running_network(config, [Scan], [stream]) as net:
        port = net.port("tcp")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        hello = protocol.Hello("r", "robot-token-0123456789", "device", 1)
        writer.write(protocol.frame(protocol.encode(hello)))
        tcp = net.part.tcp
        assert tcp is not None
        await net.until(lambda _: tcp.counters[CONFLATED] > 100, timeout_s=30)
        (connection,) = tcp.connections.values()
        # One per robot: none of them lost to another's update on the way from control.
        await net.until(lambda _: len(connection.output) == 3)
        for _ in range(20):
            await net.tick()
            assert len(connection.output) == 3
        writer.close()
        del reader


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
