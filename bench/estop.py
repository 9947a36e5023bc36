"""E-stop benchmark: from the e-stop edge to the safe value on the wire.

The real appliance (``edgeloop run -c`` a temporary config: supervisor, control and io
process) runs an ``estop`` input on the simulated GPIO chip, a ``modbus`` device
``pump1`` polled every 10 ms, taking two outstanding requests (``max_outstanding: 2``,
as Modbus TCP allows: the safe write need not wait for the poll's answer), whose output
point ``Drive.speed`` (holding register 0, ``safe_value: 0``) is written by a SCADA
through the appliance's ``modbus_server`` (the same field, writable), and the TCP
provider for the operator's reset. The pump is this script's own Modbus TCP peer
(``estop_peer``: a process of its own that speaks enough MBAP to answer reads, and
times every write to register 0 by the kernel's receive timestamp).

One press cycle:

1. wait a random part of a tick, so presses fall on every phase of the 100 Hz loop;
2. **press**: ``time.time()``, then ``sim_client.set_level`` on the state_dir's
   chip socket (the chip thread applies the ``set`` datagram: the edge);
3. wait for the write of 0 to register 0 to arrive at the peer: the latency is its
   arrival time (the kernel's, on the peer's socket) minus the press time (the same
   clock, CLOCK_REALTIME, on the same machine). None within
   PRESS_DEADLINE_S counts as ``missed``;
4. **release** the input, then **reset** as an operator (``safety.Reset`` over the TCP
   provider, on one connection kept for the run; sent again while the control process
   has not yet seen the release);
5. the SCADA sets the speed again (FC6 to the ``modbus_server``), and the cycle waits
   for the driver to write it to the pump: the output is running, the next press may
   come.

Why a SCADA and not control logic: a reset leaves outputs at their safe values until
something writes them again (docs/safety.md), and a config can only add plugins that
are installed entry points; the ``tank_plant``'s pump is its own component, which no
driver point can name. The ``modbus_server`` write is a real writer of the field, with
a known moment, so step 5 needs no sleep.

``--drivers alone`` (the default) gives the field drivers an io process of their own
(``runtime.io_drivers_alone``, two io workers); ``shared``: one io process for all.

``--load io``: ROBOTS simulated robots (``edgeloop sim robots``, one process on the
same machine) send telemetry to the TCP provider at ROBOT_RATE_HZ each during the
presses, so the io process that must send the safe write is busy with them, and the
control process with their entities.

The run ends after ``--presses`` presses or ``--duration`` seconds of pressing,
whichever comes first; the appliance runs with ``--duration`` too (plus its start-up),
so it stops by itself even if this script is killed. Target: p99 under 2 ms under io
load, none missed (reported, not enforced).

Usage::

    python bench/estop.py --duration 60 --load {idle,io} [--presses 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wake_baseline
from estop_peer import Peer, above_the_io_process
from pymodbus.client import AsyncModbusTcpClient
from report import emit, machine_description

from edgeloop.drivers.gpio.sim_client import NoSimChip, set_level
from edgeloop.net.client import Client
from edgeloop.safety.estop import Reset, Result, Stop
from edgeloop.sim.ports import free_port

ESTOP_OFFSET = 0
OUTPUT_ADDRESS = 0  # the pump speed
UNIT_ID = 1
SAFE_RAW = 0
RUNNING_RAW = 1000  # the speed the SCADA sets
TICK_S = 0.01
PRESS_DEADLINE_S = 1.0
RESUME_DEADLINE_S = 5.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
START_MARGIN_S = 60.0  # the appliance's --duration beyond the pressing: its start-up
ROBOTS = 100
ROBOT_RATE_HZ = 100.0
TARGET_P99_MS = 2.0
OPERATOR_TOKEN = "estop-bench-operator"
ROBOT_TOKEN = "estop-bench-robot"


def write_config(
    path: Path,
    state_dir: Path,
    modbus_port: int,
    tcp_port: int,
    scada_port: int,
    *,
    drivers_alone: bool = False,
) -> None:
    workers = "\n  io_workers: 2\n  io_drivers_alone: true" if drivers_alone else ""
    path.write_text(
        f"""runtime:
  name: estop-bench
  rate_hz: 100
  state_dir: {state_dir}{workers}
estop:
  inputs:
    - {{chip: sim, offset: {ESTOP_OFFSET}}}
network:
  tcp: {{host: 127.0.0.1, port: {tcp_port}}}
  websocket: null
  tokens:
    - {{token: {OPERATOR_TOKEN}, role: operator}}
    - {{token: {ROBOT_TOKEN}, role: device}}
