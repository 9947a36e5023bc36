"""What the control process's own systems put in the audit log: alarms as they change."""

from __future__ import annotations

import json
from pathlib import Path

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.safety.audit import FILE_NAME, AuditLog
from edgeloop.safety.systems import add_safe_state

FLUSH_S = 10.0  # generous: a loaded 2-core box; a working flush takes milliseconds


def test_every_alarm_transition_is_audited_once(tmp_path: Path) -> None:
    app = App()
    add_safe_state(app)
    audit = AuditLog.open(tmp_path)
    app.insert_resource(audit)
    app.startup()
    alarms = app.world.resource(Alarms)
    alarms.activate("watchdog:robot-1", "robot-1 silent for 5.0 s", Severity.FAULT, 1)
    app.run_for(2)
    alarms.activate("watchdog:robot-1", "robot-1 silent for 5.0 s", Severity.FAULT, 3)  # again
    alarms.acknowledge("watchdog:robot-1", "hmi-1", 3)
    alarms.clear("watchdog:robot-1", 3)
    app.run_for(2)
    assert audit.flush(FLUSH_S)
    audit.close()
    lines = (tmp_path / FILE_NAME).read_text().splitlines()
    audited = [json.loads(line) for line in lines]
    assert [(e["event"], e["source"], e["state"], e.get("by")) for e in audited] == [
        ("alarm", "watchdog:robot-1", "active_unacked", None),
        ("alarm", "watchdog:robot-1", "active_acked", "hmi-1"),
        ("alarm", "watchdog:robot-1", "normal", None),
    ]
    assert audited[0]["severity"] == "fault"
    assert audited[0]["text"] == "robot-1 silent for 5.0 s"


def test_without_an_audit_log_the_transitions_are_taken_and_nothing_counts_as_dropped() -> None:
    app = App()
    add_safe_state(app)
    app.startup()
    alarms = app.world.resource(Alarms)
    for tick in range(2000):  # past the bounded list's length, one change a tick
        if tick % 2:
            alarms.clear("io-link", tick)
        else:
            alarms.activate("io-link", "io process lost", Severity.FAULT, tick)
        app.run_for(1)
    assert alarms.transitions() == [] and alarms.transitions_dropped == 0
