"""A driver's io side and the control side over the real io channel (tests/field_harness)."""

from __future__ import annotations

import asyncio
from typing import Any

from edgeloop.app import App
from edgeloop.config import ConfigSection, Section
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.field_link import DeviceChannel, on_writes
from edgeloop.drivers.points import PointMap, Quality
from edgeloop.realtime.io_part import IoContext
from tests.field_harness import Field, field_value, running_field

POINTS = [
    PointMap(entity="tank1", component="Tank", field="level"),
    PointMap(entity="tank1", component="Tank", field="valve", direction="output"),
]


class LoopbackConfig(Section):
    pass


class LoopbackPlugin:
    def __init__(self, config: LoopbackConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_field_devices(app, "loopback", [DeviceSpec("dev1", "loopback", POINTS)])


class LoopbackIo:
    """A device in memory: what a driver does with a DeviceChannel, minus the bus."""

    def __init__(self, config: LoopbackConfig, context: IoContext) -> None:
        self.channel = DeviceChannel(context, "dev1", "loopback", POINTS)
        self.written: list[tuple[int, Any]] = []
        self.got_write = asyncio.Event()
        on_writes(context, {"dev1": self._write})

    def _write(self, writes: list[tuple[int, Any]]) -> None:
        self.written.extend(writes)
        self.got_write.set()

    async def start(self) -> None:
        self.channel.good(0.001)

    async def stop(self) -> None:
        pass


SECTION = ConfigSection("loopback", LoopbackConfig, LoopbackPlugin, io=LoopbackIo)


async def test_values_health_and_writes_cross_the_real_channel() -> None:
    async with running_field(SECTION, LoopbackConfig()) as field:
        part: LoopbackIo = field.part
        await field.until(lambda f: f.health("dev1").state == "online", what="online")
        part.channel.publish("block0", [[0, 2.5, int(Quality.GOOD)]])
        await field.until(lambda f: field_value("tank1", "Tank", "level")(f) == 2.5)
        await field.until(lambda f: part.written == [(1, 0.0)], what="initial output write")
        field.component("tank1", "Tank").valve = 0.75
        await field.until(lambda f: (1, 0.75) in part.written, what="changed output written")

        part.channel.error("disconnect", "cable pulled")

        def stale_and_offline(f: Field) -> bool:
            tank = f.component("tank1", "Tank")
            return tank.level_quality is Quality.STALE and f.health("dev1").state == "offline"

        await field.until(stale_and_offline, what="stale values once the device is offline")
        assert field.component("tank1", "Tank").level == 2.5, "the last value is kept, as stale"
        assert field.health("dev1").error_count("disconnect") == 1
