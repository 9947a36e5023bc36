"""Both processes of a field driver in one event loop, over the real io channel.

The io part runs on an ``IoService`` (as in the io process); the control side is an App
with the ``IoLink`` on the other end of the SEQPACKET pair (as in the control process).
``Field.until`` ticks the App while the event loop runs the driver, until a condition
on the World holds or a deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeloop.app import App
from edgeloop.config import ConfigSection, Section
from edgeloop.drivers.field_bridge import FieldModel
from edgeloop.drivers.health import DeviceHealth
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.world import World
from tests.ticking import tick_until

T = TypeVar("T")
TICK_S = 0.01


@dataclass
class Field:
    app: App
    link: IoLink
    service: IoService
    part: Any

    @property
    def world(self) -> World:
        return self.app.world

    @property
    def model(self) -> FieldModel:
        return self.world.resource(FieldModel)

    def component(self, entity: str, component: str) -> Any:
        """The component ``component`` of the entity named ``entity``."""
        return self.world.get(self.model.entities[entity], self.model.component(component))

    def health(self, device: str) -> DeviceHealth:
        return self.model.health[device]

    async def tick(self, count: int = 1) -> None:
        for _ in range(count):
            await asyncio.sleep(TICK_S)
            self.link.read_available()
            self.app.tick()

    async def until(
        self, condition: Callable[[Field], T], timeout_s: float = 10.0, what: str = ""
    ) -> T:
        """Tick until ``condition(self)`` is truthy; its value, or AssertionError."""
        return await tick_until(self, condition, self.tick, timeout_s, what)


@contextlib.asynccontextmanager
async def running_field(section: ConfigSection, config: Section) -> AsyncIterator[Field]:
    """The section's io part and control plugin, connected, started and then stopped."""
    control_end, io_end = socketpair()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats)
    link = IoLink(Channel(control_end))
    app = App()
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(section.plugin(config))
    assert section.io is not None, f"section {section.name} has no io part"
    part = section.io(config, service)
    runner = asyncio.create_task(service.run([part]))
    app.startup()
    try:
        yield Field(app, link, service, part)
    finally:
        service.stopped.set()
        await asyncio.wait_for(runner, 10)
        heartbeats.close()
        for channel in link.channels:
            if channel is not None:
                channel.close()
        io_end.close()


def field_value(entity: str, component: str, name: str) -> Callable[[Field], Any]:
    def read(field: Field) -> Any:
        return getattr(field.component(entity, component), name)

    return read
