"""A simulated motor drive on a python-can bus, for tests and the demo.

The drive streams ``DriveStatus`` (speed, current, temperature, DC voltage, status) every
``period_s`` and obeys ``DriveCommand`` (speed setpoint, enable), as laid out in the
packaged ``drive.dbc``. Faults are injected on command (``inject``, or a line on stdin
for ``edgeloop sim can``), each for a duration:

- ``delay S``: every status frame goes S seconds late.
- ``silence``: no status frames (the controller sees timeouts).
- ``garbage``: status frames of the wrong length.
- ``bus-off`` / ``error-passive``: the error frames SocketCAN would give the controller
  when its node goes bus-off or error-passive, and on recovery. A virtual bus has no
  controller to do so, so the simulator plays that part; bus-off also silences the drive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import random
import sys
from dataclasses import dataclass
from typing import Any

import can
from cantools.database.can import Database
from cantools.database.errors import DecodeError

from edgeloop.drivers.can.codec import (
    CAN_ERR_BUSOFF,
    CAN_ERR_CRTL,
    CAN_ERR_CRTL_ACTIVE,
    CAN_ERR_CRTL_RX_PASSIVE,
    CAN_ERR_CRTL_TX_PASSIVE,
    CAN_ERR_RESTARTED,
)
from edgeloop.drivers.can.config import load_dbc
from edgeloop.drivers.sim_faults import FaultSchedule, commands_from_stdin, stdin_takes_commands
from edgeloop.logs import setup_logging

log = logging.getLogger("edgeloop.sim.can")

STATUS = "DriveStatus"
COMMAND = "DriveCommand"
PERIOD_S = 0.02
SPEED_TAU_S = 0.3  # the speed's first-order response to the setpoint
THERMAL_TAU_S = 60.0
AMBIENT_C = 25.0
IDLE_A = 0.5
AMPS_PER_RPM = 0.002
AMPS_PER_RPM_S = 0.001  # acceleration current
DEGREES_PER_A2 = 0.05  # steady-state temperature rise per ampere squared
SUPPLY_V = 48.0
SUPPLY_OHMS = 0.05


class Fault(enum.Enum):
    DELAY = "delay"
    SILENCE = "silence"
    GARBAGE = "garbage"
    BUS_OFF = "bus-off"
    ERROR_PASSIVE = "error-passive"


class DriveStatus(enum.IntEnum):
    DISABLED = 0
    RUNNING = 1


@dataclass
class Drive:
    """The drive's physics and the last command it obeyed."""

    setpoint_rpm: float = 0.0
    enabled: bool = False
    speed_rpm: float = 0.0
    current_a: float = 0.0
    temperature_c: float = AMBIENT_C

    def step(self, dt: float) -> None:
        target = self.setpoint_rpm if self.enabled else 0.0
        change = (target - self.speed_rpm) * min(1.0, dt / SPEED_TAU_S)
        self.speed_rpm += change
        acceleration = abs(change) / dt if dt > 0 else 0.0
        self.current_a = IDLE_A + AMPS_PER_RPM * abs(self.speed_rpm)
        self.current_a += AMPS_PER_RPM_S * acceleration
        hot = AMBIENT_C + DEGREES_PER_A2 * self.current_a**2
        self.temperature_c += (hot - self.temperature_c) * min(1.0, dt / THERMAL_TAU_S)

    def status_signals(self) -> dict[str, float]:
        status = DriveStatus.RUNNING if self.enabled else DriveStatus.DISABLED
        return {
            "Speed": self.speed_rpm,
            "Current": self.current_a,
            "Temperature": round(self.temperature_c),
            "DcVoltage": SUPPLY_V - SUPPLY_OHMS * self.current_a,
            "Status": int(status),
            "Enabled": int(self.enabled),
        }


