"""SafeState: causes with a scope, latched ones that end only at a reset, and the
safety entity and status that show them."""

from __future__ import annotations

from pathlib import Path

from edgeloop.app import App
from edgeloop.config import Config, RuntimeConfig
from edgeloop.names import Name
from edgeloop.safety.safe_state import SafeState, SafeStateStatus, kinds_of


def test_a_latched_cause_ends_only_at_a_reset_once_its_condition_is_gone() -> None:
    safe = SafeState()
    assert safe.trip("estop", "pressed", 5, latched=True)
    assert safe.reset() == ([], ["estop"]), "refused while pressed"
    assert not safe.release("estop"), "released, but latched"
    assert safe.active and safe.everything
    assert safe.reset() == (["estop"], [])
    assert not safe.active


def test_an_unlatched_cause_ends_with_its_condition_and_scopes_hold_their_device() -> None:
    safe = SafeState()
    safe.trip("watchdog:plc1", "silent", 1, scope="plc1")
    assert safe.safe_for("plc1") and not safe.safe_for("plc2") and not safe.everything
    assert safe.release("watchdog:plc1")
    assert not safe.active


def test_the_generation_moves_on_each_change_and_only_then() -> None:
    safe = SafeState()
    seen = safe.generation
    safe.trip("estop", "pressed", 1, latched=True)
    assert safe.generation > seen
    seen = safe.generation
    assert not safe.trip("estop", "pressed", 2, latched=True)
    assert safe.generation == seen, "the same cause again is no change"
    safe.release("estop")
    assert safe.generation > seen


def test_the_kinds_of_cause_survive_the_heartbeat_mask() -> None:
    safe = SafeState()
    safe.trip("estop", "pressed", 1)
    safe.trip("watchdog:robot-1", "silent", 1, scope="robot-1")
    safe.trip("something_new", "x", 1)
    assert kinds_of(safe.kinds_mask()) == ["estop", "watchdog", "other"]


def test_an_app_from_a_config_shows_the_state_on_the_safety_entity() -> None:
    config = Config(path=Path(__file__), runtime=RuntimeConfig(), sections={}, warnings=[])
    app = App.from_config(config)
    app.startup()
    app.run_for(1)
    [(name, status)] = app.world.query(Name, SafeStateStatus)
    assert name.value == "safety" and not status.active
    app.world.resource(SafeState).trip("estop", "pressed", 1, latched=True)
    app.run_for(1)
    assert status.active and status.causes == "estop (pressed)"
    assert status.since_tick == 2
