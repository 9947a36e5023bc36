"""`edgeloop run` of the demo config, as a device runs it, with the devices around it:
the end-to-end tests' harness.

The config is the demo's, moved to free ports and a run dir of the test's
(``tests.demo_place``), with the test's own changes. The Modbus PLC is simulated in the
test's event loop, so a test sees every write it gets, when it got it; the CAN drive
and the serial sensor are `edgeloop sim` processes, and the CAN bus is heard from here
too. Robots are the test's own (``PeerRobot``): real TCP clients it can silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import yaml

from edgeloop.config import Config, load_config
from edgeloop.demo_config import PORTS
from edgeloop.demo_devices import SIM, simulator_commands
from edgeloop.drivers.can.config import CanConfig, load_dbc
from edgeloop.drivers.gpio import estop_switch
from edgeloop.drivers.modbus.codec import TABLE_OF_FUNCTION, Table
from edgeloop.drivers.modbus.sim import PlcMemory, PlcSimulator
from edgeloop.net.client import Client
from edgeloop.safety.audit import FILE_NAME
from edgeloop.safety.estop import Reset, Result, Stop
from edgeloop.sim.robots import Command, CommandResult, Telemetry
from tests.demo_place import DemoPlace, demo_place
from tests.integration.test_demo_field_devices import watch
from tests.process_tree import child_named

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
START_S = 60.0  # the appliance and its devices up, on a loaded 2-core box
STOP_S = 30.0
PLC_SIZE = 16  # cells per table: the demo's points are at the first addresses
OPERATOR_TOKEN = "demo-operator"  # config/demo.yaml's tokens
ROBOT_TOKEN = "demo-robot"
IO_PROCESS = "edgeloop-io"  # its name in ps (runtime/realtime/io_process.py)

Edit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class PlcWrite:
    at: float  # time.monotonic() when the PLC took it
    table: Table
    address: int
    values: list[Any]


class RecordingMemory(PlcMemory):
    """The simulated PLC's memory, keeping every write it accepted."""

    def __init__(self) -> None:
        super().__init__([1], PLC_SIZE, changing=True, rng=random.Random(0))
        self.writes: list[PlcWrite] = []

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> Any:
        refused = await super().async_setValues(device_id, func_code, address, values)
        if refused is None:
            table = TABLE_OF_FUNCTION[func_code]
            self.writes.append(PlcWrite(time.monotonic(), table, address, list(values)))
        return refused

    def coil_writes(self, address: int, since: float = 0.0) -> list[bool]:
        """The values written to coil ``address`` since ``since`` (monotonic), in order."""
        return [
            bool(w.values[0])
            for w in self.writes
            if w.table == "coil" and w.address == address and w.at >= since
        ]


@dataclass(frozen=True, slots=True)
class CanFrame:
    at: float  # time.monotonic() when it was heard
    name: str
    signals: dict[str, Any]


class CanEar:
    """Every frame of the appliance's CAN bus, decoded with the demo's DBC."""

    def __init__(self, config: Config) -> None:
        can_config = config.sections["can"]
        assert isinstance(can_config, CanConfig)
        bus_config = can_config.buses[0]
        self.database = load_dbc("drive.dbc")
        self.bus = can.Bus(
            interface=bus_config.interface, channel=bus_config.channel, **bus_config.options
        )
        self.frames: list[CanFrame] = []
        self._lock = threading.Lock()
        self._notifier = can.Notifier(self.bus, [self._heard])

    def _heard(self, msg: can.Message) -> None:
        try:
            decoded = self.database.get_message_by_frame_id(msg.arbitration_id)
            signals = dict(decoded.decode(msg.data, decode_choices=False))
        except (KeyError, ValueError):
            return  # not the drive's
        with self._lock:
            self.frames.append(CanFrame(time.monotonic(), decoded.name, signals))

    def commands(self, since: float = 0.0) -> list[dict[str, Any]]:
        """The signals of each DriveCommand heard since ``since`` (monotonic)."""
        with self._lock:
            return [f.signals for f in self.frames if f.name == "DriveCommand" and f.at >= since]

    def close(self) -> None:
        self._notifier.stop()
        self.bus.shutdown()


