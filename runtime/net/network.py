"""Network messages in the control process: what systems read and send.

Providers run in the io process; their records arrive here through the io link and are
turned into typed ``NetworkData`` messages (one queue per message type) and
``ConnectionEvent`` messages. ``Network.send`` / ``broadcast`` go the other way.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import msgspec

from edgeloop.clock import Time
from edgeloop.logs import every_power_of_ten
from edgeloop.net import protocol
from edgeloop.net.connection_ids import worker_of
from edgeloop.net.listener_health import apply_listener_report
from edgeloop.net.registry import ProtocolError, Registry, info
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IO_LOST, IoInput, IoLink
from edgeloop.world import World

log = logging.getLogger("edgeloop.net")

T = TypeVar("T")

# Record topics between the io process and the control process.
NET_MESSAGE = "net.message"  # io -> control: [provider, connection, name, payload]
NET_EVENT = "net.event"  # io -> control: [provider, connection, connected, detail]
# io -> control: [provider, worker, address, listening, error] (edgeloop.net.listener)
NET_LISTENER = "net.listener"
# control -> io: [provider ("": any), connection (0: all), name, hash, payload]
NET_SEND = "net.send"
MAX_PLAIN_KEY_CHARS = 64  # longer entity keys travel as a digest


@dataclass(frozen=True, slots=True)
class NetworkData(Generic[T]):
    """Message: one typed message from a peer, stamped with the tick that consumed it."""

    message: T
    connection: int
    provider: str
    tick: int


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    provider: str
    connection: int
    connected: bool
    detail: str  # the peer's client id when connected, the reason when disconnected
    tick: int


@dataclass(frozen=True, slots=True)
class Response:
    """Message: the answer to ``Network.request``, matched by its ``request_id``."""

    request_id: int
    message: Any
    connection: int
    tick: int


@dataclass(frozen=True, slots=True)
class RequestTimeout:
    """Message: no answer to ``Network.request`` within its timeout."""

    request_id: int
    connection: int
    tick: int


@dataclass(slots=True)
class _Pending:
    connection: int
    deadline_tick: int


class Network:
    """Resource: typed messages in and out, for systems.

    Request/response: the request and its reply types carry a ``request_id: int``
    field. ``request`` fills it in and returns it; the reply arrives as a ``Response``
    message (as well as its own ``NetworkData``), or a ``RequestTimeout`` when the
    timeout passes first — counted in ticks, so replay gives the same outcome.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._queues: dict[type, type[NetworkData[Any]]] = {}
        self._pending: dict[int, _Pending] = {}
        self._next_request = 1
        # Inputs that did not fit their type here (a version skew bug), and outputs with
        # no io process to take them (one-process mode).
        self.dropped = 0
        # Peers' messages a system refused (``refuse``), by error code.
        self.refused: Counter[str] = Counter()
        self.connections: dict[int, str] = {}  # connected peers: id -> provider
        self.peers: dict[int, tuple[str, str]] = {}  # connected: id -> (client id, role)

    def queue(self, mtype: type[T]) -> type[NetworkData[T]]:
        """The message queue key for ``NetworkData`` of ``mtype`` (one class per type)."""
        key = self._queues.get(mtype)
        if key is None:
            name = f"NetworkData[{mtype.__name__}]"
            key = self._queues[mtype] = type(name, (NetworkData,), {"__slots__": ()})
        return cast("type[NetworkData[T]]", key)

    def describe(self, connection: int) -> str:
        """Who is on ``connection``, for the audit log and refusals."""
        client_id, role = self.peers.get(connection, ("?", "?"))
        provider = self.connections.get(connection, "?")
        return f"{client_id} ({role}) on {provider} connection {connection}"

    def send(
        self, world: World, connection: int, msg: object, priority: Priority | None = None
    ) -> None:
        """Send ``msg`` to one connection (of any provider: ids are unique) after this
        tick, at its type's priority unless ``priority`` says another (a safety stop
        goes CRITICAL)."""
        self._out(world, "", connection, msg, priority)

    def refuse(self, world: World, connection: int, code: str, detail: str) -> None:
        """Answer a peer's message with an ``edgeloop.Error`` (the connection stays), and
        count it: for what only the control side can judge, e.g. who owns an entity."""
        self.refused[code] += 1
        if every_power_of_ten(self.refused[code]):
            count = self.refused[code]
            log.warning(
                "refused %s from connection %d (%d so far): %s", code, connection, count, detail
            )
        self.send(world, connection, protocol.Error(code, detail))

    def request(self, world: World, connection: int, msg: Any, timeout_s: float) -> int:
        """Send ``msg`` (a type with a ``request_id`` field) and await its reply."""
        if not hasattr(msg, "request_id"):
            raise TypeError(f"{type(msg).__name__} has no request_id field to match a reply")
        request_id = self._next_request
        self._next_request += 1
        msg.request_id = request_id
        time = world.resource(Time)
        deadline = time.tick + max(1, math.ceil(timeout_s / time.delta))
        self._pending[request_id] = _Pending(connection, deadline)
        self.send(world, connection, msg)
        return request_id

    def broadcast(self, world: World, msg: object, provider: str = "") -> None:
        """Send ``msg`` to every authenticated connection (of ``provider``, if given)."""
        self._out(world, provider, 0, msg)

    def _out(
        self,
        world: World,
        provider: str,
        connection: int,
        msg: object,
        priority: Priority | None = None,
    ) -> None:
        found = info(type(msg))
        payload = msgspec.to_builtins(msg)
        link = world.get_resource(IoLink)
        # A broadcast goes to every io worker, a send to the one holding the connection.
        worker = None if connection == 0 else worker_of(connection)
        if link is None or (worker is not None and not 0 <= worker < link.workers):
            # One-process mode (no io process, no providers), or no such connection.
            self.dropped += 1
            return
        # The key the outbox conflates NORMAL records by: per entity, when the type
        # names one (as the providers do), so a broadcast for each robot loses none.
        key = f"{provider}:{connection}:{found.name}"
        if found.key is not None:
            key = f"{key}:{entity_key(getattr(msg, found.key))}"
        link.send(
            NET_SEND,
            key,
            [provider, connection, found.name, found.schema_hash, payload],
            found.priority if priority is None else priority,
            worker,
        )


