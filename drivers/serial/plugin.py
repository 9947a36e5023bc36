"""The ``serial`` section: the control side (every device an entity) and its io part."""

from __future__ import annotations

from collections.abc import Iterator

from edgeloop.app import App
from edgeloop.config import ConfigSection
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.points import point_claims
from edgeloop.drivers.serial.config import DRIVER, SerialConfig
from edgeloop.drivers.serial.io import SerialIo
from edgeloop.wiring import Claim


class SerialPlugin:
    def __init__(self, config: SerialConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        specs = [
            DeviceSpec(
                device.name,
                DRIVER,
                device.points,
                device.watchdog_deadline_s(),
                device.watchdog_recovery,
            )
            for device in self.config.devices
        ]
        add_field_devices(app, DRIVER, specs)


def wiring(config: SerialConfig) -> Iterator[Claim]:
    for index, device in enumerate(config.devices):
        yield from point_claims(DRIVER, device.name, device.points, ("devices", index))


SECTION = ConfigSection(DRIVER, SerialConfig, SerialPlugin, wiring=wiring, io=SerialIo)
