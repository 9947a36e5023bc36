"""The ``blocks`` plugin: function blocks wired from YAML, run every fixed tick.

At Startup (in ``BlocksStartup``, after every plugin's Startup has spawned its
entities) each block's fields are found in the World; a field that is not there stops
the App with a ``ValueError`` naming the block and the field, and holds every output
safe (cause ``blocks``) in case the App runs on under ``on_system_error: skip``.

Interlocks and alarms run in DataProcessing: they see this tick's inputs, and an
interlock's trip is in SafeState before ControlLogic and ActuatorOutput run, so no
output of the tick leaves unsafe. A block output they watch is the previous tick's
(one tick late is nothing to an alarm; an interlock on a sensor is the usual case).
PID, ramp and scale blocks run in ControlLogic, in data-flow order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from edgeloop.alarms import Severity
from edgeloop.app import App
from edgeloop.blocks import interlock
from edgeloop.blocks.alarm import LimitAlarm, LimitCondition
from edgeloop.blocks.config import (
    AlarmConfig,
    BlocksConfig,
    ControlBlock,
    InterlockConfig,
    PidBlockConfig,
    RampConfig,
    ScaleConfig,
    label,
)
from edgeloop.blocks.interlock import Interlock
from edgeloop.blocks.pid import PidBlock, PidLoop, PidMode
from edgeloop.blocks.ramp import Ramp
from edgeloop.blocks.scale import Scale
from edgeloop.blocks.wiring import Block, number_in, number_out
from edgeloop.clock import Time
from edgeloop.config import ConfigSection
from edgeloop.field_ref import FieldIndex, FieldRef
from edgeloop.names import Name
from edgeloop.safety.safe_state import FieldKey, SafeState
from edgeloop.safety.systems import add_safe_state
from edgeloop.schedule import ControlLogic, DataProcessing, FixedUpdate, Main, Startup, SystemSet
from edgeloop.wiring import Claim, read, write
from edgeloop.world import World

BlocksStartup = SystemSet("BlocksStartup")
WIRING_CAUSE = "blocks"  # the SafeState cause held while the blocks could not be wired


@dataclass
class Blocks:
    """Resource: the wired blocks, in the order they run."""

    watch: list[Block] = field(default_factory=list)  # interlocks and alarms
    control: list[Block] = field(default_factory=list)  # pid, ramp, scale


class BlocksPlugin:
    def __init__(self, config: BlocksConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_safe_state(app)  # interlocks trip it; App.from_config has added it already
        app.insert_resource(Blocks())
        app.configure_sets(Startup, Main, BlocksStartup)
        app.add_systems(Startup, self.wire, in_set=BlocksStartup)
        app.add_systems(FixedUpdate, run_watch_blocks, in_set=DataProcessing)
        app.add_systems(FixedUpdate, run_control_blocks, in_set=ControlLogic)

    def wire(self, world: World) -> None:
        """BlocksStartup: find every block's fields and build the blocks."""
        try:
            world.insert_resource(wired(self.config, world))
        except ValueError as err:
            tick = world.resource(Time).tick
            world.resource(SafeState).trip(WIRING_CAUSE, f"not wired: {err}", tick)
            raise


def wired(config: BlocksConfig, world: World) -> Blocks:
    """The blocks of ``config`` wired to the World; ``ValueError`` listing every block
    whose fields are not there."""
    problems: list[str] = []
    taken = FieldIndex(world).entities
    for pid in config.pid:
        if pid.name in taken:
            problems.append(f"{label(pid)}: an entity named {pid.name!r} exists; rename the block")
        else:
            world.spawn(Name(pid.name), _pid_component(pid))
    fields = FieldIndex(world)
    dt = world.resource(Time).delta
    blocks = Blocks()
    watched: list[InterlockConfig | AlarmConfig] = [*config.interlock, *config.alarm]
    for block in watched:
        try:
            blocks.watch.append(_watch_block(block, fields, dt))
        except ValueError as err:
            problems.append(str(err))
    for control in config.control_order():
        try:
            blocks.control.append(_control_block(control, fields, dt))
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("\n".join(problems))
    return blocks


