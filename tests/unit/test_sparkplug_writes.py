"""A Sparkplug host's writes in the control process: through the checks of any command
(writable, type, bounds, the field in the World, the safe state), each one audited;
and the fields the metrics name join the change feed even with no data log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeloop import App, Time
from edgeloop.alarms import Alarms
from edgeloop.component import Component
from edgeloop.data.collect import TOPIC_BATCH, DataCollector
from edgeloop.drivers.points import Quality
from edgeloop.names import Name
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, Record, socketpair
from edgeloop.safety.audit import FILE_NAME, AuditLog
from edgeloop.safety.safe_state import HeldOutputs, SafeState
from edgeloop.safety.systems import add_safe_state
from edgeloop.uplink.sparkplug_config import SparkplugConfig
from edgeloop.uplink.sparkplug_plugin import ALARM, SparkplugPlugin, SparkplugWrites
from edgeloop.uplink.sparkplug_records import TOPIC_STATUS, TOPIC_WRITE

HOST = "sparkplug host scada via 127.0.0.1:1883"


class Pid(Component):
    setpoint: float = 1.0
    mode: int = 0


class Tank(Component):
    level: float = 0.0
    level_quality: Quality = Quality.STALE  # as a driver's input point has it


CONFIG = SparkplugConfig.model_validate(
    {
        "group_id": "plant",
        "edge_node_id": "cell1",
        "devices": [
            {
                "id": "tank1",
                "metrics": [
                    {"name": "level", "field": "tank1.Tank.level"},
                    {
                        "name": "setpoint",
                        "field": "tank1.Pid.setpoint",
                        "writable": True,
                        "min": 0.0,
                        "max": 2.0,
                    },
                    {"name": "mode", "field": "tank1.Pid.mode", "type": "int32", "writable": True},
                ],
            }
        ],
    }
)
LEVEL, SETPOINT, MODE = 0, 1, 2  # the metrics' indexes


class Linked:
    def __init__(self, tmp_path: Path) -> None:
        control_end, io_end = socketpair()
        self.link = IoLink(Channel(control_end))
        self.io = Channel(io_end)
        self.app = App()
        self.app.add_plugin(IoLinkPlugin(self.link))
        add_safe_state(self.app)
        self.app.add_plugin(SparkplugPlugin(CONFIG))
        self.audit = AuditLog.open(tmp_path)
        self.audit_dir = tmp_path
        self.app.insert_resource(self.audit)
        self.pid = Pid()
        self.app.world.spawn(Name("tank1"), self.pid, Tank())
        self.app.startup()
        self.app.run_for(1)

    def write(self, *writes: list[Any]) -> None:
        self.io.send(0, [Record(TOPIC_WRITE, HOST, int(Priority.HIGH), list(writes))])
        self.link.read_available()
        self.app.run_for(1)

    def audited(self) -> list[dict[str, Any]]:
        assert self.audit.flush(5.0)
        text = (self.audit_dir / FILE_NAME).read_text()
        return [json.loads(line) for line in text.splitlines() if '"command"' in line]


def test_a_write_within_bounds_is_applied_and_audited(tmp_path: Path) -> None:
    linked = Linked(tmp_path)
    linked.write([SETPOINT, 1.5, "tank1/setpoint"])
    assert linked.pid.setpoint == 1.5
    (entry,) = linked.audited()
    assert entry["by"] == HOST
    assert entry["accepted"] is True
    assert "tank1/setpoint (tank1.Pid.setpoint)" in entry["what"]


def test_writes_outside_the_checks_are_refused_with_a_reason(tmp_path: Path) -> None:
    linked = Linked(tmp_path)
    linked.write(
        [SETPOINT, 2.5, "tank1/setpoint"],
        [SETPOINT, True, "tank1/setpoint"],
        [LEVEL, 0.3, "tank1/level"],
        [MODE, 1.5, "tank1/mode"],
        [-1, 1.0, "tank1/nothing"],
    )
    assert linked.pid.setpoint == 1.0
    assert linked.pid.mode == 0
    reasons = [(e["accepted"], e["reason"]) for e in linked.audited()]
    assert reasons == [
        (False, "2.5 is above max 2"),
        (False, "True is not a number"),
        (False, "the metric is not writable"),
        (False, "the field holds whole numbers"),
        (False, "no such metric"),
    ]
    assert linked.app.world.resource(SparkplugWrites).refused == 5


def test_while_e_stopped_a_held_output_is_refused_and_a_setpoint_applied(
    tmp_path: Path,
) -> None:
    """The one policy for writes from outside (edgeloop.safety.field_writes): refused
    while the safe state holds the field, taken otherwise; a Modbus client's alike."""
    linked = Linked(tmp_path)
    world = linked.app.world
    safe = world.resource(SafeState)
    safe.trip("estop", "pressed", world.resource(Time).tick, latched=True)
    # What an output side (the field bridge, GPIO) does for its held output fields.
    world.resource(HeldOutputs).fields.add(("tank1", "Pid", "mode"))
    linked.write([MODE, 2, "tank1/mode"], [SETPOINT, 0.5, "tank1/setpoint"])
    assert (linked.pid.mode, linked.pid.setpoint) == (0, 0.5)
    safe.release("estop")
    safe.reset()
    world.resource(HeldOutputs).fields.clear()
    linked.write([MODE, 2, "tank1/mode"])
    assert linked.pid.mode == 2
    refused, setpoint, applied = linked.audited()
    assert [e["accepted"] for e in (refused, setpoint, applied)] == [False, True, True]
    assert refused["reason"] == "the safe state holds it: estop (pressed)"


def test_dropped_changes_raise_an_alarm_until_none_are(tmp_path: Path) -> None:
    linked = Linked(tmp_path)
    linked.io.send(0, [Record(TOPIC_STATUS, "", int(Priority.NORMAL), [False, 1000, 12])])
    linked.link.read_available()
    linked.app.run_for(1)
    alarm = linked.app.world.resource(Alarms).get(ALARM)
    assert alarm is not None and alarm.active
    assert "12 changes dropped" in alarm.text


def test_the_metrics_fields_are_collected_without_a_data_log(tmp_path: Path) -> None:
    linked = Linked(tmp_path)
    fields = {"tank1.Tank.level", "tank1.Pid.setpoint", "tank1.Pid.mode"}
    qualities = {f"{name}_quality" for name in fields}
    assert linked.app.world.resource(DataCollector).feed == fields | qualities
    linked.app.run_for(1)  # the records of an Update pass leave in the next tick's IoSend
    got = linked.io.receive()
    batches = [r.payload for b in got for r in b.records if r.topic == TOPIC_BATCH]
    declared = {name: logged for _, _, d, _ in batches for _, name, logged in d}
    assert declared == {
        "tank1.Tank.level": False,
        "tank1.Tank.level_quality": False,  # an int enum, fed for the metric's quality
        "tank1.Pid.setpoint": False,
        "tank1.Pid.mode": False,
    }, "declared as not for the data log"
