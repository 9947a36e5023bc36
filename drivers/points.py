"""Device points: where a value on a bus lands in the World, and how it is scaled.

Every driver maps each device point to an entity, a component and a field by name. The
same config builds both processes, so a point is referred to on the io channel by its
device name and its index in that device's ``points`` list, never by a string per value.

A value carries a quality next to it: the component field ``level`` comes with
``level_quality``. A value starts ``STALE`` (nothing read yet), is ``GOOD`` while fresh
reads arrive, turns ``STALE`` when reads stop (device offline, poll overdue) and ``BAD``
when the device answered but the point could not be read or decoded.
"""

from __future__ import annotations

import builtins
import enum
import math
import struct
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgeloop.config import KeyPath, Section
from edgeloop.safety.field_writes import number_refusal
from edgeloop.wiring import Claim


class Quality(enum.IntEnum):
    GOOD = 0
    STALE = 1
    BAD = 2


Direction = Literal["input", "output", "both"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
EntityName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]

# The Python type a point's field holds in its component, by point type.
FIELD_TYPES: dict[str, builtins.type] = {
    "int16": float,
    "uint16": float,
    "int32": float,
    "uint32": float,
    "int64": float,
    "uint64": float,
    "float32": float,
    "float64": float,
    "bool": bool,
    "string": str,
}

# What a field holds before anything was read, by its Python type.
FIELD_DEFAULTS: dict[builtins.type, Any] = {float: 0.0, bool: False, str: ""}

# The ``struct`` code of each fixed-size number type on a wire (Modbus registers,
# serial frames); the byte order is the caller's.
STRUCT_CODES: dict[str, str] = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


def default_value(point_type: str) -> Any:
    """What a point of ``point_type`` shows before anything was read."""
    return FIELD_DEFAULTS[FIELD_TYPES[point_type]]


class PointMap(Section):
    """Where a point lands and how its raw value becomes an engineering value:
    ``value = raw * scale + offset`` (and back for outputs).

    An output may say ``min``/``max`` (engineering units: a write outside them is
    refused, never clamped) and ``safe_value``: what the device gets while the safe
    state holds (e-stop, watchdog, interlock, ...; see ``edgeloop.safety``). An output
    without one keeps its last value then, and takes no writes until the state ends.
    """

    entity: EntityName
    component: Identifier
    field: Identifier
    type: Literal[
        "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
        "bool", "string",
    ] = "float32"  # fmt: skip
    scale: Finite = 1.0
    offset: Finite = 0.0
    unit: Annotated[str, Field(max_length=16)] = ""
    direction: Direction = "input"
    min: Finite | None = None
    max: Finite | None = None
    safe_value: Annotated[bool, Field(strict=True)] | Finite | None = None

    @model_validator(mode="after")
    def _scale_not_zero(self) -> PointMap:
        if self.scale == 0:
            raise ValueError("scale must not be 0 (outputs divide by it)")
        if self.field.endswith("_quality"):
            raise ValueError("field names ending in _quality are reserved for the quality flag")
        return self

    @model_validator(mode="after")
    def _limits_fit(self) -> PointMap:
        limited = self.min is not None or self.max is not None
        if limited and not self.takes_writes:
            raise ValueError(f"min and max limit writes: {self._not_written}")
        if limited and self.type in ("bool", "string"):
            raise ValueError(f"min and max are for numbers, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.safe_value is not None:
            self._check_safe_value(self.safe_value)
        return self

    def _check_safe_value(self, safe: bool | float) -> None:
        if not self.writes:
            raise ValueError("safe_value is what an output gets in the safe state: "
                             "set direction: output or both, or remove it")  # fmt: skip
        if self.type == "string":
            raise ValueError("a string output has no safe_value")
        if (self.type == "bool") != isinstance(safe, bool):
            wanted = "true or false" if self.type == "bool" else "a number"
            raise ValueError(f"safe_value of a {self.type} point must be {wanted}")
        refusal = self.refusal(safe)
        if refusal is not None:
            raise ValueError(f"safe_value {safe!r}: {refusal}")
        try:
            self.to_raw(safe)
        except ValueError as err:
            raise ValueError(f"safe_value: {err}") from None

    @property
    def takes_writes(self) -> bool:
        """Whether something writes the point's field to the device (or to the World)."""
        return self.writes

    @property
    def _not_written(self) -> str:
        return "set direction: output or both, or remove them"

    def refusal(self, value: Any) -> str | None:
        """Why ``value`` (engineering units) may not be written here, or None: outside
        ``min``/``max``, or not a finite number for a number point."""
        if self.type in ("bool", "string"):
            return None
        return number_refusal(value, low=self.min, high=self.max)

    @property
    def path(self) -> str:
        """The field, as config elsewhere names it: ``entity.Component.field``."""
        return f"{self.entity}.{self.component}.{self.field}"

    @property
    def reads(self) -> bool:
        return self.direction != "output"

    @property
    def writes(self) -> bool:
        return self.direction != "input"

    @property
    def field_type(self) -> builtins.type:
        return FIELD_TYPES[self.type]

    def to_value(self, raw: Any) -> Any:
        """The engineering value of a raw (decoded, unscaled) device value."""
        if self.type in ("bool", "string"):
            return raw
        return raw * self.scale + self.offset

    def to_raw(self, value: Any) -> Any:
        """The raw device value for an engineering value; ``ValueError`` if it has none
        (not finite, or out of the type's range)."""
        if self.type == "bool":
            return bool(value)
        if self.type == "string":
            return str(value)
        raw = (float(value) - self.offset) / self.scale
        if not math.isfinite(raw):
            raise ValueError(f"{value!r} is not a finite number")
        if self.type.startswith(("int", "uint")):
            whole = round(raw)
            low, high = INT_RANGES[self.type]
            if not low <= whole <= high:
                raise ValueError(f"{value!r} is out of range for {self.type}")
            return whole
        if self.type == "float32":
            # What the device will hold: comparing in this form is what tells a device
            # that rounded a value from one that changed it.
            try:
                return _FLOAT32.unpack(_FLOAT32.pack(raw))[0]
            except OverflowError:
                raise ValueError(f"{value!r} is out of range for float32") from None
        return raw


def point_claims(
    driver: str, device: str, points: Sequence[PointMap], at: KeyPath
) -> Iterator[Claim]:
    """A device's wiring: an input point writes its field, an output point reads it
    (and carries the bounds and safe value the field is written to the device with)."""
    for index, point in enumerate(points):
        by = f"{driver} {device} points[{index}]"
        where = (*at, "points", index)
        if point.reads:
            yield Claim(point.path, "write", by, "driver input", where, unit=point.unit)
        if point.writes:
            yield Claim(
                point.path,
                "read",
                by,
                "driver output",
                where,
                min=point.min,
                max=point.max,
                safe_value=point.safe_value,
                unit=point.unit,
            )


_FLOAT32 = struct.Struct("<f")

INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
}
