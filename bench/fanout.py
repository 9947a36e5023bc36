"""Fan-out benchmark: many WebSocket dashboards subscribed to a world of many robots.

The real appliance (`edgeloop run`: supervisor, control, io) holds ``--robots`` robot
entities, kept changing by simulated robots over TCP (``--robot-rate`` Hz each). For each
count in ``--clients``, that many WebSocket clients (msgpack, in ``--client-procs``
processes) subscribe to the ``Robot`` components at 30 Hz. Reported per case: updates
delivered per client per second, io-process CPU %, and staleness: the robots stamp their
send time (CLOCK_MONOTONIC, same machine) into ``Robot.temperature`` — a bench-only
encoding — so a client sees how old the newest value in each update is (robot send ->
on a dashboard, through the control loop's 30 Hz publish and the subscriber's period).

    python bench/fanout.py [--duration 20] [--json OUT] [--clients 100,500] [--robots 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import appliance
import msgpack
import psutil
from report import emit, machine_description
from websockets.asyncio.client import connect

from edgeloop.net import protocol
from edgeloop.net.client import Client
from edgeloop.sim.ports import free_port
from edgeloop.sim.robots import Command, CommandResult, Telemetry

TOKEN_VIEWER = "bench-viewer-0123456789"
TOKEN_ROBOT = "bench-robot-0123456789"
SUBSCRIBE_HZ = 30.0


# -- the pieces that run in child processes -----------------------------------------------


async def _robots(port: int, first: int, count: int, rate_hz: float, seconds: float) -> None:
    """``count`` robots streaming telemetry stamped with their send time."""

    async def robot(index: int) -> None:
        client = Client(
            "127.0.0.1",
            port,
            client_id=f"robot-{index}",
            token=TOKEN_ROBOT,
            role="device",
            message_types=(Telemetry, Command, CommandResult),
        )
        await client.connect()
        loop = asyncio.get_running_loop()
        next_at = loop.time() + (index % 100) / 100 / rate_hz  # spread the sends
        stop_at = loop.time() + seconds
        while loop.time() < stop_at:
            stamp = time.monotonic_ns() / 1e9
            await client.send(Telemetry(f"robot-{index}", 0.0, 0.0, stamp, "moving"))
            next_at += 1 / rate_hz
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await client.close()

    await asyncio.gather(*(robot(i) for i in range(first, first + count)))


async def _dashboards(port: int, count: int, seconds: float, out: Path) -> None:
    """``count`` subscribers; writes their update counts and staleness samples."""
    hello = protocol.encode(protocol.Hello("dash", TOKEN_VIEWER, "viewer", 1))
    subscribe = protocol.encode(protocol.Subscribe("world", SUBSCRIBE_HZ, ["Robot"]))
    updates = [0] * count
    staleness: list[float] = []

    async def dashboard(index: int) -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None, compression=None) as ws:
            await ws.send(hello)
            await ws.recv()
            await ws.send(subscribe)
            first = True
            stop_at = asyncio.get_running_loop().time() + seconds
            while (left := stop_at - asyncio.get_running_loop().time()) > 0:
                try:
                    data = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                if first:  # the full snapshot says nothing about the rate
                    first = False
                    continue
                updates[index] += 1
                # Only a sample of clients decodes: decoding every update in every client
                # would make the load generator, not the appliance, the bottleneck.
                if index % 10 == 0:
                    name, _, payload = msgpack.unpackb(data)
                    if name == "edgeloop.WorldUpdate" and payload["changed"]:
                        newest = max(c["values"]["temperature"] for c in payload["changed"])
                        staleness.append(time.monotonic_ns() / 1e9 - newest)

    await asyncio.gather(*(dashboard(i) for i in range(count)), return_exceptions=True)
    out.write_text(json.dumps({"updates": updates, "staleness": staleness}))


def _child(args: argparse.Namespace) -> None:
    if args.role == "robots":
        asyncio.run(_robots(args.port, args.first, args.count, args.rate, args.seconds))
    else:
        asyncio.run(_dashboards(args.port, args.count, args.seconds, Path(args.out)))


# -- the driver ----------------------------------------------------------------------------


def _case(
    ws_port: int, io: psutil.Process, clients: int, procs: int, seconds: float
) -> dict[str, Any]:
    def argv(count: int, out: Path) -> list[str]:
        options = ["--port", str(ws_port), "--count", str(count), "--seconds", str(seconds)]
        return [sys.executable, __file__, "--child", "dashboards", *options, "--out", str(out)]

    cpu_before = appliance.cpu_seconds([io])
    started = time.monotonic()
    with appliance.client_processes(argv, clients, procs=procs, wait_s=seconds + 60) as results:
        pass  # until they are done
    elapsed = time.monotonic() - started
    cpu = appliance.cpu_seconds([io]) - cpu_before
    updates = [u for r in results for u in r["updates"]]
    stale = sorted(s for r in results for s in r["staleness"])
    measured = seconds - 1.0  # the first second holds connecting and the snapshot
    return {
        "clients": clients,
        "clients_served": sum(1 for u in updates if u > 0),
        "updates_per_client_per_s": round(statistics.median(updates) / measured, 1)
        if updates
        else 0,
        "io_cpu_pct": round(100 * cpu / elapsed, 1),
        "staleness_p50_ms": round(1000 * stale[len(stale) // 2], 1) if stale else None,
        "staleness_p99_ms": round(1000 * stale[int(len(stale) * 0.99)], 1) if stale else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    tcp_port, ws_port = free_port(), free_port()
    cases = [int(c) for c in args.clients.split(",")]
    seconds = max(3.0, args.duration / len(cases))
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(
            f"""runtime: {{name: fanout-bench}}
