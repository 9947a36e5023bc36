"""Big messages from peers: what fits the io channel reaches the control loop, what does
not is refused with an ``oversize`` error before anything is forwarded, and a bug of
ours while handling a frame answers ``internal`` instead of closing silently."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from edgeloop.net import protocol
from edgeloop.net.network import NetworkData, read_network
from edgeloop.net.registry import info, message
from edgeloop.net.session import Session
from edgeloop.priority import Priority
from edgeloop.sim.robots import Telemetry
from edgeloop.world import World
from tests.net_harness import Net, running_network, tcp_and_ws_on_any_port
from tests.tcp_peer import Peer

ROBOT_TOKEN = "robot-token-0123456789"
LIMIT = protocol.MAX_FRAME_BYTES


@message(name="test.Blob", priority=Priority.NORMAL, senders=("device",))
@dataclass
class Blob:
    """Bytes travel to control as base64 text: a third bigger than on the wire."""

    data: bytes


@message(name="test.UrgentBlob", priority=Priority.HIGH, senders=("device",))
@dataclass
class UrgentBlob:
    data: bytes


@message(name="test.Buggy", priority=Priority.HIGH, senders=("device",))
@dataclass
class Buggy:
    n: int


TYPES = (Telemetry, Blob, UrgentBlob, Buggy)


@dataclass
class Received:
    telemetry: list[NetworkData[Telemetry]]
    blobs: list[object]


@pytest_asyncio.fixture
async def net() -> AsyncIterator[tuple[Net, Received]]:
    received = Received([], [])

    def collect(world: World) -> None:
        received.telemetry.extend(read_network(world, Telemetry))
        received.blobs.extend(read_network(world, Blob))
        received.blobs.extend(read_network(world, UrgentBlob))

    async with running_network(tcp_and_ws_on_any_port(), TYPES, [collect]) as running:
        for provider in (running.part.tcp, running.part.ws):
            assert provider is not None
            provider.hub.local[Buggy] = _raise_a_bug
        yield running, received


def _raise_a_bug(_session: Session, _msg: object) -> None:
    raise RuntimeError("a bug of ours")


def _telemetry(robot_id: str) -> Telemetry:
    return Telemetry(robot_id, 0.5, 0.0, 40.0, "idle")


# -- TCP --------------------------------------------------------------------------------


async def _robot(port: int) -> Peer:
    peer = await Peer.connect(port)
    await peer.hello(ROBOT_TOKEN)
    return peer


async def test_a_33_kb_telemetry_over_tcp_reaches_the_control_loop(
    net: tuple[Net, Received],
) -> None:
    running, received = net
    peer = await _robot(running.port("tcp"))
    long_id = "r" * 33_000  # the conflation key: it once made the record twice this size
    await peer.send(_telemetry(long_id))
    await peer.send(_telemetry("r2"))  # the connection is kept
    await running.until(lambda _: len(received.telemetry) == 2)
    assert sorted(len(t.message.robot_id) for t in received.telemetry) == [2, 33_000]
    assert running.part.tcp is not None
    assert running.part.tcp.counters["internal"] == 0


async def test_a_tcp_frame_over_the_limit_is_answered_oversize_and_closed(
    net: tuple[Net, Received],
) -> None:
    running, received = net
    peer = await _robot(running.port("tcp"))
    body = protocol.encode(_telemetry("r" * LIMIT))
    assert len(body) > LIMIT
    await peer.send_raw(protocol.frame(body))
    name, error = await peer.receive()
    assert (name, error["code"]) == ("edgeloop.Error", "oversize")
    assert str(LIMIT) in error["detail"]
    assert await peer.closed_by_server()
    for _ in range(10):
        await running.tick()
    assert received.telemetry == []


@pytest.mark.parametrize("kind", [Blob, UrgentBlob])
async def test_a_message_too_big_for_the_io_channel_is_refused_oversize(
    net: tuple[Net, Received], kind: type[Blob] | type[UrgentBlob]
) -> None:
    running, received = net
    peer = await _robot(running.port("tcp"))
    found = info(kind)
    # msgpack bin on the wire, under the frame limit; base64 text (a third more) to control.
    body = msgpack.packb([found.name, found.schema_hash, {"data": b"\xff" * (LIMIT - 100)}])
    assert len(body) < LIMIT
    await peer.send_raw(protocol.frame(body))
    name, error = await peer.receive()
    assert (name, error["code"]) == ("edgeloop.Error", "oversize"), error
    assert found.name in error["detail"]
    assert await peer.closed_by_server()
    for _ in range(10):
        await running.tick()
    assert received.blobs == []


async def test_a_bug_while_handling_a_tcp_frame_answers_internal(
    net: tuple[Net, Received],
) -> None:
    running, _ = net
    peer = await _robot(running.port("tcp"))
    await peer.send(Buggy(1))
    name, error = await peer.receive()
    assert (name, error["code"]) == ("edgeloop.Error", "internal")
    assert await peer.closed_by_server()


# -- WebSocket --------------------------------------------------------------------------


async def _ws_hello(running: Net) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{running.port('websocket')}/ws", max_size=None)
    await ws.send(protocol.encode(protocol.Hello("r1", ROBOT_TOKEN, "device", 1)))
    assert protocol.split(await asyncio.wait_for(ws.recv(), 10))[0] == "edgeloop.Welcome"
    return ws


async def _ws_receive(ws: ClientConnection) -> tuple[str, dict[str, Any]]:
    answer = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(answer, bytes)
    name, _, payload = protocol.split(answer)
    return name, payload


def _json(msg: object) -> str:
    found = info(type(msg))
    return json.dumps([found.name, f"{found.schema_hash:016x}", msgspec.to_builtins(msg)])


async def test_a_33_kb_telemetry_over_websocket_reaches_the_control_loop(
    net: tuple[Net, Received],
) -> None:
    running, received = net
    ws = await _ws_hello(running)
    await ws.send(_json(_telemetry("w" * 33_000)))
    await ws.send(protocol.encode(_telemetry("w2")))
    await running.until(lambda _: len(received.telemetry) == 2)
    assert sorted(len(t.message.robot_id) for t in received.telemetry) == [2, 33_000]
    await ws.close()


@pytest.mark.parametrize("as_text", [False, True])
async def test_a_websocket_message_over_the_limit_is_answered_oversize_and_closed(
    net: tuple[Net, Received], as_text: bool
) -> None:
    running, received = net
    ws = await _ws_hello(running)
    big = _telemetry("w" * LIMIT)
    await ws.send(_json(big) if as_text else protocol.encode(big))
    answer = await asyncio.wait_for(ws.recv(), 10)
    if as_text:
        assert isinstance(answer, str)
        name, _, error = json.loads(answer)
    else:
        assert isinstance(answer, bytes)
        name, _, error = protocol.split(answer)
    assert (name, error["code"]) == ("edgeloop.Error", "oversize")
    await asyncio.wait_for(ws.wait_closed(), 10)
    for _ in range(10):
        await running.tick()
    assert received.telemetry == []


async def test_a_bug_while_handling_a_websocket_message_answers_internal(
    net: tuple[Net, Received],
) -> None:
    running, _ = net
    ws = await _ws_hello(running)
    await ws.send(protocol.encode(Buggy(1)))
    name, error = await _ws_receive(ws)
    assert (name, error["code"]) == ("edgeloop.Error", "internal")
    await asyncio.wait_for(ws.wait_closed(), 10)
