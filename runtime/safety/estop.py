"""The e-stop: GPIO inputs that latch the safe state, released only by a reset.

The ``estop`` section names one input line, or two that must agree (a two-channel
stop, as safety relays have: a discrepancy is a stop too), an optional ``reset_input``
and an optional ``outputs_enabled`` output (active only while nothing holds every
output safe). Lines are on a kernel GPIO chip or the simulated one (``chip: sim``,
pressed with ``edgeloop estop press``); see ``edgeloop.drivers.gpio``.

An edge wakes the control loop (the lines' fds are wake sources), and a press is acted
on then, between ticks: ``estop`` trips SafeState (latched), and the output sides run
at once (``SafeOutputsNow``) with the io link flushed, so the safe values leave without
waiting for the next tick. Each tick polls the lines too (one-process mode has no wake
sources). A software stop (``safety.Stop`` from an operator) takes the same path.

Release: only a reset (``safety.Reset`` from an operator, or the reset input) while
every input is clear; a reset while pressed is refused with the reason. Presses,
releases, resets and refusals are audited.

This is the second channel: the hardwired safety chain (a relay cutting power) stays
primary. See docs/safety.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.config import ConfigSection, RuntimeConfig, Section
from edgeloop.data.tape import InputTape
from edgeloop.drivers.gpio import (
    GpioError,
    GpioLine,
    InputLine,
    OutputLine,
    open_input,
    open_output,
)
from edgeloop.drivers.gpio.claims import claim_lines
from edgeloop.net.network import Network, read_network
from edgeloop.net.registry import message
from edgeloop.priority import Priority
from edgeloop.safety.audit_events import audit
from edgeloop.safety.safe_state import SafeState
from edgeloop.safety.systems import (
    WakeSources,
    add_safe_state,
    apply_safe_state_now,
)
from edgeloop.schedule import FixedUpdate, SafetyInput, SafetyStatus, Shutdown, Startup
from edgeloop.world import World

log = logging.getLogger("edgeloop.estop")

CAUSE = "estop"
SECTION_NAME = "estop"


class EStopConfig(Section):
    inputs: Annotated[list[GpioLine], Field(min_length=1, max_length=2)]
    reset_input: GpioLine | None = None
    outputs_enabled: GpioLine | None = None

    def named_lines(self) -> list[tuple[str, GpioLine]]:
        """Each line with its key (``estop.inputs[0]``)."""
        named = [(f"{SECTION_NAME}.inputs[{i}]", line) for i, line in enumerate(self.inputs)]
        for key in ("reset_input", "outputs_enabled"):
            line = getattr(self, key)
            if line is not None:
                named.append((f"{SECTION_NAME}.{key}", line))
        return named

    @model_validator(mode="after")
    def _lines_distinct(self) -> EStopConfig:
        lines = [*self.inputs, self.reset_input, self.outputs_enabled]
        seen = [(line.chip, line.offset) for line in lines if line is not None]
        twice = sorted({place for place in seen if seen.count(place) > 1})
        if twice:
            chip, offset = twice[0]
            raise ValueError(f"{chip} line {offset} is named twice: one line, one job")
        return self


@message(name="safety.Stop", priority=Priority.CRITICAL, senders=("operator", "admin"))
@dataclass
class Stop:
    """A software e-stop: latches as the button does."""

    reason: str = ""


@message(name="safety.Reset", priority=Priority.HIGH, senders=("operator", "admin"))
@dataclass
class Reset:
    """Release the latched safe state; refused while an e-stop input is active."""

    command_id: int = 0


@message(name="safety.Result", priority=Priority.HIGH, senders=())
@dataclass
class Result:
    """The appliance's answer to a Stop or a Reset."""

    action: str
    accepted: bool
    reason: str
    command_id: int = 0


