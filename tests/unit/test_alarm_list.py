"""The World shows the alarms (``AlarmList`` on the ``safety`` entity) so a dashboard
sees each one's state: rewritten when an alarm changes state, left alone otherwise."""

from __future__ import annotations

import msgpack
import msgspec

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.safety.alarm_list import MAX_ROWS, AlarmList, AlarmRow
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


def test_a_thousand_alarms_list_the_unacknowledged_first_within_a_records_size() -> None:
    app = _app()
    alarms = app.world.resource(Alarms)
    for robot in range(1000):
        source = f"watchdog:robot-{robot}-" + "x" * 300  # as long as a source gets
        alarms.activate(source, "silent " * 100, Severity.FAULT, tick=robot + 1)
        if robot < 990:
            alarms.acknowledge(source, "ann (operator)", tick=robot + 1)
    app.run_for(1)
    (shown,) = app.world.query(AlarmList)
    assert len(shown.alarms) == MAX_ROWS and shown.more == 1000 - MAX_ROWS
    assert [r.state for r in shown.alarms[:10]] == ["active_unacked"] * 10
    assert shown.alarms[0].source.startswith("watchdog:robot-999-")  # newest first
    size = len(msgpack.packb(msgspec.to_builtins(shown.alarms)))
    assert size < 48 << 10, f"{size} bytes: too close to an io record's 64 KiB"
