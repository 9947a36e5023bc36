"""Control side of the Sparkplug devices' lives: whether each configured device is alive,
from the ``DeviceHealth`` of the driver device its ``health`` names, sent to the edge
node (``sparkplug.devices``) when it changes, and again after the io process restarts.
The node turns it into DDEATH and DBIRTH (``sparkplug_node``).

Dead: that driver device is ``offline`` (a lost connection, or errors in a row past
its ``offline_after``; one never reached gets there too), or its health entity is not
in the World. Alive otherwise: ``online``, ``degraded`` (it answers, if not always) and
``connecting`` (not tried yet: the first births then do not flap to a DDEATH and
back). A device without ``health`` is always alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.drivers.health import DeviceHealth
from edgeloop.names import find_entity
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import HOME_WORKER, IoLink
from edgeloop.schedule import DataLogging, Update
from edgeloop.uplink.sparkplug_config import SparkplugConfig
from edgeloop.uplink.sparkplug_records import TOPIC_DEVICES
from edgeloop.world import World

ALIVE_STATES = frozenset({"connecting", "online", "degraded"})
FIND_EVERY_S = 1.0  # how often a health entity not in the World yet is looked for again


@dataclass
class SparkplugDevices:
    """Resource: each device's health entity (None: always alive), its DeviceHealth once
    found, and what was last sent."""

    health: list[str | None]
    found: list[DeviceHealth | None] = field(default_factory=list)
    sent: list[bool] | None = None
    generation: int = -1  # of the io worker it was sent to
    _find_at: float = 0.0

    def alive(self, world: World) -> list[bool]:
        now = world.resource(Time).elapsed
        look = now >= self._find_at
        if look:
            self._find_at = now + FIND_EVERY_S
        said = []
        for index, entity_name in enumerate(self.health):
            if entity_name is None:
                said.append(True)
                continue
            health = self.found[index]
            if (health is None or not health.attached()) and look:
                health = self.found[index] = _health_of(world, entity_name)
            said.append(health is not None and health.attached() and health.state in ALIVE_STATES)
        return said


def _health_of(world: World, name: str) -> DeviceHealth | None:
    entity = find_entity(world, name)
    if entity is None or not world.has(entity, DeviceHealth):
        return None
    return world.get(entity, DeviceHealth)


def report_devices(world: World) -> None:
    """DataLogging, after the change feed: each device's life, when it changed."""
    devices = world.resource(SparkplugDevices)
    link = world.get_resource(IoLink)
    if link is None:
        return
    alive = devices.alive(world)
    generation = link.generations[HOME_WORKER]
    if alive == devices.sent and generation == devices.generation:
        return
    devices.sent, devices.generation = alive, generation
    link.send(TOPIC_DEVICES, "", alive, Priority.HIGH, worker=HOME_WORKER)


def add_device_lives(app: App, config: SparkplugConfig) -> None:
    """The devices' lives reported, if any device has a ``health``."""
    health = [device.health for device in config.devices]
    if not any(name is not None for name in health):
        return
    app.insert_resource(SparkplugDevices(health, [None] * len(health)))
    app.add_systems(Update, report_devices, in_set=DataLogging)