class PeerRobot:
    """A robot arm on a real TCP connection: telemetry at 10 Hz while ``talking``, each
    command it gets kept (and answered, obeyed)."""

    PERIOD_S = 0.1

    def __init__(self, robot_id: str, port: int) -> None:
        self.robot_id = robot_id
        self.client = Client(
            "127.0.0.1",
            port,
            client_id=robot_id,
            token=ROBOT_TOKEN,
            role="device",
            message_types=(Telemetry, Command, CommandResult),
        )
        self.talking = True
        self.commands: list[tuple[float, Command]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> PeerRobot:
        await self.client.connect()
        self._tasks = [asyncio.create_task(self._talk()), asyncio.create_task(self._listen())]
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    def stops(self, since: float = 0.0) -> list[Command]:
        return [c for at, c in self.commands if c.action == "stop" and at >= since]

    async def _talk(self) -> None:
        while True:
            if self.talking:
                await self.client.send(Telemetry(self.robot_id, 0.0, 0.0, 35.0, "idle"))
            await asyncio.sleep(self.PERIOD_S)  # a robot's telemetry period, not a wait

    async def _listen(self) -> None:
        while True:
            msg = await self.client.receive()
            if isinstance(msg, Command):
                self.commands.append((time.monotonic(), msg))
                await self.client.send(CommandResult(self.robot_id, True, "obeyed", msg.command_id))


@dataclass
class Appliance:
    place: DemoPlace
    config_path: Path
    config: Config
    proc: subprocess.Popen[bytes]
    log_path: Path
    plc: RecordingMemory
    can: CanEar
    plc_server: PlcSimulator
    # the `edgeloop sim` processes by bus; each takes fault commands on its stdin
    simulators: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.config.runtime.state_dir

    @property
    def audit_path(self) -> Path:
        return self.state_dir / FILE_NAME

    @property
    def tcp_port(self) -> int:
        return self.place.port_base + PORTS[("network", "tcp", "port")]

    @property
    def modbus_server_port(self) -> int:
        return self.place.port_base + PORTS[("modbus_server", "port")]

    @property
    def plc_port(self) -> int:
        return self.place.port_base + PORTS[("modbus", "lines", 0, "tcp", "port")]

    async def stop_plc(self) -> None:
        """The simulated PLC stops listening and drops its connections."""
        await self.plc_server.stop()

    async def start_plc(self) -> None:
        """The simulated PLC serves again, on its port, with the memory it had."""
        await self.plc_server.serve_tcp("127.0.0.1", self.plc_port)

    def fault(self, bus: str, command: str) -> None:
        """A fault command to the simulator of ``bus`` (``silence 3``: drivers/sim_faults.py)."""
        stdin = self.simulators[bus].stdin
        assert stdin is not None
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def io_pid(self) -> int:
        """The io process's pid (LookupError while there is none)."""
        return child_named(self.proc.pid, IO_PROCESS)

    def robot(self, robot_id: str) -> PeerRobot:
        return PeerRobot(robot_id, self.tcp_port)

    def operator(self, client_id: str = "e2e-operator") -> Client:
        return Client(
            "127.0.0.1",
            self.tcp_port,
            client_id=client_id,
            token=OPERATOR_TOKEN,
            role="operator",
            message_types=(Command, CommandResult, Stop, Reset, Result),
        )

    async def press(self, pressed: bool = True) -> float:
        """Press (or release) the e-stop on the simulated chip; when (monotonic) it was
        about to be: the PLC in this event loop may hear of it before this returns."""
        lines = estop_switch.simulated_lines(estop_switch.estop_lines(self.config))
        before = time.monotonic()
        await asyncio.to_thread(estop_switch.set_pressed, self.state_dir, lines, pressed)
        return before

    async def reset(self, deadline_s: float = 20.0) -> Result:
        """An operator's reset (``safety.Reset``), and the appliance's answer; retried
        while the TCP provider (in the io process) does not answer."""
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                async with asyncio.timeout(10), self.operator("e2e-reset") as operator:
                    await operator.send(Reset())
                    while True:
                        answer = await operator.receive()
                        if isinstance(answer, Result) and answer.action == "reset":
                            return answer
            except (OSError, ConnectionError):
                assert time.monotonic() < give_up, "the appliance never took a reset"
                await asyncio.sleep(0.2)

    def audit_entries(self) -> list[dict[str, Any]]:
        """The audit log's complete lines so far (the last may still be on its way)."""
        text = self.audit_path.read_text() if self.audit_path.exists() else ""
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    async def until(self, done: Callable[[], bool], deadline_s: float, what: str) -> float:
        """Poll ``done`` until it holds; when it did (monotonic)."""
        return await until(done, deadline_s, what, self)


async def until(
    done: Callable[[], bool], deadline_s: float, what: str, appliance: Appliance | None = None
) -> float:
    """Poll ``done`` every few ms until it holds, failing after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while not done():
        if appliance is not None and appliance.proc.poll() is not None:
            raise AssertionError(f"the appliance exited: {appliance.log()[-3000:]}")
        assert loop.time() < give_up, f"not within {deadline_s} s: {what}"
        await asyncio.sleep(0.005)
    return time.monotonic()


def edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
    """An ``edgeloop`` command, as an operator runs it."""
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _placed_config(place: DemoPlace, edit: Edit) -> Path:
    path = place.config()
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _other_simulators(config: Config) -> Iterator[tuple[str, list[str]]]:
    """The demo's simulators but the PLC (in this process) and the robots (the test's),
    by bus."""
    for command, _ in simulator_commands(config):
        if command[len(SIM)] in ("can", "serial"):
            yield command[len(SIM)], command


@asynccontextmanager
async def running_appliance(run_dir: Path, edit: Edit = lambda _: None) -> AsyncIterator[Appliance]:
    """`edgeloop run` of the demo config with ``edit`` applied, its devices up; stopped
    (SIGTERM, exit status 0 expected) at the end, and everything it started with it,
    however far the start got."""
    place = demo_place(run_dir)
    config_path = _placed_config(place, edit)
    config = load_config(config_path)
    plc_memory = RecordingMemory()
    plc = PlcSimulator([1], PLC_SIZE)
    plc.memory = plc_memory
    async with contextlib.AsyncExitStack() as started:
        await plc.serve_tcp(
            "127.0.0.1", place.port_base + PORTS[("modbus", "lines", 0, "tcp", "port")]
        )
        started.push_async_callback(plc.stop)
        others: dict[str, subprocess.Popen[bytes]] = {}
        started.push_async_callback(_stop_simulators, others)
        for bus, command in _other_simulators(config):
            others[bus] = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
            )
        ear = CanEar(config)
        started.callback(ear.close)
        log_path = run_dir / "appliance.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [*EDGELOOP, "run", "-c", str(config_path)],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        appliance = Appliance(
            place, config_path, config, proc, log_path, plc_memory, ear, plc, others
        )
        try:
            await watch(place, "e2e-ready", lambda s: {"plc1", "drive1"} <= s.online(), START_S)
            yield appliance
        finally:
            stopped = await _stop(appliance)
    assert stopped == 0, f"exit status {stopped}: {appliance.log()[-3000:]}"


async def _stop_simulators(simulators: dict[str, subprocess.Popen[bytes]]) -> None:
    for simulator in simulators.values():
        simulator.terminate()
    for simulator in simulators.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(simulator.wait, 5)
        simulator.kill()
        if simulator.stdin is not None:
            simulator.stdin.close()


async def _stop(appliance: Appliance) -> int | None:
    if appliance.proc.poll() is None:
        appliance.proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(appliance.proc.wait, STOP_S)
    except subprocess.TimeoutExpired:
        appliance.proc.kill()
        await asyncio.to_thread(appliance.proc.wait)
        return None
