"""A listener whose port is taken: retried with backoff, shown as an alarm, as health and
on the supervisor's status line, and listening once the port frees."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.alarms import Alarms
from edgeloop.names import find_entity
from edgeloop.net.listener_health import ListenerHealth
from edgeloop.net.plugin import NetworkConfig
from tests.integration.test_supervisor import READY_TIMEOUT_S, Notifications
from tests.net_harness import Net, running_network


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    """A port another process listens on (port 0: whichever the kernel gives)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder
    holder.close()


def _port(holder: socket.socket) -> int:
    return int(holder.getsockname()[1])


def _health(net: Net, provider: str = "tcp") -> ListenerHealth:
    entity = find_entity(net.world, f"network.{provider}")
    assert entity is not None
    return net.world.get(entity, ListenerHealth)


@pytest.mark.parametrize("provider", ["tcp", "websocket"])
async def test_a_taken_port_is_an_alarm_and_health_until_it_frees(
    taken_port: socket.socket, provider: str
) -> None:
    port = _port(taken_port)
    other = "websocket" if provider == "tcp" else "tcp"
    config = NetworkConfig.model_validate({provider: {"port": port}, other: None})
    async with running_network(config, ()) as net:
        expected = f"{provider} 127.0.0.1:{port} not listening (address in use)"
        source = f"network.{provider}"
        alarm = await net.until(lambda n: n.world.resource(Alarms).get(source))
        assert alarm.active
        assert alarm.text == expected
        health = await net.until(
            lambda n: _health(n, provider).state == "not_listening" and _health(n, provider)
        )
        assert health.last_error == "address in use"
        assert health.address == f"127.0.0.1:{port}"
        assert net.heartbeats.io_fault(0) == expected

        taken_port.close()
        await net.until(lambda n: _health(n, provider).state == "listening", timeout_s=15)
        alarms = net.world.resource(Alarms)
        assert not alarms.active(), "the alarm clears once the port is bound"
        assert net.heartbeats.io_fault(0) == ""
        assert net.part.listeners[provider].failures >= 1
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


async def test_a_free_port_is_listening_health_and_no_alarm() -> None:
    config = NetworkConfig.model_validate({"tcp": {"port": 0}, "websocket": None})
    async with running_network(config, ()) as net:
        await net.until(lambda n: _health(n).state == "listening")
        assert not net.world.resource(Alarms).active()
        assert net.part.listeners["tcp"].failures == 0
        with socket.create_connection(("127.0.0.1", net.port("tcp")), timeout=5):
            pass


# -- through the real supervisor --------------------------------------------------------

CONFIG = """
runtime: {{name: taken, io_timeout_s: 3.0}}
network:
  tcp: {{host: 127.0.0.1, port: {port}}}
  websocket: null
tank_plant:
  tanks:
    - name: tank1
"""


def test_the_supervisor_says_degraded_while_the_robot_port_is_taken(
    tmp_path: Path, taken_port: socket.socket
) -> None:
    port = _port(taken_port)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=port))
    address = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(address)
    notes = Notifications(notify)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: stderr.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    problem = f"DEGRADED: tcp 127.0.0.1:{port} not listening (address in use)"
    try:
        # The control loop runs (and keeps its safe state): READY, and the watchdog fed.
        notes.wait_for("READY=1", READY_TIMEOUT_S)
        _, status = notes.wait_for("STATUS=", 5)
        assert problem in status, status
        assert "io degraded" in status
        notes.wait_for("WATCHDOG=1", 5)
        assert _wait_for_log(stderr, "alarm network.tcp at tick")

        taken_port.close()
        deadline = time.monotonic() + 20
        while True:
            _, status = notes.wait_for("STATUS=", 5)
            if "DEGRADED" not in status:
                break
            assert time.monotonic() < deadline, f"still degraded: {status}"
        assert "io up" in status
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the appliance listens on it now
        assert _wait_for_log(stderr, "alarm network.tcp cleared")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join(15)
        notify.close()
    assert proc.returncode == 0


def _wait_for_log(lines: list[str], text: str, timeout_s: float = 5) -> bool:
    deadline = time.monotonic() + timeout_s
    while text not in "".join(lines):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling the reader thread's output, bounded by the deadline
    return True
