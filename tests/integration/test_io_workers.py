"""Two io workers sharing the network ports, through the real supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from edgeloop.net.client import Client
from edgeloop.net.connection_ids import worker_of
from edgeloop.net.protocol import PROTOCOL_VERSION, Hello, Subscribe, encode, split
from edgeloop.sim.ports import free_port
from edgeloop.sim.robots import Command, CommandResult, Telemetry
from tests.integration.protocol_appliance import connect as _connect
from tests.integration.protocol_appliance import receive as _receive
from tests.process_tree import child_named

ROBOTS = 24  # all on one worker by chance: 2 * 2**-24
TIMEOUT_S = 30


@dataclass
class Appliance:
    proc: subprocess.Popen[bytes]
    tcp_port: int
    ws_port: int
    log: Path

    def child(self, comm: str) -> int:
        """The pid of the supervisor's child named ``comm`` (as ps shows it)."""
        return child_named(self.proc.pid, comm)

    async def logged(self, text: str) -> None:
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while text not in self.log.read_text(errors="replace"):
            assert asyncio.get_running_loop().time() < deadline, f"never logged: {text}"
            await asyncio.sleep(0.05)


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    # Told in advance: the workers share each port (SO_REUSEPORT), port 0 would not be.
    tcp_port, ws_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
runtime: {{name: workers, io_workers: 2, io_timeout_s: 3.0}}
network:
  tcp: {{host: 127.0.0.1, port: {tcp_port}}}
  websocket: {{host: 127.0.0.1, port: {ws_port}}}
  tokens:
    - {{token: robot-token, role: device}}
    - {{token: operator-token, role: operator}}
    - {{token: viewer-token, role: viewer}}
robots: {{}}
"""
    )
    log = tmp_path / "appliance.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield Appliance(proc, tcp_port, ws_port, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, log.read_text(errors="replace")[-3000:]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


@dataclass
class Dashboard:
    """A viewer's picture of the robots, kept from its WorldUpdates."""

    ws: ClientConnection
    names: dict[int, str] = field(default_factory=dict)
    robots: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    async def open(cls, port: int) -> Dashboard:
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while True:
            try:
                ws = await connect(f"ws://127.0.0.1:{port}/ws")
                break
            except OSError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        await ws.send(encode(Hello("hmi", "viewer-token", "viewer", PROTOCOL_VERSION)))
        assert split(await asyncio.wait_for(ws.recv(), 10))[0] == "edgeloop.Welcome"
        await ws.send(encode(Subscribe("world", 20.0, ["Name", "Robot"])))
        return cls(ws)

    def shows(self, wanted: dict[str, dict[str, Any]]) -> bool:
        shown = {self.names[e]: self.robots[e] for e in self.robots if e in self.names}
        return all(
            name in shown and all(shown[name][k] == v for k, v in values.items())
            for name, values in wanted.items()
        )

    async def until(self, wanted: dict[str, dict[str, Any]]) -> None:
        """Until each named robot is shown with the wanted Robot values."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while not self.shows(wanted):
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"never showed {wanted}; got {self.names} {self.robots}"
            name, _, payload = split(await asyncio.wait_for(self.ws.recv(), left))
            if name != "edgeloop.WorldUpdate":
                continue
            for change in payload["changed"]:
                if change["component"] == "Name":
                    self.names[change["entity"]] = change["values"]["value"]
                else:
                    self.robots[change["entity"]] = change["values"]


async def _command_each(operator: Client, robots: dict[str, Client]) -> None:
    for name in robots:
        await operator.send(Command(name, "move", 1.5))
    results = [await _receive(operator, CommandResult) for _ in robots]
    assert all(r.accepted for r in results), results  # type: ignore[attr-defined]
    for name, robot in robots.items():
        command = await _receive(robot, Command)
        assert command == Command(name, "move", 1.5, command.command_id)  # type: ignore[attr-defined]


async def test_two_io_workers_share_the_robots_and_survive_each_other(
    appliance: Appliance,
) -> None:
    await appliance.logged("ready: ")  # both workers listen
    robots = {
        f"arm-{i}": await _connect(appliance.tcp_port, f"arm-{i}", "robot-token", "device")
        for i in range(ROBOTS)
    }
    worker = {name: worker_of(robot.connection_id) for name, robot in robots.items()}
    assert set(worker.values()) == {0, 1}, "the kernel shares connections out (SO_REUSEPORT)"
    for name, robot in robots.items():
        await robot.send(Telemetry(name, 1.0, 0.0, 30.0, "idle"))
    dashboard = await Dashboard.open(appliance.ws_port)
    await dashboard.until(
        {n: {"connection": r.connection_id, "status": "idle"} for n, r in robots.items()}
    )
    # Commands cross from the operator's worker to each robot's, whichever they are.
    operator = await _connect(appliance.tcp_port, "hmi", "operator-token", "operator")
    await _command_each(operator, robots)

    first = appliance.child("edgeloop-io")
    os.kill(appliance.child("edgeloop-io1"), signal.SIGKILL)
    await appliance.logged("io worker 1 restarted")
    assert appliance.child("edgeloop-io") == first, "the other worker is left alone"
    lost = {n: r for n, r in robots.items() if worker[n] == 1}
    kept = {n: r for n, r in robots.items() if worker[n] == 0}
    if worker_of(operator.connection_id) == 1:
        operator = await _connect(appliance.tcp_port, "hmi", "operator-token", "operator")
    await _command_each(operator, kept)
    # The control loop heard of the lost connections although their worker said nothing.
    await dashboard.ws.close()
    dashboard = await Dashboard.open(appliance.ws_port)
    await dashboard.until({n: {"connection": 0, "status": "fault"} for n in lost})

    old_ids = {r.connection_id for r in robots.values()}
    again = {n: await _connect(appliance.tcp_port, n, "robot-token", "device") for n in lost}
    assert not old_ids & {r.connection_id for r in again.values()}, "ids are never reused"
    for name, robot in again.items():
        await robot.send(Telemetry(name, 2.0, 0.0, 30.0, "idle"))
    await dashboard.until(
        {n: {"connection": r.connection_id, "status": "idle"} for n, r in again.items()}
    )
    await dashboard.ws.close()
    for client in (*robots.values(), *again.values(), operator):
        await client.close()
