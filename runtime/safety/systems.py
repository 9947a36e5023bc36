"""The safe state in every App: its resource, its entity, and the causes the runtime
itself trips (the io process lost, Shutdown). Drivers and plugins read ``SafeState``
on their output side; see ``edgeloop.safety.safe_state``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from edgeloop.clock import Time
from edgeloop.names import Name
from edgeloop.realtime.io_link import HOME_WORKER, IO_LOST, IoInput, IoLink
from edgeloop.safety.alarm_list import AlarmList, show_alarms
from edgeloop.safety.audit_events import audit_alarm_transitions, audit_safe_state
from edgeloop.safety.safe_state import ENTITY, HeldOutputs, SafeState, SafeStateStatus
from edgeloop.safety.watchdogs import Watchdogs, check_watchdogs
from edgeloop.schedule import (
    ActuatorOutput,
    DataProcessing,
    FixedUpdate,
    IoReceive,
    SafetyInput,
    SafetyStatus,
    SensorInput,
    Shutdown,
    Startup,
    SystemSet,
)
from edgeloop.world import World

if TYPE_CHECKING:
    from edgeloop.app import App

SafetyChecks = SystemSet("SafetyChecks")  # after the sensors: watchdogs

IO_LOST_CAUSE = "io_lost"
SHUTDOWN_CAUSE = "shutdown"

Recovery = Literal["auto", "reset"]


class SafeOutputsNow:
    """Resource: the output sides' systems that apply the safe state, run at once (not
    at the next tick) when an e-stop edge wakes the loop; ``apply_safe_state_now``."""

    def __init__(self) -> None:
        self.systems: list[Callable[[World], None]] = []
        self.firsts = 0  # how many of ``systems`` were registered ``first``


class WakeSources:
    """Resource (the real-time runner's): file descriptors that wake the control loop
    as soon as they are readable, with what to call then (``add``). An urgent one
    (``add_urgent``, an e-stop line) is looked at between the system sets of a tick as
    well, so a press during a tick is acted on once the set under way has run, not when
    the tick ends; while its handler runs there, ``position`` is that set's name (None
    between ticks)."""

    def __init__(
        self,
        add: Callable[[int, Callable[[], None]], None],
        add_urgent: Callable[[int, Callable[[], None]], None],
    ) -> None:
        self.add = add
        self.add_urgent = add_urgent
        self.position: str | None = None


def apply_safe_state_now(world: World) -> None:
    """Between ticks: every output side applies the safe state, and the io link sends
    what each one queued before the next one runs (a fleet's stops, a record each, must
    not hold up a field device's safe values)."""
    link = world.get_resource(IoLink)
    tick = world.resource(Time).tick
    for system in world.resource(SafeOutputsNow).systems:
        system(world)
        if link is not None:
            link.flush(tick)


def safe_output(app: App, system: Callable[[World], None], *, first: bool = False) -> None:
    """Register an output side's system to run at once on an e-stop, and at Shutdown
    (after SafeState's own trip there). ``first``: before the others (that are not),
    for output sides with a record or two per device: field drivers, not robot fleets."""
    add_safe_state(app)
    now = app.world.resource(SafeOutputsNow)
    if first:
        now.systems.insert(now.firsts, system)
        now.firsts += 1
    else:
        now.systems.append(system)
    app.add_systems(Shutdown, system)


class SafetySettings:
    """Resource: how causes the runtime trips end. ``reset``: an operator's reset once
    the condition is gone; ``auto``: as soon as it is gone."""

    def __init__(self, io_lost: Recovery = "reset") -> None:
        self.io_lost: Recovery = io_lost


def add_safe_state(app: App) -> None:
    """The one SafeState of an App, with its entity and the runtime's own causes. Called
    for every App made from a config, and by each plugin that drives outputs (once per
    App, whoever calls first)."""
    if app.world.get_resource(SafeState) is not None:
        return
    app.insert_resource(SafeState())
    app.insert_resource(SafetySettings())
    app.insert_resource(SafeOutputsNow())
    app.insert_resource(HeldOutputs())
    app.add_systems(Startup, spawn_safety_entity)
    app.configure_sets(FixedUpdate, IoReceive, SafetyInput, SensorInput)
    app.configure_sets(FixedUpdate, SensorInput, SafetyChecks, DataProcessing)
    app.configure_sets(FixedUpdate, ActuatorOutput, SafetyStatus)
    app.insert_resource(Watchdogs())
    app.add_systems(FixedUpdate, follow_io_link, in_set=SafetyInput)
    app.add_systems(FixedUpdate, check_watchdogs, in_set=SafetyChecks)
    app.add_systems(
        FixedUpdate,
        show_safe_state,
        show_alarms,
        audit_safe_state,
        audit_alarm_transitions,
        in_set=SafetyStatus,
    )
    # First in Shutdown: every output side that runs after it sees the state.
    app.add_systems(Shutdown, trip_at_shutdown)


def spawn_safety_entity(world: World) -> None:
    world.commands.spawn(Name(ENTITY), SafeStateStatus(), AlarmList())


def follow_io_link(world: World) -> None:
    """SafetyInput: the io worker of the drivers lost trips ``io_lost``; its condition
    ends once it is back. (Another worker holds only network peers: its robots are
    disconnected, and their watchdogs see to them.)"""
    link = world.get_resource(IoLink)
    if link is None:
        return
    safe = world.resource(SafeState)
    for record in world.read(IoInput):
        if record.topic == IO_LOST and record.payload == HOME_WORKER:
            latched = world.resource(SafetySettings).io_lost == "reset"
            detail = "the io process of the drivers was lost"
            safe.trip(IO_LOST_CAUSE, detail, world.resource(Time).tick, latched=latched)
    cause = safe.causes.get(IO_LOST_CAUSE)
    if cause is not None and cause.held and link.worker_up(HOME_WORKER):
        safe.release(IO_LOST_CAUSE)


class _Shown:
    """Resource: the generation the status entity shows."""

    def __init__(self) -> None:
        self.generation = -1


def show_safe_state(world: World) -> None:
    """SafetyStatus: the ``safety`` entity follows the resource (when it changed)."""
    safe = world.resource(SafeState)
    shown = world.get_resource(_Shown)
    if shown is None:
        shown = _Shown()
        world.insert_resource(shown)
    if shown.generation == safe.generation:
        return
    shown.generation = safe.generation
    for status in world.query(SafeStateStatus):
        if safe.active and not status.active:
            status.since_tick = world.resource(Time).tick
        status.active = safe.active
        status.causes = safe.describe()


def trip_at_shutdown(world: World) -> None:
    """Shutdown: every output to its safe value before the runtime stops."""
    world.resource(SafeState).trip(
        SHUTDOWN_CAUSE, "the runtime is stopping", world.resource(Time).tick
    )
