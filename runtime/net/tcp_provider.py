"""The TCP provider: robots and PLCs speaking length-prefixed msgpack frames.

Runs in the io process. The protocol itself (Hello, roles, errors) is the ``Session``'s;
this module is the transport: framing, and backpressure — when ``deliver`` reports no
room (CRITICAL/HIGH backed up), reading from that peer pauses until ``resume_all``.

Output is bounded per peer: frames go straight to the transport until its buffer passes
``WRITE_HIGH_BYTES`` (the kernel's send buffer is full: the peer is not reading), then
wait in the peer's ``OutputQueue`` (NORMAL conflated, LOW dropped first) until the
transport drains. A peer whose queue would pass ``max_output_bytes``, or whose oldest
queued frame is older than ``max_lag_s``, is cut off, counted and logged, as on the
WebSocket side.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any, cast

from edgeloop.net import protocol
from edgeloop.net.output_queue import (
    DEFAULT_MAX_BYTES,
    SENT,
    LagWatch,
    OutputQueue,
    count_cut_off,
)
from edgeloop.net.registry import ProtocolError
from edgeloop.net.session import Hub, Session
from edgeloop.priority import Priority

log = logging.getLogger("edgeloop.net.tcp")

# Unsent bytes in a peer's transport before frames queue (and periodic updates wait).
WRITE_HIGH_BYTES = 256 * 1024
FRAMES_PER_PASS = 64  # ~0.5 ms of work per peer per event-loop pass
MAX_LAG_S = 5.0
HIGH = int(Priority.HIGH)
NORMAL = int(Priority.NORMAL)


# A peer that vanished without closing (power cut, cable pulled) is found by TCP
# keepalive within about IDLE + COUNT x INTERVAL seconds and its connection ended, so
# what it owned (a robot's entity) is released instead of held forever; unacknowledged
# data to it gives up after the same time (TCP_USER_TIMEOUT).
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3


def keep_alive(sock: socket.socket) -> None:
    """Turn on TCP keepalive (and the user timeout) with the times above."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    dead_after_ms = 1000 * (KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, dead_after_ms)


