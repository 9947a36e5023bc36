"""The World, mirrored to the io process for dashboards: changes only, at their rate.

Control side: ``publish_world_changes`` (WebUIUpdates, 30 Hz) sends every component
that changed since it last ran, one NORMAL record per (entity, component) — so when the
io process is behind, the outbox keeps only the latest value of each (conflation is
exactly right here), and despawned entities, to every io worker (each serves its own
dashboards). A restarted io worker is sent everything, since it starts with an empty
mirror; the others only what changed.

Io side: ``WorldMirror`` holds the latest values; each ``edgeloop.Subscribe``r gets an
``edgeloop.WorldUpdate`` with what changed since its previous update, at most
``max_hz`` times a second, and nothing while its connection is congested (its next
update then carries the latest values: conflated, never queued without bound).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edgeloop.alarms import Alarms, Severity
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.logs import every_power_of_ten
from edgeloop.net.protocol import ComponentValue, Subscribe, WorldUpdate
from edgeloop.net.session import Session
from edgeloop.priority import Priority
from edgeloop.query import Query
from edgeloop.realtime.io_link import IoLink
from edgeloop.realtime.ipc import Record
from edgeloop.world import World

log = logging.getLogger("edgeloop.net.world")

WORLD_VALUE = "world.value"  # control -> io: [entity, component, values]
WORLD_REMOVED = "world.removed"  # control -> io: entity
MAX_HZ = 60.0
OVERSIZE_ALARM = "world_feed:oversize"


# -- control side -----------------------------------------------------------------------


class WorldFeed:
    """Resource: what the publisher has told the io workers."""

    def __init__(self) -> None:
        self.alive: set[int] = set()
        self.generations: list[int] = []  # each worker's, when its mirror was filled
        self.oversize: dict[str, str] = {}  # "entity:Component" -> why it was not sent
        self.oversize_count = 0


def publish_world_changes(world: World) -> None:
    """WebUIUpdates: changed components and despawned entities to every network io
    worker, and everything to one that has just (re)started."""
    link = world.get_resource(IoLink)
    if link is None or link.links_up == 0:
        return
    feed = world.resource(WorldFeed)
    if len(feed.generations) != link.workers:
        feed.generations = [-1] * link.workers
    fed = range(link.broadcast_from, link.workers)
    fresh = [w for w in fed if link.generations[w] != feed.generations[w]]
    feed.generations[:] = link.generations
    everyone_fresh = len(fresh) == len(fed)
    oversize_before = len(feed.oversize)
    for ctype in world.component_types():
        if everyone_fresh:
            _send_values(link, feed, ctype, world.query(ctype, changed=(ctype,), since=0), None)
            continue
        _send_values(link, feed, ctype, world.query(ctype, changed=(ctype,)), None)
        for worker in fresh:
            _send_values(link, feed, ctype, world.query(ctype, changed=(ctype,), since=0), worker)
    if len(feed.oversize) != oversize_before:
        _show_oversize(world, feed)
    alive = set(world.entities())
    for entity in feed.alive - alive:
        link.send(WORLD_REMOVED, str(entity), entity, Priority.NORMAL)
    feed.alive = alive


def _send_values(
    link: IoLink,
    feed: WorldFeed,
    ctype: type[Component],
    found: Query[Component],
    worker: int | None,
) -> None:
    fields = ctype.__el_fields__
    name = ctype.__name__
    for entity, component in found.items():
        values = msgspec.to_builtins(dict(zip(fields, component.values(), strict=True)))
        key = f"{entity}:{name}"
        try:
            link.send(WORLD_VALUE, key, [entity, name, values], Priority.NORMAL, worker)
        except ValueError as error:
            # Past the io channel's record limit: the dashboards miss this one value
            # (an alarm says which), the loop does not stop for a view of the World.
            feed.oversize_count += 1
            feed.oversize[key] = str(error)
            if every_power_of_ten(feed.oversize_count):
                log.error(
                    "%s not sent to the dashboards (%d so far): %s", key, feed.oversize_count, error
                )
        else:
            feed.oversize.pop(key, None)


def _show_oversize(world: World, feed: WorldFeed) -> None:
    """One alarm while any component is too big to show: it clears once each is sent."""
    alarms, tick = world.resource(Alarms), world.resource(Time).tick
    if feed.oversize:
        text = f"{len(feed.oversize)} component value(s) too big for the dashboards: " + ", ".join(
            sorted(feed.oversize)[:5]
        )
        alarms.activate(OVERSIZE_ALARM, text, Severity.WARNING, tick)
    else:
        alarms.clear(OVERSIZE_ALARM, tick)


# -- io side ----------------------------------------------------------------------------


class WorldMirror:
    """Latest values per (entity, component), with versions for "changed since"."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, str], dict[str, Any]] = {}
        # Kept in version order (a re-stamped key moves to the end), like Storage.changed.
        self._versions: dict[tuple[int, str], int] = {}
        self._removed: dict[int, int] = {}
        self.version = 0

    def apply(self, record: Record) -> None:
        self.version += 1
        if record.topic == WORLD_VALUE:
            entity, component, values = record.payload
            key = (entity, component)
            self.values[key] = values
            self._versions.pop(key, None)
            self._versions[key] = self.version
            self._removed.pop(entity, None)
        elif record.topic == WORLD_REMOVED:
            entity = record.payload
            for key in [k for k in self.values if k[0] == entity]:
                del self.values[key]
                del self._versions[key]
            self._removed[entity] = self.version

    def since(self, version: int) -> tuple[list[tuple[int, str]], list[int]]:
        """Keys changed and entities removed after ``version``: O(changes). Version 0
        (a new subscriber) gets every current value and no removals."""
        if version == 0:
            return list(reversed(self._versions)), []
        changed = []
        for key, stamp in reversed(self._versions.items()):
            if stamp <= version:
                break
            changed.append(key)
        removed = [e for e, stamp in self._removed.items() if stamp > version]
        return changed, removed

    def forget_removals(self, up_to: int) -> None:
        """Drop removals every subscriber has been told about (they would pile up)."""
        for entity in [e for e, stamp in self._removed.items() if stamp <= up_to]:
            del self._removed[entity]