def _pid_component(config: PidBlockConfig) -> PidBlock:
    return PidBlock(
        kp=config.kp,
        ki=config.ki,
        kd=config.kd,
        setpoint=config.setpoint,
        out_min=config.out_min,
        out_max=config.out_max,
        mode=PidMode(config.mode),
        manual_output=config.manual_output,
    )


def _watch_block(config: InterlockConfig | AlarmConfig, fields: FieldIndex, dt: float) -> Block:
    where = label(config)
    if isinstance(config, InterlockConfig):
        try:
            return Interlock(
                config.name, config.when, fields, scope=config.scope, latched=config.latched
            )
        except ValueError as err:
            raise ValueError(f"{where}: when: {err}") from None
    condition = LimitCondition(
        config.limit,
        high=config.high is not None,
        deadband=config.deadband,
        on_delay=round(config.on_delay_s / dt),
        off_delay=round(config.off_delay_s / dt),
    )
    source = number_in(fields, where, "input", config.input)
    return LimitAlarm(config.name, source, condition, Severity(config.severity), config.message)


def _control_block(config: ControlBlock, fields: FieldIndex, dt: float) -> Block:
    where = label(config)
    if isinstance(config, PidBlockConfig):
        entity = fields.entities[config.name]
        return PidLoop(
            config.name,
            fields.world.get(entity, PidBlock),
            number_in(fields, where, "pv", config.pv),
            (number_out(fields, where, "output", config.output), _key(config.output)),
            None
            if config.setpoint_from is None
            else number_in(fields, where, "setpoint_from", config.setpoint_from),
        )
    source = number_in(fields, where, "input", config.input)
    output = number_out(fields, where, "output", config.output)
    if isinstance(config, RampConfig):
        down = config.rate if config.rate_down is None else config.rate_down
        return Ramp(config.name, source, output, up_per_s=config.rate, down_per_s=down, dt=dt)
    assert isinstance(config, ScaleConfig)
    return Scale(
        config.name,
        source,
        output,
        k=config.k,
        offset=config.offset,
        low=config.min,
        high=config.max,
    )


def _key(path: str) -> FieldKey:
    ref = FieldRef.parse(path)
    return ref.entity, ref.component, ref.field


def run_watch_blocks(world: World) -> None:
    """DataProcessing: every interlock and alarm block, once."""
    tick = world.resource(Time).tick
    for block in world.resource(Blocks).watch:
        block.step(world, tick)


def run_control_blocks(world: World) -> None:
    """ControlLogic: every PID, ramp and scale block, in data-flow order."""
    tick = world.resource(Time).tick
    for block in world.resource(Blocks).control:
        block.step(world, tick)


def wiring(config: BlocksConfig) -> Iterator[Claim]:
    """Each block reads its inputs; a control block writes its output (and its PID's
    own fields)."""
    kinds: tuple[tuple[str, Sequence[ControlBlock]], ...] = (
        ("pid", config.pid),
        ("ramp", config.ramp),
        ("scale", config.scale),
    )
    for kind, blocks in kinds:
        for index, block in enumerate(blocks):
            at, by = (kind, index), label(block)
            yield from (read(path, by, f"{kind} block", at) for path in block.reads())
            yield from (write(path, by, f"{kind} block", at) for path in block.writes())
    for index, alarm in enumerate(config.alarm):
        yield read(alarm.input, label(alarm), "alarm block", ("alarm", index))
    for index, lock in enumerate(config.interlock):
        for ref in interlock.fields_of(interlock.parse(lock.when)):
            yield read(str(ref), label(lock), "interlock", ("interlock", index))


SECTION = ConfigSection("blocks", BlocksConfig, BlocksPlugin, wiring=wiring)