robots: {{}}
modbus:
  lines:
    - tcp: {{host: 127.0.0.1, port: {modbus_port}}}
      timeout_s: 0.5
      devices:
        - name: pump1
          poll_s: 0.01
          max_outstanding: 2
          points:
            - {{entity: pump1, component: Drive, field: speed, table: holding, address: {OUTPUT_ADDRESS}, type: uint16, direction: output, safe_value: {SAFE_RAW}}}
            - {{entity: pump1, component: Drive, field: status, table: holding, address: 1, type: uint16}}
modbus_server:
  host: 127.0.0.1
  port: {scada_port}
  points:
    - {{entity: pump1, component: Drive, field: speed, type: uint16, table: holding, address: 0, writable: true}}
"""  # noqa: E501 - a point is one line of YAML
    )


class Appliance:
    """``edgeloop run -c CONFIG --duration D`` in its own session, logging to a file."""

    def __init__(self, config: Path, log_path: Path, duration: float) -> None:
        self.log_path = log_path
        argv = [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)]
        argv += ["--duration", f"{duration:.0f}"]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the appliance exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT_S)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the children too
            self.proc.wait()


def _start_robots(tcp_port: int, seconds: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "edgeloop.cli", "sim", "robots", "--port", str(tcp_port)]
    argv += ["--count", str(ROBOTS), "--rate", str(ROBOT_RATE_HZ), "--token", ROBOT_TOKEN]
    argv += ["--duration", f"{seconds:.0f}"]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT_S)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _connected_operator(tcp_port: int, appliance: Appliance) -> Client:
    """An operator's connection, retried while the appliance starts."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        client = Client(
            "127.0.0.1",
            tcp_port,
            client_id="estop-bench",
            token=OPERATOR_TOKEN,
            role="operator",
            message_types=(Stop, Reset, Result),
        )
        try:
            await client.connect()
            return client
        except OSError:
            appliance.check_alive()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _set_estop(state_dir: Path, level: int) -> None:
    set_level(state_dir, ESTOP_OFFSET, level)


async def _reset(client: Client, command_id: int) -> None:
    """A reset, sent again while refused (the release not yet seen by the control loop)."""
    deadline = time.monotonic() + RESUME_DEADLINE_S
    while True:
        await client.send(Reset(command_id))
        async with asyncio.timeout(RESUME_DEADLINE_S):
            while True:
                answer = await client.receive()
                if isinstance(answer, Result) and answer.command_id == command_id:
                    break
        if answer.accepted:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"reset refused: {answer.reason}")
        await asyncio.sleep(0.001)
        command_id += 1 << 20  # a retry's answer told apart from the first's


async def _run_pump(peer: Peer, scada: AsyncModbusTcpClient) -> None:
    """The SCADA sets the pump's speed; until the driver has written it to the pump."""
    since = peer.count()
    await scada.write_register(OUTPUT_ADDRESS, RUNNING_RAW, device_id=UNIT_ID)
    if await asyncio.to_thread(peer.wait_write, since, False, RESUME_DEADLINE_S) is None:
        raise RuntimeError("the SCADA's speed did not reach the pump")


async def _press_cycles(
    peer: Peer,
    state_dir: Path,
    client: Client,
    scada: AsyncModbusTcpClient,
    *,
    presses: int,
    duration: float,
) -> tuple[list[float], int, int]:
    """The latencies, how many missed, and the press's SCHED_FIFO priority (0: none)."""
    latencies: list[float] = []
    missed = 0
    # The press is timed, then sent: neither the appliance nor the robots may come
    # between the two (the edge would be dated early by their share of the CPU).
    rt_priority = above_the_io_process()
    end = time.monotonic() + duration
    done = 0
    while done < presses and time.monotonic() < end:
        await asyncio.sleep(random.uniform(0, TICK_S))
        since = peer.count()
        pressed_at = time.time()  # the peer's kernel timestamps are CLOCK_REALTIME
        _set_estop(state_dir, 1)
        arrived = await asyncio.to_thread(peer.wait_write, since, True, PRESS_DEADLINE_S)
        if arrived is None:
            missed += 1
        else:
            latencies.append(arrived - pressed_at)
        done += 1
        _set_estop(state_dir, 0)
        await _reset(client, done)
        await _run_pump(peer, scada)
    return latencies, missed, rt_priority


