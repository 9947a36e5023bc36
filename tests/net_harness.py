"""The network section's two halves in one event loop, over the real io channel.

``NetworkIo`` runs on an ``IoService`` (as in the io process) with real listeners on
127.0.0.1; the control side is an App with the ``IoLink`` and ``NetworkPlugin`` on the
other end of the SEQPACKET pair (as in the control process). ``Net.until`` ticks the App
while the event loop serves peers, until a condition holds or a deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeloop.app import App
from edgeloop.net.plugin import NetworkConfig, NetworkIo, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.schedule import FixedUpdate, SensorInput
from edgeloop.world import World
from tests.ticking import tick_until

T = TypeVar("T")
TICK_S = 0.01


@dataclass
class Net:
    app: App
    service: IoService
    part: NetworkIo
    heartbeats: Heartbeats

    @property
    def world(self) -> World:
        return self.app.world

    def port(self, provider: str) -> int:
        return self.part.listeners[provider].port

    async def tick(self) -> None:
        await asyncio.sleep(TICK_S)
        self.world.resource(IoLink).read_available()
        self.app.tick()

    async def until(self, condition: Callable[[Net], T], timeout_s: float = 10.0) -> T:
        """Tick until ``condition(self)`` is truthy; its value, or AssertionError."""
        return await tick_until(self, condition, self.tick, timeout_s)


@contextlib.asynccontextmanager
async def running_network(
    config: NetworkConfig,
    message_types: Iterable[type],
    systems: Iterable[Callable[[World], None]] = (),
) -> AsyncIterator[Net]:
    """Both halves, connected, started (the first bind tried) and then stopped;
    ``systems`` run in SensorInput, after the network's inputs are routed."""
    types = list(message_types)
    control_end, io_end = socketpair()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats, Registry(types))
    link = IoLink(Channel(control_end))
    app = App()
    app.insert_resource(Registry(types))
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(config))
    for system in systems:
        app.add_systems(FixedUpdate, system, in_set=SensorInput)
    part = NetworkIo(config, service)
    runner = asyncio.create_task(service.run([part]))
    app.startup()
    net = Net(app, service, part, heartbeats)
    expected = [name for name in ("tcp", "websocket") if getattr(config, name) is not None]
    await net.until(lambda n: all(_tried(n.part, name) for name in expected))
    try:
        yield net
    finally:
        service.stopped.set()
        await asyncio.wait_for(runner, 10)
        heartbeats.close()
        link.channels[0].close()  # type: ignore[union-attr]
        io_end.close()


def _tried(part: NetworkIo, name: str) -> bool:
    listener = part.listeners.get(name)
    return listener is not None and (listener.listening or listener.failures > 0)


def tcp_and_ws_on_any_port(**listen: Any) -> NetworkConfig:
    """Both providers on 127.0.0.1, port 0, with a device and a viewer token."""
    return NetworkConfig.model_validate(
        {
            "tcp": {"port": 0, **listen},
            "websocket": {"port": 0, **listen},
            "tokens": [
                {"token": "robot-token-0123456789", "role": "device"},
                {"token": "viewer-token-0123456789", "role": "viewer"},
            ],
        }
    )
