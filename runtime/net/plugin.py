"""The ``network`` config section: the TCP provider in the io process, and the typed
``NetworkData`` / ``Network`` side in the control process."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field

from edgeloop.app import App
from edgeloop.config import ConfigSection, Section
from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.network import (
    NET_EVENT,
    NET_MESSAGE,
    NET_SEND,
    Network,
    NetworkReceive,
    route_network_inputs,
)
from edgeloop.net.registry import MessageInfo, Registry
from edgeloop.net.session import Session
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoReceive
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record
from edgeloop.schedule import FixedUpdate, SensorInput

log = logging.getLogger("edgeloop.net")

PROVIDER = "tcp"


class TcpListen(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, strict=True)] = 7700
    max_frame_bytes: Annotated[int, Field(ge=64, le=64 << 20, strict=True)] = (
        protocol.DEFAULT_MAX_FRAME_BYTES
    )
    hello_timeout_s: Annotated[float, Field(gt=0, le=300, strict=True)] = 5.0


class TokenGrant(Section):
    token: Annotated[str, Field(min_length=1)]
    role: Literal["viewer", "device", "operator", "admin"]


class NetworkConfig(Section):
    tcp: TcpListen = TcpListen()
    tokens: list[TokenGrant] = Field(default_factory=list)


class NetworkPlugin:
    """Control process: typed network messages for systems."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        app.insert_resource(Network(app.world.resource(Registry)))
        # After the io link hands over this tick's records, before sensors are read.
        app.configure_sets(FixedUpdate, IoReceive, NetworkReceive, SensorInput)
        app.add_systems(FixedUpdate, route_network_inputs, in_set=NetworkReceive)


class NetworkIo:
    """Io process: the TCP provider, bridged to the control process."""

    def __init__(self, config: NetworkConfig, context: IoContext) -> None:
        self.config = config
        self.context = context
        grants = [Grant(t.token, Role(t.role)) for t in config.tokens]
        self.provider = TcpProvider(
            context.registry,
            Authenticator(grants),
            self._deliver,
            max_frame_bytes=config.tcp.max_frame_bytes,
            hello_timeout_s=config.tcp.hello_timeout_s,
            server_name=context.server_name,
            events=self._event,
        )
        context.on_topic(NET_SEND, self._send)
        context.on_room(self.provider.resume_all)

    async def start(self) -> None:
        await self.provider.start(self.config.tcp.host, self.config.tcp.port)

    async def stop(self) -> None:
        await self.provider.close()

    def _deliver(self, connection: Session, found: MessageInfo, msg: Any) -> bool:
        payload = [PROVIDER, connection.id, found.name, msgspec.to_builtins(msg)]
        # NORMAL telemetry is conflated per (connection, type): the latest wins.
        key = f"{connection.id}:{found.name}"
        return self.context.send(Record(NET_MESSAGE, key, int(found.priority), payload))

    def _event(self, connection: Session, connected: bool, detail: str) -> None:
        self.context.connections[PROVIDER] = len(self.provider.hub.authenticated())
        payload = [PROVIDER, connection.id, connected, detail]
        self.context.send(Record(NET_EVENT, str(connection.id), int(Priority.HIGH), payload))

    def _send(self, record: Record) -> None:
        provider, connection, name, schema_hash, payload = record.payload
        if provider != PROVIDER:
            return
        body = protocol.encode_parts(name, schema_hash, payload)
        if connection == 0:
            self.provider.broadcast_body(body)
        else:
            self.provider.send_body(connection, body)


SECTION = ConfigSection("network", NetworkConfig, NetworkPlugin, io=NetworkIo)
