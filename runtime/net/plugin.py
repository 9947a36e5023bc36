"""The ``network`` config section: the TCP provider in the io process, and the typed
``NetworkData`` / ``Network`` side in the control process."""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Hashable
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field, FilePath, field_validator, model_validator

from edgeloop.alarm_commands import Acknowledge, AckResult, acknowledge_alarms
from edgeloop.app import App
from edgeloop.config import ConfigSection, Section
from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.listener import Listener
from edgeloop.net.listener_health import Listeners
from edgeloop.net.network import (
    NET_EVENT,
    NET_LISTENER,
    NET_MESSAGE,
    NET_SEND,
    Network,
    entity_key,
    route_network_inputs,
)
from edgeloop.net.output_queue import DEFAULT_MAX_BYTES
from edgeloop.net.periodic_feed import PeriodicFeed
from edgeloop.net.registry import MessageInfo, ProtocolError, Registry, info
from edgeloop.net.session import Hub, Session, conflation_key
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.net.world_feed import (
    WORLD_REMOVED,
    WORLD_VALUE,
    Subscriptions,
    WorldFeed,
    publish_world_changes,
)
from edgeloop.net.ws_provider import WebSocketProvider
from edgeloop.priority import Priority
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record
from edgeloop.safety.audit_chain import FILE_NAME as AUDIT_FILE
from edgeloop.schedule import (
    DataProcessing,
    FixedUpdate,
    IoReceive,
    NetworkReceive,
    SensorInput,
    Startup,
    Update,
    WebUIUpdates,
)
from edgeloop.web.access import Gate
from edgeloop.web.audit_tail import TailWatch
from edgeloop.web.dashboard import Dashboard, first_of
from edgeloop.web.http import HttpFace
from edgeloop.web.loop_status import LoopStatusReader
from edgeloop.web.trend import Trends
from edgeloop.wiring_requests import WiringPage, WiringRequest, answer_wiring_requests

log = logging.getLogger("edgeloop.net")


MIN_TOKEN_CHARS = 16
FEED_PERIOD_S = 1.0  # the loop and audit topics: what a person reads, not a trend
AUDIT_FEED_ROWS = 20  # the dashboard's audit panel


Port = Annotated[int, Field(ge=0, le=65535, strict=True)]
ClientIds = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class Listen(Section):
    """What both providers' listening sockets take."""

    host: str = "127.0.0.1"
    max_frame_bytes: Annotated[int, Field(ge=64, strict=True)] = protocol.DEFAULT_MAX_FRAME_BYTES
    hello_timeout_s: Annotated[float, Field(gt=0, le=300, strict=True)] = 5.0
    max_lag_s: Annotated[float, Field(gt=0, le=600, strict=True)] = 5.0
    max_output_bytes: Annotated[int, Field(ge=64 << 10, le=1 << 30, strict=True)] = (
        DEFAULT_MAX_BYTES
    )

    @field_validator("max_frame_bytes")
    @classmethod
    def _fits_the_io_channel(cls, value: int) -> int:
        if value > protocol.MAX_FRAME_BYTES:
            raise ValueError(
                f"{value} is above {protocol.MAX_FRAME_BYTES}: a peer's message goes to the "
                "control process as one record of the io channel, which carries no more"
            )
        return value


class TcpListen(Listen):
    port: Port = 7700


class WebSocketListen(Listen):
    port: Port = 8080


class TlsFiles(Section):
    """PEM files; the key readable by the service user only."""

    cert_file: FilePath
    key_file: FilePath

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    @model_validator(mode="after")
    def _loads(self) -> TlsFiles:
        # A bad pair is a config error with its line, not an io process that crash-loops.
        try:
            self.context()
        except (ssl.SSLError, OSError) as error:
            raise ValueError(f"cannot load the certificate and key: {error}") from None
        return self


