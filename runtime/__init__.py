"""edgeloop: a deterministic control-loop runtime for edge appliances.

The public API: build an ``App``, add plugins and systems to its schedules, and let the
runner (or ``App.run_for`` in tests) drive it. Systems are plain functions of the World.
"""

from edgeloop.alarms import Alarm, Alarms, AlarmState, AlarmTransition, Severity
from edgeloop.app import App, AppState, SystemFailure
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.conditions import on_timer, resource_equals
from edgeloop.entity import EntityNotFoundError, entity_str
from edgeloop.plugin import Plugin
from edgeloop.query import Query, QueryError
from edgeloop.schedule import (
    ActuatorOutput,
    ControlLogic,
    DataLogging,
    DataProcessing,
    FixedUpdate,
    HealthMonitoring,
    Main,
    SensorInput,
    Shutdown,
    Startup,
    SystemSet,
    Update,
    WebUIUpdates,
)
from edgeloop.world import ComponentNotFoundError, ResourceNotFoundError, World

__version__ = "0.1.0"

__all__ = [
    "ActuatorOutput",
    "Alarm",
    "AlarmState",
    "AlarmTransition",
    "Alarms",
    "App",
    "AppState",
    "Component",
    "ComponentNotFoundError",
    "ControlLogic",
    "DataLogging",
    "DataProcessing",
    "EntityNotFoundError",
    "FixedUpdate",
    "HealthMonitoring",
    "Main",
    "Plugin",
    "Query",
    "QueryError",
    "ResourceNotFoundError",
    "SensorInput",
    "Severity",
    "Shutdown",
    "Startup",
    "SystemFailure",
    "SystemSet",
    "Time",
    "Update",
    "WebUIUpdates",
    "World",
    "entity_str",
    "on_timer",
    "resource_equals",
]
