"""The ``sparkplug`` section: World fields published as Sparkplug B metrics by the io
process (``sparkplug_node``), and what a host writes checked and applied here.

Control side: the metrics' fields join the change feed (``edgeloop.data.collect``);
``apply_sparkplug_writes`` (UplinkInput) takes each write a host sent (an NCMD or
DCMD to a metric) through the checks of any command: the metric must exist and be
writable, the value of its type and within ``min``/``max`` (``value_refusal``, as a
Modbus-server point's), then ``checked_write`` as every write from outside: the field in
the World and not held by the safe state; each write, applied or refused, goes in the
audit log with who sent it.
``watch_backlog`` raises an alarm while the backlog has dropped changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.config import ConfigSection
from edgeloop.data.collect import add_change_feed
from edgeloop.field_ref import FieldIndex, FieldRef
from edgeloop.logs import every_power_of_ten
from edgeloop.realtime.io_link import IoInput
from edgeloop.realtime.io_part import IoContext, IoPart
from edgeloop.safety.audit_events import audit
from edgeloop.safety.field_writes import ValueKind, checked_write, value_refusal
from edgeloop.schedule import FixedUpdate, IoReceive, SensorInput, UplinkInput
from edgeloop.uplink.sparkplug_config import Metric, SparkplugConfig
from edgeloop.uplink.sparkplug_devices import add_device_lives
from edgeloop.uplink.sparkplug_records import TOPIC_STATUS, TOPIC_WRITE
from edgeloop.wiring import Claim, read
from edgeloop.world import World

log = logging.getLogger("edgeloop.sparkplug")

ALARM = "sparkplug.backlog"


@dataclass
class SparkplugWrites:
    """Resource: the metrics, their fields once found, and what came of hosts' writes."""

    metrics: list[Metric]
    components: dict[int, Component] = field(default_factory=dict)
    applied: int = 0
    refused: int = 0
    live: bool = False  # the io side's last word: publishing live
    waiting: int = 0  # changes in its backlog
    dropped: int = 0

    def component(self, world: World, metric: Metric) -> Component | None:
        found = self.components.get(metric.index)
        if found is not None and found.attached():
            return found
        ref = FieldRef.parse(metric.config.field)
        component, _ = FieldIndex(world).find(ref)
        if component is not None:
            self.components[metric.index] = component
        return component


def apply_sparkplug_writes(world: World) -> None:
    """UplinkInput: hosts' writes, checked as any command, applied; the io side's status."""
    writes = world.resource(SparkplugWrites)
    for message in world.read(IoInput):
        if message.topic == TOPIC_WRITE and isinstance(message.payload, list):
            who = message.key or "a sparkplug host"
            for write in message.payload:
                if isinstance(write, list) and len(write) == 3:
                    _apply(world, writes, who, write)
        elif message.topic == TOPIC_STATUS and isinstance(message.payload, list):
            live, waiting, dropped = message.payload
            writes.live, writes.waiting, writes.dropped = bool(live), int(waiting), int(dropped)
            _alarm(world, writes)


def _alarm(world: World, writes: SparkplugWrites) -> None:
    alarms = world.get_resource(Alarms)
    if alarms is None:
        return
    tick = world.resource(Time).tick
    if writes.dropped:
        text = f"sparkplug backlog full: {writes.dropped} changes dropped, never published"
        alarms.activate(ALARM, text, Severity.WARNING, tick)
    else:
        alarms.clear(ALARM, tick)


def _apply(world: World, writes: SparkplugWrites, who: str, write: list[Any]) -> None:
    index, value, where = write
    if not isinstance(index, int) or not 0 <= index < len(writes.metrics):
        _refuse(world, writes, who, f"{where}", value=value, reason="no such metric")
        return
    metric = writes.metrics[index]
    what = f"{where} ({metric.config.field})"
    ref = FieldRef.parse(metric.config.field)
    component = writes.component(world, metric)
    reason = _refusal(metric, value)
    key = (ref.entity, ref.component, ref.field)
    new, reason = (None, reason) if reason else checked_write(world, key, component, value)
    if reason is not None or component is None:
        _refuse(world, writes, who, what, value=value, reason=reason or "")
        return
    current = getattr(component, ref.field)
    writes.applied += 1
    audit(world, "command", by=who, what=f"sparkplug write {what}", value=value,
          accepted=True, reason="applied")  # fmt: skip
    if new != current:
        setattr(component, ref.field, new)
        log.info("write from %s: %s = %r", who, metric.config.field, new)


def _refusal(metric: Metric, value: Any) -> str | None:
    config = metric.config
    if not config.writable:
        return "the metric is not writable"
    kind: ValueKind = "bool" if config.type == "boolean" else "number"
    return value_refusal(value, kind, low=config.min, high=config.max)


def _refuse(
    world: World, writes: SparkplugWrites, who: str, what: str, *, value: Any, reason: str
) -> None:
    writes.refused += 1
    audit(world, "command", by=who, what=f"sparkplug write {what}", value=value,
          accepted=False, reason=reason)  # fmt: skip
    if every_power_of_ten(writes.refused):
        log.warning("write from %s refused: %s = %r: %s (%d refused so far)",
                    who, what, value, reason, writes.refused)  # fmt: skip


class SparkplugPlugin:
    def __init__(self, config: SparkplugConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        metrics = self.config.flat()
        # a field's quality (a driver point's) goes with it: the metric's Quality property
        fields = [m.config.field for m in metrics]
        add_change_feed(app).feed.update([*fields, *(f"{f}_quality" for f in fields)])
        add_device_lives(app, self.config)
        app.insert_resource(SparkplugWrites(metrics))
        app.configure_sets(FixedUpdate, IoReceive, UplinkInput, SensorInput)
        app.add_systems(FixedUpdate, apply_sparkplug_writes, in_set=UplinkInput)


def wiring(config: SparkplugConfig) -> Iterator[Claim]:
    """Every metric's field is read; a writable one written by the host."""
    places: list[tuple[Any, ...]] = [("metrics", i) for i in range(len(config.metrics))]
    for d, device in enumerate(config.devices):
        places += [("devices", d, "metrics", i) for i in range(len(device.metrics))]
    for d, device in enumerate(config.devices):
        if device.health is not None:
            target = f"{device.health}.DeviceHealth.state"
            yield read(target, f"sparkplug device {device.id}", "Sparkplug device life",
                       ("devices", d, "health"))  # fmt: skip
    for metric, at in zip(config.flat(), places, strict=True):
        yield read(metric.config.field, metric.where, "Sparkplug metric", at)
        if metric.config.writable:
            how = "Sparkplug host write"
            yield Claim(metric.config.field, "write", metric.where, how, at,
                        min=metric.config.min, max=metric.config.max)  # fmt: skip


def edge_node(config: SparkplugConfig, context: IoContext) -> IoPart:
    """The io part, imported only when configured: aiomqtt, paho and protobuf would
    otherwise add ~0.3 s (more on a Pi) to the start of every edgeloop process."""
    from edgeloop.uplink.sparkplug_node import SparkplugNode  # noqa: PLC0415

    return SparkplugNode(config, context)


SECTION = ConfigSection("sparkplug", SparkplugConfig, SparkplugPlugin, io=edge_node, wiring=wiring)