@dataclass
class Subscriber:
    session: Session
    version: int = 0  # the mirror version its last update brought it to


@dataclass
class Group:
    """Subscribers wanting the same components at the same rate: one timer, and one
    update built and encoded per version they stand at (in practice: one for all)."""

    components: frozenset[str]  # empty: all
    period_s: float
    members: dict[int, Subscriber] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Subscriptions:
    """Io side: the mirror and everyone subscribed to it."""

    def __init__(self) -> None:
        self.mirror = WorldMirror()
        self.groups: dict[tuple[frozenset[str], float], Group] = {}
        self._group_of: dict[int, Group] = {}
        self.updates_sent = 0
        self.updates_held = 0  # periods skipped because the connection was congested

    @property
    def subscribers(self) -> dict[int, Subscriber]:
        return {sid: group.members[sid] for sid, group in self._group_of.items()}

    def on_record(self, record: Record) -> None:
        self.mirror.apply(record)

    def subscribe(self, session: Session, request: Subscribe) -> None:
        self.unsubscribe(session.id)
        period = 1.0 / min(max(request.max_hz, 0.1), MAX_HZ)
        key = (frozenset(request.components), period)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(*key)
            group.timer = asyncio.get_running_loop().call_later(period, self._tick, group)
        subscriber = group.members[session.id] = Subscriber(session)
        self._group_of[session.id] = group
        self._send(group, subscriber, {})  # the first update: everything, at once

    def unsubscribe(self, session_id: int) -> None:
        group = self._group_of.pop(session_id, None)
        if group is None:
            return
        del group.members[session_id]
        if not group.members:
            if group.timer is not None:
                group.timer.cancel()
            del self.groups[(group.components, group.period_s)]

    def close(self) -> None:
        for session_id in list(self._group_of):
            self.unsubscribe(session_id)

    def _tick(self, group: Group) -> None:
        group.timer = asyncio.get_running_loop().call_later(group.period_s, self._tick, group)
        shared: dict[int, tuple[WorldUpdate, dict[str, Any]]] = {}
        for subscriber in list(group.members.values()):
            if subscriber.session.congested():
                self.updates_held += 1
            elif subscriber.version != self.mirror.version:
                self._send(group, subscriber, shared)
        versions = [s.version for g in self.groups.values() for s in g.members.values()]
        self.mirror.forget_removals(min(versions, default=self.mirror.version))

    def _send(
        self,
        group: Group,
        subscriber: Subscriber,
        shared: dict[int, tuple[WorldUpdate, dict[str, Any]]],
    ) -> None:
        entry = shared.get(subscriber.version)
        if entry is None:
            entry = shared[subscriber.version] = (self._update(group, subscriber.version), {})
        update, encoded = entry
        subscriber.version = self.mirror.version
        if update.changed or update.removed:
            subscriber.session.send_shared(update, encoded)
            self.updates_sent += 1

    def _update(self, group: Group, since: int) -> WorldUpdate:
        changed, removed = self.mirror.since(since)
        wanted = group.components
        values = self.mirror.values
        return WorldUpdate(
            changed=[
                ComponentValue(entity, component, values[(entity, component)])
                for entity, component in reversed(changed)
                if not wanted or component in wanted
            ],
            removed=removed,
            version=self.mirror.version,
        )
