"""How a block reaches its fields: resolved once at Startup, read and written per tick.

Every block has the same small contract: it is built from its config and a
``FieldIndex`` at Startup (``ValueError`` naming the block and the field if the World
lacks one) and then ``step(world, tick)`` runs it once per fixed tick.
"""

from __future__ import annotations

from typing import Any, Protocol

from edgeloop.component import Component
from edgeloop.field_ref import FieldIndex, FieldRef
from edgeloop.world import World


class Block(Protocol):
    name: str

    def step(self, world: World, tick: int) -> None: ...


class Wire:
    """One field of one component, as a block reads or writes it."""

    __slots__ = ("component", "field")

    def __init__(self, component: Component, field: str) -> None:
        self.component = component
        self.field = field

    def read(self) -> Any:
        return getattr(self.component, self.field)

    def write(self, value: Any) -> None:
        setattr(self.component, self.field, value)


def number_in(fields: FieldIndex, block: str, key: str, path: str) -> Wire:
    """The field a block reads a number from."""
    wire, current = _wire(fields, block, key, path)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise ValueError(f"{block}: {key} {path} holds {current!r}, not a number")
    return wire


def number_out(fields: FieldIndex, block: str, key: str, path: str) -> Wire:
    """The field a block writes a number to (it must hold a float already, so that a
    block's write does not change the type others read)."""
    wire, current = _wire(fields, block, key, path)
    if not isinstance(current, float):
        raise ValueError(f"{block}: {key} {path} holds {current!r}; a block writes floats")
    return wire


def _wire(fields: FieldIndex, block: str, key: str, path: str) -> tuple[Wire, Any]:
    ref = FieldRef.parse(path)
    component, problem = fields.find(ref)
    if component is None:
        raise ValueError(f"{block}: {key} {path}: {problem}")
    return Wire(component, ref.field), getattr(component, ref.field)