class EStop:
    """Resource: the e-stop's lines and what they say."""

    def __init__(self, config: EStopConfig) -> None:
        self.config = config
        self.inputs: list[InputLine] = []
        self.reset_line: InputLine | None = None
        self.enabled: OutputLine | None = None
        self.pressed = False
        self.fault = ""  # why a line could not be read, once it could not
        self.presses = 0
        self._reset_was = False
        self._enabled_shown: bool | None = None

    def open(self, state_dir: Path) -> None:
        config = self.config
        self.inputs = [open_input(line, state_dir) for line in config.inputs]
        if config.reset_input is not None:
            self.reset_line = open_input(config.reset_input, state_dir)
        if config.outputs_enabled is not None:
            self.enabled = open_output(config.outputs_enabled, state_dir, initial=False)

    def lines(self) -> list[InputLine]:
        return [*self.inputs, *([self.reset_line] if self.reset_line else [])]

    def close(self) -> None:
        for line in self.lines():
            line.close()
        if self.enabled is not None:
            self.enabled.set(False)
            self.enabled.close()

    def poll(self, world: World, acted_now: bool = False) -> None:
        """Read the lines; latch, release, reset and drive ``outputs_enabled``. A line
        that cannot be read (its chip gone) is a stop: fail safe, whatever
        ``on_system_error`` says, and held until the appliance restarts with it back."""
        safe = world.resource(SafeState)
        tick = world.resource(Time).tick
        try:
            for line in self.lines():
                line.read_edges()
            states = [line.active() for line in self.inputs]
            reset_now = self.reset_line is not None and self.reset_line.active()
            fault = ""
        except GpioError as error:
            states, reset_now, fault = [True], False, f"input fault: {error}"
        if fault and not self.fault:
            log.error("e-stop: %s; held as a press", fault)
            audit(world, "estop.fault", detail=fault)
        self.fault = self.fault or fault
        if self.fault:
            states = [True]  # not to be released by a line that reads again
        pressed = any(states)
        if pressed:
            detail = self.fault or (
                "pressed" if all(states) else "inputs disagree (a channel fault)"
            )
            if safe.trip(CAUSE, detail, tick, latched=True):
                self.presses += 1
                if acted_now:  # the safe values first: the log and the audit can wait
                    apply_safe_state_now(world)
                log.warning("e-stop: %s; outputs to their safe values", detail)
                audit(world, "estop.press", detail=detail)
        elif self.pressed:
            safe.release(CAUSE)
            audit(world, "estop.release")
            log.info("e-stop released: a reset ends the safe state")
        self.pressed = pressed
        if reset_now and not self._reset_was:
            reset(world, "the reset input")
        self._reset_was = reset_now
        self.show_enabled(world)

    def show_enabled(self, world: World) -> None:
        """Drive ``outputs_enabled``; one that cannot be driven holds the safe state
        (as an input that cannot be read)."""
        if self.enabled is None:
            return
        safe = world.resource(SafeState)
        enabled = not safe.everything
        if enabled == self._enabled_shown:
            return
        try:
            self.enabled.set(enabled)
        except GpioError as error:
            fault = f"outputs_enabled fault: {error}"
            if not self.fault:
                log.error("e-stop: %s; held as a press", fault)
                audit(world, "estop.fault", detail=fault)
                self.fault = fault
            safe.trip(CAUSE, fault, world.resource(Time).tick, latched=True)
            return
        self._enabled_shown = enabled


def reset(world: World, who: str) -> tuple[bool, str]:
    """An operator's reset of every latched cause whose condition is gone; whether it
    was accepted, and why not."""
    safe = world.resource(SafeState)
    ended, refused = safe.reset()
    if refused:
        reason = "still active: " + ", ".join(
            f"{name} ({safe.causes[name].detail})" for name in refused
        )
        audit(world, "safety.reset_refused", by=who, reason=reason, ended=ended)
        log.warning("reset by %s refused: %s", who, reason)
        return False, reason
    audit(world, "safety.reset", by=who, ended=ended)
    log.info("reset by %s: %s", who, ", ".join(ended) or "nothing was latched")
    return True, "reset" if ended else "nothing to reset"


class EStopPlugin:
    def __init__(self, config: EStopConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_safe_state(app)
        claim_lines(app, self.config.named_lines())
        estop = EStop(self.config)
        app.insert_resource(estop)
        app.add_systems(Startup, open_estop)
        app.add_systems(FixedUpdate, poll_estop, in_set=SafetyInput)
        app.add_systems(FixedUpdate, estop_commands, in_set=SafetyInput)
        app.add_systems(FixedUpdate, show_outputs_enabled, in_set=SafetyStatus)
        app.add_systems(Shutdown, close_estop)


def open_estop(world: World) -> None:
    """Startup: open the lines, and let their edges wake the control loop."""
    estop = world.resource(EStop)
    runtime = world.get_resource(RuntimeConfig) or RuntimeConfig()
    estop.open(runtime.state_dir)

    def handler() -> None:
        estop.poll(world, acted_now=True)

    tape = world.get_resource(InputTape)
    if tape is not None:  # recording or replaying: the lines' levels go through the tape
        estop.inputs = [tape.line(f"estop.inputs[{i}]", x) for i, x in enumerate(estop.inputs)]
        if estop.reset_line is not None:
            estop.reset_line = tape.line("estop.reset_input", estop.reset_line)
        handler = tape.wake("estop", handler)
    wake = world.get_resource(WakeSources)
    if wake is not None:
        for line in estop.lines():
            wake.add_urgent(line.fileno(), handler)
    estop.poll(world)  # pressed at start: latched before the first output


def poll_estop(world: World) -> None:
    world.resource(EStop).poll(world)


def show_outputs_enabled(world: World) -> None:
    world.resource(EStop).show_enabled(world)


def estop_commands(world: World) -> None:
    """SafetyInput: software stops and resets from operators."""
    network = world.get_resource(Network)
    if network is None:
        return
    safe = world.resource(SafeState)
    tick = world.resource(Time).tick
    for data in read_network(world, Stop):
        who = network.describe(data.connection)
        said = data.message.reason
        detail = f"software stop by {who}" + (f": {said}" if said else "")
        if safe.trip(CAUSE, detail, tick, latched=True):
            log.warning("e-stop: %s; outputs to their safe values", detail)
        audit(world, "estop.software", by=who, reason=data.message.reason)
        if not world.resource(EStop).pressed:
            safe.release(CAUSE)  # no button holds it: latched until a reset
        network.send(world, data.connection, Result("stop", True, detail))
    for asked in read_network(world, Reset):
        accepted, reason = reset(world, network.describe(asked.connection))
        answer = Result("reset", accepted, reason, asked.message.command_id)
        network.send(world, asked.connection, answer)


def close_estop(world: World) -> None:
    world.resource(EStop).close()


SECTION = ConfigSection(SECTION_NAME, EStopConfig, EStopPlugin, message_types=(Stop, Reset, Result))
