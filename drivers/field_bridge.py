"""The control side of the field drivers: device points as entities and components.

Each driver's plugin calls ``add_field_devices``; the first call adds the bridge's
systems. At Startup every device becomes an entity (``Name`` + ``DeviceHealth``) and
every entity named by a point gets the components its points name. Those component
classes are made from the config: a point ``{entity: tank1, component: Tank, field:
level}`` gives a ``Tank`` component with ``level: float`` and ``level_quality: Quality``.
Control logic finds them with ``FieldModel.component("Tank")``.

Each tick, SensorInput starts with the values and health the io process sent; after
ActuatorOutput, output fields that changed since they were last written (by control
logic; not by a read of the same point) go to the io process as one HIGH record per
device. Comparing the few output fields each tick is cheaper than change stamps would
be, and it is exact: a field set back to the value last written is no change.

The output side is where ``SafeState`` holds: while it holds a device, each of its
outputs with a ``safe_value`` is set to it (in the World too) and sent at CRITICAL
priority as the hold begins, even if it was the value last written (the device may
have been changed there since); an output without one keeps what the device has. A
device that comes back online while held gets its safe values again. A value outside
an output's ``min``/``max`` is refused, never clamped: the field goes back to what the device
holds, the refusal is counted, logged (rate-limited) and raised as an alarm.

A device may do its I/O in the control process instead (GPIO lines: reading or driving
one is a non-blocking ioctl; see ``edgeloop.drivers.gpio.plugin``): its ``DeviceSpec``
names a ``local_writer``, which gets its writes at once (in FieldOutput, and between
ticks when an e-stop edge applies the safe state), and its ``DeviceChannel`` sends into
``FieldModel.local``, read in FieldInput right after the io records, through the same
code. Everything else (quality, health, safe values, refusals, HeldOutputs) is the same;
the io process going away leaves such a device alone, apart from the ``io_lost`` safe
state that holds every output.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.component import Component, assign_unmarked, mark_changed
from edgeloop.drivers.field_link import TOPIC_HEALTH, TOPIC_VALUES, TOPIC_WRITE, WriteHandler
from edgeloop.drivers.health import DeviceHealth
from edgeloop.drivers.points import FIELD_DEFAULTS, PointMap, Quality
from edgeloop.logs import every_power_of_ten
from edgeloop.names import Name
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import (
    HOME_WORKER,
    IO_LOST,
    IoInput,
    IoLink,
)
from edgeloop.realtime.ipc import Record
from edgeloop.safety.audit_events import audit
from edgeloop.safety.safe_state import HeldOutputs, SafeState
from edgeloop.safety.systems import add_safe_state, safe_output
from edgeloop.safety.watchdogs import Recovery, Watchdogs
from edgeloop.schedule import (
    ActuatorOutput,
    FieldInput,
    FieldOutput,
    FixedUpdate,
    IoReceive,
    IoSend,
    SensorInput,
    Startup,
)
from edgeloop.world import World

log = logging.getLogger("edgeloop.field")


_QUALITIES = tuple(Quality)
_STALE = int(Quality.STALE)
_UNREACHED = ("connecting", "offline")  # device health states with nothing written yet


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    driver: str
    points: Sequence[PointMap]
    # heard from (values, or health online) at least this often, or its watchdog trips
    watchdog_s: float | None = None
    watchdog_recovery: Recovery = "auto"
    # None: the io process reads and writes the device. Else its I/O runs in the control
    # process: its writes go here, its records come through ``FieldModel.local``.
    local_writer: WriteHandler | None = None


class LocalRecords:
    """The records of the devices whose I/O runs in the control process: a
    ``DeviceChannel``'s sink, read by FieldInput in the same tick."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[Record] = []

    def send(self, record: Record) -> bool:
        self.records.append(record)
        return True


# A point read into a field: (component, field, quality field, the same point's output
# side when it is "both"). A plain tuple, not a NamedTuple: only an exact tuple is
# unpacked in one step, and this is unpacked per point per poll.
_Input = tuple[Component, str, str, "_Output | None"]


