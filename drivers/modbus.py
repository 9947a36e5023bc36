"""Modbus client driver, config section ``modbus``: devices on TCP and RTU lines, their
points polled in planned blocks into the World, outputs written back.

``lines`` are TCP addresses or RTU serial ports with the devices (unit ids) reached
through them; each device has poll groups and points (``modbus_config``). Per device and
poll group the points of one table are read in the fewest requests (``modbus_plan``),
each block decoded by a plan made once (``modbus_codec``), by a task per connection
(``modbus_io``).
"""

from __future__ import annotations

from edgeloop.app import App
from edgeloop.config import ConfigSection
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices
from edgeloop.drivers.modbus_config import (
    ModbusConfig,
    ModbusDevice,
    ModbusLine,
    ModbusPoint,
    RtuLine,
    TcpLine,
)
from edgeloop.drivers.modbus_io import DRIVER, ModbusIo

__all__ = [
    "SECTION",
    "ModbusConfig",
    "ModbusDevice",
    "ModbusIo",
    "ModbusLine",
    "ModbusPlugin",
    "ModbusPoint",
    "RtuLine",
    "TcpLine",
]


class ModbusPlugin:
    """The control side: every device an entity, every point a component field."""

    def __init__(self, config: ModbusConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        specs = [DeviceSpec(d.name, DRIVER, d.points) for d in self.config.devices()]
        add_field_devices(app, DRIVER, specs)


SECTION = ConfigSection("modbus", ModbusConfig, ModbusPlugin, io=ModbusIo)