class TcpConnection(asyncio.Protocol):
    def __init__(self, provider: TcpProvider) -> None:
        self.provider = provider
        self.session: Session | None = None
        self.paused = False  # no room downstream (backpressure)
        self._draining = False  # buffered frames left for the next pass
        self._reader = protocol.FrameReader(provider.max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self.output: OutputQueue[bytes] = OutputQueue(
            provider.max_output_bytes, provider.hub.counters
        )
        self._write_paused = False  # the transport's buffer is full: frames queue
        self._lag = LagWatch(provider.max_lag_s, self._oldest_unsent, self.cut_off)
        self._cut_reason = ""

    @property
    def id(self) -> int:
        return 0 if self.session is None else self.session.id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio classes.
        self._transport = cast("asyncio.Transport", transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_BYTES)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            keep_alive(sock)
        peer = transport.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.session = Session(
            self.provider.hub,
            name,
            self._send,
            self.close,
            congested=self._congested,
            write_shared=self._send_shared,
        )
        self.provider.connections[self.session.id] = self
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(
            self.provider.hub.hello_timeout_s, self.session.hello_overdue
        )

    def data_received(self, data: bytes) -> None:
        self._handle(data)

    def _handle(self, data: bytes) -> None:
        """Handle at most FRAMES_PER_PASS frames, then give the event loop back: one
        peer's burst (asyncio hands over up to 256 KiB at once) must not hold the io
        loop for long enough to starve the heartbeat, dashboards and other peers."""
        session = self.session
        assert session is not None
        try:
            frames = self._reader.feed(data, FRAMES_PER_PASS)
            room = session.receive_frames(frames)
        except ProtocolError as error:  # framing: the stream is lost
            session.refuse(error)
            return
        except Exception:
            session.failed()
            return
        if session.role is not None and self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        if not room:
            self.pause()
        if session.closed or self._transport is None or self._transport.is_closing():
            return
        self._set_draining(len(frames) == FRAMES_PER_PASS)

    def _set_draining(self, more: bool) -> None:
        """While buffered frames remain, stop reading and continue on the next loop pass."""
        if self._transport is None:
            return
        if more:
            if not self._draining:
                self._draining = True
                self._transport.pause_reading()
            if not self.paused:  # paused for room: resume() continues the draining
                asyncio.get_running_loop().call_soon(self._handle, b"")
        elif self._draining:
            self._draining = False
            if not self.paused:
                self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._lag.stop()
        self._transport = None
        self.output.clear()
        if self.session is not None:
            self.provider.connections.pop(self.session.id, None)
            self.session.ended(self._cut_reason or ("reset" if exc else "closed"))

    def _congested(self) -> bool:
        return self._write_paused

    def _send(self, msg: object) -> None:
        self.write(protocol.frame(protocol.encode(msg)))

    def _send_shared(self, msg: object, encoded: dict[str, Any]) -> None:
        data = encoded.get("tcp")
        if data is None:
            data = encoded["tcp"] = protocol.frame(protocol.encode(msg))
        self.write(data, NORMAL)  # a WorldUpdate: a delta, so never conflated here

    def write(self, data: bytes, priority: int = HIGH, key: Hashable | None = None) -> None:
        """Send a frame, or queue it while the peer is not reading (``key``: what a
        NORMAL frame is conflated by; None: it is not)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.output.counters[SENT] += 1
        if not self._write_paused and not self.output:
            transport.write(data)
            return
        reason = self.output.put(data, priority, key, time.monotonic())
        if reason is not None:
            size = self.output.bytes + len(data)
            self.cut_off(reason, f"{size} bytes unsent, over {self.output.max_bytes}")
        else:
            self._lag.start()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        transport = self._transport
        output = self.output
        # Until the buffer fills again (pause_writing is called from inside write).
        if transport is None or transport.is_closing():
            return
        while output and not self._write_paused:
            transport.write(output.popleft()[1])

    def _oldest_unsent(self) -> float | None:
        return None if self._transport is None else self.output.oldest

    def cut_off(self, reason: str, detail: str) -> None:
        """Drop the peer and what waits for it: it cannot hold memory or slow anyone."""
        if self._transport is None or self._cut_reason:
            return
        self._cut_reason = reason
        assert self.session is not None
        count_cut_off(self.session, reason, detail)
        self.output.clear()
        self._transport.abort()

    def pause(self) -> None:
        if self._transport is not None and not self.paused:
            self.paused = True
            self.provider.hub.count("paused")
            if not self._draining:
                self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and self.paused:
            self.paused = False
            if self._draining:
                asyncio.get_running_loop().call_soon(self._handle, b"")
            else:
                self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            # What waits (the error frame that made us close) goes out first: bounded.
            while self.output:
                self._transport.write(self.output.popleft()[1])
            self._transport.close()


class TcpProvider:
    """Listens for robots/PLCs; ``deliver`` gets every accepted message."""

    def __init__(
        self,
        hub: Hub,
        *,
        max_frame_bytes: int = protocol.DEFAULT_MAX_FRAME_BYTES,
        max_lag_s: float = MAX_LAG_S,
        max_output_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.hub = hub
        self.max_frame_bytes = max_frame_bytes
        self.max_lag_s = max_lag_s
        self.max_output_bytes = max_output_bytes
        self.connections: dict[int, TcpConnection] = {}
        self._server: asyncio.Server | None = None

    @property
    def counters(self) -> Counter[str]:
        return self.hub.counters

    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> int:
        """Listen (TLS only, with ``tls``; sharing the port with other io workers, with
        ``reuse_port``); returns the port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port,
            ssl=tls,
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        scheme = "TLS" if tls else "plain TCP"
        log.info("listening for robots and PLCs on %s:%d (%s)", host, bound, scheme)
        return bound

    def send_body(
        self, connection_id: int, body: bytes, priority: int = HIGH, key: Hashable | None = None
    ) -> bool:
        """Send an encoded triple to one authenticated connection; False if there is
        none. ``key``: what a NORMAL message is conflated by while the peer is behind."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.session is None or connection.session.role is None:
            return False
        connection.write(protocol.frame(body), priority, key)
        return True

    def broadcast_body(self, body: bytes, priority: int = HIGH, key: Hashable | None = None) -> int:
        """Send an encoded triple to every authenticated connection; how many."""
        data = protocol.frame(body)
        sent = 0
        for connection in list(self.connections.values()):
            if connection.session is not None and connection.session.role is not None:
                connection.write(data, priority, key)
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
