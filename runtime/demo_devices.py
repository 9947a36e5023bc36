"""The simulated devices ``edgeloop demo`` starts next to the runtime.

Each configured section that talks to devices gets its simulator as a child process,
started from the config itself (the port, the unit ids, the bus channel), so the demo
config stays the one place that says where things are. Children die with the demo.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgeloop.config import Config
from edgeloop.realtime.rt_setup import die_with_parent

DEMO_ROBOTS = 3
SIM = (sys.executable, "-m", "edgeloop.cli", "sim")
READY_TIMEOUT_S = 15.0

Ready = Callable[[], bool]  # True once a simulator serves (its port, its device path)
Planned = list[tuple[list[str], Ready | None]]


def simulator_commands(config: Config) -> Planned:
    """The command line of each simulator the config's sections need, and how to tell
    it is serving."""
    commands: Planned = []
    for build in BUILDERS:
        commands += build(config)
    return commands


def start_simulators(config: Config) -> list[subprocess.Popen[bytes]]:
    """Start the simulators and wait (a bounded while) until they serve, so the drivers
    find their devices at once instead of after a few backoff rounds."""
    planned = simulator_commands(config)
    # preexec_fn is safe here: the CLI has started no thread. stdin: a simulator that
    # takes fault commands there must not take the demo's terminal.
    children = [
        subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)  # noqa: PLW1509
        for command, _ in planned
    ]
    waiting = [ready for _, ready in planned if ready is not None]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        waiting = [ready for ready in waiting if not ready()]
        time.sleep(0.05)  # polling a port and a path; the deadline bounds the wait
    return children


def stop_simulators(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _listening(port: int) -> Ready:
    def ready() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    return ready


def _exists(path: str) -> Ready:
    return Path(path).exists


def _robots(config: Config) -> Planned:
    from edgeloop.net.plugin import NetworkConfig  # noqa: PLC0415 - only what is configured

    network = config.sections.get("network")
    if not isinstance(network, NetworkConfig) or network.tcp is None:
        return []
    if "robots" not in config.sections:
        return []
    token = next((t.token for t in network.tokens if t.role == "device"), None)
    if token is None:
        return []
    command = [*SIM, "robots", "--count", str(DEMO_ROBOTS), "--port", str(network.tcp.port)]
    return [([*command, "--token", token], None)]


def _modbus(config: Config) -> Planned:
    from edgeloop.drivers.modbus.config import ModbusConfig  # noqa: PLC0415

    modbus = config.sections.get("modbus")
    if not isinstance(modbus, ModbusConfig):
        return []
    commands: Planned = []
    for line in modbus.lines:
        if line.tcp is None:
            continue
        units = ",".join(str(device.unit_id) for device in line.devices)
        size = max(p.address + p.width for d in line.devices for p in d.points)
        command = [*SIM, "modbus", "--port", str(line.tcp.port), "--units", units]
        ready = _listening(line.tcp.port) if line.tcp.host == "127.0.0.1" else None
        commands.append(([*command, "--size", str(size), "--changing"], ready))
    return commands


def _can(config: Config) -> Planned:
    from edgeloop.drivers.can.config import CanConfig  # noqa: PLC0415

    can = config.sections.get("can")
    if not isinstance(can, CanConfig):
        return []
    commands: Planned = []
    for bus in can.buses:
        command = [*SIM, "can", "--interface", bus.interface, "--channel", bus.channel]
        if "port" in bus.options:
            command += ["--port", str(bus.options["port"])]
        commands.append((command, None))  # frames on a bus: nothing to connect to
    return commands


def _serial(config: Config) -> Planned:
    from edgeloop.drivers.serial.config import SerialConfig  # noqa: PLC0415

    serial = config.sections.get("serial")
    if not isinstance(serial, SerialConfig):
        return []
    commands: Planned = []
    for device in serial.devices:
        # The simulator makes the device appear at the configured path, as udev would.
        command = [*SIM, "serial", "--mode", device.mode, "--link", device.port]
        if device.csv is not None:
            command += ["--format", "csv"]
        if device.poll is not None:
            command += ["--poll-only"]
        commands.append((command, _exists(device.port)))
    return commands


BUILDERS: tuple[Callable[[Config], Planned], ...] = (
    _robots,
    _modbus,
    _can,
    _serial,
)
