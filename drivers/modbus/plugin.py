"""The ``modbus`` section: the control side (every device an entity) and its io part."""

from __future__ import annotations

from collections.abc import Iterator

from edgeloop.app import App
from edgeloop.config import ConfigSection
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.modbus.config import DRIVER, ModbusConfig
from edgeloop.drivers.modbus.io import ModbusIo
from edgeloop.drivers.points import point_claims
from edgeloop.wiring import Claim


class ModbusPlugin:
    """The control side: every device an entity, every point a component field."""

    def __init__(self, config: ModbusConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        specs = [
            DeviceSpec(
                device.name,
                DRIVER,
                device.points,
                device.watchdog_deadline_s(line.timeout_s),
                device.watchdog_recovery,
            )
            for line in self.config.lines
            for device in line.devices
        ]
        add_field_devices(app, DRIVER, specs)


def wiring(config: ModbusConfig) -> Iterator[Claim]:
    for i, line in enumerate(config.lines):
        for j, device in enumerate(line.devices):
            yield from point_claims(DRIVER, device.name, device.points, ("lines", i, "devices", j))


SECTION = ConfigSection(DRIVER, ModbusConfig, ModbusPlugin, wiring=wiring, io=ModbusIo)
