"""A peer flooding HIGH messages is paused, loses nothing, and the loop keeps its rate."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from edgeloop.net import protocol
from edgeloop.net.client import Client
from edgeloop.sim.robots import Command, CommandResult
from tests.listening import TCP, logged_port

COMMANDS = 20_000


async def _flood(port: int) -> int:
    client = Client(
        "127.0.0.1",
        port,
        client_id="flood",
        token="operator-token",
        role="operator",
        message_types=(Command, CommandResult),
    )
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await client.connect()
            break
        except OSError:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    assert client._writer is not None
    body = protocol.frame(protocol.encode(Command("ghost", "stop")))

    async def send_all() -> None:
        for _ in range(COMMANDS // 100):
            client._writer.write(body * 100)  # type: ignore[union-attr]
            await client._writer.drain()  # type: ignore[union-attr]

    sender = asyncio.create_task(send_all())
    results = 0
    while results < COMMANDS:
        msg = await asyncio.wait_for(client.receive(), 30)
        results += isinstance(msg, CommandResult)
    await sender
    await client.close()
    return results


def test_flooding_high_messages_are_all_delivered_while_the_loop_keeps_its_rate(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        """
runtime: {name: flood, io_records_per_tick: 50}  # 5 000 records/s: the flood backs up
network:
  tcp: {host: 127.0.0.1, port: 0}
  websocket: null
  tokens: [{token: operator-token, role: operator}]
robots: {}
"""
    )
    notify = tmp_path / "notify.sock"
    status = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    status.bind(str(notify))
    status.setblocking(False)
    log = tmp_path / "appliance.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        port = logged_port(log, TCP, proc)  # port 0: it binds what is free and says which
        assert asyncio.run(_flood(port)) == COMMANDS, "every HIGH command answered"
        rates = _status_rates(status)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        proc.kill()
        status.close()
    stderr = log.read_text(errors="replace")
    paused = re.search(r"tcp provider stopped: .*paused (\d+)", stderr)
    assert paused and int(paused[1]) > 0, "the flooding peer was paused"
    # STATUS gives the tick rate over each second: the flood never slowed the loop.
    assert len(rates) >= 2
    assert min(rates[1:]) >= 95, rates


def _status_rates(sock: socket.socket) -> list[float]:
    rates = []
    while True:
        try:
            data = sock.recv(4096).decode()
        except BlockingIOError:
            return rates
        rates += [float(m) for m in re.findall(r"STATUS=([\d.]+) Hz", data)]
