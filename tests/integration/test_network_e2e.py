"""A robot and an operator talk to the control loop through the real supervisor."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.net.client import Client
from edgeloop.net.registry import ProtocolError
from edgeloop.sim.robots import Command, CommandResult, Telemetry

TYPES = (Telemetry, Command, CommandResult)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def appliance_port(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
runtime: {{name: e2e}}
network:
  tcp: {{host: 127.0.0.1, port: {port}}}
  tokens:
    - {{token: robot-token, role: device}}
    - {{token: operator-token, role: operator}}
robots: {{}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _connect(port: int, client_id: str, token: str, role: str) -> Client:
    client = Client(
        "127.0.0.1", port, client_id=client_id, token=token, role=role, message_types=TYPES
    )
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await client.connect()
            return client
        except OSError:  # the io process is still starting
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _receive(client: Client, kind: type) -> object:
    while True:
        msg = await asyncio.wait_for(client.receive(), 10)
        if isinstance(msg, kind):
            return msg


async def test_operator_command_reaches_the_robot_through_the_control_loop(
    appliance_port: int,
) -> None:
    robot = await _connect(appliance_port, "arm-1", "robot-token", "device")
    operator = await _connect(appliance_port, "hmi", "operator-token", "operator")
    # Until the control loop has seen the robot's telemetry, it is "not connected".
    result: object = CommandResult("arm-1", False, "")
    deadline = asyncio.get_running_loop().time() + 15
    while isinstance(result, CommandResult) and not result.accepted:
        assert asyncio.get_running_loop().time() < deadline, result
        await robot.send(Telemetry("arm-1", 0.0, 0.0, 35.0, "idle"))
        await operator.send(Command("arm-1", "move", 2.5))
        result = await _receive(operator, CommandResult)
    command = await _receive(robot, Command)
    assert command == Command("arm-1", "move", 2.5)
    await robot.close()
    await operator.close()


async def test_a_device_token_cannot_send_commands(appliance_port: int) -> None:
    robot = await _connect(appliance_port, "arm-2", "robot-token", "device")
    await robot.send(Command("arm-1", "stop"))
    with pytest.raises(ProtocolError, match="forbidden"):
        msg = await asyncio.wait_for(robot.receive(), 10)
        raise ProtocolError(msg.code, msg.detail)  # type: ignore[attr-defined]
    await robot.close()