class DriveSim:
    """One simulated drive on ``bus`` (which the caller opens and shuts down)."""

    def __init__(
        self,
        bus: can.BusABC,
        database: Database | None = None,
        period_s: float = PERIOD_S,
        rng: random.Random | None = None,
    ) -> None:
        self.bus = bus
        self.database = database or load_dbc("drive.dbc")
        self.period_s = period_s
        self.drive = Drive()
        self.status_sent = 0
        self.commands = 0  # command frames obeyed
        self.bad_commands = 0
        self._status = self.database.get_message_by_name(STATUS)
        self._command = self.database.get_message_by_name(COMMAND)
        self._rng = rng or random.Random()
        self._faults: FaultSchedule[Fault] = FaultSchedule(log)

    def inject(self, fault: Fault, duration_s: float, delay_s: float = 0.0) -> None:
        """Start ``fault`` now, for ``duration_s`` seconds."""
        self._faults.start(fault, duration_s, delay_s)
        if fault is Fault.BUS_OFF:
            self._send_error(CAN_ERR_BUSOFF, 0)
        elif fault is Fault.ERROR_PASSIVE:
            self._send_error(CAN_ERR_CRTL, CAN_ERR_CRTL_RX_PASSIVE | CAN_ERR_CRTL_TX_PASSIVE)

    def clear(self) -> None:
        """End every fault now."""
        self._faults.clear()

    def active(self, fault: Fault) -> bool:
        return self._faults.active(fault)

    async def run(self) -> None:
        """Stream status and obey commands until cancelled."""
        loop = asyncio.get_running_loop()
        reader = can.AsyncBufferedReader()
        notifier = can.Notifier(self.bus, [reader], timeout=0.1, loop=loop)
        commands = loop.create_task(self._obey(reader))
        try:
            await self._stream(loop)
        finally:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)
            await asyncio.to_thread(notifier.stop)

    async def _stream(self, loop: asyncio.AbstractEventLoop) -> None:
        due = last = loop.time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            self.drive.step(now - last)
            last = now
            due += self.period_s
            if due <= now:
                due = now + self.period_s
            self._end_faults(now)
            if self.active(Fault.SILENCE) or self.active(Fault.BUS_OFF):
                continue
            if self.active(Fault.DELAY):
                loop.call_later(self._faults.delay_s, self._send_status)
            else:
                self._send_status()

    def _send_status(self) -> None:
        if self.active(Fault.GARBAGE):
            length = self._rng.randrange(self._status.length)
            data = self._rng.randbytes(length)
        else:
            signals = self.drive.status_signals()
            data = self._status.encode(signals, scaling=True, strict=False)
        frame = can.Message(arbitration_id=self._status.frame_id, data=data, is_extended_id=False)
        self._send(frame)
        self.status_sent += 1

    async def _obey(self, reader: can.AsyncBufferedReader) -> None:
        async for frame in reader:
            if frame.arbitration_id != self._command.frame_id or frame.is_error_frame:
                continue
            if self.active(Fault.BUS_OFF):
                continue  # off the bus: it hears nothing
            try:
                signals = self._command.decode_simple(bytes(frame.data), False, True, False, False)
            except DecodeError:
                self.bad_commands += 1
                continue
            setpoint = signals["SpeedSetpoint"]
            assert isinstance(setpoint, (int, float))  # decode_choices=False: numbers only
            self.drive.setpoint_rpm = float(setpoint)
            self.drive.enabled = bool(signals["Enable"])
            self.commands += 1

    def _end_faults(self, now: float) -> None:
        for fault in self._faults.ended(now):
            if fault is Fault.BUS_OFF:
                self._send_error(CAN_ERR_RESTARTED, 0)
            elif fault is Fault.ERROR_PASSIVE:
                self._send_error(CAN_ERR_CRTL, CAN_ERR_CRTL_ACTIVE)

    def _send_error(self, kind: int, controller: int) -> None:
        data = bytes([0, controller, 0, 0, 0, 0, 0, 0])
        self._send(can.Message(arbitration_id=kind, is_error_frame=True, data=data))

    def _send(self, frame: can.Message) -> None:
        try:
            self.bus.send(frame, timeout=0)
        except can.CanError as err:
            log.warning("send failed: %s", err)


def main(argv: list[str] | None = None) -> int:
    """``edgeloop sim can``: a simulated drive; fault commands on stdin."""
    parser = argparse.ArgumentParser(prog="edgeloop sim can", description=__doc__)
    parser.add_argument("--channel", required=True)
    parser.add_argument(
        "--interface", default="udp_multicast", choices=["virtual", "udp_multicast", "socketcan"]
    )
    parser.add_argument(
        "--port", type=int, help="udp_multicast: the UDP port (python-can's default)"
    )
    parser.add_argument("--dbc", default="drive.dbc")
    parser.add_argument("--period-ms", type=float, default=PERIOD_S * 1000)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    options: dict[str, Any] = {} if args.port is None else {"port": args.port}
    if args.interface == "udp_multicast":
        # Time to live 0: the frames reach processes on this host only, never the wire.
        options["hop_limit"] = 0
    bus = can.Bus(interface=args.interface, channel=args.channel, **options)
    sim = DriveSim(bus, load_dbc(args.dbc), args.period_ms / 1000.0)
    log.info("drive on %s %s, status every %g ms", args.interface, args.channel, args.period_ms)

    async def run() -> None:
        tasks = [asyncio.create_task(sim.run())]
        if stdin_takes_commands():
            tasks.append(asyncio.create_task(commands_from_stdin(sim, Fault)))
        try:
            await asyncio.wait(tasks[:1], timeout=args.duration)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    finally:
        bus.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
