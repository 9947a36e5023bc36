"""The WebSocket provider: dashboards and tools on ``/ws`` of the HTTP port.

The same protocol as TCP (``Session``), framed by WebSocket: a text frame carries the
triple as JSON, a binary frame as msgpack; the server answers in the format the client
last used. In JSON the schema hash is a 16-digit hex string (JavaScript numbers lose
precision above 2**53); a number is accepted too.

Every connection has its own send queue (an ``OutputQueue``, as on the TCP side: NORMAL
conflated, bounded in bytes) and writer task, so a slow client never slows the others
or the io loop: when its oldest unsent message is older than ``max_lag_s``, or its
queue would pass ``max_output_bytes``, it is disconnected (counted and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from edgeloop.net import protocol
from edgeloop.net.output_queue import (
    DEFAULT_MAX_BYTES,
    SENT,
    LagWatch,
    OutputQueue,
    count_cut_off,
)
from edgeloop.net.registry import ProtocolError, info
from edgeloop.net.session import Hub, Session
from edgeloop.priority import Priority

log = logging.getLogger("edgeloop.net.ws")

WS_PATH = "/ws"
MAX_LAG_S = 5.0
HIGH = int(Priority.HIGH)
NORMAL = int(Priority.NORMAL)
CONGESTED_MESSAGES = 8  # queued messages to a client before periodic updates wait
CLOSE_TIMEOUT_S = 1.0  # for the closing handshake of a connection the server ends
# Messages up to this size are read, so one over ``max_frame_bytes`` is answered with an
# ``oversize`` error; a bigger one the library refuses unread (close code 1009).
READ_LIMIT_BYTES = 1 << 20

# (request) -> a response for plain HTTP requests on the port, or None for 404.
# A path's response, one to come (a query on a thread), or None: not found.
HttpHandler = Callable[[Request], Response | Awaitable[Response] | None]


def decode_json(text: str) -> tuple[str, int, dict[str, Any]]:
    try:
        triple = json.loads(text)
    except ValueError as error:
        raise ProtocolError("bad_frame", f"not JSON: {error}") from None
    if isinstance(triple, list) and len(triple) == 3 and isinstance(triple[1], str):
        try:
            triple[1] = int(triple[1], 16)
        except ValueError:
            raise ProtocolError("bad_frame", "schema_hash: not a hex string") from None
    return protocol.check_triple(triple)


class WsConnection:
    """One client: its session, its format, and its send queue."""

    def __init__(self, provider: WebSocketProvider, ws: ServerConnection) -> None:
        self.provider = provider
        self.ws = ws
        self.binary = True
        self.session = Session(
            provider.hub,
            _peer(ws),
            self._send,
            self._close,
            congested=lambda: len(self.output) > CONGESTED_MESSAGES,
            write_shared=self._send_shared,
        )
        self.output: OutputQueue[str | bytes] = OutputQueue(
            provider.max_output_bytes, provider.hub.counters
        )
        self._closing = False  # once the queue is sent, close (an error frame went last)
        self.cut_reason = ""  # why we dropped it, if we did
        self._sending_since: float | None = None  # when the message being sent was queued
        self.lag = LagWatch(provider.max_lag_s, self._oldest_unsent, self.cut_off)
        self._ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    def _send(self, msg: object) -> None:
        found = info(type(msg))
        self.write_parts(found.name, found.schema_hash, msg)

    def _send_shared(self, msg: object, encoded: dict[str, Any]) -> None:
        key = "msgpack" if self.binary else "json"
        data = encoded.get(key)
        if data is None:
            found = info(type(msg))
            if self.binary:
                data = protocol.encode_parts(found.name, found.schema_hash, msg)
            else:
                data = protocol.encode_json_parts(found.name, found.schema_hash, msg)
            encoded[key] = data
        self._queue(data, NORMAL, None)  # a WorldUpdate: a delta, so never conflated

    def write_parts(
        self,
        name: str,
        schema_hash: int,
        payload: Any,
        priority: int = HIGH,
        key: Hashable | None = None,
    ) -> None:
        """Queue a message, its payload a message's dataclass or builtins (``key``: what a
        NORMAL one is conflated by; None: it is not)."""
        data: str | bytes
        if self.binary:
            data = protocol.encode_parts(name, schema_hash, payload)
        else:
            data = protocol.encode_json_parts(name, schema_hash, payload)
        self._queue(data, priority, key)

    def _queue(self, data: str | bytes, priority: int, key: Hashable | None) -> None:
        if self.cut_reason:
            return
        self.output.counters[SENT] += 1
        if not self.output and self._sending_since is None and self._write_now(data):
            return
        reason = self.output.put(data, priority, key, time.monotonic())
        if reason is not None:
            detail = f"{self.output.bytes + len(data)} bytes unsent, over {self.output.max_bytes}"
            self.cut_off(reason, detail)
            return
        self._ready.set()
        self.lag.start()

    def _write_now(self, data: str | bytes) -> bool:
        """Frame ``data`` and hand it to the socket here, if nothing waits before it and
        the socket's buffer has room (else the writer sends it, waiting for room). What
        websockets' ``send`` does, without awaiting a coroutine in a task per message:
        that cost twice the frame itself (100 dashboards at 30 Hz: 3 000 a second)."""
        ws = self.ws
        if self._closing or ws.paused or ws.protocol.state is not State.OPEN:
            return False
        if isinstance(data, str):
            ws.protocol.send_text(data.encode())
        else:
            ws.protocol.send_binary(data)
        ws.send_data()
        return True

    def _oldest_unsent(self) -> float | None:
        if self.cut_reason:
            return None
        return self.output.oldest if self._sending_since is None else self._sending_since

    def cut_off(self, reason: str, detail: str) -> None:
        """Drop the client and what waits for it: it cannot hold memory or slow anyone."""
        if self.cut_reason:
            return
        self.cut_reason = reason
        count_cut_off(self.session, reason, detail)
        self.output.clear()
        self.ws.transport.abort()
        self.lag.stop()

    def _close(self) -> None:
        # Let the error frame queued just before go out first: close from the writer.
        self._closing = True
        self._ready.set()

    async def writer(self) -> None:
        """Send the queue in order (``lag`` cuts off a client that lets a message wait
        longer than ``max_lag_s``: it cannot hold memory or slow anyone)."""
        output = self.output
        send = self.ws.send
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while output:
                    self._sending_since, data = output.popleft()
                    await send(data)
                self._sending_since = None
                if self._closing:
                    await self.ws.close()
                    return
        except ConnectionClosed:
            pass

    async def reader(self) -> None:
        session = self.session
        async for message in self.ws:
            if session.closed:
                continue  # refused: what the peer sent after it is not read (nor obeyed)
            await self.room.wait()  # backpressure: no room downstream, stop reading
            self.binary = isinstance(message, bytes)  # answers go in the client's format
            try:
                _check_size(message, self.provider.max_frame_bytes)
                if isinstance(message, str):
                    name, schema_hash, payload = decode_json(message)
                else:
                    name, schema_hash, payload = protocol.split(message)
                if not session.receive(name, schema_hash, payload):
                    self.provider.hub.count("paused")
                    self.room.clear()
            except ProtocolError as error:
                session.refuse(error)
            if session.closed:
                return  # what the peer sends after we refused it is not read


class WebSocketProvider:
    def __init__(
        self,
        hub: Hub,
        *,
        max_frame_bytes: int = protocol.DEFAULT_MAX_FRAME_BYTES,
        max_lag_s: float = MAX_LAG_S,
        max_output_bytes: int = DEFAULT_MAX_BYTES,
        http_handler: HttpHandler | None = None,
    ) -> None:
        self.hub = hub
        self.max_frame_bytes = max_frame_bytes
        self.max_lag_s = max_lag_s
        self.max_output_bytes = max_output_bytes
        self.http_handler = http_handler
        self.connections: dict[int, WsConnection] = {}
        self._server: Server | None = None

    @property
    def counters(self) -> Counter[str]:
        return self.hub.counters

    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> int:
        """Listen (HTTPS/WSS only, with ``tls``; sharing the port with other io workers,
        with ``reuse_port``); returns the port."""
        self._server = await serve(
            self._serve,
            host,
            port,
            process_request=self._process_request,
            max_size=max(READ_LIMIT_BYTES, self.max_frame_bytes),
            compression=None,  # CPU on a Pi is dearer than bytes on a LAN
            # A dashboard that vanished without a close frame must not hold up a stop
            # past the supervisor's patience (5 s) with the default 10 s.
            close_timeout=CLOSE_TIMEOUT_S,
            ssl=tls,
            reuse_port=reuse_port,
        )
        bound: int = next(iter(self._server.sockets)).getsockname()[1]
        scheme = "HTTPS" if tls else "HTTP"
        log.info("serving %s and %s on %s:%d", scheme, WS_PATH, host, bound)
        return bound

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        if request.path == WS_PATH:
            return None  # go on with the WebSocket handshake
        response = None if self.http_handler is None else self.http_handler(request)
        if response is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        return response

    async def _serve(self, ws: ServerConnection) -> None:
        connection = WsConnection(self, ws)
        session = connection.session
        self.connections[session.id] = connection
        writer = asyncio.create_task(connection.writer())
        loop = asyncio.get_running_loop()
        hello_timer = loop.call_later(self.hub.hello_timeout_s, session.hello_overdue)
        reason = "closed"
        try:
            await connection.reader()
        except ConnectionClosed:
            reason = "reset"
        except Exception:
            session.failed()
        try:
            if session.closed:
                # We end it: the error frame is queued, the writer sends it and closes.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT_S)
        finally:
            hello_timer.cancel()
            connection.lag.stop()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.connections.pop(session.id, None)
            session.ended(connection.cut_reason or reason)

    def send_parts(
        self,
        connection_id: int,
        name: str,
        schema_hash: int,
        payload: Any,
        *,
        priority: int = HIGH,
        key: Hashable | None = None,
    ) -> bool:
        connection = self.connections.get(connection_id)
        if connection is None or connection.session.role is None:
            return False
        connection.write_parts(name, schema_hash, payload, priority, key)
        return True

    def broadcast_parts(
        self,
        name: str,
        schema_hash: int,
        payload: Any,
        *,
        priority: int = HIGH,
        key: Hashable | None = None,
    ) -> int:
        sent = 0
        for connection in list(self.connections.values()):
            if connection.session.role is not None:
                connection.write_parts(name, schema_hash, payload, priority, key)
                sent += 1
        return sent

    def resume_all(self) -> None:
        for connection in list(self.connections.values()):
            connection.room.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _check_size(message: str | bytes, most: int) -> None:
    if isinstance(message, bytes):
        size = len(message)
    elif len(message) * 4 <= most:  # UTF-8 takes at most 4 bytes a character
        return
    else:
        size = len(message.encode())
    if size > most:
        raise ProtocolError("oversize", f"message of {size} bytes exceeds the limit of {most}")


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def text_response(status: http.HTTPStatus, body: str, content_type: str = "text/plain") -> Response:
    """A plain HTTP response, for the ``http_handler`` of the port's other paths."""
    data = body.encode()
    headers = Headers(
        [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return Response(status.value, status.phrase, headers, data)
