"""The World shows the alarms (``AlarmList`` on the ``safety`` entity) so a dashboard
sees each one's state: rewritten when an alarm changes state, left alone otherwise."""

from __future__ import annotations

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.safety.alarm_list import AlarmList, AlarmRow
from edgeloop.safety.systems import add_safe_state


def _app() -> App:
    app = App()
    add_safe_state(app)
    app.startup()
    app.run_for(1)
    return app


def _shown(app: App) -> tuple[AlarmRow, ...]:
    (shown,) = app.world.query(AlarmList)
    return shown.alarms


def test_the_list_follows_each_state_of_an_alarm() -> None:
    app = _app()
    alarms = app.world.resource(Alarms)
    assert _shown(app) == ()
    alarms.activate("watchdog:plc1", "silent for 0.5 s", Severity.FAULT, tick=1)
    app.run_for(1)
    (row,) = _shown(app)
    assert (row.source, row.state, row.severity) == ("watchdog:plc1", "active_unacked", "fault")
    alarms.acknowledge("watchdog:plc1", "ann (operator)", tick=2)
    alarms.clear("watchdog:plc1", tick=3)
    app.run_for(1)
    (row,) = _shown(app)
    assert (row.state, row.acked_by) == ("normal", "ann (operator)")


def test_an_unchanged_list_is_not_written_again() -> None:
    app = _app()
    app.world.resource(Alarms).activate("alarm:tank_high", "level high", Severity.WARNING, 1)
    before = app.world.change_tick
    app.run_for(1)
    assert len(list(app.world.query(AlarmList, changed=(AlarmList,), since=before))) == 1
    written = app.world.change_tick
    app.run_for(3)
    assert not list(app.world.query(AlarmList, changed=(AlarmList,), since=written))
