"""One peer's protocol state, the same over TCP and WebSocket: Hello, roles, errors.

A transport decodes its frames into ``(name, schema_hash, payload)`` and hands them to
``Session.receive``; the session answers through the transport's ``write`` and asks it
to ``close`` when the stream cannot be trusted any more. ``Hub`` is what the sessions
of one provider share: the registry, tokens, counters and where messages go.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from edgeloop.logs import every_power_of_ten
from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.protocol import Error, Hello, Welcome
from edgeloop.net.registry import MessageInfo, ProtocolError, Registry, info
from edgeloop.priority import Priority

log = logging.getLogger("edgeloop.net")

HELLO_TIMEOUT_S = 5.0
NORMAL = Priority.NORMAL
# Errors after which the rest of the stream cannot be trusted.
FATAL = frozenset({"oversize", "bad_frame", "not_authenticated", "auth_failed", "protocol_version"})
# The errors a peer may get before Hello; any other becomes ``not_authenticated`` (with
# the first error in its detail): a peer that has not proved who it is gets no dialogue.
BEFORE_HELLO = frozenset({"not_authenticated", "auth_failed", "protocol_version", "oversize"})

Deliver = Callable[["Session", MessageInfo, Any], bool]
# Called when NORMAL messages have been put in ``Hub.latest`` (once per batch of them);
# False if the peer should pause (no room downstream).
Hold = Callable[[], bool]
# (session, connected, detail): detail is the client id, or why it disconnected.
Events = Callable[["Session", bool, str], None]


def conflation_key(found: MessageInfo, msg: Any) -> Any:
    """What NORMAL messages of a connection are conflated by, besides their type: the
    value of their ``key`` field (the entity), or None for one per type."""
    return None if found.key is None else getattr(msg, found.key)


class Hub:
    """What the sessions of one provider share."""

    def __init__(
        self,
        name: str,
        registry: Registry,
        auth: Authenticator,
        deliver: Deliver,
        *,
        events: Events | None = None,
        server_name: str = "edgeloop",
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        ids: Iterator[int] | None = None,
        hold: Hold | None = None,
    ) -> None:
        self.name = name
        # Message types answered in the io process itself (e.g. Subscribe), by handler.
        self.local: dict[type, Callable[[Session, Any], None]] = {}
        self.registry = registry
        registry.add(Hello)
        self.auth = auth
        self.deliver = deliver
        # With ``hold``, NORMAL messages wait in ``latest`` instead of going to
        # ``deliver``, the latest per (connection, type), until ``take_latest``: under a
        # flood, those a later one replaces cost nothing downstream.
        self.hold = hold
        self.latest: dict[tuple[Session, str, Any], Any] = {}
        self.events = events
        self.server_name = server_name
        self.hello_timeout_s = hello_timeout_s
        self.sessions: dict[int, Session] = {}
        self.counters: Counter[str] = Counter()
        # Shared between providers, so a connection id names one peer appliance-wide.
        self._ids = itertools.count(1) if ids is None else ids

    def next_id(self) -> int:
        return next(self._ids)

    def accept(self, session: Session, found: MessageInfo, msg: Any) -> bool:
        """Pass on an accepted message; False if the peer should pause."""
        if self.hold is None or found.priority is not Priority.NORMAL:
            return self.deliver(session, found, msg)
        self.latest[session, found.name, conflation_key(found, msg)] = msg
        return self.hold()

    def take_latest(self) -> dict[tuple[Session, str, Any], Any]:
        """The NORMAL messages waiting (see ``hold``), in the order they first came."""
        # Emptied in place: a batch being received holds on to this very dict.
        taken = self.latest.copy()
        self.latest.clear()
        return taken

    def count(self, reason: str) -> int:
        self.counters[reason] += 1
        return self.counters[reason]

    def authenticated(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.role is not None]


class Session:
    def __init__(
        self,
        hub: Hub,
        peer: str,
        write: Callable[[object], None],
        close: Callable[[], None],
        *,
        congested: Callable[[], bool] = lambda: False,
        write_shared: Callable[[object, dict[str, Any]], None] | None = None,
    ) -> None:
        self.hub = hub
        self._write_shared = write_shared
        # True while the peer is not keeping up: periodic updates then wait (and conflate).
        self.congested = congested
        self.id = hub.next_id()
        self.peer = peer
        self.role: Role | None = None
        self._role_name = ""  # role.value, looked up once per message
        self.closed = False  # we closed the stream: what is left of it is not read
        self.client_id = ""
        self.grant: Grant | None = None
        # Whether the entities messages name must be checked (see Authenticator.may_use).
        self._checks_entities = False
        self._write = write
        self._close = close
        hub.sessions[self.id] = self
        hub.count("connections")

    def receive_frames(self, bodies: list[memoryview]) -> bool:
        """Handle msgpack triples in order until one closes the stream; False if the
        peer should pause (no room downstream).

        The usual message (an authenticated peer sending a type it may send, under the
        name and hash we know) costs one typed decode here; anything else takes
        ``receive``, which also says what is wrong with it."""
        hub = self.hub
        decode = hub.registry.envelopes.decode
        accept = hub.accept
        hold = hub.hold
        latest = hub.latest
        local = hub.local
        role = self._role_name
        checks = self._checks_entities
        room = True
        accepted = 0
        held = False
        for body in bodies:
            try:
                try:
                    envelope = decode(body)
                except msgspec.DecodeError:
                    room = self.receive(*protocol.split(body)) and room
                    role = self._role_name  # a Hello may have been accepted
                    checks = self._checks_entities
                    continue
                found = envelope.info
                if (
                    envelope.hash != found.schema_hash
                    or role not in found.senders
                    or found.type in local
                    or found.type is Hello
                ):
                    room = self.receive(*protocol.split(body)) and room
                    role = self._role_name
                    checks = self._checks_entities
                    continue
                if checks and found.key is not None:
                    self.check_entity(found, envelope.message)
                accepted += 1
                if hold is not None and found.priority is NORMAL:
                    # Hub.accept inlined: a call per message is measurable here.
                    msg = envelope.message
                    entity = None if found.key is None else getattr(msg, found.key)
                    latest[self, found.name, entity] = msg
                    held = True
                else:
                    room = accept(self, found, envelope.message) and room
            except ProtocolError as error:
                self.refuse(error)
                if self.closed:
                    break
        if accepted:
            hub.counters["messages"] += accepted
        if held and hold is not None:
            room = hold() and room
        return room

    def receive(self, name: str, schema_hash: int, payload: dict[str, Any]) -> bool:
        """Handle one message; False if the peer should pause (no room downstream)."""
        found = self.hub.registry.resolve(name, schema_hash)
        if found.by_hash:
            self.hub.count("renamed")
        msg = protocol.build(found.info, payload)
        if self.role is None:
            self._hello(msg)
            return True
        if isinstance(msg, Hello):
            raise ProtocolError("bad_sequence", "Hello was already accepted")
        if self.role.value not in found.info.senders:
            detail = f"role {self.role.value} may not send {found.info.name}"
            raise ProtocolError("forbidden", detail)
        if self._checks_entities and found.info.key is not None:
            self.check_entity(found.info, msg)
        self.hub.count("messages")
        local = self.hub.local.get(found.info.type)
        if local is not None:
            local(self, msg)
            return True
        return self.hub.accept(self, found.info, msg)

    def _hello(self, msg: object) -> None:
        if not isinstance(msg, Hello):
            name = info(type(msg)).name
            raise ProtocolError(
                "not_authenticated", f"the first message must be edgeloop.Hello, not {name}"
            )
        if msg.protocol_version != protocol.PROTOCOL_VERSION:
            ours = protocol.PROTOCOL_VERSION
            detail = f"version {msg.protocol_version} not spoken (this server: {ours})"
            raise ProtocolError("protocol_version", detail)
        auth = self.hub.auth
        grant = auth.grant_for(msg.token, msg.role)
        if grant is None or not auth.may_use(grant, msg.client_id):
            failures = self.hub.counters["auth_failed"] + 1  # refuse() counts it
            if every_power_of_ten(failures):
                log.warning(
                    "failed login from %s as %r, %r (%d so far)",
                    self.peer,
                    msg.client_id,
                    msg.role,
                    failures,
                )
            if grant is None:
                raise ProtocolError("auth_failed", f"the token does not grant role {msg.role!r}")
            detail = f"the token does not grant client id {msg.client_id!r}"
            raise ProtocolError("auth_failed", detail)
        role = grant.role
        self.grant = grant
        self._checks_entities = grant.client_ids is not None or bool(auth.bound)
        self.role = role
        self._role_name = role.value
        self.client_id = msg.client_id
        log.info(
            "%s connection %d from %s: %s as %s",
            self.hub.name,
            self.id,
            self.peer,
            msg.client_id,
            role.value,
        )
        self.send(Welcome(self.id, role.value, protocol.PROTOCOL_VERSION, self.hub.server_name))
        if self.hub.events is not None:
            self.hub.events(self, True, msg.client_id)

    def check_entity(self, found: MessageInfo, msg: Any) -> None:
        """``not_owner`` if ``msg`` names an entity (its type's ``key``) that this
        connection's token may not speak for."""
        entity = getattr(msg, found.key) if found.key is not None else None
        grant = self.grant
        if (
            grant is not None
            and isinstance(entity, str)
            and not self.hub.auth.may_use(grant, entity)
        ):
            detail = f"{found.name}: this connection's token may not speak for {entity!r}"
            raise ProtocolError("not_owner", detail)

    def hello_overdue(self) -> None:
        if self.role is None:
            self.refuse(ProtocolError("not_authenticated", "no Hello within the time allowed"))

    def send(self, msg: object) -> None:
        self._write(msg)

    def send_shared(self, msg: object, encoded: dict[str, Any]) -> None:
        """Send ``msg`` that many peers get alike: ``encoded`` caches its encoding per
        wire format, so a fan-out encodes once per format, not once per peer."""
        if self._write_shared is None:
            self._write(msg)
        else:
            self._write_shared(msg, encoded)

    def refuse(self, error: ProtocolError) -> None:
        """Answer with an error; close when the stream cannot be trusted any more (or
        the peer has not said Hello: then the code is ``not_authenticated``)."""
        if self.role is None and error.code not in BEFORE_HELLO:
            detail = f"before Hello, {error.code}: {error.detail}"
            error = ProtocolError("not_authenticated", detail)
        self.hub.count(error.code)
        self.send(Error(error.code, error.detail))
        if error.code in FATAL:
            self.closed = True
            self._close()

    def failed(self) -> None:
        """A bug of ours while handling this peer: it costs this connection only, and
        the peer is told so (an ``internal`` error) rather than seeing a silent close."""
        log.exception("%s connection %d from %s: internal error", self.hub.name, self.id, self.peer)
        self.hub.count("internal")
        if self.closed:
            return
        self.closed = True
        try:
            self.send(Error("internal", "the server failed handling this connection; see its log"))
        finally:
            self._close()

    def ended(self, reason: str) -> None:
        self.hub.sessions.pop(self.id, None)
        if self.role is not None:
            log.info(
                "%s connection %d from %s closed (%s)", self.hub.name, self.id, self.peer, reason
            )
            if self.hub.events is not None:
                self.hub.events(self, False, reason)
