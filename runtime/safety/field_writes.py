"""The checks every write to a World field from outside takes (a Modbus client, a
Sparkplug host): what the field can hold, and whether the safe state lets it change."""

from __future__ import annotations

from typing import Any

from edgeloop.safety.safe_state import FieldKey, HeldOutputs, SafeState
from edgeloop.world import World


def as_field_type(current: Any, value: Any) -> tuple[Any, str | None]:
    """``value`` as the type the field holds now, or why it cannot be."""
    if isinstance(current, bool) or isinstance(value, bool) or isinstance(current, str):
        if type(value) is not type(current):
            return None, f"the field holds a {type(current).__name__}"
        return value, None
    if isinstance(current, int):
        if not float(value).is_integer():
            return None, "the field holds whole numbers"
        return int(value), None
    if isinstance(current, float):
        return float(value), None
    return None, f"a {type(current).__name__} field cannot be written"


def held(world: World) -> set[FieldKey]:
    """The output fields the safe state holds now."""
    outputs = world.get_resource(HeldOutputs)
    return set() if outputs is None else outputs.fields


def safe_state_refusal(world: World, key: FieldKey) -> str | None:
    """Why the safe state refuses a write to ``key`` now: it holds the field, or it
    holds every output (an e-stop, the io process lost, an interlock on everything),
    when no one from outside changes what the plant is told. None: it does not."""
    safe = world.get_resource(SafeState)
    if key in held(world) and safe is not None:
        return f"the safe state holds it: {safe.describe()}"
    if safe is not None and safe.everything:
        return f"the safe state holds every output: {safe.describe()}"
    return None