@dataclass(slots=True)
class _Output:
    component: Component
    field: str
    point: PointMap
    last: Any = None  # the value last written, or read when the device changed it
    last_raw: Any = None  # ``last`` as the device holds it; None: not known
    owned: bool = False  # last written by control logic (so re-sent to a new io process)
    refused: Any = None  # the value last refused: refused once, not on every tick


class _DeviceInputs:
    """A device's input points, with the value and quality the bridge last gave each.

    The bridge is the one writer of an input field and its quality (one writer per
    field), so what it last wrote is what the field holds, and a block of values is
    compared with it by C-level list operations instead of a ``getattr`` per point.
    A point that is also an output ("both") may be written by control logic too: its
    field is compared with the value read, as before.
    """

    __slots__ = ("qualities", "targets", "values")

    def __init__(self, targets: list[_Input | None]) -> None:
        self.targets = targets
        self.values: list[Any] = [_UNSET] * len(targets)
        self.qualities: list[Quality] = [Quality.STALE] * len(targets)


_UNSET = object()  # no value applied yet: unequal to anything read


@dataclass
class FieldModel:
    """Resource: the field devices, their entities and the component classes made for them."""

    devices: dict[str, DeviceSpec] = field(default_factory=dict)
    entities: dict[str, int] = field(default_factory=dict)
    health: dict[str, DeviceHealth] = field(default_factory=dict)
    _fields: dict[str, dict[str, type]] = field(default_factory=dict)
    _classes: dict[str, type[Component]] = field(default_factory=dict)
    _inputs: dict[str, _DeviceInputs] = field(default_factory=dict)
    _outputs: dict[str, list[tuple[int, _Output]]] = field(default_factory=dict)
    bad_records: int = 0  # from the io process, not fitting the points: dropped
    refused_writes: int = 0  # output values outside their point's min/max
    # devices back online since the last FieldOutput: a held one gets its safe values
    _reconnected: set[str] = field(default_factory=set)
    _held: set[str] = field(default_factory=set)  # devices the safe state holds (HeldOutputs)
    # (entity, component, field) -> "device points[i]" of the point that reads it
    _readers: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _written: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _generation: int = -1  # of the io channel seen last: a new one is a new io process
    local: LocalRecords = field(default_factory=LocalRecords)

    def component(self, name: str) -> type[Component]:
        """The component class made for ``name`` (``KeyError`` if no point names it)."""
        return self._classes[name]

    def add(self, device: DeviceSpec) -> None:
        if device.name in self.devices:
            other = self.devices[device.name].driver
            raise ValueError(
                f"device name {device.name!r} is used twice ({other}, {device.driver})"
            )
        for index, point in enumerate(device.points):
            self._one_writer(f"{device.name} points[{index}]", point)
        self.devices[device.name] = device
        for point in device.points:
            fields = self._fields.setdefault(point.component, {})
            wanted = {point.field: point.field_type}
            if point.reads:
                wanted[f"{point.field}_quality"] = Quality
            for name, ftype in wanted.items():
                if fields.setdefault(name, ftype) is not ftype:
                    raise ValueError(
                        f"{point.component}.{name} is {fields[name].__name__} for one point "
                        f"and {ftype.__name__} for another (device {device.name!r})"
                    )

    def _one_writer(self, where: str, point: PointMap) -> None:
        """A field read from a device has that point as its one writer (and the bridge
        relies on it: it compares a block with what it last wrote there): no other point
        may read or write it. ``ValueError`` naming both points otherwise."""
        key = (point.entity, point.component, point.field)
        other = self._readers.get(key) or (self._written.get(key) if point.reads else None)
        if other is not None:
            how = "read" if key in self._readers else "written"
            raise ValueError(
                f"{where}: {'.'.join(key)} is already {how} by {other}; a field read from "
                "a device has that one point as its writer"
            )
        (self._readers if point.reads else self._written)[key] = where

    def spawn(self, world: World) -> None:
        """Make the component classes and the entities (Startup)."""
        for cname, fields in self._fields.items():
            ns: dict[str, Any] = {"__module__": __name__, "__annotations__": dict(fields)}
            for fname, ftype in fields.items():
                ns[fname] = Quality.STALE if ftype is Quality else FIELD_DEFAULTS[ftype]
            metaclass: Any = type(Component)
            self._classes[cname] = metaclass(cname, (Component,), ns)
        instances: dict[tuple[str, str], Component] = {}
        for device in self.devices.values():
            for point in device.points:
                key = (point.entity, point.component)
                if key not in instances:
                    instances[key] = self._classes[point.component]()
        by_entity: dict[str, list[Component]] = {}
        for (entity, _), component in instances.items():
            by_entity.setdefault(entity, []).append(component)
        for device in self.devices.values():
            health = self.health[device.name] = DeviceHealth(driver=device.driver)
            by_entity.setdefault(device.name, []).append(health)
        for name, components in by_entity.items():
            self.entities[name] = world.commands.spawn(Name(name), *components)
        for device in self.devices.values():
            inputs: list[_Input | None] = []
            outputs: list[tuple[int, _Output]] = []
            for index, point in enumerate(device.points):
                component = instances[(point.entity, point.component)]
                output = None
                if point.writes:
                    # An output-only point is written at start (the appliance owns it);
                    # one that is also read waits for control logic to change it.
                    initial = getattr(component, point.field) if point.reads else None
                    output = _Output(component, point.field, point, initial)
                if output is not None:
                    outputs.append((index, output))
                inputs.append(
                    (component, point.field, f"{point.field}_quality", output)
                    if point.reads
                    else None
                )
            self._inputs[device.name] = _DeviceInputs(inputs)
            self._outputs[device.name] = outputs
        watchdogs = world.resource(Watchdogs)
        period = world.resource(Time).delta
        for device in self.devices.values():
            if device.watchdog_s is not None:
                watchdogs.watch(
                    device.name,
                    device.watchdog_s,
                    device.watchdog_recovery,
                    period,
                    on_expired=partial(_silent, device.name),
                )


