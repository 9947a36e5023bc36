"""The ``blocks`` config section: PID, interlock, alarm, ramp and scale blocks.

Each block names the World fields it reads and writes as ``entity.Component.field``.
What can be checked without a World is checked here, when the config is loaded (so a
problem points at the YAML line): block names, interlock syntax, one writer per field
and the order the control blocks run in. Whether the fields exist is known only at
Startup (``edgeloop.blocks.plugin``).
"""

from __future__ import annotations

import heapq
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgeloop.blocks import interlock
from edgeloop.config import Section
from edgeloop.field_ref import FieldPath

BlockName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
# strict: YAML reads "yes" as true, which lax pydantic would turn into 1.0
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]
MAX_BLOCKS = 1000  # of each kind


class PidBlockConfig(Section):
    name: BlockName
    pv: FieldPath
    output: FieldPath
    setpoint: Finite = 0.0
    setpoint_from: FieldPath | None = None
    kp: NonNegative
    ki: NonNegative = 0.0
    kd: NonNegative = 0.0
    out_min: Finite = 0.0
    out_max: Finite = 1.0
    mode: Literal["auto", "manual"] = "auto"
    manual_output: Finite = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> PidBlockConfig:
        if self.out_min >= self.out_max:
            raise ValueError(f"out_min {self.out_min:g} must be below out_max {self.out_max:g}")
        if self.setpoint_from is not None and "setpoint" in self.model_fields_set:
            raise ValueError("setpoint_from wires the setpoint: remove setpoint (or it)")
        return self

    def reads(self) -> list[str]:
        return [self.pv] + ([self.setpoint_from] if self.setpoint_from else [])

    def writes(self) -> list[str]:
        # Its own PidBlock's fields too: no other block may write them.
        own = ["pv", "output", "integral", "last_pv", "manual_output"]
        own += ["setpoint"] if self.setpoint_from else []
        return [self.output] + [f"{self.name}.PidBlock.{field}" for field in own]


class InterlockConfig(Section):
    name: BlockName
    when: Annotated[str, Field(max_length=2000)]
    latched: Flag = False
    scope: BlockName | None = None  # a device: only its outputs are held safe

    @field_validator("when")
    @classmethod
    def _parses(cls, text: str) -> str:
        interlock.parse(text)
        return text


class AlarmConfig(Section):
    name: BlockName
    input: FieldPath
    high: Finite | None = None
    low: Finite | None = None
    deadband: NonNegative = 0.0
    on_delay_s: NonNegative = 0.0
    off_delay_s: NonNegative = 0.0
    severity: Literal["warning", "fault", "critical"] = "warning"
    text: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> AlarmConfig:
        if (self.high is None) == (self.low is None):
            raise ValueError("an alarm has one limit: set high or low")
        return self

    @property
    def limit(self) -> float:
        return self.high if self.high is not None else self.low  # type: ignore[return-value]

    @property
    def message(self) -> str:
        if self.text is not None:
            return self.text
        side = "above" if self.high is not None else "below"
        return f"{self.input} {side} {self.limit:g}"


class RampConfig(Section):
    name: BlockName
    input: FieldPath
    output: FieldPath
    rate: Positive  # units per second, rising (and falling, unless rate_down)
    rate_down: Positive | None = None

    def reads(self) -> list[str]:
        return [self.input]

    def writes(self) -> list[str]:
        return [self.output]


class ScaleConfig(Section):
    name: BlockName
    input: FieldPath
    output: FieldPath
    k: Finite = 1.0
    offset: Finite = 0.0
    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ScaleConfig:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self

    def reads(self) -> list[str]:
        return [self.input]

    def writes(self) -> list[str]:
        return [self.output]


ControlBlock = PidBlockConfig | RampConfig | ScaleConfig
_KINDS = {PidBlockConfig: "pid", RampConfig: "ramp", ScaleConfig: "scale"}


def label(block: ControlBlock | InterlockConfig | AlarmConfig) -> str:
    """How messages name a block: ``blocks.ramp 'sp1'``."""
    kind = {**_KINDS, InterlockConfig: "interlock", AlarmConfig: "alarm"}[type(block)]
    return f"blocks.{kind} {block.name!r}"


class BlocksConfig(Section):
    pid: Annotated[list[PidBlockConfig], Field(max_length=MAX_BLOCKS)] = Field(default_factory=list)
    interlock: Annotated[list[InterlockConfig], Field(max_length=MAX_BLOCKS)] = Field(
        default_factory=list
    )
    alarm: Annotated[list[AlarmConfig], Field(max_length=MAX_BLOCKS)] = Field(default_factory=list)
    ramp: Annotated[list[RampConfig], Field(max_length=MAX_BLOCKS)] = Field(default_factory=list)
    scale: Annotated[list[ScaleConfig], Field(max_length=MAX_BLOCKS)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _wiring(self) -> BlocksConfig:
        every: list[ControlBlock | InterlockConfig | AlarmConfig] = [
            *self.pid,
            *self.interlock,
            *self.alarm,
            *self.ramp,
            *self.scale,
        ]
        names = [block.name for block in every]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise ValueError(f"block names must be unique: {', '.join(dupes)}")
        writer: dict[str, ControlBlock] = {}
        for block in self.control_blocks():
            for path in block.writes():
                other = writer.setdefault(path, block)
                if other is not block:
                    raise ValueError(
                        f"{path} is written by {label(other)} and by {label(block)}; "
                        "a field has one writer"
                    )
        self.control_order()
        return self

    def control_blocks(self) -> list[ControlBlock]:
        return [*self.pid, *self.ramp, *self.scale]

    def control_order(self) -> list[ControlBlock]:
        """The control blocks in the order they run: a block after every block whose
        output it reads (so a ramped setpoint reaches its PID in the same tick), ties
        in config order. ``ValueError`` if they read each other in a loop."""
        blocks = self.control_blocks()
        writer = {path: index for index, block in enumerate(blocks) for path in block.writes()}
        after: list[set[int]] = [
            {writer[path] for path in block.reads() if path in writer} for block in blocks
        ]
        ready = [index for index, waits in enumerate(after) if not waits]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            done = heapq.heappop(ready)
            order.append(done)
            for index, waits in enumerate(after):
                if done in waits:
                    waits.discard(done)
                    if not waits:
                        heapq.heappush(ready, index)
        if len(order) < len(blocks):
            stuck = ", ".join(label(b) for i, b in enumerate(blocks) if i not in order)
            raise ValueError(
                f"{stuck} read each other's outputs in a loop; break it with a field "
                "no block writes"
            )
        return [blocks[index] for index in order]
