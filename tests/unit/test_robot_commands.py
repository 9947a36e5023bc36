"""An operator's robot commands on the control side: a move outside the configured
target bounds, or to a target that is not a number, is refused with the reason and
audited, never clamped; one inside them is sent."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from edgeloop.app import App
from edgeloop.net.network import NET_EVENT, NET_MESSAGE, NET_SEND
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Record
from edgeloop.safety.audit import AuditLog
from edgeloop.sim.robots import Command, CommandResult, RobotsConfig, RobotsPlugin, Telemetry

ROBOT, OPERATOR = 7, 9


def _app(config: RobotsConfig, audit: AuditLog) -> tuple[App, IoLink]:
    app = App()
    link = IoLink()
    app.insert_resource(Registry([Telemetry, Command, CommandResult]))
    app.insert_resource(audit)
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    app.add_plugin(RobotsPlugin(config))
    app.startup()
    telemetry = dict(robot_id="arm-1", position=0.0, velocity=0.0, temperature=30.0, status="idle")
    link.inbox.extend([
        Record(NET_EVENT, "r", 1, ["tcp", ROBOT, True, "peer"]),
        Record(NET_MESSAGE, "r", 2, ["tcp", ROBOT, "robot.Telemetry", telemetry]),
    ])  # fmt: skip
    app.run_for(1)
    return app, link


def _move(app: App, link: IoLink, target: float) -> dict[str, Any]:
    """The appliance's answer to a move sent by the operator, and what the robot got."""
    move = dict(robot_id="arm-1", action="move", target=target, command_id=3)
    link.inbox.append(Record(NET_MESSAGE, "o", 1, ["tcp", OPERATOR, "robot.Command", move]))
    app.run_for(1)
    sent: dict[str, Any] = {"to_robot": []}
    (outbox,) = link.outboxes
    for queue in (outbox._critical, outbox._high):
        for raw in list(queue):
            topic, _, _, payload = msgpack.unpackb(raw)
            if topic == NET_SEND and payload[2] == "robot.CommandResult":
                sent["result"] = payload[4]
            elif topic == NET_SEND and payload[2] == "robot.Command":
                sent["to_robot"].append(payload[4])
        queue.clear()
    return sent


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (181.0, "refused: target 181 is above target_max 180"),
        (-200.0, "refused: target -200 is below target_min -90"),
        (math.nan, "refused: target nan is not a finite number"),
        (math.inf, "refused: target inf is not a finite number"),
    ],
)
def test_a_move_outside_the_bounds_is_refused_with_the_reason_and_audited(
    tmp_path: Path, target: float, reason: str
) -> None:
    with AuditLog.open(tmp_path) as audit:
        app, link = _app(RobotsConfig(target_min=-90.0, target_max=180.0), audit)
        sent = _move(app, link, target)
        assert audit.flush(5.0)
    assert sent["to_robot"] == [], "nothing reaches the robot"
    assert sent["result"]["accepted"] is False
    assert sent["result"]["reason"] == reason
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (command,) = [e for e in entries if e.get("event") == "command"]
    assert command["accepted"] is False and command["reason"] == reason


def test_a_move_inside_the_bounds_is_sent_unchanged(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit:
        app, link = _app(RobotsConfig(target_min=-90.0, target_max=180.0), audit)
        sent = _move(app, link, 180.0)
    assert sent["result"]["reason"] == "sent"
    (to_robot,) = sent["to_robot"]
    assert to_robot["target"] == 180.0


def test_without_bounds_only_a_non_number_is_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit:
        app, link = _app(RobotsConfig(), audit)
        assert _move(app, link, 1e6)["result"]["accepted"] is True
        assert _move(app, link, math.nan)["result"]["accepted"] is False


def test_bounds_out_of_order_are_a_config_error() -> None:
    with pytest.raises(ValidationError, match="target_min 10 must be below target_max 5"):
        RobotsConfig(target_min=10.0, target_max=5.0)