def add_field_devices(app: App, driver: str, devices: Sequence[DeviceSpec]) -> FieldModel:
    """Register a driver's devices; the first call adds the bridge's systems."""
    model = field_model(app)
    for device in devices:
        model.add(device)
    return model


def field_model(app: App) -> FieldModel:
    """The App's FieldModel; the first call adds the bridge's systems."""
    model = app.world.get_resource(FieldModel)
    if model is None:
        add_safe_state(app)
        model = FieldModel()
        app.insert_resource(model)
        app.add_systems(Startup, model.spawn)
        # Between the io link's sets: this tick's records in, this tick's writes out.
        app.configure_sets(FixedUpdate, IoReceive, FieldInput, SensorInput)
        app.configure_sets(FixedUpdate, ActuatorOutput, FieldOutput, IoSend)
        app.add_systems(FixedUpdate, receive_field_values, in_set=FieldInput)
        app.add_systems(FixedUpdate, send_field_writes, in_set=FieldOutput)
        safe_output(app, send_field_writes, first=True)
    return model


def receive_field_values(world: World) -> None:
    """FieldInput: the values and health the io process sent since the last tick."""
    model = world.resource(FieldModel)
    link = world.get_resource(IoLink)
    if link is not None and link.generations[HOME_WORKER] != model._generation:
        _follow_io_process(model, link)
    watchdogs = world.resource(Watchdogs)
    for record in world.read(IoInput):
        if record.topic == IO_LOST and record.payload == HOME_WORKER:
            _io_process_lost(model)
        else:
            _receive(model, watchdogs, record, record.tick)
    local = model.local
    if local.records:
        records, local.records = local.records, []
        tick = world.resource(Time).tick
        for one in records:
            _receive(model, watchdogs, one, tick)


