"""The WebSocket provider on a real 127.0.0.1 port, with the websockets client."""

from __future__ import annotations

import asyncio
import http
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.http11 import Request, Response

from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.output_queue import SENT
from edgeloop.net.registry import MessageInfo, Registry, info, message
from edgeloop.net.session import Hub, Session
from edgeloop.net.ws_provider import WebSocketProvider, text_response

GRANTS = [Grant("viewer-secret", Role.VIEWER), Grant("op-secret", Role.OPERATOR)]


@message(name="hmi.Setpoint", senders=("operator",))
@dataclass
class Setpoint:
    tank: str
    level_m: float


@dataclass
class Server:
    provider: WebSocketProvider
    url: str
    delivered: list[tuple[int, Any]]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    delivered: list[tuple[int, Any]] = []

    def deliver(session: Session, found: MessageInfo, msg: Any) -> bool:
        delivered.append((session.id, msg))
        return True

    hub = Hub("ws", Registry([Setpoint]), Authenticator(GRANTS), deliver)
    # Bytes unbounded enough that the lag is what cuts a slow client off here.
    provider = WebSocketProvider(
        hub, max_frame_bytes=4096, max_lag_s=0.5, max_output_bytes=64 << 20
    )
    port = await provider.start("127.0.0.1", 0)
    yield Server(provider, f"ws://127.0.0.1:{port}/ws", delivered)
    await provider.close()


def hello_json(token: str, role: str) -> str:
    hello = info(protocol.Hello)
    payload = {"client_id": "hmi", "token": token, "role": role, "protocol_version": 1}
    return json.dumps([hello.name, f"{hello.schema_hash:016x}", payload])


async def receive_json(ws: ClientConnection) -> tuple[str, int, dict[str, Any]]:
    text = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(text, str), "answered in the client's format"
    name, hash_hex, payload = json.loads(text)
    return name, int(hash_hex, 16), payload


async def test_json_client_says_hello_and_sends_typed_messages(server: Server) -> None:
    async with connect(server.url) as ws:
        await ws.send(hello_json("op-secret", "operator"))
        name, schema_hash, welcome = await receive_json(ws)
        assert (name, schema_hash) == ("edgeloop.Welcome", info(protocol.Welcome).schema_hash)
        setpoint = info(Setpoint)
        await ws.send(
            json.dumps(
                [setpoint.name, f"{setpoint.schema_hash:016x}", {"tank": "t1", "level_m": 1.5}]
            )
        )
        await _until(lambda: server.delivered)
    assert server.delivered == [(welcome["connection_id"], Setpoint("t1", 1.5))]


async def test_messages_in_and_out_are_counted_for_metrics(server: Server) -> None:
    async with connect(server.url) as ws:
        await ws.send(hello_json("op-secret", "operator"))
        await receive_json(ws)  # the Welcome
        setpoint = info(Setpoint)
        frame = [setpoint.name, f"{setpoint.schema_hash:016x}", {"tank": "t1", "level_m": 1.5}]
        await ws.send(json.dumps(frame))
        await _until(lambda: server.delivered)
    counters = server.provider.counters
    assert (counters["messages"], counters[SENT]) == (1, 1), "the Setpoint in, the Welcome out"


async def test_msgpack_client_gets_msgpack_answers(server: Server) -> None:
    async with connect(server.url) as ws:
        await ws.send(protocol.encode(protocol.Hello("hmi", "viewer-secret", "viewer", 1)))
        answer = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(answer, bytes)
        assert protocol.split(answer)[0] == "edgeloop.Welcome"


async def test_errors_are_answered_and_bad_frames_close(server: Server) -> None:
    async with connect(server.url) as ws:
        await ws.send(hello_json("viewer-secret", "viewer"))
        await receive_json(ws)
        setpoint = info(Setpoint)
        await ws.send(json.dumps([setpoint.name, f"{setpoint.schema_hash:016x}", {"tank": "t"}]))
        assert (await receive_json(ws))[2]["code"] == "bad_payload"
        await ws.send(
            json.dumps(
                [setpoint.name, f"{setpoint.schema_hash:016x}", {"tank": "t", "level_m": 1.0}]
            )
        )
        assert (await receive_json(ws))[2]["code"] == "forbidden"
        await ws.send("{not json")
        assert (await receive_json(ws))[2]["code"] == "bad_frame"
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert server.provider.counters["bad_frame"] == 1


async def test_a_slow_client_is_cut_off_without_slowing_others(server: Server) -> None:
    async with (
        connect(server.url, max_queue=1, close_timeout=1) as slow,
        connect(server.url) as fast,
    ):
        for ws in (slow, fast):
            await ws.send(hello_json("viewer-secret", "viewer"))
            await receive_json(ws)
        big = {"blob": "x" * 60_000}
        sent = 0
        # Up to ~24 MB, more than the kernel buffers hold for `slow`, until it is cut off.
        while server.provider.counters["slow_consumer"] == 0 and sent < 400:
            server.provider.broadcast_parts("hmi.Blob", 1, big)
            sent += 1
            await asyncio.wait_for(fast.recv(), 10)  # the fast client keeps up throughout
        await _until(lambda: server.provider.counters["slow_consumer"] == 1)
    assert len(server.provider.connections) == 0


async def test_a_client_that_stops_reading_is_cut_off_though_nothing_more_is_sent(
    server: Server,
) -> None:
    """The lag is watched by a timer, not by the next message: a burst the client never
    reads, then silence, still ends in a cut-off ``max_lag_s`` later."""
    async with connect(server.url, max_queue=1, close_timeout=1) as slow:
        await slow.send(hello_json("viewer-secret", "viewer"))
        await receive_json(slow)
        for _ in range(400):  # ~24 MB: more than the kernel buffers hold
            server.provider.broadcast_parts("hmi.Blob", 1, {"blob": "x" * 60_000})
        assert server.provider.counters["slow_consumer"] == 0, "not before its lag"
        await _until(lambda: server.provider.counters["slow_consumer"] == 1)
    assert len(server.provider.connections) == 0


async def test_plain_http_on_other_paths(server: Server) -> None:
    url = server.url.replace("ws://", "http://").replace("/ws", "/nope")
    status = await asyncio.to_thread(_http_status, url)
    assert status == 404


async def test_an_http_answer_may_come_later(server: Server) -> None:
    async def later(request: Request) -> Response:
        await asyncio.sleep(0)  # as a query on a thread of its own would
        return text_response(http.HTTPStatus.OK, f"later for {request.path}")

    server.provider.http_handler = later
    url = server.url.replace("ws://", "http://").replace("/ws", "/later")
    assert await asyncio.to_thread(_http_status, url) == 200


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def _until(condition: Any, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
