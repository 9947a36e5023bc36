"""Before Hello, anything but a valid Hello is ``not_authenticated`` and closes, on TCP
and on WebSocket: a peer that has not proved who it is gets no dialogue."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import msgpack
import pytest
from websockets.asyncio.client import connect

from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.registry import Registry, info, message
from edgeloop.net.session import Hub
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.net.ws_provider import WebSocketProvider

GRANTS = [Grant("robot-secret", Role.DEVICE)]
# Far longer than any test waits: a close seen here is the refusal's, not the timeout's.
HELLO_TIMEOUT_S = 120.0
WAIT_S = 10.0


@message(name="robot.Telemetry")
@dataclass
class Telemetry:
    x: float


HELLO = info(protocol.Hello)
GOOD_HELLO = {"client_id": "r1", "token": "robot-secret", "role": "device", "protocol_version": 1}

# (what is sent first, what the error's detail must mention)
BEFORE_HELLO = {
    "unknown_type": (msgpack.packb(["robot.Nope", 1, {}]), "unknown_type"),
    "wrong_hash": (msgpack.packb([HELLO.name, 7, GOOD_HELLO]), "version_mismatch"),
    "bad_payload": (
        msgpack.packb([HELLO.name, HELLO.schema_hash, {"client_id": "r1"}]),
        "bad_payload",
    ),
    "malformed": (b"\xc1garbage", "bad_frame"),
    "not_a_triple": (msgpack.packb({"not": "a triple"}), "bad_frame"),
    "known_type": (protocol.encode(Telemetry(1.0)), "robot.Telemetry"),
}


def _hub(name: str) -> Hub:
    registry = Registry([Telemetry])
    return Hub(
        name, registry, Authenticator(GRANTS), lambda *_: True, hello_timeout_s=HELLO_TIMEOUT_S
    )


@pytest.mark.parametrize("case", sorted(BEFORE_HELLO))
async def test_tcp_anything_but_a_valid_hello_is_not_authenticated_and_closes(case: str) -> None:
    body, mentioned = BEFORE_HELLO[case]
    provider = TcpProvider(_hub("tcp"))
    port = await provider.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(protocol.frame(body))
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(4), WAIT_S)
        answer = await asyncio.wait_for(reader.readexactly(struct.unpack(">I", header)[0]), WAIT_S)
        name, _, payload = protocol.split(answer)
        assert (name, payload["code"]) == ("edgeloop.Error", "not_authenticated")
        assert mentioned in payload["detail"]
        assert await asyncio.wait_for(reader.read(1), WAIT_S) == b""
        assert provider.counters["not_authenticated"] == 1
        writer.close()
    finally:
        await provider.close()


@pytest.mark.parametrize("case", sorted(BEFORE_HELLO))
async def test_ws_anything_but_a_valid_hello_is_not_authenticated_and_closes(case: str) -> None:
    body, mentioned = BEFORE_HELLO[case]
    provider = WebSocketProvider(_hub("ws"))
    port = await provider.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(body)
            # Sent after the refusal: must not be read, let alone welcomed.
            await ws.send(protocol.encode(protocol.Hello("r1", "robot-secret", "device", 1)))
            answer = await asyncio.wait_for(ws.recv(), WAIT_S)
            assert isinstance(answer, bytes)
            name, _, payload = protocol.split(answer)
            assert (name, payload["code"]) == ("edgeloop.Error", "not_authenticated")
            assert mentioned in payload["detail"]
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        assert provider.counters["not_authenticated"] == 1
        assert provider.counters["connections"] == 1
        assert not provider.hub.authenticated()
    finally:
        await provider.close()


async def test_ws_json_garbage_before_hello_is_not_authenticated_and_closes() -> None:
    provider = WebSocketProvider(_hub("ws"))
    port = await provider.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("{not json")
            answer = await asyncio.wait_for(ws.recv(), WAIT_S)
            assert isinstance(answer, str)
            assert '"not_authenticated"' in answer
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
    finally:
        await provider.close()