def _receive(model: FieldModel, watchdogs: Watchdogs, record: IoInput | Record, tick: int) -> None:
    """One record of values or health, from the io process or from ``FieldModel.local``."""
    topic, key, payload = record.topic, record.key, record.payload
    try:
        if topic == TOPIC_VALUES:
            device = key.partition("/")[0]
            inputs = model._inputs.get(device)
            if inputs is not None:
                _apply_values(inputs, *payload)
                if _heard_from(payload[2]):
                    watchdogs.heard(device, tick)
        elif topic == TOPIC_HEALTH:
            health = model.health.get(key)
            if health is not None:
                was = health.state
                _apply_health(health, payload)
                if health.state == "online":
                    watchdogs.heard(key, tick)
                elif watchdogs.expired(key):
                    health.state = "offline"  # the watchdog's verdict holds till heard
                if was in _UNREACHED and health.state not in _UNREACHED:
                    model._reconnected.add(key)
    except (IndexError, KeyError, TypeError, ValueError) as error:
        # Not what this config's points expect (an io process started with another
        # config, a driver bug): the record is dropped, the control loop goes on.
        model.bad_records += 1
        if every_power_of_ten(model.bad_records):
            log.error(
                "field: dropped a %s record for %r that does not fit its points (%d so far): %s",
                topic,
                key,
                model.bad_records,
                error,
            )


def _heard_from(quality: list[int] | int) -> bool:
    """Whether a block of values is word from the device: one all STALE is the io side
    ageing out what it last had (a receive timeout, a poll overdue), and must not feed
    the device's watchdog (it would end the Disconnected state it is reporting)."""
    if isinstance(quality, int):
        return quality != _STALE
    return any(q != _STALE for q in quality)


def _follow_io_process(model: FieldModel, link: IoLink) -> None:
    """A new io process (of the worker the drivers run in) knows none of the outputs:
    they are sent again."""
    if model._generation >= 0:
        for device, outputs in model._outputs.items():
            if model.devices[device].local_writer is not None:
                continue  # its lines are in this process: they hold what was written
            for _, output in outputs:
                if output.owned or not output.point.reads:
                    output.last = output.last_raw = None
    model._generation = link.generations[HOME_WORKER]


def _io_process_lost(model: FieldModel) -> None:
    """Nothing is read while the drivers' io process is down, and its last values came
    just before this: every value is STALE from here on, every device offline (but
    those whose I/O runs in this process)."""
    for device, spec in model.devices.items():
        if spec.local_writer is None:
            _disconnected(model, device, "io process not connected")


def _silent(device: str, world: World) -> None:
    """A device's watchdog expired: whatever the io side said, it is Disconnected."""
    model = world.resource(FieldModel)
    silent = world.resource(Watchdogs).deadline_ticks(device) or 0
    seconds = silent * world.resource(Time).delta
    _disconnected(model, device, f"watchdog: nothing heard for {seconds:g} s")


def _disconnected(model: FieldModel, device: str, why: str) -> None:
    inputs = model._inputs[device]
    for index, target in enumerate(inputs.targets):
        if target is not None and inputs.qualities[index] is Quality.GOOD:
            component, _, quality_field, _ = target
            setattr(component, quality_field, Quality.STALE)
            inputs.qualities[index] = Quality.STALE
    health = model.health[device]
    health.state = "offline"
    health.last_error = why


def _device_form(point: PointMap, value: Any) -> Any:
    """``value`` as the device holds it (None if it cannot hold it)."""
    try:
        return point.to_raw(value)
    except (TypeError, ValueError):
        return None