network:
  tcp: {{host: 127.0.0.1, port: {tcp_port}}}
  websocket: {{host: 127.0.0.1, port: {ws_port}, max_lag_s: 10}}
  tokens:
    - {{token: {TOKEN_ROBOT}, role: device}}
    - {{token: {TOKEN_VIEWER}, role: viewer}}
robots: {{}}
"""
        )
        total = seconds * len(cases) + 30
        with appliance.running(config) as supervisor:
            appliance.wait_for_port(tcp_port)
            appliance.wait_for_port(ws_port)
            fleet = appliance.robots(
                tcp_port,
                args.robots,
                procs=args.client_procs,
                rate_hz=args.robot_rate,
                seconds=total,
            )
            with fleet:
                time.sleep(2.0)  # let the fleet connect and the world fill (a ramp, not sync)
                io = appliance.io_process(supervisor.pid)
                rows = [_case(ws_port, io, n, args.client_procs, seconds) for n in cases]
    return {
        "robots": args.robots,
        "robot_rate_hz": args.robot_rate,
        "subscribe_hz": SUBSCRIBE_HZ,
        "seconds_per_case": seconds,
        "rows": rows,
        "machine": f"{machine_description()}, python {platform.python_version()}",
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"edgeloop fan-out: {result['robots']} robots at {result['robot_rate_hz']} Hz, "
        f"dashboards subscribed at {result['subscribe_hz']:g} Hz ({result['machine']})",
        "",
        f"{'clients':>8} {'served':>7} {'upd/s/client':>13} {'io CPU %':>9} "
        f"{'stale p50 ms':>13} {'stale p99 ms':>13}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['clients']:>8} {row['clients_served']:>7} "
            f"{row['updates_per_client_per_s']:>13} {row['io_cpu_pct']:>9} "
            f"{row['staleness_p50_ms']!s:>13} {row['staleness_p99_ms']!s:>13}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("role", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--clients", default="100,500")
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--robot-rate", type=float, default=5.0)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    result = run(args)
    emit(table(result), result, args.json)


if __name__ == "__main__":
    main()