def entity_key(value: object) -> str:
    """The entity a NORMAL message is about, as part of a record key: long ones (a 30 KB
    robot id) as a digest, so a record that carries the message does not carry it twice."""
    text = str(value)
    if len(text) <= MAX_PLAIN_KEY_CHARS:
        return text
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def read_network(world: World, mtype: type[T]) -> list[NetworkData[T]]:
    """The ``NetworkData`` of ``mtype`` the running system has not read yet."""
    return world.read(world.resource(Network).queue(mtype))


def route_network_inputs(world: World) -> None:
    """NetworkReceive: io records of the providers into typed messages for this tick;
    replies to requests as ``Response``, requests past their deadline as timeouts."""
    network = world.resource(Network)
    for record in world.read(IoInput):
        if record.topic == NET_MESSAGE:
            _route_message(world, network, record)
        elif record.topic == NET_EVENT:
            provider, connection, connected, detail, *rest = record.payload
            if connected:
                network.connections[connection] = provider
                network.peers[connection] = (detail, str(rest[0]) if rest else "?")
            else:
                network.connections.pop(connection, None)
                network.peers.pop(connection, None)
            world.send(ConnectionEvent(provider, connection, connected, detail, record.tick))
        elif record.topic == NET_LISTENER:
            apply_listener_report(world, record.payload, record.tick)
        elif record.topic == IO_LOST:
            _lose_worker(world, network, record.payload, record.tick)
    if network._pending:
        tick = world.resource(Time).tick
        for request_id in [r for r, p in network._pending.items() if p.deadline_tick <= tick]:
            pending = network._pending.pop(request_id)
            world.send(RequestTimeout(request_id, pending.connection, tick))


def _lose_worker(world: World, network: Network, worker: int, tick: int) -> None:
    """An io worker that went away took its peers with it, without a word: they are
    disconnected here, after the last records it sent (its next process hands out new
    ids, never these)."""
    lost = [c for c in network.connections if worker_of(c) == worker]
    for connection in lost:
        provider = network.connections.pop(connection)
        network.peers.pop(connection, None)
        world.send(ConnectionEvent(provider, connection, False, "io process lost", tick))


def _route_message(world: World, network: Network, record: IoInput) -> None:
    provider, connection, name, payload = record.payload
    try:
        # The io side validated the payload and resolved the peer's name or hash to ours.
        found = network.registry.named(name)
        msg = protocol.build(found, payload)
    except ProtocolError as error:
        network.dropped += 1
        if network.dropped == 1:
            log.error("network input dropped (io and control disagree on a type): %s", error)
        return
    world.send(network.queue(found.type)(msg, connection, provider, record.tick))
    request_id = getattr(msg, "request_id", None)
    if not isinstance(request_id, int):
        return
    pending = network._pending.get(request_id)
    if pending is not None and pending.connection == connection:
        del network._pending[request_id]
        world.send(Response(request_id, msg, connection, record.tick))