def _apply_values(
    inputs: _DeviceInputs,
    indices: list[int] | int,
    values: list[Any],
    quality: list[int] | int,
) -> None:
    # Per point, on every poll of every device: this loop was half the CPU a Modbus
    # point costs the control process (bench/modbus_poll.py), so what can be done for a
    # whole block in C (slices, compares, counts) is, and the loop itself is kept bare.
    count = len(values)
    # Everything checked before anything is written: a record that does not fit is
    # dropped whole, never half applied (fields set but not marked changed).
    _check_fits(inputs, indices, quality, count)
    if isinstance(indices, int):
        where: range | list[int] = range(indices, indices + count)
        targets = inputs.targets[indices : indices + count]
        olds = inputs.values[indices : indices + count]
        inputs.values[indices : indices + count] = values
    else:
        where, targets = indices, [inputs.targets[i] for i in indices]
        olds = [inputs.values[i] for i in indices]
        for i, value in zip(indices, values, strict=False):
            inputs.values[i] = value
    # A block's points mostly share a few components: each changed component is marked
    # once, not once per field (the write-through setter is a Python call per field).
    changed: list[Component] = []
    last: Component | None = None
    get, assign = getattr, assign_unmarked
    for target, value, old in zip(targets, values, olds, strict=False):
        if target is None:
            continue
        component, fname, _, output = target
        if output is None:
            if value == old:
                continue
        elif get(component, fname) == value:
            _track_output(output, value)
            continue
        else:
            _track_output(output, value)
        assign(component, fname, value)
        if component is not last:
            changed.append(component)
            last = component
    if not _same_quality(inputs.qualities, where, quality, count):
        _apply_qualities(inputs, where, quality, changed)
    for component in changed:
        mark_changed(component)


def _check_fits(
    inputs: _DeviceInputs, indices: list[int] | int, quality: list[int] | int, count: int
) -> None:
    points, kinds = len(inputs.targets), len(_QUALITIES)
    if isinstance(indices, int):
        if not 0 <= indices <= points - count:
            raise IndexError(f"points {indices}..{indices + count - 1} of {points}")
    elif indices and not (min(indices) >= 0 and max(indices) < points):
        raise IndexError(f"point indices {min(indices)}..{max(indices)} of {points}")
    if isinstance(quality, int):
        if not 0 <= quality < kinds:
            raise ValueError(f"quality {quality}")
    elif quality and not (min(quality) >= 0 and max(quality) < kinds):
        raise ValueError(f"qualities {min(quality)}..{max(quality)}")


def _same_quality(
    qualities: list[Quality], where: range | list[int], quality: list[int] | int, count: int
) -> bool:
    """Whether every point of the block already has the quality it is given."""
    if isinstance(quality, int) and isinstance(where, range):
        return qualities[where.start : where.stop].count(_QUALITIES[quality]) == count
    return False


def _apply_qualities(
    inputs: _DeviceInputs,
    where: range | list[int],
    quality: list[int] | int,
    changed: list[Component],
) -> None:
    flags = (
        repeat(_QUALITIES[quality])
        if isinstance(quality, int)
        else map(_QUALITIES.__getitem__, quality)
    )
    qualities, targets = inputs.qualities, inputs.targets
    for index, flag in zip(where, flags, strict=False):
        target = targets[index]
        if target is None or qualities[index] is flag:
            continue
        qualities[index] = flag
        component, _, quality_field, _ = target
        assign_unmarked(component, quality_field, flag)
        if not changed or changed[-1] is not component:
            changed.append(component)


def _track_output(output: _Output, value: Any) -> None:
    # What the device holds differs from what was last written only if it was changed
    # there: its own rounding (a float32, a scaled integer) is no change, or control
    # logic setting its value again would write after every poll.
    raw = _device_form(output.point, value)
    if raw is None or raw != output.last_raw:
        output.last, output.last_raw, output.owned = value, raw, False


def _apply_health(health: DeviceHealth, snapshot: dict[str, Any]) -> None:
    # Everything read before anything is set: a snapshot short of a key changes nothing.
    errors = tuple((str(kind), int(count)) for kind, count in snapshot["errors"])
    state, last_good_read = snapshot["state"], snapshot["last_good_read"]
    consecutive, last_error = snapshot["consecutive_errors"], snapshot["last_error"]
    rtt_ms, requests = snapshot["rtt_ms"], snapshot["requests_per_cycle"]
    health.state = state
    health.last_good_read = last_good_read
    health.consecutive_errors = consecutive
    health.errors = errors
    health.last_error = last_error
    health.rtt_ms = rtt_ms
    health.requests_per_cycle = requests


