"""An operator acknowledges an alarm over the network: answered, audited with who gave
it, and every state change of the alarm is in the audit log at the tick it happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack

from edgeloop.alarm_commands import Acknowledge, AckResult
from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.net.network import NET_EVENT, NET_MESSAGE, NET_SEND
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Record
from edgeloop.safety.audit import AuditLog
from edgeloop.safety.systems import add_safe_state

OPERATOR = 9


def _app(audit: AuditLog) -> tuple[App, IoLink]:
    app = App()
    link = IoLink()
    app.insert_resource(Registry([Acknowledge, AckResult]))
    app.insert_resource(audit)
    add_safe_state(app)
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    app.startup()
    link.inbox.append(Record(NET_EVENT, "o", 1, ["tcp", OPERATOR, True, "peer", "operator"]))
    app.run_for(1)
    return app, link


def _acknowledge(app: App, link: IoLink, source: str) -> dict[str, Any]:
    asked = dict(source=source, command_id=12)
    link.inbox.append(Record(NET_MESSAGE, "o", 1, ["tcp", OPERATOR, "alarm.Acknowledge", asked]))
    app.run_for(1)
    (outbox,) = link.outboxes
    answers = []
    for raw in list(outbox._high):
        topic, _, _, payload = msgpack.unpackb(raw)
        if topic == NET_SEND and payload[2] == "alarm.AckResult":
            answers.append(payload[4])
    outbox._high.clear()
    (answer,) = answers
    return answer  # type: ignore[no-any-return]


def _entries(state_dir: Path) -> list[dict[str, Any]]:
    lines = (state_dir / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_an_acknowledge_is_answered_audited_and_moves_the_alarm_on(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit:
        app, link = _app(audit)
        alarms = app.world.resource(Alarms)
        alarms.activate("alarm:tank_high", "tank high", Severity.FAULT, app.time.tick)
        raised_at = app.time.tick
        answer = _acknowledge(app, link, "alarm:tank_high")
        again = _acknowledge(app, link, "alarm:tank_high")
        missing = _acknowledge(app, link, "alarm:nope")
        alarms.clear("alarm:tank_high", app.time.tick)
        app.run_for(1)
        assert audit.flush(5.0)
    assert answer == dict(source="alarm:tank_high", accepted=True,
                          reason="acknowledged; now active_acked", command_id=12)  # fmt: skip
    assert not again["accepted"] and again["reason"].startswith("already acknowledged by ")
    assert (missing["accepted"], missing["reason"]) == (False, "no alarm 'alarm:nope'")

    entries = _entries(tmp_path)
    acks = [e for e in entries if e["event"] == "alarm.acknowledge"]
    assert [e["accepted"] for e in acks] == [True, False, False]
    assert "on tcp connection 9" in acks[0]["by"]
    ours = [e for e in entries if e["event"] == "alarm" and e["source"] == "alarm:tank_high"]
    states = [(e["state"], e["tick"]) for e in ours]
    assert [state for state, _ in states] == ["active_unacked", "active_acked", "normal"]
    assert states[0][1] == raised_at, "audited at the tick it was raised"
    acked = next(e for e in ours if e["state"] == "active_acked")
    assert acked["by"] == acks[0]["by"]
