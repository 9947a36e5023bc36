"""Control side of the data log: the changed fields of a tick, as batches for the io
process's logger (``edgeloop.data.logger``). The control tick never waits on a disk.

``collect_changes`` runs in DataLogging (every Update pass: at most once a tick). It
visits only the components stamped since it last ran (change detection, so a tick
costs O(changes)), and of those the number and boolean fields of named entities that
the ``data_log`` rules log, each subject to its rule's deadband and minimum interval;
a change held back by the interval is logged (its latest value) once the interval is
over, so the last value of a field is never left out.

The same batches are the change feed of the uplinks (``edgeloop.uplink``): a field an
uplink publishes (``DataCollector.feed``) is collected at every change even when the
``data_log`` rules leave it out (or there is no ``data_log`` section), declared as not
logged, and the logger skips it; such a field may also be an int enum (a point's
``<field>_quality``, which Sparkplug publishes as the metric's quality), sent as its
number. An io process that (re)starts is sent every collected
field's current value once, so what it publishes starts from the World as it is.

Record ``data.batch``, control -> io, NORMAL, key the tick (so conflation never merges
two batches): ``[tick, t_us, declared, samples]``, ``declared`` ``[[id, name, logged],
...]`` for the ids new to the io process (all of them again after it restarts),
``samples`` flat ``[id, value, id, value, ...]``.
"""

from __future__ import annotations

import enum
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.data.config import DataLogConfig, FieldRule
from edgeloop.names import Name
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import HOME_WORKER, IoLink
from edgeloop.schedule import DataLogging, Update
from edgeloop.world import World

if TYPE_CHECKING:
    from edgeloop.app import App

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
_EVERY_CHANGE = FieldRule(match="*")


def add_change_feed(app: App) -> DataCollector:
    """The App's DataCollector, added (collecting nothing yet) with its system if the
    App has none: the data log and the uplinks share one."""
    collector = app.world.get_resource(DataCollector)
    if collector is None:
        collector = DataCollector(DataLogConfig(log_all=False))
        app.insert_resource(collector)
        app.add_systems(Update, collect_changes, in_set=DataLogging)
    return collector


@dataclass
class DataCollector:
    """Resource: the logged fields by (entity, component type), and counters."""

    config: DataLogConfig
    feed: set[str] = field(default_factory=set)  # fields uplinks publish, logged or not
    kinds: frozenset[type] = _NUMBERS  # the types collected: numbers, the feed's int enums
    entries: dict[tuple[int, type[Component]], _Entry | None] = field(default_factory=dict)
    names: list[tuple[int, str, bool]] = field(default_factory=list)  # every id declared
    undeclared: list[tuple[int, str, bool]] = field(default_factory=list)
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
            full = f"{named.value}.{ctype.__name__}.{name}"
            kind = type(getattr(component, name))
            if kind not in self.kinds:
                # an int enum (a point's quality) goes out when an uplink publishes it
                if not (issubclass(kind, enum.IntEnum) and full in self.feed):
                    continue
                self.kinds = self.kinds | {kind}
            rule: FieldRule | None = self.config.rule_for(full)
            logged = rule is not None
            if rule is None and full in self.feed:
                rule = _EVERY_CHANGE
            if rule is None:
                continue
            ident = len(self.names) + 1
            self.names.append((ident, full, logged))
            self.undeclared.append((ident, full, logged))
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
    numbers = collector.kinds
    since = 0 if _io_restarted(world, collector) else None
    if collector.pending:
        _due(collector, tick, samples)
    for ctype in world.component_types():
        if ctype is Name:
            continue
        for entity, component in world.query(ctype, changed=(ctype,), since=since).items():
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


def _io_restarted(world: World, collector: DataCollector) -> bool:
    """True once per start of the io worker: every name is declared to it again, and
    every value sent again (what was last sent is forgotten)."""
    link = world.get_resource(IoLink)
    if link is None or link.generations[HOME_WORKER] == collector.generation:
        return False
    collector.generation = link.generations[HOME_WORKER]
    collector.undeclared = list(collector.names)
    for entry in collector.entries.values():
        if entry is not None:
            entry.last = (None,) * len(entry.last)
            for slot in entry.slots:
                slot.last, slot.last_tick = None, -(1 << 62)
    return True


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
