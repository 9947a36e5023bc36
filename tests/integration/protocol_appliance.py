"""A running appliance (the real supervisor, control and io processes) for protocol
tests, and typed helpers for its clients."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from edgeloop.net.client import Client
from edgeloop.sim.robots import Command, CommandResult, Telemetry
from tests.listening import TCP, WEBSOCKET, logged_port

T = TypeVar("T")

TYPES = (Telemetry, Command, CommandResult)
TIMEOUT_S = 15.0


@contextmanager
def running_appliance(
    directory: Path, tokens: str, sections: str = ""
) -> Iterator[tuple[int, int]]:
    """The TCP and WebSocket ports of an appliance with the ``robots`` section, ``tokens``
    (YAML list items, indented for ``network.tokens``) and further ``sections``."""
    config = directory / "config.yaml"
    config.write_text(
        f"""
runtime: {{name: protocol}}
network:
  tcp: {{host: 127.0.0.1, port: 0}}
  websocket: {{host: 127.0.0.1, port: 0}}
  tokens:
{tokens}
robots: {{}}
{sections}
"""
    )
    log = directory / "appliance.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        # Port 0: the appliance binds what is free and says which.
        yield logged_port(log, TCP, proc), logged_port(log, WEBSOCKET, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def connect(port: int, client_id: str, token: str, role: str) -> Client:
    """A client that has said Hello, once the appliance listens."""
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


async def receive(client: Client, kind: type[T]) -> T:
    """The next message of ``kind`` (others are skipped)."""
    while True:
        msg = await asyncio.wait_for(client.receive(), TIMEOUT_S)
        if isinstance(msg, kind):
            return msg


async def until_seen(robot: Client, telemetry: Telemetry, operator: Client) -> None:
    """Stream ``telemetry`` until the control loop knows the robot: a ``stop`` (id -1)
    is then answered ``sent`` instead of "robot not connected"; the robot gets it."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        assert asyncio.get_running_loop().time() < deadline, "the robot was never seen"
        await robot.send(telemetry)
        await operator.send(Command(telemetry.robot_id, "stop", command_id=-1))
        result = await receive(operator, CommandResult)
        if result.accepted:
            assert (result.command_id, result.reason) == (-1, "sent")
            await receive(robot, Command)
            return
