"""Framing and the protocol's own messages; the exact bytes are in docs/protocol.md.

A TCP frame is a 4-byte big-endian length, then a msgpack array
``[name: str, schema_hash: uint64, payload: map]``. A WebSocket message carries the same
triple, as a JSON array in a text frame or as msgpack in a binary frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import msgspec

from edgeloop.net.registry import MessageInfo, ProtocolError, info, message
from edgeloop.priority import Priority
from edgeloop.realtime.ipc import MAX_RECORD_BYTES

PROTOCOL_VERSION = 1
# A peer's message goes on to the control process as one record of the io channel, its
# payload re-encoded next to the topic, the connection and a conflation key: a frame up
# to this size always fits one (``network.*.max_frame_bytes`` may not be set above it).
RECORD_ENVELOPE_BYTES = 1024
MAX_FRAME_BYTES = MAX_RECORD_BYTES - RECORD_ENVELOPE_BYTES
DEFAULT_MAX_FRAME_BYTES = MAX_FRAME_BYTES
# What a client reads from a server: a WorldUpdate of a whole world is not bound by the
# limit on what peers send the server.
CLIENT_MAX_FRAME_BYTES = 64 << 20
_LENGTH = struct.Struct(">I")


ALL_ROLES = ("viewer", "device", "operator", "admin")


@message(name="edgeloop.Hello", priority=Priority.HIGH, senders=ALL_ROLES)
@dataclass
class Hello:
    """The first frame of every connection."""

    client_id: str
    token: str
    role: str
    protocol_version: int


@message(name="edgeloop.Welcome", priority=Priority.HIGH, senders=())
@dataclass
class Welcome:
    connection_id: int
    role: str
    protocol_version: int
    server: str


@message(name="edgeloop.Error", priority=Priority.HIGH, senders=())
@dataclass
class Error:
    code: str
    detail: str


@message(name="edgeloop.Subscribe", priority=Priority.HIGH, senders=ALL_ROLES)
@dataclass
class Subscribe:
    """Ask for a topic, at most ``max_hz`` messages a second: ``world``, the world's
    changes (``WorldUpdate``; ``components``: the component type names wanted, empty
    means all); ``loop``, the control loop (``LoopStatus``, at most once a second);
    ``audit``, the audit log's last entries whenever it grows (``AuditTail``).
    """

    topic: Literal["world", "loop", "audit"]
    max_hz: float = 30.0
    components: list[str] = field(default_factory=list)


@dataclass
class ComponentValue:
    entity: int
    component: str
    values: dict[str, Any]


@message(name="edgeloop.WorldUpdate", priority=Priority.NORMAL, senders=())
@dataclass
class WorldUpdate:
    """What changed since this subscriber's last update (the first one: everything)."""

    changed: list[ComponentValue]
    removed: list[int]
    version: int  # increases with every change the mirror has seen


@dataclass
class LatenessHistogram:
    edges_us: list[int]
    ticks: list[int]  # per bucket, up to its edge; the last: past every edge


@message(name="edgeloop.LoopStatus", priority=Priority.NORMAL, senders=())
@dataclass
class LoopStatus:
    """The control loop as the io process reads it in the heartbeat block: a loop that
    stalls shows here (``last_tick_age_s``) while it cannot say so itself."""

    ticks: int
    rate_hz: float
    lateness_p99_us: float
    overruns: int
    last_tick_age_s: float | None
    safe_state: bool
    lateness_histogram: LatenessHistogram


@message(name="edgeloop.AuditTail", priority=Priority.NORMAL, senders=())
@dataclass
class AuditTail:
    """The audit log's last entries, newest last, without their chain fields."""

    entries: list[dict[str, Any]]


class FrameReader:
    """Splits a byte stream into frames, refusing any longer than ``max_frame_bytes``."""

    __slots__ = ("_data", "_start", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        # Immutable, so the frames handed out may be views of it, not copies.
        self._data = b""
        self._start = 0

    def feed(self, data: bytes, limit: int | None = None) -> list[memoryview]:
        """The complete frames buffered with ``data``, at most ``limit`` of them (the rest
        stay buffered: ``feed(b"")`` returns them). After an oversize frame the stream
        cannot be trusted (we would have to skip bytes we never read): the caller closes."""
        start = self._start
        if data:
            if start < len(self._data):
                data = self._data[start:] + data
            self._data = data
            start = 0
        else:
            data = self._data
        view = memoryview(data)
        end = len(data)
        unpack_from = _LENGTH.unpack_from
        most = self.max_frame_bytes
        frames: list[memoryview] = []
        append = frames.append
        count = end if limit is None else limit  # each frame has at least 4 bytes
        while count:
            body = start + 4
            if body > end:
                break
            (length,) = unpack_from(data, start)
            if length > most:
                raise ProtocolError(
                    "oversize", f"frame of {length} bytes exceeds the limit of {most}"
                )
            stop = body + length
            if stop > end:
                break
            append(view[body:stop])
            start = stop
            count -= 1
        if count:
            # Only a partial frame is left: keep its bytes, not the whole read.
            self._data = data[start:]
            start = 0
        self._start = start
        return frames


def frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


# msgspec encodes a message's dataclass straight to the wire, the same bytes as msgpack
# of its builtins at a sixth of the cost (a whole world's WorldUpdate: 2.4 -> 0.4 ms).
_MSGPACK = msgspec.msgpack.Encoder()
_JSON = msgspec.json.Encoder()


def encode(msg: object) -> bytes:
    """A message as a msgpack triple (without the TCP length prefix)."""
    found = info(type(msg))
    return encode_parts(found.name, found.schema_hash, msg)


def encode_parts(name: str, schema_hash: int, payload: Any) -> bytes:
    """The msgpack triple of a payload: a message's dataclass or its builtins."""
    return _MSGPACK.encode((name, schema_hash, payload))


def encode_json_parts(name: str, schema_hash: int, payload: Any) -> str:
    """The JSON triple (a WebSocket text frame), the schema hash in hex: JavaScript
    numbers lose precision above 2**53. Not-a-number goes as null (JSON has none)."""
    return _JSON.encode((name, f"{schema_hash:016x}", payload)).decode()


def split(body: bytes | memoryview) -> tuple[str, int, dict[str, Any]]:
    """The (name, schema hash, payload) of a msgpack triple; ``bad_frame`` if it is not one."""
    try:
        triple = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises a zoo of types for garbage input
        raise ProtocolError("bad_frame", f"not msgpack: {error}") from None
    return check_triple(triple)


def check_triple(triple: Any) -> tuple[str, int, dict[str, Any]]:
    if (
        not isinstance(triple, list)
        or len(triple) != 3
        or not isinstance(triple[0], str)
        or not isinstance(triple[1], int)
        or isinstance(triple[1], bool)
        or not isinstance(triple[2], dict)
    ):
        raise ProtocolError("bad_frame", "expected [name: str, schema_hash: uint64, payload: map]")
    return triple[0], triple[1], triple[2]


def build(found: MessageInfo, payload: dict[str, Any]) -> Any:
    """The typed message from a payload map; ``bad_payload`` naming the field if it does not fit."""
    try:
        return msgspec.convert(payload, found.type, strict=False)
    except msgspec.ValidationError as error:
        raise ProtocolError("bad_payload", f"{found.name}: {error}") from None
