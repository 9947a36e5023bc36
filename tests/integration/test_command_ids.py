"""Commands carry the operator's id: the appliance's ``sent`` and the robot's own
outcome both reach the operator with it, over real TCP through the real supervisor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.net.protocol import Error
from edgeloop.sim.robots import Command, CommandResult, SimRobot, Telemetry
from tests.integration.protocol_appliance import connect, receive, running_appliance, until_seen

TOKENS = """\
    - {token: robot-token-0123456789, role: device}
    - {token: operator-token-0123456789, role: operator}
"""
ROBOT = "robot-token-0123456789"
OPERATOR = "operator-token-0123456789"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_appliance(tmp_path_factory.mktemp("appliance"), TOKENS) as (tcp, _):
        yield tcp


def _telemetry(robot_id: str) -> Telemetry:
    return Telemetry(robot_id, 0.0, 0.0, 35.0, "idle")


async def test_operator_gets_sent_then_the_robots_outcome_with_its_command_id(port: int) -> None:
    robot = await connect(port, "arm-a", ROBOT, "device")
    operator = await connect(port, "hmi-a", OPERATOR, "operator")
    await until_seen(robot, _telemetry("arm-a"), operator)

    await operator.send(Command("arm-a", "move", 2.5, command_id=41))
    assert await receive(operator, CommandResult) == CommandResult("arm-a", True, "sent", 41)
    command = await receive(robot, Command)
    assert (command.action, command.target) == ("move", 2.5)
    await robot.send(CommandResult("arm-a", True, "moving", command.command_id))
    outcome = await receive(operator, CommandResult)
    assert outcome == CommandResult("arm-a", True, "moving", 41, origin="robot")
    await robot.close()
    await operator.close()


async def test_a_robot_refusing_gives_the_operator_a_refused_outcome(port: int) -> None:
    robot = await connect(port, "arm-b", ROBOT, "device")
    operator = await connect(port, "hmi-b", OPERATOR, "operator")
    await until_seen(robot, _telemetry("arm-b"), operator)

    await operator.send(Command("arm-b", "move", 99.0, command_id=7))
    assert (await receive(operator, CommandResult)).reason == "sent"
    command = await receive(robot, Command)
    await robot.send(CommandResult("arm-b", False, "brakes engaged", command.command_id))
    outcome = await receive(operator, CommandResult)
    assert outcome == CommandResult("arm-b", False, "brakes engaged", 7, origin="robot")
    await robot.close()
    await operator.close()


async def test_two_operators_with_the_same_id_each_get_their_own_outcome(port: int) -> None:
    robot = await connect(port, "arm-c", ROBOT, "device")
    first = await connect(port, "hmi-c1", OPERATOR, "operator")
    second = await connect(port, "hmi-c2", OPERATOR, "operator")
    await until_seen(robot, _telemetry("arm-c"), first)

    await first.send(Command("arm-c", "move", 1.0, command_id=1))
    assert (await receive(first, CommandResult)).reason == "sent"
    await second.send(Command("arm-c", "move", 2.0, command_id=1))
    assert (await receive(second, CommandResult)).reason == "sent"
    one, two = await receive(robot, Command), await receive(robot, Command)
    assert one.command_id != two.command_id  # the appliance's ids, not the operators'
    await robot.send(CommandResult("arm-c", False, "second refused", two.command_id))
    await robot.send(CommandResult("arm-c", True, "first done", one.command_id))
    assert (await receive(second, CommandResult)).reason == "second refused"
    assert (await receive(first, CommandResult)).reason == "first done"
    for client in (robot, first, second):
        await client.close()


async def test_the_simulated_robot_answers_and_refuses_out_of_reach(port: int) -> None:
    robot = await connect(port, "arm-d", ROBOT, "device")
    operator = await connect(port, "hmi-d", OPERATOR, "operator")
    sim = SimRobot("arm-d", rate_hz=20, reach=5.0)
    running = asyncio.create_task(sim.session(robot))
    try:
        deadline = asyncio.get_running_loop().time() + 15
        sent = CommandResult("arm-d", False, "")
        while not sent.accepted:  # until the control loop has seen the robot's telemetry
            assert asyncio.get_running_loop().time() < deadline, sent
            await operator.send(Command("arm-d", "move", 9.0, command_id=3))
            sent = await receive(operator, CommandResult)
        outcome = await receive(operator, CommandResult)
        assert (outcome.command_id, outcome.origin, outcome.accepted) == (3, "robot", False)
        assert "out of reach" in outcome.reason

        await operator.send(Command("arm-d", "move", 1.0, command_id=4))
        assert (await receive(operator, CommandResult)).reason == "sent"
        outcome = await receive(operator, CommandResult)
        assert outcome == CommandResult("arm-d", True, "obeyed", 4, origin="robot")
        assert sim.target == 1.0
    finally:
        running.cancel()
        await robot.close()
        await operator.close()


async def test_an_answer_to_no_command_in_flight_is_refused(port: int) -> None:
    robot = await connect(port, "arm-e", ROBOT, "device")
    other = await connect(port, "arm-e-imposter", ROBOT, "device")
    operator = await connect(port, "hmi-e", OPERATOR, "operator")
    await until_seen(robot, _telemetry("arm-e"), operator)
    await operator.send(Command("arm-e", "move", 1.0, command_id=5))
    assert (await receive(operator, CommandResult)).reason == "sent"
    command = await receive(robot, Command)

    # Another device answering for arm-e, and arm-e answering a command never sent.
    await other.send(CommandResult("arm-e", True, "done", command.command_id))
    error = await receive(other, Error)
    assert error.code == "unknown_command"
    await robot.send(CommandResult("arm-e", True, "done", command.command_id + 1000))
    assert (await receive(robot, Error)).code == "unknown_command"
    # The real answer still goes through.
    await robot.send(CommandResult("arm-e", True, "done", command.command_id))
    assert await receive(operator, CommandResult) == CommandResult(
        "arm-e", True, "done", 5, origin="robot"
    )
    for client in (robot, other, operator):
        await client.close()


def test_an_operator_acknowledges_an_alarm_with_edgeloop_alarm_ack(tmp_path: Path) -> None:
    """``edgeloop alarm ack`` against a running appliance: accepted once, refused after
    (nothing left to acknowledge), and refused for a source with no alarm."""
    sections = """
tank_plant:
  tanks: [{name: tank1, initial_level_m: 0.4, setpoint_m: 1.2}]
blocks:
  alarm:
    - {name: level_seen, input: tank1.TankLevel.level_m, high: 0.01, severity: warning}
"""
    with running_appliance(tmp_path, TOKENS, sections) as (tcp, _):
        config = tmp_path / "config.yaml"

        def ack(source: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "edgeloop.cli", "alarm", "ack", source,
                 "-c", str(config), "--token", OPERATOR, "--port", str(tcp)],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip

        deadline = time.monotonic() + 30
        while (first := ack("alarm:level_seen")).returncode != 0:
            assert "no alarm" in first.stdout, first.stdout + first.stderr
            assert time.monotonic() < deadline, "the alarm was never raised"
            time.sleep(0.2)
        again, missing = ack("alarm:level_seen"), ack("alarm:nope")
    assert first.stdout.strip() == "ack alarm:level_seen: accepted: acknowledged; now active_acked"
    assert again.returncode != 0 and "refused: already acknowledged by edgeloop-cli" in again.stdout
    assert missing.returncode != 0 and "refused: no alarm 'alarm:nope'" in missing.stdout
