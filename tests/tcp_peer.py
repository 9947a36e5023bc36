"""A raw TCP peer of the appliance's robot port: frames in and out by hand, for the
tests of what the TCP provider answers."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from edgeloop.net import protocol

TIMEOUT_S = 10.0


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Peer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, msg: object) -> None:
        await self.send_raw(protocol.frame(protocol.encode(msg)))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> tuple[str, dict[str, Any]]:
        header = await asyncio.wait_for(self.reader.readexactly(4), TIMEOUT_S)
        size = struct.unpack(">I", header)[0]
        body = await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT_S)
        name, _, payload = protocol.split(body)
        return name, payload

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT_S) == b""

    async def hello(self, token: str, role: str = "device") -> dict[str, Any]:
        await self.send(protocol.Hello("r1", token, role, protocol.PROTOCOL_VERSION))
        name, payload = await self.receive()
        assert name == "edgeloop.Welcome", payload
        return payload
