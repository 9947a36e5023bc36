"""Schedules, system sets and the order systems run in.

A schedule runs its sets in a declared order and, inside a set, its systems in the order
they were added. Order is never implied by imports: ``configure_sets`` chains sets, and a
plugin can slot its own set between two existing ones by chaining it with both.
Commands are applied after each set.

The sets plugins slot in before SensorInput and after ActuatorOutput are ordered here
(``INPUT_ORDER``, ``OUTPUT_ORDER``), not by which plugin was added first: the order of
the sections in the YAML file changes nothing.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgeloop.messages import MessageReader
    from edgeloop.world import World

System = Callable[["World"], None]
Condition = Callable[["World"], bool]


class ScheduleLabel(Enum):
    STARTUP = "Startup"
    FIXED_UPDATE = "FixedUpdate"
    UPDATE = "Update"
    SHUTDOWN = "Shutdown"


Startup = ScheduleLabel.STARTUP
FixedUpdate = ScheduleLabel.FIXED_UPDATE
Update = ScheduleLabel.UPDATE
Shutdown = ScheduleLabel.SHUTDOWN


@dataclass(frozen=True, slots=True)
class SystemSet:
    name: str

    def __str__(self) -> str:
        return self.name


Main = SystemSet("Main")  # the single default set of Startup and Shutdown
SensorInput = SystemSet("SensorInput")
DataProcessing = SystemSet("DataProcessing")
ControlLogic = SystemSet("ControlLogic")
ActuatorOutput = SystemSet("ActuatorOutput")
WebUIUpdates = SystemSet("WebUIUpdates")
DataLogging = SystemSet("DataLogging")
HealthMonitoring = SystemSet("HealthMonitoring")

# Where each tick's inputs land, in this order, before SensorInput. The safe state is
# first, so that everything after it sees this tick's e-stop latched. Then what the
# plant measures (field devices), then what is asked of it (network messages, then
# Modbus clients' writes, then Sparkplug hosts'): a command is checked against this
# tick's state. One writer per field (edgeloop.wiring) keeps them from undoing each
# other; this order makes the tick the same whatever order the config's sections are in.
IoReceive = SystemSet("IoReceive")  # the records the io process sent since the last tick
SafetyInput = SystemSet("SafetyInput")  # e-stop, io lost: the safe state latched
GpioInput = SystemSet("GpioInput")  # GPIO driver lines read here, for FieldInput to take
FieldInput = SystemSet("FieldInput")  # field-device values and health
NetworkReceive = SystemSet("NetworkReceive")  # network messages, typed, for systems
ModbusServerInput = SystemSet("ModbusServerInput")  # Modbus clients' writes to fields
UplinkInput = SystemSet("UplinkInput")  # Sparkplug hosts' writes to fields
INPUT_ORDER = (
    IoReceive,
    SafetyInput,
    GpioInput,
    FieldInput,
    NetworkReceive,
    ModbusServerInput,
    UplinkInput,
    SensorInput,
)

# And out, after ActuatorOutput: what the safe state decided, then the writes to the
# devices, then the values served to Modbus clients, then the records to the io process.
SafetyStatus = SystemSet("SafetyStatus")
FieldOutput = SystemSet("FieldOutput")
ModbusServerOutput = SystemSet("ModbusServerOutput")
IoSend = SystemSet("IoSend")
OUTPUT_ORDER = (ActuatorOutput, SafetyStatus, FieldOutput, ModbusServerOutput, IoSend)


class Timing:
    """How long something ran: counts and nanoseconds, O(1) to record."""

    __slots__ = ("last_ns", "max_ns", "runs", "total_ns")

    def __init__(self) -> None:
        self.runs = 0
        self.total_ns = 0
        self.max_ns = 0
        self.last_ns = 0

    def add(self, ns: int) -> None:
        self.runs += 1
        self.total_ns += ns
        self.last_ns = ns
        if ns > self.max_ns:
            self.max_ns = ns

    def summary(self) -> dict[str, float]:
        mean = self.total_ns / self.runs if self.runs else 0.0
        return {
            "runs": self.runs,
            "mean_us": round(mean / 1e3, 1),
            "max_us": round(self.max_ns / 1e3, 1),
            "last_us": round(self.last_ns / 1e3, 1),
        }


class SystemEntry:
    """A system as scheduled: its function, set, run conditions and change-tick cursor."""

    __slots__ = (
        "conditions",
        "failing",
        "fn",
        "last_run",
        "name",
        "readers",
        "schedule",
        "set",
        "timing",
    )

    def __init__(
        self,
        fn: System,
        schedule: ScheduleLabel,
        set_: SystemSet,
        conditions: Sequence[Condition],
    ) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.schedule = schedule
        self.set = set_
        self.conditions = tuple(conditions)
        self.last_run = 0
        self.readers: dict[type, MessageReader[Any]] = {}
        self.failing = False
        self.timing = Timing()

    @property
    def where(self) -> str:
        """``"name in Schedule/Set"``, how errors and alarms name a system."""
        return f"{self.name} in {self.schedule.value}/{self.set}"

    def __repr__(self) -> str:
        return f"<system {self.where}>"


class FaultHandler(Protocol):
    """What the schedule calls when a system raises, and when a failing one succeeds."""

    def failed(self, system: SystemEntry, error: Exception) -> None: ...

    def recovered(self, system: SystemEntry) -> None: ...


class ScheduleError(ValueError):
    pass


class Schedule:
    def __init__(self, label: ScheduleLabel) -> None:
        self.label = label
        self._sets: list[SystemSet] = []
        self._after: dict[SystemSet, set[SystemSet]] = {}
        self._conditions: dict[SystemSet, list[Condition]] = {}
        self._systems: dict[SystemSet, list[SystemEntry]] = {}
        self._order: list[SystemSet] | None = None
        # Called with a set's name once it has run and its commands are applied: the
        # real-time runner acts on an urgent input (an e-stop edge) there instead of at
        # the end of the tick, and a replay does the same at the same place.
        self.between_sets: Callable[[str], None] | None = None
        # set -> the sets declared to run before it, once both are configured
        self._declared: dict[SystemSet, set[SystemSet]] = {}
        self.set_timings: dict[SystemSet, Timing] = {}

    def declare_order(self, *sets: SystemSet) -> None:
        """Each of ``sets`` runs after those before it in the list, if and when both are
        configured; a set declared here is not configured by it (no empty sets)."""
        for index, later in enumerate(sets):
            self._declared.setdefault(later, set()).update(sets[:index])
        self._order = None

    def configure_sets(self, *sets: SystemSet, run_if: Sequence[Condition] = ()) -> None:
        """Declare sets; consecutive ones are chained (each runs after the one before)."""
        for set_ in sets:
            if set_ not in self._after:
                self._sets.append(set_)
                self._after[set_] = set()
                self._systems[set_] = []
                self._conditions[set_] = []
                self.set_timings[set_] = Timing()
            self._conditions[set_].extend(run_if)
        added = [(a, b) for a, b in itertools.pairwise(sets) if a not in self._after[b]]
        for earlier, later in added:
            self._after[later].add(earlier)
        self._order = None
        try:
            self.order()
        except ScheduleError:
            for earlier, later in added:  # refused: the schedule stays as it was
                self._after[later].discard(earlier)
            self._order = None
            raise

    def add_system(self, system: SystemEntry) -> None:
        if system.set not in self._systems:
            known = ", ".join(map(str, self._sets)) or "none"
            raise ScheduleError(
                f"{system.name}: set {system.set} is not configured in {self.label.value} "
                f"(known: {known}); declare it with app.configure_sets(...)"
            )
        self._systems[system.set].append(system)

    def systems(self) -> list[SystemEntry]:
        return [s for set_ in self.order() for s in self._systems[set_]]

    def systems_in(self, set_: SystemSet) -> list[SystemEntry]:
        return list(self._systems[set_])

    def order(self) -> list[SystemSet]:
        """Sets in run order: a topological sort, ties broken by declaration order."""
        if self._order is None:
            rank = {s: i for i, s in enumerate(self._sets)}
            waiting = {
                s: after | (self._declared.get(s, set()) & self._after.keys())
                for s, after in self._after.items()
            }
            ready = [(rank[s], s.name) for s, after in waiting.items() if not after]
            heapq.heapify(ready)
            by_name = {s.name: s for s in self._sets}
            order: list[SystemSet] = []
            while ready:
                done = by_name[heapq.heappop(ready)[1]]
                order.append(done)
                for s, after in waiting.items():
                    if done in after:
                        after.discard(done)
                        if not after:
                            heapq.heappush(ready, (rank[s], s.name))
            if len(order) != len(self._sets):
                stuck = ", ".join(s.name for s in self._sets if s not in order)
                raise ScheduleError(f"{self.label.value}: set order has a cycle among {stuck}")
            self._order = order
        return self._order

    def timings(self) -> dict[str, dict[str, dict[str, float]]]:
        """Execution time per set and per system, in run order."""
        order = self.order()
        return {
            "sets": {s.name: self.set_timings[s].summary() for s in order},
            "systems": {e.name: e.timing.summary() for s in order for e in self._systems[s]},
        }

    def run(self, world: World, faults: FaultHandler) -> None:
        commands = world.commands
        clock_ns = time.perf_counter_ns
        for set_ in self.order():
            systems = self._systems[set_]
            if not systems or not all(cond(world) for cond in self._conditions[set_]):
                continue
            set_started = clock_ns()
            for system in systems:
                if system.conditions and not all(cond(world) for cond in system.conditions):
                    continue
                mark = len(commands)
                world.change_tick += 1
                this_run = world.change_tick
                world.system = system
                started = clock_ns()
                try:
                    system.fn(world)
                except Exception as error:
                    system.timing.add(clock_ns() - started)
                    # Its commands are dropped and last_run is kept, so the next run sees
                    # again the changes this failed run did not get through.
                    commands.discard_from(mark)
                    world.system = None
                    faults.failed(system, error)
                    continue
                system.timing.add(clock_ns() - started)
                world.system = None
                system.last_run = this_run
                if system.failing:
                    faults.recovered(system)
            # Whatever is stamped next (commands, io between ticks, tests) must be newer
            # than the last_run of every system that has finished.
            world.change_tick += 1
            commands.apply()
            self.set_timings[set_].add(clock_ns() - set_started)
            if self.between_sets is not None:
                self.between_sets(set_.name)
