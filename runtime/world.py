"""The World: entities, their components, resources, messages and change ticks.

Entities are plain ints packing ``generation << 32 | index``. Despawning bumps the
generation of the index, so an old id held somewhere is detected as stale
(``EntityNotFoundError``) instead of silently naming the entity that reused the slot.

Change detection runs on *change ticks*: the schedule advances ``World.change_tick``
before every system run; inserting a component stamps it added and changed, and writing a
field stamps it changed (see ``edgeloop.component``). A ``changed=`` query reads only the
entities stamped after the querying system last ran, so it costs O(changes).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from edgeloop.commands import Commands
from edgeloop.component import Component, _set_slot, check_state_types
from edgeloop.entity import INDEX_BITS, INDEX_MASK, EntityNotFoundError, entity_str
from edgeloop.messages import MessageReader, Messages
from edgeloop.query import Query

if TYPE_CHECKING:
    from collections.abc import Iterator

    from edgeloop.schedule import SystemEntry

C = TypeVar("C", bound=Component)
C1 = TypeVar("C1", bound=Component)
C2 = TypeVar("C2", bound=Component)
C3 = TypeVar("C3", bound=Component)
C4 = TypeVar("C4", bound=Component)
R = TypeVar("R")
M = TypeVar("M")


class ComponentNotFoundError(KeyError):
    def __str__(self) -> str:
        entity, ctype = self.args
        return f"entity {entity_str(entity)} has no {ctype.__name__} component"


class ResourceNotFoundError(KeyError):
    def __str__(self) -> str:
        return f"no {self.args[0].__name__} resource: insert one with app.insert_resource(...)"


class Storage(Generic[C]):
    """All components of one type, keyed by entity, with their change stamps.

    ``changed`` and ``added`` are dicts kept in stamp order (a re-stamped entity is moved
    to the end), so the entities stamped after tick T are a suffix read backwards.
    """

    __slots__ = ("added", "changed", "items", "type", "world")

    def __init__(self, world: World, ctype: type[C]) -> None:
        self.world = world
        self.type = ctype
        self.items: dict[int, C] = {}
        self.changed: dict[int, int] = {}
        self.added: dict[int, int] = {}

    def mark_changed(self, entity: int) -> None:
        stamps = self.changed
        del stamps[entity]
        stamps[entity] = self.world.change_tick

    def put(self, entity: int, component: C) -> None:
        if component._el_sink is not None:
            raise ValueError(
                f"this {self.type.__name__} instance already belongs to entity "
                f"{entity_str(component._el_entity)}; create a new one per entity"
            )
        old = self.items.get(entity)
        if old is not None:
            _set_slot(old, "_el_sink", None)
        _set_slot(component, "_el_entity", entity)
        _set_slot(component, "_el_sink", self)
        self.items[entity] = component
        tick = self.world.change_tick
        for stamps in (self.added, self.changed):
            stamps.pop(entity, None)
            stamps[entity] = tick

    def take(self, entity: int) -> C | None:
        component = self.items.pop(entity, None)
        if component is not None:
            _set_slot(component, "_el_sink", None)
            del self.added[entity]
            del self.changed[entity]
        return component


class World:
    """Owns all state of one App. Not thread-safe: one World, one thread."""

    def __init__(self) -> None:
        self._generations: list[int] = []
        self._free: deque[int] = deque()
        self._alive: dict[int, None] = {}
        self._storages: dict[type[Component], Storage[Any]] = {}
        self._resources: dict[type, object] = {}
        self._messages: dict[type, Messages[Any]] = {}
        self.commands = Commands(self)
        # Starts at 1 so that a system's first run (last_run 0) sees everything.
        self.change_tick = 1
        self.system: SystemEntry | None = None

    # -- entities -------------------------------------------------------------------------

    def spawn(self, *components: Component) -> int:
        entity = self.reserve_entity()
        self.insert(entity, *components)
        return entity

    def reserve_entity(self) -> int:
        """A new live entity with no components (Commands.spawn hands these out early)."""
        if len(self._free) > 0:
            index = self._free.popleft()
        else:
            index = len(self._generations)
            self._generations.append(0)
        entity = (self._generations[index] << INDEX_BITS) | index
        self._alive[entity] = None
        return entity

    def despawn(self, entity: int) -> None:
        self._check_alive(entity)
        for storage in self._storages.values():
            storage.take(entity)
        del self._alive[entity]
        index = entity & INDEX_MASK
        self._generations[index] += 1
        # FIFO reuse keeps a freed index out of circulation as long as possible.
        self._free.append(index)

    def is_alive(self, entity: int) -> bool:
        return entity in self._alive

    def entities(self) -> Iterator[int]:
        return iter(list(self._alive))

    def __len__(self) -> int:
        return len(self._alive)

    def _check_alive(self, entity: int) -> None:
        if entity not in self._alive:
            raise EntityNotFoundError(entity)

    # -- components -----------------------------------------------------------------------

    def insert(self, entity: int, *components: Component) -> None:
        """Add components to an entity, replacing any of the same type (stamped added)."""
        self._check_alive(entity)
        for component in components:
            self.storage(type(component)).put(entity, component)

    def remove(self, entity: int, ctype: type[C]) -> C | None:
        self._check_alive(entity)
        storage = self._storages.get(ctype)
        return None if storage is None else storage.take(entity)

    def get(self, entity: int, ctype: type[C]) -> C:
        storage = self._storages.get(ctype)
        component: C | None = None if storage is None else storage.items.get(entity)
        if component is None:
            self._check_alive(entity)
            raise ComponentNotFoundError(entity, ctype)
        return component

    def has(self, entity: int, ctype: type[Component]) -> bool:
        storage = self._storages.get(ctype)
        return storage is not None and entity in storage.items

    def mark_changed(self, entity: int, ctype: type[Component]) -> None:
        """Stamp a component changed without assigning a field (rarely needed)."""
        self.get(entity, ctype)
        self._storages[ctype].mark_changed(entity)

    def component_types(self) -> list[type[Component]]:
        """Every component type stored so far, in first-stored order."""
        return list(self._storages)

    def storage(self, ctype: type[C]) -> Storage[C]:
        storage = self._storages.get(ctype)
        if storage is None:
            if not (isinstance(ctype, type) and issubclass(ctype, Component)):
                raise TypeError(f"{ctype!r} is not a Component subclass")
            check_state_types(ctype)
            storage = self._storages[ctype] = Storage(self, ctype)
        return storage

    # -- queries --------------------------------------------------------------------------

    @overload
    def query(
        self,
        t1: type[C1],
        /,
        *,
        with_: tuple[type[Component], ...] = (),
        without: tuple[type[Component], ...] = (),
        changed: tuple[type[Component], ...] = (),
        added: tuple[type[Component], ...] = (),
        since: int | None = None,
    ) -> Query[C1]: ...
    @overload
    def query(
        self,
        t1: type[C1],
        t2: type[C2],
        /,
        *,
        with_: tuple[type[Component], ...] = (),
        without: tuple[type[Component], ...] = (),
        changed: tuple[type[Component], ...] = (),
        added: tuple[type[Component], ...] = (),
        since: int | None = None,
    ) -> Query[tuple[C1, C2]]: ...
    @overload
    def query(
        self,
        t1: type[C1],
        t2: type[C2],
        t3: type[C3],
        /,
        *,
        with_: tuple[type[Component], ...] = (),
        without: tuple[type[Component], ...] = (),
        changed: tuple[type[Component], ...] = (),
        added: tuple[type[Component], ...] = (),
        since: int | None = None,
    ) -> Query[tuple[C1, C2, C3]]: ...
    @overload
    def query(
        self,
        t1: type[C1],
        t2: type[C2],
        t3: type[C3],
        t4: type[C4],
        /,
        *,
        with_: tuple[type[Component], ...] = (),
        without: tuple[type[Component], ...] = (),
        changed: tuple[type[Component], ...] = (),
        added: tuple[type[Component], ...] = (),
        since: int | None = None,
    ) -> Query[tuple[C1, C2, C3, C4]]: ...
    def query(
        self,
        *terms: type[Component],
        with_: tuple[type[Component], ...] = (),
        without: tuple[type[Component], ...] = (),
        changed: tuple[type[Component], ...] = (),
        added: tuple[type[Component], ...] = (),
        since: int | None = None,
    ) -> Query[Any]:
        """Entities that have every type in ``terms`` and ``with_`` and none in ``without``.

        ``changed``/``added`` keep only entities whose component of that type was stamped
        after ``since`` — by default the tick at which the running system last ran, so a
        system sees each change once. Outside a system ``since`` defaults to 0 (every
        stamp). Several filters combine with AND. Iterating yields the component (one
        term) or a tuple of components; ``.items()`` yields ``(entity, row)`` pairs.
        """
        if since is None:
            since = 0 if self.system is None else self.system.last_run
        return Query(
            self,
            terms,
            with_=with_,
            without=without,
            changed=changed,
            added=added,
            since=since,
        )

    # -- resources ------------------------------------------------------------------------

    def insert_resource(self, resource: object, as_type: type | None = None) -> None:
        """Insert ``resource``, found by its type (or by ``as_type``, a base class it
        stands in for, e.g. a replay's stand-in for the io link)."""
        if as_type is not None and not isinstance(resource, as_type):
            raise TypeError(f"{resource!r} is not a {as_type.__name__}")
        self._resources[type(resource) if as_type is None else as_type] = resource

    def resource(self, rtype: type[R]) -> R:
        try:
            return self._resources[rtype]  # type: ignore[return-value]
        except KeyError:
            raise ResourceNotFoundError(rtype) from None

    def get_resource(self, rtype: type[R]) -> R | None:
        return self._resources.get(rtype)  # type: ignore[return-value]

    def remove_resource(self, rtype: type[R]) -> R | None:
        return self._resources.pop(rtype, None)  # type: ignore[return-value]

    # -- messages -------------------------------------------------------------------------

    def messages(self, mtype: type[M]) -> Messages[M]:
        queue = self._messages.get(mtype)
        if queue is None:
            queue = self._messages[mtype] = Messages()
        return queue

    def send(self, message: object) -> None:
        self.messages(type(message)).send(message)

    def read(self, mtype: type[M]) -> list[M]:
        """Messages of ``mtype`` the running system has not read yet (its own cursor)."""
        if self.system is None:
            raise RuntimeError("world.read() is for systems; elsewhere use world.message_reader()")
        reader = self.system.readers.get(mtype)
        if reader is None:
            reader = self.system.readers[mtype] = MessageReader(self.messages(mtype))
        return reader.read()

    def message_reader(self, mtype: type[M]) -> MessageReader[M]:
        return MessageReader(self.messages(mtype))

    def update_messages(self) -> None:
        """Age every queue by one tick: messages live for two ticks, then are dropped."""
        for queue in self._messages.values():
            queue.update()

    # -- determinism ----------------------------------------------------------------------

    def state_hash(self) -> str:
        """A hex digest of all component data, stable across runs, processes and machines.

        Hashed: every live entity id and every field of every component (state types only,
        see ``edgeloop.component.STATE_TYPES``), component types by module and qualified
        name. Not hashed: resources, messages and change stamps.
        """
        digest = hashlib.blake2b(digest_size=16)
        for ctype in sorted(self._storages, key=_type_key):
            items = self._storages[ctype].items
            if not items:
                continue
            digest.update(_type_key(ctype).encode())
            for entity in sorted(items):
                digest.update(f"{entity}:{_canonical(items[entity].values())};".encode())
        return digest.hexdigest()

    def component_hashes(self) -> dict[str, str]:
        """A digest per component type (by module and qualified name), over the same data
        as ``state_hash``: which types two worlds differ in."""
        found = {}
        for ctype in sorted(self._storages, key=_type_key):
            items = self._storages[ctype].items
            if not items:
                continue
            digest = hashlib.blake2b(digest_size=8)
            for entity in sorted(items):
                digest.update(f"{entity}:{_canonical(items[entity].values())};".encode())
            found[_type_key(ctype)] = digest.hexdigest()
        return found


def _type_key(ctype: type) -> str:
    return f"{ctype.__module__}.{ctype.__qualname__}"


def _canonical(value: Any) -> str:
    """A text form that is equal exactly when the values are (float.hex is exact)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, int | str | bytes):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{_type_key(type(value))}.{value.name}"
    if isinstance(value, tuple):
        return "(" + ",".join(_canonical(v) for v in value) + ")"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (_canonical(getattr(value, f.name)) for f in dataclasses.fields(value))
        return f"{_type_key(type(value))}(" + ",".join(fields) + ")"
    raise TypeError(f"{type(value).__name__} is not a state type")
