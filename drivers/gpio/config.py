"""One GPIO line as a config entry: its chip, offset and electrical settings.

There is no ``gpio`` section: the sections that use lines (``estop``) embed these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from edgeloop.config import Section

SIM_CHIP = "sim"
DEVICE_DIR = Path("/dev")
MAX_DEBOUNCE_MS = 1000
_CHIP_NAME = re.compile(r"gpiochip\d+")

Bias = Literal["as_is", "pull_up", "pull_down", "disabled"]


class GpioLine(Section):
    """A line of a GPIO chip: ``chip`` is a path (``/dev/gpiochip0``), a chip name
    (``gpiochip0``, found in /dev) or ``sim`` (the simulated chip of this process)."""

    chip: str
    offset: Annotated[int, Field(ge=0, strict=True)]
    active_low: Annotated[bool, Field(strict=True)] = False
    bias: Bias = "as_is"
    # an edge is reported once the line has held its new level this long
    debounce_ms: Annotated[int, Field(ge=0, le=MAX_DEBOUNCE_MS, strict=True)] = 0

    @field_validator("chip")
    @classmethod
    def _chip_is_known_form(cls, chip: str) -> str:
        if chip == SIM_CHIP or chip.startswith("/") or _CHIP_NAME.fullmatch(chip):
            return chip
        raise ValueError(
            f"{chip!r} is not a chip: give a path (/dev/gpiochip0), a chip name (gpiochip0) "
            f"or {SIM_CHIP}"
        )

    @property
    def simulated(self) -> bool:
        return self.chip == SIM_CHIP

    @property
    def chip_path(self) -> Path:
        """The chip's character device (for a real chip)."""
        return Path(self.chip) if self.chip.startswith("/") else DEVICE_DIR / self.chip

    def __str__(self) -> str:
        return f"{self.chip} line {self.offset}"