def send_field_writes(world: World) -> None:
    """FieldOutput: output fields that changed, one HIGH record per device; the safe
    values, at CRITICAL, of the devices the safe state holds."""
    model = world.resource(FieldModel)
    link = world.get_resource(IoLink)
    safe = world.resource(SafeState)
    for device, outputs in model._outputs.items():
        held = bool(safe.causes) and safe.safe_for(device)
        # Sent, not assumed, as the state begins: what the device holds may have been
        # changed there (its own program, a local panel) since it was last written; and
        # a device back from offline holds its defaults.
        if held != (device in model._held):
            _show_held(world, model, device, outputs, held=held)
            if held:
                _forget_safe_values(outputs)
        elif held and device in model._reconnected:
            _forget_safe_values(outputs)
        writes: list[list[Any]] | None = None
        for index, output in outputs:
            value = getattr(output.component, output.field)
            if held:
                value = _held_value(output, value)
            last = output.last
            # NaN != NaN: a NaN output is written once, not every tick.
            if value != last and not (_is_nan(value) and _is_nan(last)):
                refusal = output.point.refusal(value)
                if refusal is not None:
                    _refuse(world, model, device, output, value=value, reason=refusal)
                    continue
                output.refused = None
                output.last = value
                raw = _device_form(output.point, value)
                if raw is not None and raw == output.last_raw:
                    continue  # the device holds it already
                output.last_raw, output.owned = raw, True
                if writes is None:
                    writes = []
                writes.append([index, value])
        if writes is None:
            continue
        local_writer = model.devices[device].local_writer
        if local_writer is not None:
            local_writer([(index, value) for index, value in writes])
        elif link is not None:
            priority = Priority.CRITICAL if held else Priority.HIGH
            link.send(TOPIC_WRITE, device, writes, priority, worker=HOME_WORKER)
    model._reconnected.clear()


def _show_held(
    world: World, model: FieldModel, device: str, outputs: list[tuple[int, _Output]], *, held: bool
) -> None:
    """HeldOutputs lists ``device``'s output fields while the safe state holds them."""
    fields = world.resource(HeldOutputs).fields
    keys = [(o.point.entity, o.point.component, o.point.field) for _, o in outputs]
    if held:
        model._held.add(device)
        fields.update(keys)
    else:
        model._held.discard(device)
        fields.difference_update(keys)


def _held_value(output: _Output, value: Any) -> Any:
    """What an output held safe gets: its safe value, or what the device has (None,
    nothing written yet: what the field says is not sent)."""
    safe = output.point.safe_value
    target = output.last if safe is None else _as_field(output, safe)
    if target is None:
        return output.last
    if value != target:
        setattr(output.component, output.field, target)
    return target


def _as_field(output: _Output, safe: bool | float) -> Any:
    return safe if isinstance(safe, bool) else float(safe)


def _forget_safe_values(outputs: list[tuple[int, _Output]]) -> None:
    for _, output in outputs:
        if output.point.safe_value is not None:
            output.last = output.last_raw = None


def _refuse(
    world: World, model: FieldModel, device: str, output: _Output, *, value: Any, reason: str
) -> None:
    """A value the output may not take: the field shows what the device holds again."""
    if output.last is not None:
        setattr(output.component, output.field, output.last)
    same = value == output.refused or (_is_nan(value) and _is_nan(output.refused))
    output.refused = value
    if same:
        return
    model.refused_writes += 1
    point = output.point
    where = f"{point.entity}.{point.component}.{point.field}"
    text = f"{where} = {value!r} refused: {reason}"
    tick = world.resource(Time).tick
    world.resource(Alarms).activate(f"output:{device}", text, Severity.WARNING, tick)
    audit(world, "output.refused", device=device, what=where, value=value, reason=reason)
    if every_power_of_ten(model.refused_writes):
        log.warning("field: %s (%d refused so far)", text, model.refused_writes)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
