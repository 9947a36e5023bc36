"""The TCP provider: robots and PLCs speaking length-prefixed msgpack frames.

Runs in the io process. Each accepted connection must say Hello with a valid token
first; after that its frames become typed messages handed to ``deliver``. Every refused
frame is answered with an ``edgeloop.Error`` where the stream can still be trusted,
counted by reason, and never raises into the event loop. When ``deliver`` reports no
room (CRITICAL/HIGH backed up), reading from that peer pauses until ``resume`` is called.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from edgeloop.logs import every_power_of_ten
from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Role
from edgeloop.net.protocol import Error, Hello, Welcome
from edgeloop.net.registry import MessageInfo, ProtocolError, Registry

log = logging.getLogger("edgeloop.net.tcp")

HELLO_TIMEOUT_S = 5.0
# Errors after which the rest of the stream cannot be trusted.
_FATAL = {"oversize", "bad_frame", "not_authenticated", "auth_failed", "protocol_version"}

Deliver = Callable[["TcpConnection", MessageInfo, Any], bool]
# (connection, connected, detail): detail is the client id, or why it disconnected.
Events = Callable[["TcpConnection", bool, str], None]


class TcpConnection(asyncio.Protocol):
    def __init__(self, provider: TcpProvider, connection_id: int) -> None:
        self.provider = provider
        self.id = connection_id
        self.role: Role | None = None
        self.client_id = ""
        self.peer = "?"
        self.paused = False
        self._reader = protocol.FrameReader(provider.max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.provider.connected(self)
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(self.provider.hello_timeout_s, self._hello_overdue)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self._reader.feed(data):
                self._handle(body)
                if self._transport is None or self._transport.is_closing():
                    return
        except ProtocolError as error:
            self.refuse(error)
        except Exception:  # a bug of ours must cost one connection, not the io process
            log.exception("connection %d from %s: internal error; closing it", self.id, self.peer)
            self.provider.count("internal")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._transport = None
        self.provider.disconnected(self, "reset" if exc else "closed")

    # -- frames ---------------------------------------------------------------------------

    def _handle(self, body: bytes) -> None:
        name, schema_hash, payload = protocol.split(body)
        found = self.provider.registry.resolve(name, schema_hash)
        if found.by_hash:
            self.provider.count("renamed")
        msg = protocol.build(found.info, payload)
        if self.role is None:
            self._hello(msg)
        elif isinstance(msg, Hello):
            raise ProtocolError("bad_sequence", "Hello was already accepted")
        elif self.role.value not in found.info.senders:
            raise ProtocolError(
                "forbidden", f"role {self.role.value} may not send {found.info.name}"
            )
        else:
            self.provider.count("frames")
            if not self.provider.deliver(self, found.info, msg):
                self.pause()

    def _hello(self, msg: object) -> None:
        if not isinstance(msg, Hello):
            raise ProtocolError("not_authenticated", "the first message must be edgeloop.Hello")
        if msg.protocol_version != protocol.PROTOCOL_VERSION:
            ours = protocol.PROTOCOL_VERSION
            detail = f"version {msg.protocol_version} not spoken (this server: {ours})"
            raise ProtocolError("protocol_version", detail)
        role = self.provider.auth.role_for(msg.token, msg.role)
        if role is None:
            failures = self.provider.counters["auth_failed"] + 1  # refuse() counts it
            if every_power_of_ten(failures):
                log.warning("failed login from %s as %r (%d so far)", self.peer, msg.role, failures)
            raise ProtocolError("auth_failed", f"the token does not grant role {msg.role!r}")
        self.role = role
        self.client_id = msg.client_id
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        log.info("connection %d from %s: %s as %s", self.id, self.peer, msg.client_id, role.value)
        if self.provider.events is not None:
            self.provider.events(self, True, msg.client_id)
        self.send(
            Welcome(self.id, role.value, protocol.PROTOCOL_VERSION, self.provider.server_name)
        )

    def _hello_overdue(self) -> None:
        if self.role is None:
            self.refuse(ProtocolError("not_authenticated", "no Hello within the time allowed"))

    # -- output ---------------------------------------------------------------------------

    def send(self, msg: object) -> None:
        self.write(protocol.frame(protocol.encode(msg)))

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def refuse(self, error: ProtocolError) -> None:
        """Answer with an error frame; close when the stream cannot be trusted any more."""
        self.provider.count(error.code)
        self.send(Error(error.code, error.detail))
        if error.code in _FATAL:
            self.close()

    def pause(self) -> None:
        if self._transport is not None and not self.paused:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and self.paused:
            self.paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpProvider:
    """Listens for robots/PLCs; ``deliver`` gets every accepted message."""

    def __init__(
        self,
        registry: Registry,
        auth: Authenticator,
        deliver: Deliver,
        *,
        max_frame_bytes: int = protocol.DEFAULT_MAX_FRAME_BYTES,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        server_name: str = "edgeloop",
        events: Events | None = None,
    ) -> None:
        self.registry = registry
        self.events = events
        self.registry.add(Hello)
        self.auth = auth
        self.deliver = deliver
        self.max_frame_bytes = max_frame_bytes
        self.hello_timeout_s = hello_timeout_s
        self.server_name = server_name
        self.connections: dict[int, TcpConnection] = {}
        self.counters: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self, next(self._ids)), host, port, reuse_address=True
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("listening for robots and PLCs on %s:%d", host, bound)
        return bound

    def count(self, reason: str) -> int:
        self.counters[reason] += 1
        return self.counters[reason]

    def connected(self, connection: TcpConnection) -> None:
        self.connections[connection.id] = connection
        self.count("connections")

    def disconnected(self, connection: TcpConnection, reason: str) -> None:
        self.connections.pop(connection.id, None)
        if connection.role is not None:
            log.info("connection %d from %s closed (%s)", connection.id, connection.peer, reason)
            if self.events is not None:
                self.events(connection, False, reason)

    def send(self, connection_id: int, msg: object) -> bool:
        return self.send_body(connection_id, protocol.encode(msg))

    def send_body(self, connection_id: int, body: bytes) -> bool:
        """Send an encoded triple to one authenticated connection; False if there is none."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.role is None:
            return False
        connection.write(protocol.frame(body))
        return True

    def broadcast_body(self, body: bytes) -> int:
        """Send an encoded triple to every authenticated connection; how many."""
        data = protocol.frame(body)
        sent = 0
        for connection in list(self.connections.values()):
            if connection.role is not None:
                connection.write(data)
                sent += 1
        return sent

    def resume_all(self) -> None:
        """Room again on the control side: read from paused peers."""
        for connection in list(self.connections.values()):
            connection.resume()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections.values()):
                connection.close()
            await self._server.wait_closed()
