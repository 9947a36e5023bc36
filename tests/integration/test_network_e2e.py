"""A robot and an operator talk to the control loop through the real supervisor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from edgeloop.net.protocol import PROTOCOL_VERSION, Hello, Subscribe, encode, split
from edgeloop.net.registry import ProtocolError
from edgeloop.sim.robots import Command, CommandResult, Telemetry
from tests.integration.protocol_appliance import connect as connect_client
from tests.integration.protocol_appliance import receive, running_appliance


@pytest.fixture
def appliance_port(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The TCP and the WebSocket port of a running appliance."""
    tokens = """\
    - {token: robot-token, role: device}
    - {token: operator-token, role: operator}
    - {token: viewer-token, role: viewer}"""
    plant = "tank_plant:\n  tanks: [{name: t1, initial_level_m: 0.2, setpoint_m: 1.5}]"
    with running_appliance(tmp_path, tokens, plant) as ports:
        yield ports


async def test_operator_command_reaches_the_robot_through_the_control_loop(
    appliance_port: tuple[int, int],
) -> None:
    robot = await connect_client(appliance_port[0], "arm-1", "robot-token", "device")
    operator = await connect_client(appliance_port[0], "hmi", "operator-token", "operator")
    # Until the control loop has seen the robot's telemetry, it is "not connected".
    result: object = CommandResult("arm-1", False, "")
    deadline = asyncio.get_running_loop().time() + 15
    while isinstance(result, CommandResult) and not result.accepted:
        assert asyncio.get_running_loop().time() < deadline, result
        await robot.send(Telemetry("arm-1", 0.0, 0.0, 35.0, "idle"))
        await operator.send(Command("arm-1", "move", 2.5))
        result = await receive(operator, CommandResult)
    command = await receive(robot, Command)
    assert command == Command("arm-1", "move", 2.5, command.command_id)  # type: ignore[attr-defined]
    await robot.close()
    await operator.close()


async def test_a_device_token_cannot_send_commands(appliance_port: tuple[int, int]) -> None:
    robot = await connect_client(appliance_port[0], "arm-2", "robot-token", "device")
    await robot.send(Command("arm-1", "stop"))
    with pytest.raises(ProtocolError, match="forbidden"):
        msg = await asyncio.wait_for(robot.receive(), 10)
        raise ProtocolError(msg.code, msg.detail)  # type: ignore[attr-defined]
    await robot.close()


async def test_a_websocket_operator_commands_a_tcp_robot(
    appliance_port: tuple[int, int],
) -> None:
    robot = await connect_client(appliance_port[0], "arm-3", "robot-token", "device")
    async with connect(f"ws://127.0.0.1:{appliance_port[1]}/ws") as hmi:
        await hmi.send(encode(Hello("hmi", "operator-token", "operator", PROTOCOL_VERSION)))
        assert split(await asyncio.wait_for(hmi.recv(), 10))[0] == "edgeloop.Welcome"
        deadline = asyncio.get_running_loop().time() + 15
        accepted = False
        while not accepted:
            assert asyncio.get_running_loop().time() < deadline
            await robot.send(Telemetry("arm-3", 0.0, 0.0, 35.0, "idle"))
            await hmi.send(encode(Command("arm-3", "stop")))
            name, _, payload = split(await asyncio.wait_for(hmi.recv(), 10))
            accepted = name == "robot.CommandResult" and payload["accepted"]
        command = await receive(robot, Command)
        assert command == Command("arm-3", "stop", command_id=command.command_id)  # type: ignore[attr-defined]
    await robot.close()


async def test_a_dashboard_gets_only_what_changed_at_its_rate(
    appliance_port: tuple[int, int],
) -> None:
    url = f"ws://127.0.0.1:{appliance_port[1]}/ws"
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            dashboard = await connect(url)
            break
        except OSError:  # the io process is still starting
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    async with dashboard:
        await dashboard.send(encode(Hello("hmi", "viewer-token", "viewer", PROTOCOL_VERSION)))
        assert split(await asyncio.wait_for(dashboard.recv(), 10))[0] == "edgeloop.Welcome"
        await dashboard.send(encode(Subscribe("world", 10.0, ["Name", "TankLevel"])))
        updates = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.0
        while (left := until - loop.time()) > 0:
            try:
                name, _, payload = split(await asyncio.wait_for(dashboard.recv(), left))
            except TimeoutError:
                break
            if name == "edgeloop.WorldUpdate" and payload["changed"]:
                updates.append((loop.time(), payload["changed"]))
    first = {(c["component"], str(c["values"])) for c in updates[0][1]}
    assert ("Name", "{'value': 't1'}") in first, "the first update is the whole state"
    later = [c["component"] for _, changed in updates[1:] for c in changed]
    assert later and set(later) == {"TankLevel"}, "then only what changed (the level)"
    span = updates[-1][0] - updates[1][0]
    assert (len(updates) - 2) / span <= 10 * 1.2, "at most max_hz updates a second"
