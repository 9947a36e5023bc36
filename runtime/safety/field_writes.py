"""The one check every write to a World field from outside takes (a Modbus client, a
Sparkplug host), and the value checks the points of every driver share.

The safe-state policy for such writes is the design's: the safe state holds *outputs* at
their safe values, and every field has one writer. So a write from outside is refused
when the safe state holds that field (it is an output of a device held safe: an e-stop,
a watchdog, an interlock), and taken otherwise, e-stop or not: a setpoint an HMI or a
host changes drives nothing while the outputs are held, and a reset restarts nothing by
itself either way (docs/safety.md, "Writes from outside").
"""

from __future__ import annotations

import math
from typing import Any, Literal

from edgeloop.component import Component
from edgeloop.safety.safe_state import FieldKey, HeldOutputs, SafeState
from edgeloop.world import World

ValueKind = Literal["bool", "string", "number"]


def number_refusal(value: Any, *, low: float | None, high: float | None) -> str | None:
    """Why ``value`` is not a number a field limited to ``low``..``high`` may take."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if low is not None and value < low:
        return f"{value:g} is below min {low:g}"
    if high is not None and value > high:
        return f"{value:g} is above max {high:g}"
    return None


def value_refusal(
    value: Any, kind: ValueKind, *, low: float | None = None, high: float | None = None
) -> str | None:
    """Why ``value`` is not a ``kind`` within ``low``..``high`` (numbers), or None."""
    if kind == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not a bool"
    if kind == "string":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    return number_refusal(value, low=low, high=high)


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
    """Why the safe state refuses a write from outside to ``key`` now (it holds the
    field), or None."""
    safe = world.get_resource(SafeState)
    if safe is not None and key in held(world):
        return f"the safe state holds it: {safe.describe()}"
    return None


def checked_write(
    world: World, key: FieldKey, component: Component | None, value: Any
) -> tuple[Any, str | None]:
    """What a write from outside sets ``key`` to, or why it may not: the field must be
    in the World (``component``), not held by the safe state, and able to hold
    ``value``. The writer's own check (writable, type, bounds) comes first."""
    if component is None:
        return None, "the field is not in the World"
    reason = safe_state_refusal(world, key)
    if reason is not None:
        return None, reason
    return as_field_type(getattr(component, key[2]), value)