class TokenGrant(Section):
    token: Annotated[str, Field(min_length=1)]
    role: Literal["viewer", "device", "operator", "admin"]
    # The client ids (and entities, e.g. robot ids) this token is for; see docs/config.md.
    client_ids: ClientIds | None = None

    def grant(self) -> Grant:
        ids = None if self.client_ids is None else frozenset(self.client_ids)
        return Grant(self.token, Role(self.role), ids)


class NetworkConfig(Section):
    tcp: TcpListen | None = TcpListen()
    websocket: WebSocketListen | None = WebSocketListen()
    tls: TlsFiles | None = None  # both providers then speak TLS only
    tokens: list[TokenGrant] = Field(default_factory=list)
    # a scraper's token: /metrics and nothing else (any of `tokens` opens it too)
    metrics_token: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("tokens")
    @classmethod
    def _client_ids_bound_once(cls, tokens: list[TokenGrant]) -> list[TokenGrant]:
        owner: dict[str, int] = {}
        for index, grant in enumerate(tokens):
            for client_id in grant.client_ids or ():
                first = owner.setdefault(client_id, index)
                if first != index:
                    raise ValueError(
                        f"tokens[{index}].client_ids: {client_id!r} is bound to "
                        f"tokens[{first}] already; a client id belongs to one token"
                    )
        return tokens

    def warnings(self) -> list[tuple[tuple[Any, ...], str]]:
        found: list[tuple[tuple[Any, ...], str]] = []
        for index, grant in enumerate(self.tokens):
            if grant.token.startswith("demo-"):
                message = "a published demo token: anyone can use it; set a random one"
                found.append((("tokens", index, "token"), message))
            elif len(grant.token) < MIN_TOKEN_CHARS:
                message = f"weak token: use at least {MIN_TOKEN_CHARS} random characters"
                found.append((("tokens", index, "token"), message))
        return found


