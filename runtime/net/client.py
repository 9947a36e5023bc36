"""A small asyncio client for robots, tools and tests: connect, Hello, send, receive.

    async with Client("127.0.0.1", 7700, client_id="robot-1", token=token, role="device",
                      message_types=[Telemetry, Command]) as c:
        await c.send(Telemetry(...))
        msg = await c.receive()

``run_forever`` keeps a client connected with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from edgeloop.net import protocol
from edgeloop.net.registry import ProtocolError, Registry

log = logging.getLogger("edgeloop.client")

BACKOFF_S = (0.1, 30.0)  # first and longest wait between reconnects


class Client:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        token: str,
        role: str,
        message_types: Iterable[type] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self.port = port
        self.hello = protocol.Hello(client_id, token, role, protocol.PROTOCOL_VERSION)
        self.registry = Registry([protocol.Welcome, protocol.Error, *message_types])
        self.connection_id = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = protocol.FrameReader(protocol.CLIENT_MAX_FRAME_BYTES)
        self._pending: list[memoryview] = []

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> protocol.Welcome:
        """Connect and say Hello; ``ProtocolError`` if the server refuses."""
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls
        )
        self._frames = protocol.FrameReader(protocol.CLIENT_MAX_FRAME_BYTES)
        self._pending = []
        await self.send(self.hello)
        answer = await self.receive()
        if isinstance(answer, protocol.Error):
            await self.close()
            raise ProtocolError(answer.code, answer.detail)
        if not isinstance(answer, protocol.Welcome):
            raise ProtocolError("bad_sequence", f"expected Welcome, got {type(answer).__name__}")
        self.connection_id = answer.connection_id
        return answer

    async def send(self, msg: object) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(protocol.frame(protocol.encode(msg)))
        await self._writer.drain()

    async def receive(self) -> Any:
        """The next typed message from the server (``ConnectionError`` when it closes)."""
        while not self._pending:
            if self._reader is None:
                raise ConnectionError("not connected")
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._pending = self._frames.feed(data)
        name, schema_hash, payload = protocol.split(self._pending.pop(0))
        return protocol.build(self.registry.resolve(name, schema_hash).info, payload)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def run_forever(self, session: Callable[[Client], Awaitable[None]]) -> None:
        """Connect and run ``session`` again and again, backing off while it fails."""
        delay = BACKOFF_S[0]
        while True:
            try:
                await self.connect()
                delay = BACKOFF_S[0]
                await session(self)
            except (ConnectionError, OSError, ProtocolError) as error:
                log.info("%s: %s; reconnecting in %.1f s", self.hello.client_id, error, delay)
            finally:
                await self.close()
            # Jitter: a fleet that lost the server together must not come back together.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_S[1])
