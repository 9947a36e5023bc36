"""GPIO lines as config: ``GpioLine`` (a chip, an offset and electrical settings), which
sections embed (``estop``), and the ``gpio`` driver section, whose points are lines
mapped to World fields (``GpioConfig``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from edgeloop.config import Section
from edgeloop.drivers.points import EntityName, Identifier, PointMap

SIM_CHIP = "sim"
DEVICE_DIR = Path("/dev")
MAX_DEBOUNCE_MS = 1000
_CHIP_NAME = re.compile(r"gpiochip\d+")

Bias = Literal["as_is", "pull_up", "pull_down", "disabled"]


def _known_chip_form(chip: str) -> str:
    if chip == SIM_CHIP or chip.startswith("/") or _CHIP_NAME.fullmatch(chip):
        return chip
    raise ValueError(
        f"{chip!r} is not a chip: give a path (/dev/gpiochip0), a chip name (gpiochip0) "
        f"or {SIM_CHIP}"
    )


Chip = Annotated[str, AfterValidator(_known_chip_form)]
Offset = Annotated[int, Field(ge=0, strict=True)]
ActiveLow = Annotated[bool, Field(strict=True)]
# an edge is reported once the line has held its new level this long
DebounceMs = Annotated[int, Field(ge=0, le=MAX_DEBOUNCE_MS, strict=True)]
Seconds = Annotated[float, Field(gt=0, le=3600, strict=True, allow_inf_nan=False)]


class GpioLine(Section):
    """A line of a GPIO chip: ``chip`` is a path (``/dev/gpiochip0``), a chip name
    (``gpiochip0``, found in /dev) or ``sim`` (the simulated chip of this process)."""

    chip: Chip
    offset: Offset
    active_low: ActiveLow = False
    bias: Bias = "as_is"
    debounce_ms: DebounceMs = 0

    @property
    def simulated(self) -> bool:
        return self.chip == SIM_CHIP

    @property
    def chip_path(self) -> Path:
        """The chip's character device (for a real chip)."""
        return Path(self.chip) if self.chip.startswith("/") else DEVICE_DIR / self.chip

    def __str__(self) -> str:
        return f"{self.chip} line {self.offset}"


def chip_key(chip: str) -> str:
    """The chip a ``chip`` entry names, one spelling for each (``gpiochip0`` and
    ``/dev/gpiochip0`` are one chip)."""
    if chip == SIM_CHIP or chip.startswith("/"):
        return chip
    return str(DEVICE_DIR / chip)


# -- the gpio section ---------------------------------------------------------------------

DRIVER = "gpio"


class GpioPoint(Section):
    """A line of the device's chip as a ``bool`` field: an input's logical level
    (``active_low`` applied) is read into it every tick; an output's field drives it."""

    offset: Offset
    entity: EntityName
    component: Identifier
    field: Identifier
    type: Literal["bool"] = "bool"
    direction: Literal["input", "output"] = "input"
    safe_value: Annotated[bool, Field(strict=True)] | None = None
    active_low: ActiveLow = False
    bias: Bias = "as_is"
    debounce_ms: DebounceMs = 0

    @model_validator(mode="after")
    def _fits_its_direction(self) -> GpioPoint:
        if self.field.endswith("_quality"):
            raise ValueError("field names ending in _quality are reserved for the quality flag")
        if self.direction == "input" and self.safe_value is not None:
            raise ValueError(
                "safe_value is what an output gets in the safe state: set direction: output, "
                "or remove it"
            )
        if self.direction == "output" and self.debounce_ms:
            raise ValueError("debounce_ms is for inputs: an output is driven, not sensed")
        return self

    def line(self, chip: str) -> GpioLine:
        return GpioLine(
            chip=chip,
            offset=self.offset,
            active_low=self.active_low,
            bias=self.bias,
            debounce_ms=self.debounce_ms,
        )

    def point_map(self) -> PointMap:
        """The point as the field bridge knows every driver's."""
        return PointMap(
            entity=self.entity,
            component=self.component,
            field=self.field,
            type="bool",
            direction=self.direction,
            safe_value=self.safe_value,
        )


class GpioDevice(Section):
    """Lines of one chip, one entity with ``DeviceHealth``."""

    name: EntityName
    chip: Chip
    points: Annotated[list[GpioPoint], Field(min_length=1)]
    reopen_initial_s: Seconds = 0.5
    reopen_max_s: Seconds = 30.0

    def lines(self) -> list[GpioLine]:
        return [point.line(self.chip) for point in self.points]


class GpioConfig(Section):
    devices: Annotated[list[GpioDevice], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> GpioConfig:
        names = [d.name for d in self.devices]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"device names must be unique: {', '.join(dupes)}")
        seen: dict[tuple[str, int], str] = {}
        for d, device in enumerate(self.devices):
            for p, point in enumerate(device.points):
                where = f"devices[{d}].points[{p}]"
                place = (chip_key(device.chip), point.offset)
                if place in seen:
                    raise ValueError(
                        f"{where}: {device.chip} line {point.offset} is also {seen[place]}: "
                        "one line, one job"
                    )
                seen[place] = where
        return self
