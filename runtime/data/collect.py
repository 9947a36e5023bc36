"""Control side of the data log: the changed fields of a tick, as batches for the io
process's logger (``edgeloop.data.logger``). The control tick never waits on a disk.

``collect_changes`` runs in DataLogging (every Update pass: at most once a tick). It
visits only the components stamped since it last ran (change detection, so a tick
costs O(changes)), and of those the number and boolean fields of named entities that
the ``data_log`` rules log, each subject to its rule's deadband and minimum interval;
a change held back by the interval is logged (its latest value) once the interval is
over, so the last value of a field is never left out.

Record ``data.batch``, control -> io, NORMAL, key the tick (so conflation never merges
two batches): ``[tick, t_us, declared, samples]``, ``declared`` ``[[id, name], ...]``
for the ids new to the io process (all of them again after it restarts), ``samples``
flat ``[id, value, id, value, ...]``.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.data.config import DataLogConfig, FieldRule
from edgeloop.names import Name
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import HOME_WORKER, IoLink
from edgeloop.world import World

TOPIC_BATCH = "data.batch"
# A record of the io channel carries at most 64 KiB: a sample takes up to ~14 bytes, a
# name up to ~200.
SAMPLES_PER_RECORD = 2000
NAMES_PER_RECORD = 250


@dataclass(slots=True)
class _Slot:
    """A logged field with a deadband or a minimum interval."""

    id: int
    field: str
    deadband: float
    min_ticks: int
    last: Any = None
    last_tick: int = -(1 << 62)
    pending: bool = False


class _Entry:
    """The logged fields of one component. Those without a deadband or an interval
    (most) are read at once by ``getter`` and compared with ``last`` in one loop."""

    __slots__ = ("getter", "ids", "last", "slots")

    def __init__(self, fields: list[str], ids: list[int], slots: list[_Slot]) -> None:
        self.ids = ids
        self.getter: Callable[[Any], tuple[Any, ...]] | None = None
        if len(fields) == 1:
            only = operator.attrgetter(fields[0])
            self.getter = lambda component: (only(component),)
        elif fields:
            self.getter = operator.attrgetter(*fields)
        self.last: tuple[Any, ...] = (None,) * len(fields)
        self.slots = slots


_NUMBERS = frozenset({float, int, bool})


@dataclass
class DataCollector:
    """Resource: the logged fields by (entity, component type), and counters."""

    config: DataLogConfig
    entries: dict[tuple[int, type[Component]], _Entry | None] = field(default_factory=dict)
    names: list[tuple[int, str]] = field(default_factory=list)  # every id declared
    undeclared: list[tuple[int, str]] = field(default_factory=list)
    pending: list[tuple[Component, _Slot]] = field(default_factory=list)
    generation: int = -1  # of the io worker the names were declared to
    samples: int = 0  # handed to the io process
    batches: int = 0

    def entry(self, world: World, entity: int, component: Component) -> _Entry | None:
        """The logged fields of ``component`` (None: none), found at its first change."""
        ctype = type(component)
        named = world.storage(Name).items.get(entity)
        if named is None:
            return None  # unnamed entities have no name to log them by
        dt = world.resource(Time).delta
        fields: list[str] = []
        ids: list[int] = []
        slots: list[_Slot] = []
        for name in ctype.__el_fields__:
            if type(getattr(component, name)) not in _NUMBERS:
                continue
            full = f"{named.value}.{ctype.__name__}.{name}"
            rule: FieldRule | None = self.config.rule_for(full)
            if rule is None:
                continue
            ident = len(self.names) + 1
            self.names.append((ident, full))
            self.undeclared.append((ident, full))
            if rule.deadband > 0 or rule.min_interval_s > 0:
                min_ticks = round(rule.min_interval_s / dt)
                slots.append(_Slot(ident, name, rule.deadband, min_ticks))
            else:
                fields.append(name)
                ids.append(ident)
        return _Entry(fields, ids, slots) if fields or slots else None


def collect_changes(world: World) -> None:
    """DataLogging: this tick's logged changes to the io process's logger."""
    collector = world.resource(DataCollector)
    entries = collector.entries
    tick = world.resource(Time).tick
    samples: list[Any] = []
    append = samples.append
    numbers = _NUMBERS
    if collector.pending:
        _due(collector, tick, samples)
    for ctype in world.component_types():
        if ctype is Name:
            continue
        for entity, component in world.query(ctype, changed=(ctype,)).items():
            key = (entity, ctype)
            if key in entries:
                entry = entries[key]
            else:
                entry = entries[key] = collector.entry(world, entity, component)
            if entry is None:
                continue
            if entry.getter is not None:
                values = entry.getter(component)
                for ident, value, old in zip(entry.ids, values, entry.last, strict=True):
                    if value != old and type(value) in numbers:
                        if value - value:  # inf or NaN: logged as NULL, a NaN once
                            if math.isnan(value) and isinstance(old, float) and math.isnan(old):
                                continue
                            append(ident)
                            append(None)
                        else:
                            append(ident)
                            append(value)
                entry.last = values
            for slot in entry.slots:
                _slot_change(collector, component, slot, tick, samples)
    _send(world, collector, tick, samples)


def _slot_change(
    collector: DataCollector, component: Component, slot: _Slot, tick: int, samples: list[Any]
) -> None:
    value = getattr(component, slot.field)
    if value == slot.last or type(value) not in _NUMBERS:
        return
    if tick - slot.last_tick < slot.min_ticks:
        if not slot.pending:
            slot.pending = True
            collector.pending.append((component, slot))
        return
    if _within_deadband(slot, value):
        return
    slot.last, slot.last_tick = value, tick
    samples.append(slot.id)
    samples.append(_stored(value))


def _due(collector: DataCollector, tick: int, samples: list[Any]) -> None:
    still = []
    for component, slot in collector.pending:
        if tick - slot.last_tick < slot.min_ticks:
            still.append((component, slot))
            continue
        slot.pending = False
        value = getattr(component, slot.field)
        loggable = type(value) in _NUMBERS
        if value != slot.last and loggable and not _within_deadband(slot, value):
            slot.last, slot.last_tick = value, tick
            samples.append(slot.id)
            samples.append(_stored(value))
    collector.pending = still


def _within_deadband(slot: _Slot, value: Any) -> bool:
    last = slot.last
    if slot.deadband <= 0 or last is None or isinstance(value, bool):
        return False
    return bool(abs(value - last) < slot.deadband)


def _stored(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # msgpack carries NaN, SQLite stores NULL: say so once, here
    return value


def _send(world: World, collector: DataCollector, tick: int, samples: list[Any]) -> None:
    link = world.get_resource(IoLink)
    if link is None:
        return
    generation = link.generations[HOME_WORKER]
    if generation != collector.generation:
        collector.generation = generation
        collector.undeclared = list(collector.names)
    if not samples and not collector.undeclared:
        return
    t_us = time.time_ns() // 1000
    declared, collector.undeclared = collector.undeclared, []
    part = 0
    for start in range(0, len(declared), NAMES_PER_RECORD):
        names = declared[start : start + NAMES_PER_RECORD]
        _batch(link, collector, f"{tick}.{part}", [tick, t_us, names, []])
        part += 1
    step = 2 * SAMPLES_PER_RECORD
    for start in range(0, len(samples), step):
        _batch(link, collector, f"{tick}.{part}", [tick, t_us, [], samples[start : start + step]])
        part += 1
    collector.samples += len(samples) // 2


def _batch(link: IoLink, collector: DataCollector, key: str, payload: list[Any]) -> None:
    link.send(TOPIC_BATCH, key, payload, Priority.NORMAL, worker=HOME_WORKER)
    collector.batches += 1
