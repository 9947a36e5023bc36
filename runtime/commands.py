"""Commands: structural changes queued by systems and applied at set boundaries.

Queries hand out live components, so spawning or despawning while one is iterated would
change what it iterates. Systems queue such changes here; the schedule applies them after
each system set, and discards those of a system that raised (its pass did not complete).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING

from edgeloop.component import Component
from edgeloop.entity import entity_str

if TYPE_CHECKING:
    from edgeloop.world import World

log = logging.getLogger("edgeloop.commands")


class _Op(Enum):
    SPAWN = "spawn"
    INSERT = "insert"
    REMOVE = "remove"
    DESPAWN = "despawn"


class Commands:
    __slots__ = ("_queue", "_world", "skipped")

    def __init__(self, world: World) -> None:
        self._world = world
        self._queue: list[tuple[_Op, int, tuple[Component, ...] | type[Component]]] = []
        self.skipped = 0  # commands aimed at an entity that was gone when applied

    def spawn(self, *components: Component) -> int:
        """Reserve an entity now (the id is usable at once); components arrive at apply."""
        _check_insertable(components)
        entity = self._world.reserve_entity()
        self._queue.append((_Op.SPAWN, entity, components))
        return entity

    def insert(self, entity: int, *components: Component) -> None:
        _check_insertable(components)
        self._queue.append((_Op.INSERT, entity, components))

    def remove(self, entity: int, ctype: type[Component]) -> None:
        self._queue.append((_Op.REMOVE, entity, ctype))

    def despawn(self, entity: int) -> None:
        self._queue.append((_Op.DESPAWN, entity, ()))

    def __len__(self) -> int:
        return len(self._queue)

    def apply(self) -> None:
        world = self._world
        queue, self._queue = self._queue, []
        for op, entity, arg in queue:
            if not world.is_alive(entity):
                self._skip(op, entity)
                continue
            try:
                if op is _Op.REMOVE:
                    world.remove(entity, arg)  # type: ignore[arg-type]
                elif op is _Op.DESPAWN:
                    world.despawn(entity)
                else:
                    world.insert(entity, *arg)  # type: ignore[misc]
            except (TypeError, ValueError) as error:
                # Checked when queued; what is left (one instance queued twice) is skipped
                # rather than taking the schedule down between two sets.
                self.skipped += 1
                log.error("%s of entity %s skipped: %s", op.value, entity_str(entity), error)

    def discard_from(self, mark: int) -> None:
        """Drop the commands queued after ``mark`` (a length read before a system ran)."""
        for op, entity, _ in self._queue[mark:]:
            if op is _Op.SPAWN and self._world.is_alive(entity):
                self._world.despawn(entity)
        del self._queue[mark:]

    def _skip(self, op: _Op, entity: int) -> None:
        self.skipped += 1
        # Logged once: a system repeating the mistake every tick must not flood the journal.
        if self.skipped == 1:
            log.warning(
                "%s of entity %s skipped: it was despawned before commands were applied "
                "(further skips are only counted in world.commands.skipped)",
                op.value,
                entity_str(entity),
            )


def _check_insertable(components: tuple[Component, ...]) -> None:
    """Fail in the system that queues a bad component, not later when commands apply."""
    for component in components:
        if not isinstance(component, Component):
            raise TypeError(f"{component!r} is not a Component")
        if component.attached():
            raise ValueError(
                f"this {type(component).__name__} instance already belongs to an entity"
            )