class NetworkPlugin:
    """Control process: typed network messages for systems."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        app.insert_resource(Network(app.world.resource(Registry)))
        listeners = Listeners()
        app.insert_resource(listeners)
        configured = (("tcp", self.config.tcp), ("websocket", self.config.websocket))
        providers = [(name, f"{c.host}:{c.port}") for name, c in configured if c is not None]
        app.add_systems(Startup, listeners.spawner(providers))
        app.insert_resource(WorldFeed())
        app.add_systems(Update, publish_world_changes, in_set=WebUIUpdates)
        # After the io link hands over this tick's records, before sensors are read.
        app.configure_sets(FixedUpdate, IoReceive, NetworkReceive, SensorInput)
        app.add_systems(FixedUpdate, route_network_inputs, in_set=NetworkReceive)
        app.add_systems(FixedUpdate, acknowledge_alarms, in_set=DataProcessing)
        app.add_systems(FixedUpdate, answer_wiring_requests, in_set=DataProcessing)


class NetworkIo:
    """Io process: the TCP and WebSocket providers, bridged to the control process."""

    def __init__(self, config: NetworkConfig, context: IoContext) -> None:
        self.config = config
        self.context = context
        auth = Authenticator([t.grant() for t in config.tokens])
        self.tls = None if config.tls is None else config.tls.context()
        self.subscriptions = Subscriptions()
        self.loop = LoopStatusReader(context.heartbeats)
        audit = TailWatch(context.state_dir / AUDIT_FILE, AUDIT_FEED_ROWS)
        # What a dashboard shows besides the World, pushed to it: see periodic_feed.
        self.feeds = {
            "loop": PeriodicFeed(FEED_PERIOD_S, self.loop.read),
            "audit": PeriodicFeed(FEED_PERIOD_S, audit.build),
        }
        for message_type in (
            protocol.Subscribe,
            protocol.WorldUpdate,
            protocol.LoopStatus,
            protocol.AuditTail,
        ):
            context.registry.add(message_type)
        # One id space for both providers: an id names one peer.
        ids = context.connection_ids
        # Several workers listen on the same ports; the kernel shares connections out.
        self.reuse_port = context.network_workers > 1

        def hub(name: str, hello_timeout_s: float) -> Hub:
            made = Hub(
                name,
                context.registry,
                auth,
                self._deliver,
                events=self._event,
                server_name=context.server_name,
                hello_timeout_s=hello_timeout_s,
                ids=ids,
                hold=context.flush_soon,
            )
            made.local[protocol.Subscribe] = self._subscribe
            return made

        self.listeners: dict[str, Listener] = {}  # by provider: "tcp", "websocket"
        self.tcp: TcpProvider | None = None
        self.ws: WebSocketProvider | None = None
        self.http: HttpFace | None = None
        if config.tcp is not None:
            tcp = config.tcp
            self.tcp = TcpProvider(
                hub("tcp", tcp.hello_timeout_s),
                max_frame_bytes=tcp.max_frame_bytes,
                max_lag_s=tcp.max_lag_s,
                max_output_bytes=tcp.max_output_bytes,
            )
            context.on_room(self.tcp.resume_all)
        if config.websocket is not None:
            ws = config.websocket
            scrape = [config.metrics_token] if config.metrics_token else []
            gate = Gate({t.token: t.role for t in config.tokens}, scrape)
            self.http = face = HttpFace(
                context.heartbeats,
                lambda: self.subscriptions.mirror.values,
                lambda: context.connections,
                self._provider_counters,
                gate=gate,
                trends=Trends(context.data_log),
                # Failed before the supervisor gives up on the loop (and exits for
                # systemd to restart it): a probe sees why in between.
                stall_s=context.control_timeout_s / 2,
            )
            self.ws = WebSocketProvider(
                hub("ws", ws.hello_timeout_s),
                max_frame_bytes=ws.max_frame_bytes,
                max_lag_s=ws.max_lag_s,
                max_output_bytes=ws.max_output_bytes,
                # The page first: HttpFace asks a token of every path it does not know.
                http_handler=first_of(
                    Dashboard(self.loop, gate=gate, state_dir=context.state_dir), face
                ),
            )
            context.on_room(self.ws.resume_all)
        # NORMAL messages wait in their hub until the next flush to the control process.
        context.on_flush(self._hand_over)
        context.on_topic(NET_SEND, self._send)
        context.on_topic(WORLD_VALUE, self.subscriptions.on_record)
        context.on_topic(WORLD_REMOVED, self.subscriptions.on_record)

    async def start(self) -> None:
        reuse = self.reuse_port
        configured = (
            ("tcp", self.tcp, self.config.tcp),
            ("websocket", self.ws, self.config.websocket),
        )
        for name, provider, listen in configured:
            if provider is None or listen is None:
                continue
            if reuse and listen.port == 0:
                log.warning(
                    "network.%s.port 0 with runtime.io_workers > 1: each io worker "
                    "listens on a port of its own",
                    name,
                )
            listener = Listener(
                name,
                provider,
                listen.host,
                listen.port,
                self._listener_changed,
                tls=self.tls,
                reuse_port=reuse,
            )
            self.listeners[name] = listener
            await listener.start()

    def _provider_counters(self) -> dict[str, Counter[str]]:
        """Each provider's counts of traffic, drops and refusals, by its hub's name."""
        return {p.hub.name: p.counters for p in (self.tcp, self.ws) if p is not None}

    def _listener_changed(self, listener: Listener) -> None:
        source = f"network.{listener.name}"
        self.context.degraded(source, None if listener.listening else listener.problem)
        payload = [
            listener.name,
            self.context.worker,
            listener.address,
            listener.listening,
            listener.error,
        ]
        self.context.send(Record(NET_LISTENER, listener.name, int(Priority.HIGH), payload))

    async def stop(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()
        self.subscriptions.close()
        for feed in self.feeds.values():
            feed.close()
        if self.http is not None:
            self.http.close()
        for provider in (self.tcp, self.ws):
            if provider is not None:
                await provider.close()
                counts = ", ".join(f"{k} {v}" for k, v in sorted(provider.counters.items()))
                log.info("%s provider stopped: %s", provider.hub.name, counts or "no traffic")

    def _deliver(self, session: Session, found: MessageInfo, msg: Any) -> bool:
        try:
            return self.context.send(_record(session, found, msg))
        except ValueError as error:  # over the channel's record size: nothing was sent
            raise _oversize(found, error) from None

    def _hand_over(self) -> None:
        for provider in (self.tcp, self.ws):
            if provider is None:
                continue
            for (session, _, _), msg in provider.hub.take_latest().items():
                if session.closed:
                    continue
                found = info(type(msg))
                try:
                    self.context.send(_record(session, found, msg))
                except ValueError as error:
                    session.refuse(_oversize(found, error))
                except Exception:
                    session.failed()

    def _subscribe(self, session: Session, request: protocol.Subscribe) -> None:
        feed = self.feeds.get(request.topic)
        if feed is None:
            self.subscriptions.subscribe(session, request)
        elif request.topic == "audit" and session.role == Role.DEVICE:
            # As /api/audit: who did what is for people (Access.PERSON), not devices.
            session.refuse(ProtocolError("forbidden", "the audit topic is for people"))
        else:
            feed.subscribe(session)

    def _event(self, session: Session, connected: bool, detail: str) -> None:
        if not connected:
            self.subscriptions.unsubscribe(session.id)
            for feed in self.feeds.values():
                feed.unsubscribe(session.id)
        self.context.connections[session.hub.name] = len(session.hub.authenticated())
        role = session.role.value if session.role is not None else ""
        payload = [session.hub.name, session.id, connected, detail, role]
        self.context.send(Record(NET_EVENT, str(session.id), int(Priority.HIGH), payload))

    def _send(self, record: Record) -> None:
        provider, connection, name, schema_hash, payload = record.payload
        priority = record.priority
        key = self._output_key(name, priority, payload)
        if self.tcp is not None and provider in ("", "tcp"):
            body = protocol.encode_parts(name, schema_hash, payload)
            if connection == 0:
                self.tcp.broadcast_body(body, priority, key)
            elif self.tcp.send_body(connection, body, priority, key):
                return
        if self.ws is not None and provider in ("", "ws"):
            if connection == 0:
                self.ws.broadcast_parts(name, schema_hash, payload, priority=priority, key=key)
            else:
                self.ws.send_parts(
                    connection, name, schema_hash, payload, priority=priority, key=key
                )

    def _output_key(self, name: str, priority: int, payload: Any) -> Hashable | None:
        """What a NORMAL message waiting for a slow peer is conflated by: its type and
        the entity its ``key`` field names, as on the way in."""
        if priority != Priority.NORMAL:
            return None
        try:
            found = self.context.registry.named(name)
        except ProtocolError:  # a type only control knows: conflated per type
            return name
        if found.key is None or not isinstance(payload, dict):
            return name
        entity = payload.get(found.key)
        return (name, entity if isinstance(entity, Hashable) else repr(entity))


def _record(session: Session, found: MessageInfo, msg: Any) -> Record:
    payload = [session.hub.name, session.id, found.name, msgspec.to_builtins(msg)]
    # The key the outbox conflates NORMAL records by, as Hub.latest does.
    key = f"{session.id}:{found.name}"
    if found.key is not None:
        key = f"{key}:{entity_key(conflation_key(found, msg))}"
    return Record(NET_MESSAGE, key, int(found.priority), payload)


def _oversize(found: MessageInfo, error: ValueError) -> ProtocolError:
    detail = f"{found.name} does not fit the appliance's io channel ({error})"
    return ProtocolError("oversize", detail)


SECTION = ConfigSection(
    "network",
    NetworkConfig,
    NetworkPlugin,
    io=NetworkIo,
    io_in_every_worker=True,
    message_types=(Acknowledge, AckResult, WiringRequest, WiringPage),
)
