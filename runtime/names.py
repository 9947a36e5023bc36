"""Entity names: how config files, logs and dashboards refer to entities."""

from __future__ import annotations

from edgeloop.component import Component
from edgeloop.world import World


class Name(Component):
    value: str


def find_entity(world: World, name: str) -> int | None:
    """The entity called ``name``, or None. A linear scan: for start-up wiring, not ticks."""
    for entity, named in world.query(Name).items():
        if named.value == name:
            return entity
    return None
