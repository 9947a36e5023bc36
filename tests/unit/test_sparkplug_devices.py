"""The control side of the Sparkplug devices' lives: each device's ``health`` entity's
DeviceHealth, as ``sparkplug.devices`` records, sent when one changes."""

from __future__ import annotations

import select
from typing import Any

from edgeloop import App
from edgeloop.drivers.health import DeviceHealth
from edgeloop.names import Name
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.uplink.sparkplug_config import SparkplugConfig
from edgeloop.uplink.sparkplug_plugin import SparkplugPlugin, wiring
from edgeloop.uplink.sparkplug_records import TOPIC_DEVICES

CONFIG = SparkplugConfig.model_validate(
    {
        "group_id": "plant",
        "edge_node_id": "cell1",
        "devices": [
            {"id": "tank1", "metrics": [{"name": "level", "field": "tank1.Tank.level"}]},
            {"id": "press1", "health": "plc1",
             "metrics": [{"name": "cycles", "field": "press1.Press.cycles"}]},
            {"id": "press2", "health": "plc2",
             "metrics": [{"name": "cycles", "field": "press2.Press.cycles"}]},
        ],
    }
)  # fmt: skip


def _said(io: Channel) -> list[Any]:
    found = []
    while select.select([io.sock], [], [], 0.2)[0]:
        for batch in io.receive():
            found += [r.payload for r in batch.records if r.topic == TOPIC_DEVICES]
    return found


def test_each_device_is_alive_unless_its_driver_device_is_offline_or_missing() -> None:
    control_end, io_end = socketpair()
    io = Channel(io_end)
    app = App()
    app.add_plugin(IoLinkPlugin(IoLink(Channel(control_end))))
    app.add_plugin(SparkplugPlugin(CONFIG))
    plc1 = DeviceHealth(state="connecting")
    app.world.spawn(Name("plc1"), plc1)  # plc2 is in no driver: never alive
    app.startup()
    app.run_for(3)
    assert _said(io) == [[True, True, False]], "tank1 has no health; connecting is alive"
    plc1.state = "degraded"
    app.run_for(3)
    assert _said(io) == [], "nothing sent while nothing changed"
    plc1.state = "offline"
    app.run_for(2)
    plc1.state = "online"
    app.run_for(2)
    assert _said(io) == [[True, False, False], [True, True, False]]


def test_a_devices_health_is_in_its_wiring_as_read() -> None:
    claims = [c for c in wiring(CONFIG) if c.field.endswith("DeviceHealth.state")]
    assert [(c.field, c.access) for c in claims] == [
        ("plc1.DeviceHealth.state", "read"),
        ("plc2.DeviceHealth.state", "read"),
    ]
