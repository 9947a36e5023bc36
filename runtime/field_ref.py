"""Field references: how config names a World field, ``entity.Component.field``.

The entity is found by its ``Name``, the component by its class name among the World's
component types (so a plain component such as ``TankLevel`` and one a driver made for
its points are found alike), the field among the component's declared fields. An
entity name may hold dots (``network.tcp``): the last two parts are the component and
the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from edgeloop.component import Component
from edgeloop.names import Name
from edgeloop.world import World

_PATTERN = re.compile(r"[A-Za-z0-9_.-]+\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class FieldRef:
    entity: str
    component: str
    field: str

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        if len(text) > MAX_LENGTH or not _PATTERN.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a field: write entity.Component.field "
                "(e.g. tank1.TankLevel.level_m)"
            )
        entity, component, field = text.rsplit(".", 2)
        return cls(entity, component, field)

    def __str__(self) -> str:
        return f"{self.entity}.{self.component}.{self.field}"


def _checked(text: str) -> str:
    FieldRef.parse(text)
    return text


# A config value naming a field, checked for its shape (not yet for its presence).
FieldPath = Annotated[str, AfterValidator(_checked)]


class FieldIndex:
    """The World's named entities and component classes as they are now, for start-up
    wiring (a scan of the World: not for ticks)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.entities = {named.value: entity for entity, named in world.query(Name).items()}
        self.classes: dict[str, list[type[Component]]] = {}
        for ctype in world.component_types():
            self.classes.setdefault(ctype.__name__, []).append(ctype)

    def find(self, ref: FieldRef) -> tuple[Component | None, str]:
        """The component holding ``ref``'s field, or None and why it is not there."""
        entity = self.entities.get(ref.entity)
        if entity is None:
            return None, f"no entity named {ref.entity!r}"
        for ctype in self.classes.get(ref.component, []):
            if self.world.has(entity, ctype):
                if ref.field not in ctype.__el_fields__:
                    return None, f"{ref.component} has no field {ref.field!r}"
                return self.world.get(entity, ctype), ""
        return None, f"{ref.entity} has no component {ref.component}"