async def _wait_started(peer: Peer, state_dir: Path, appliance: Appliance) -> None:
    """Until the chip listens and the driver has written the output's start value."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        appliance.check_alive()
        with contextlib.suppress(NoSimChip):
            if peer.count():
                _set_estop(state_dir, 0)
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the appliance did not start:\n{appliance.tail()}")
        await asyncio.sleep(0.1)


async def _bench(
    workdir: Path, load: str, presses: int, duration: float, drivers: str
) -> dict[str, Any]:
    state_dir = workdir / "state"
    tcp_port, scada_port = free_port(), free_port()
    peer = Peer(OUTPUT_ADDRESS, SAFE_RAW)
    peer.start()  # forks: before anything starts a thread
    config = workdir / "config.yaml"
    write_config(
        config, state_dir, peer.port, tcp_port, scada_port, drivers_alone=drivers == "alone"
    )
    appliance = Appliance(config, workdir / "appliance.log", duration + START_MARGIN_S)
    robots: subprocess.Popen[bytes] | None = None
    try:
        await _wait_started(peer, state_dir, appliance)
        client = await _connected_operator(tcp_port, appliance)
        scada = AsyncModbusTcpClient("127.0.0.1", port=scada_port, timeout=RESUME_DEADLINE_S)
        try:
            if not await scada.connect():
                raise RuntimeError(f"no modbus_server on {scada_port}:\n{appliance.tail()}")
            await _run_pump(peer, scada)
            if load == "io":
                robots = _start_robots(tcp_port, duration + START_MARGIN_S)
                await asyncio.sleep(2.0)  # a load ramp: let the fleet connect, not a sync
                if robots.poll() is not None:
                    raise RuntimeError(f"the robots exited with {robots.returncode}")
            baseline = await wake_baseline.start(appliance.proc.pid)
            try:
                latencies, missed, rt_priority = await _press_cycles(
                    peer, state_dir, client, scada, presses=presses, duration=duration
                )
            finally:
                wake = {} if baseline is None else await baseline.stop()
        finally:
            scada.close()
            await client.close()
    finally:
        if robots is not None:
            _stop(robots)
        appliance.stop()
        peer.stop()
    figures = _figures(latencies, missed, load, duration)
    figures.update(wake)
    if wake.get("platform_p99_ms") and figures["p99_ms"] is not None:
        figures["p99_over_platform"] = round(figures["p99_ms"] / wake["platform_p99_ms"], 2)
    figures["drivers"] = drivers
    figures["bench_rt_priority"] = rt_priority  # the press's and the peer's, if permitted
    return figures


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest rank."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _figures(latencies: list[float], missed: int, load: str, duration: float) -> dict[str, Any]:
    ordered = sorted(1000 * s for s in latencies)
    return {
        "machine": machine_description(),
        "load": load,
        "robots": ROBOTS if load == "io" else 0,
        "robot_rate_hz": ROBOT_RATE_HZ if load == "io" else 0.0,
        "duration_s": duration,
        "presses": len(latencies) + missed,
        "missed": missed,
        "min_ms": round(ordered[0], 3) if ordered else None,
        "p50_ms": round(_percentile(ordered, 0.5), 3) if ordered else None,
        "p99_ms": round(_percentile(ordered, 0.99), 3) if ordered else None,
        "max_ms": round(ordered[-1], 3) if ordered else None,
        "target_p99_ms": TARGET_P99_MS,
    }


def format_table(result: dict[str, Any]) -> str:
    load = "idle" if result["load"] == "idle" else (
        f"io ({result['robots']} robots at {result['robot_rate_hz']:g} Hz)"
    )  # fmt: skip
    rows = [
        ("presses", str(result["presses"])),
        ("missed (no safe write within 1 s)", str(result["missed"])),
        *((f"{key[:-3]} ms", f"{result[key]}") for key in ("min_ms", "p50_ms", "p99_ms", "max_ms")),
        ("target", f"p99 < {result['target_p99_ms']:g} ms under io load, 0 missed"),
    ]
    if "p99_over_platform" in result:
        rows.append(
            (
                "this machine's own wake-up, p50 / p99 / max ms",
                f"{result['platform_p50_ms']} / {result['platform_p99_ms']} / "
                f"{result['platform_max_ms']} (cyclictest on the control core, cpu "
                f"{result['platform_cpu']}, SCHED_FIFO {result['platform_priority']}; "
                f"our p99 is {result['p99_over_platform']}x)",
            )
        )
    else:
        why = result.get("platform_error", "no cyclictest")
        rows.append(("this machine's own wake-up", f"not measured ({why})"))
    width = max(len(name) for name, _ in rows)
    drivers = "drivers in an io process alone" if result["drivers"] == "alone" else "one io process"
    lines = [f"E-stop edge -> safe value on the wire, load {load}, {drivers}, {result['machine']}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of pressing, at most")
    parser.add_argument("--load", choices=("idle", "io"), default="idle")
    parser.add_argument(
        "--presses", type=int, default=sys.maxsize, help="stop after this many (default: none)"
    )
    parser.add_argument(
        "--drivers",
        choices=("shared", "alone"),
        default="alone",
        help="alone: runtime.io_drivers_alone (the field drivers' io process runs no network)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="estop-bench-") as folder:
        result = asyncio.run(
            _bench(Path(folder), args.load, args.presses, args.duration, args.drivers)
        )
    emit(format_table(result), result, args.json)
    return 0 if result["presses"] else 1


if __name__ == "__main__":
    sys.exit(main())
