"""The App: a World, its schedules, the fixed clock and the policy for failing systems.

``App.run_for(ticks=N)`` drives it with a manual clock in one process (tests, simulation,
replay). The real-time runner drives the same App through ``startup``, ``tick``,
``update`` and ``shutdown``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Literal

from edgeloop.alarms import Alarms, Severity
from edgeloop.clock import Time
from edgeloop.conditions import on_timer
from edgeloop.config import installed_sections
from edgeloop.logs import every_power_of_ten
from edgeloop.net.registry import registry_of
from edgeloop.safety.systems import add_safe_state
from edgeloop.schedule import (
    INPUT_ORDER,
    OUTPUT_ORDER,
    ActuatorOutput,
    Condition,
    ControlLogic,
    DataLogging,
    DataProcessing,
    FixedUpdate,
    HealthMonitoring,
    Main,
    Schedule,
    ScheduleLabel,
    SensorInput,
    Shutdown,
    Startup,
    System,
    SystemEntry,
    SystemSet,
    Update,
    WebUIUpdates,
)
from edgeloop.wiring import WiringTable, table
from edgeloop.world import World

if TYPE_CHECKING:
    from edgeloop.config import Config, ConfigSection
    from edgeloop.plugin import Plugin

log = logging.getLogger("edgeloop.app")

ErrorPolicy = Literal["stop", "skip"]

WEB_UI_PERIOD_S = 1 / 30


class AppState(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class SystemFailure(RuntimeError):
    """A system raised under the ``stop`` policy; the App ran Shutdown and stopped."""

    def __init__(self, system: SystemEntry, error: Exception) -> None:
        super().__init__(f"system {system.where} raised {type(error).__name__}: {error}")
        self.system = system
        self.error = error


class App:
    def __init__(
        self, rate_hz: float = 100.0, on_system_error: ErrorPolicy = "stop", name: str = "edgeloop"
    ) -> None:
        if on_system_error not in ("stop", "skip"):
            raise ValueError(f"on_system_error must be 'stop' or 'skip', not {on_system_error!r}")
        self.name = name
        self.on_system_error: ErrorPolicy = on_system_error
        self.world = World()
        self.world.insert_resource(Time(rate_hz))
        self.world.insert_resource(Alarms())
        self.state = AppState.NEW
        self._plugins: list[type] = []
        self._schedules = {label: Schedule(label) for label in ScheduleLabel}
        self._faults = _FaultPolicy(self)
        self.configure_sets(Startup, Main)
        self.configure_sets(FixedUpdate, SensorInput, DataProcessing, ControlLogic, ActuatorOutput)
        self._schedules[FixedUpdate].declare_order(*INPUT_ORDER)
        self._schedules[FixedUpdate].declare_order(*OUTPUT_ORDER)
        self.configure_sets(Update, WebUIUpdates, run_if=[on_timer(WEB_UI_PERIOD_S)])
        self.configure_sets(Update, WebUIUpdates, DataLogging, HealthMonitoring)
        self.configure_sets(Shutdown, Main)

    @classmethod
    def from_config(cls, config: Config, sections: Iterable[ConfigSection] | None = None) -> App:
        """An App with the runtime settings of ``config`` and a plugin per present section."""
        app = cls(
            rate_hz=config.runtime.rate_hz,
            on_system_error=config.runtime.on_system_error,
            name=config.runtime.name,
        )
        known = list(installed_sections(config.sections) if sections is None else sections)
        app.insert_resource(registry_of(known, config.sections))
        app.insert_resource(config.runtime)
        app.insert_resource(WiringTable(str(config.path), table(config.wiring, config.where)))
        add_safe_state(app)
        factories = {s.name: s.plugin for s in known}
        for name, model in config.sections.items():
            app.add_plugin(factories[name](model))
        return app

    # -- building -------------------------------------------------------------------------

    def add_plugin(self, plugin: Plugin) -> App:
        """Let ``plugin`` add its systems and resources. A plugin type is added once."""
        if type(plugin) in self._plugins:
            raise ValueError(f"plugin {type(plugin).__name__} is already added to this App")
        self._plugins.append(type(plugin))
        plugin.build(self)
        return self

    def add_systems(
        self,
        schedule: ScheduleLabel,
        *systems: System,
        in_set: SystemSet | None = None,
        run_if: Condition | Sequence[Condition] = (),
    ) -> App:
        """Add systems to run, in this order, inside ``in_set`` of ``schedule``.

        Startup and Shutdown have one set, used when ``in_set`` is omitted; FixedUpdate
        and Update systems must name their set, since their order matters.
        """
        if in_set is None:
            if schedule not in (Startup, Shutdown):
                raise ValueError(
                    f"{schedule.value} systems need in_set= (e.g. ControlLogic): "
                    "their order relative to other sets must be declared"
                )
            in_set = Main
        conditions = [run_if] if callable(run_if) else list(run_if)
        for fn in systems:
            # Each system gets its own copy: a stateful condition (on_timer) shared by two
            # systems would fire for the first one only.
            own = [copy.copy(condition) for condition in conditions]
            self._schedules[schedule].add_system(SystemEntry(fn, schedule, in_set, own))
        return self

    def configure_sets(
        self, schedule: ScheduleLabel, *sets: SystemSet, run_if: Sequence[Condition] = ()
    ) -> App:
        """Declare sets in ``schedule``, each chained after the one before it."""
        self._schedules[schedule].configure_sets(*sets, run_if=run_if)
        return self

    def insert_resource(self, resource: object) -> App:
        self.world.insert_resource(resource)
        return self

    def schedule(self, label: ScheduleLabel) -> Schedule:
        return self._schedules[label]

    # -- running --------------------------------------------------------------------------

    @property
    def time(self) -> Time:
        return self.world.resource(Time)

    def startup(self) -> None:
        if self.state is not AppState.NEW:
            raise RuntimeError(f"startup() on an App that is {self.state.value}")
        self.state = AppState.RUNNING
        self._run(Startup)

    def tick(self) -> None:
        """One fixed tick: age messages, advance Time, run FixedUpdate."""
        self.world.update_messages()
        self.time.advance()
        self._run(FixedUpdate)

    def update(self) -> None:
        """One pass of the Update schedule (the real-time runner calls it in the slack)."""
        self._run(Update)

    def shutdown(self) -> None:
        """Run Shutdown once (every system, even if some fail) and stop the App."""
        if self.state is AppState.STOPPED:
            return
        self.state = AppState.STOPPED
        shutdown = self._schedules[Shutdown]
        failures = _LogOnly()
        shutdown.run(self.world, failures)
        log.info(
            "shutdown schedule ran: %d system(s), %d failed",
            len(shutdown.systems()),
            failures.count,
        )

    def run_for(self, ticks: int) -> None:
        """Run ``ticks`` fixed ticks, each followed by one Update pass, on the manual clock.

        Starts the App if it is new. Under the ``stop`` policy a failing system runs
        Shutdown and raises ``SystemFailure``.
        """
        if self.state is AppState.NEW:
            self.startup()
        for _ in range(ticks):
            self.tick()
            self.update()

    def _run(self, label: ScheduleLabel) -> None:
        if self.state is not AppState.RUNNING:
            raise RuntimeError(f"{label.value} on an App that is {self.state.value}")
        try:
            self._schedules[label].run(self.world, self._faults)
        except SystemFailure:
            self.shutdown()
            raise


class _FaultPolicy:
    """Applies the App's ``on_system_error`` policy and keeps the alarm per system."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._counts: dict[SystemEntry, int] = {}

    def failed(self, system: SystemEntry, error: Exception) -> None:
        app = self._app
        count = self._counts[system] = self._counts.get(system, 0) + 1
        system.failing = True
        tick = app.time.tick
        text = f"{system.where}: {type(error).__name__}: {error}"
        app.world.resource(Alarms).activate(f"system:{system.name}", text, Severity.FAULT, tick)
        if app.on_system_error == "stop":
            log.critical(
                "system failed, stopping (on_system_error: stop): %s", text, exc_info=error
            )
            raise SystemFailure(system, error) from error
        if every_power_of_ten(count):
            log.error(
                "system failed %d time(s), skipped (on_system_error: skip): %s",
                count,
                text,
                exc_info=error if count == 1 else None,
            )

    def recovered(self, system: SystemEntry) -> None:
        system.failing = False
        self._app.world.resource(Alarms).clear(f"system:{system.name}", self._app.time.tick)
        log.warning("system %s runs again after %d failure(s)", system.name, self._counts[system])


class _LogOnly:
    """Shutdown policy: every system gets its chance to put outputs in a safe state."""

    def __init__(self) -> None:
        self.count = 0

    def failed(self, system: SystemEntry, error: Exception) -> None:
        self.count += 1
        log.error(
            "shutdown system %s raised %s: %s",
            system.name,
            type(error).__name__,
            error,
            exc_info=error,
        )

    def recovered(self, system: SystemEntry) -> None:
        system.failing = False
