"""CAN receive benchmark: frames decoded into the World, next to bare python-can + cantools.

How many CAN frames a second does the driver take from a bus into the World, at what
CPU cost, and what does that cost next to the least python-can and cantools can do?
Two phases of ``--duration`` seconds each, on python-can's virtual bus (this machine
has no SocketCAN):

1. **Ours**: the ``can`` io part (``edgeloop.drivers.can.io.CanIo``) on a real
   ``IoService``, sending its values over the real io channel to a control process (a
   child of this script: an App with the ``can`` plugin, ticking at 100 Hz). One device
   with MESSAGES inline messages of SIGNALS signals each, every signal a point.
2. **Baseline**: a bare thread in ``bus.recv()`` and ``Database.decode_message()`` per
   frame, counting.

In both, a sender thread in this process keeps up to WINDOW frames in flight (sent, not
yet decoded): the receiver never waits for frames, and the queue never grows without
bound. Frames cycle through the messages; each message's ``Seq`` signal counts its own
frames, so at the end the World must hold the last ``Seq`` sent of every message.

``io_cpu_pct`` is the CPU time of the io part's threads (the event loop and its
receive thread; not the sender) over the phase, in % of one core; the baseline's is its
receive thread's. ``ratio_to_baseline`` = ours / baseline in frames per second. The
sender shares the GIL with the receivers and often sets the pace of both:
``frames_per_cpu_s`` next to ``baseline_frames_per_cpu_s`` compares the cost per frame.

Usage::

    python bench/can_rx.py --duration 10 [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
from report import emit, machine_description

from edgeloop.app import App
from edgeloop.drivers.can.config import CanConfig
from edgeloop.drivers.can.io import CanIo
from edgeloop.drivers.can.plugin import CanPlugin
from edgeloop.drivers.field_bridge import FieldModel
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Channel, socketpair

SCRIPT = Path(__file__).resolve()
MESSAGES = 8
SIGNALS = 4  # per message: Seq, and three of other layouts
FIRST_ID = 0x100
WINDOW = 2000  # frames sent but not yet decoded, at most
TICK_S = 0.01
DRAIN_TIMEOUT_S = 10.0
CHILD_TIMEOUT_S = 30.0


def bench_config(channel: str) -> CanConfig:
    signals = [
        {"name": "Seq", "start": 0, "length": 32},
        {"name": "Temp", "start": 39, "length": 16, "byte_order": "big_endian",
         "signed": True, "scale": 0.1},
        {"name": "Level", "start": 48, "length": 8, "scale": 0.5},
        {"name": "Delta", "start": 56, "length": 8, "signed": True},
    ]  # fmt: skip
    messages = [
        {"name": f"Bench{i}", "id": FIRST_ID + i, "period_ms": 100, "signals": signals}
        for i in range(MESSAGES)
    ]
    points = [
        {"message": f"Bench{i}", "signal": s["name"], "entity": "bench", "component": "Bench",
         "field": f"{str(s['name']).lower()}{i}"}
        for i in range(MESSAGES)
        for s in signals
    ]  # fmt: skip
    return CanConfig.model_validate(
        {
            "bus": {"interface": "virtual", "channel": channel},
            "devices": [{"name": "bench", "messages": messages, "points": points}],
        }
    )


def frame_data(seq: int) -> bytes:
    return seq.to_bytes(4, "little") + bytes([0x01, 0x2C, seq & 0xFF, 0xFD])


def thread_cpu(thread: threading.Thread) -> Callable[[], float]:
    assert thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


class Sender:
    """A thread that keeps up to WINDOW frames in flight on ``channel``."""

    def __init__(self, channel: str, decoded: Callable[[], int]) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.decoded = decoded
        self.sent = 0
        self.last_seq = [0] * MESSAGES
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-sender", daemon=True)

    def _run(self) -> None:
        frames = [
            can.Message(arbitration_id=FIRST_ID + i, is_extended_id=False, data=bytes(8))
            for i in range(MESSAGES)
        ]
        while not self.stop.is_set():
            if self.sent - self.decoded() >= WINDOW:
                time.sleep(0.0002)
                continue
            for _ in range(WINDOW // 4):
                index = self.sent % MESSAGES
                seq = self.last_seq[index] + 1
                frame = frames[index]
                frame.data = bytearray(frame_data(seq))
                self.bus.send(frame)
                self.last_seq[index] = seq
                self.sent += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.shutdown()


# -- ours -------------------------------------------------------------------------------------


async def run_ours(duration: float) -> dict[str, Any]:
    channel = f"bench-can-{os.getpid()}"
    config = bench_config(channel)
    control_end, io_end = socketpair()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(config.model_dump(), file)
    child = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--child-control",
            file.name,
            "--fd",
            str(control_end.fileno()),
        ],
        pass_fds=[control_end.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # its log line about the channel closing at the end
    )
    control_end.close()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats)
    part = CanIo(config, service)
    runner = asyncio.create_task(service.run([part]))
    try:
        sender = Sender(channel, lambda: part.frames)
        rx_thread = await wait_for_thread(f"can-rx {config.buses[0].name}")
        clocks = [thread_cpu(threading.main_thread()), thread_cpu(rx_thread)]
        sender.thread.start()
        await asyncio.sleep(min(1.0, duration / 5))  # warm-up
        frames0, cpu0, t0 = part.frames, sum(c() for c in clocks), time.perf_counter()
        await asyncio.sleep(duration)
        frames1, cpu1, t1 = part.frames, sum(c() for c in clocks), time.perf_counter()
        sender.finish()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while part.frames < sender.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the last values through the channel
    finally:
        service.stopped.set()
        await runner
        io_end.close()
        heartbeats.close()
    out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    if child.returncode != 0:
        raise SystemExit(f"control child failed:\n{err.decode(errors='replace')}")
    world = json.loads(out)
    os.unlink(file.name)
    wall = t1 - t0
    frames = frames1 - frames0
    delivered = all(world[f"seq{i}"] == sender.last_seq[i] for i in range(MESSAGES))
    return {
        "frames_per_s": frames / wall,
        "signals_per_s": frames * SIGNALS / wall,
        "io_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "frames_per_cpu_s": frames / max(cpu1 - cpu0, 1e-9),
        "frames_sent": sender.sent,
        "frames_decoded": part.frames,
        "world_has_last_values": delivered,
        "garbage": part.garbage,
    }


async def wait_for_thread(name: str) -> threading.Thread:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for thread in threading.enumerate():
            if thread.name == name:
                return thread
        await asyncio.sleep(0.01)
    raise SystemExit(f"the io part's receive thread {name!r} did not start")


def child_control(config_path: str, fd: int) -> int:
    """The control process of phase 1: the World, ticking until the io side closes."""
    config = CanConfig.model_validate(json.loads(Path(config_path).read_text()))
    link = IoLink(Channel(socket.socket(fileno=fd)))
    app = App()
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(CanPlugin(config))
    app.startup()
    while link.up:
        time.sleep(TICK_S)
        link.read_available()
        app.tick()
    app.tick()
    model = app.world.resource(FieldModel)
    component = app.world.get(model.entities["bench"], model.component("Bench"))
    print(json.dumps({f"seq{i}": getattr(component, f"seq{i}") for i in range(MESSAGES)}))
    return 0


# -- baseline ---------------------------------------------------------------------------------


def run_baseline(duration: float) -> dict[str, Any]:
    channel = f"bench-can-bare-{os.getpid()}"
    database = bench_config(channel).devices[0].database
    bus = can.Bus(interface="virtual", channel=channel)
    decoded = 0
    stop = threading.Event()

    def receive() -> None:
        nonlocal decoded
        while not stop.is_set():
            frame = bus.recv(0.1)
            if frame is not None:
                database.decode_message(frame.arbitration_id, frame.data, decode_choices=False)
                decoded += 1

    receiver = threading.Thread(target=receive, name="bench-bare-rx", daemon=True)
    receiver.start()
    sender = Sender(channel, lambda: decoded)
    clock = thread_cpu(receiver)
    sender.thread.start()
    time.sleep(min(1.0, duration / 5))
    frames0, cpu0, t0 = decoded, clock(), time.perf_counter()
    time.sleep(duration)
    frames1, cpu1, t1 = decoded, clock(), time.perf_counter()
    sender.finish()
    stop.set()
    receiver.join()
    bus.shutdown()
    wall = t1 - t0
    return {
        "frames_per_s": (frames1 - frames0) / wall,
        "cpu_pct": (cpu1 - cpu0) / wall * 100,
        "frames_per_cpu_s": (frames1 - frames0) / max(cpu1 - cpu0, 1e-9),
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("", "frames/s", "signals/s", "CPU %", "frames/CPU-s"),
        (
            "ours (into the World)",
            f"{result['frames_per_s']:,.0f}",
            f"{result['signals_per_s']:,.0f}",
            f"{result['io_cpu_pct']:.0f}",
            f"{result['frames_per_cpu_s']:,.0f}",
        ),
        (
            "bare python-can + cantools",
            f"{result['baseline_frames_per_s']:,.0f}",
            f"{result['baseline_frames_per_s'] * SIGNALS:,.0f}",
            f"{result['baseline_cpu_pct']:.0f}",
            f"{result['baseline_frames_per_cpu_s']:,.0f}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"CAN receive, virtual bus, {MESSAGES} messages x {SIGNALS} signals, "
        f"{result['duration_s']:g} s each ({result['machine']})",
        *(
            "  ".join(
                cell.rjust(width) if column else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ),
        f"ratio to baseline: {result['ratio_to_baseline']:.2f}; "
        f"World holds the last values: {result['world_has_last_values']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--child-control", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_control:
        return child_control(args.child_control, args.fd)
    ours = asyncio.run(run_ours(args.duration))
    bare = run_baseline(args.duration)
    result = {
        **ours,
        "baseline_frames_per_s": bare["frames_per_s"],
        "baseline_cpu_pct": bare["cpu_pct"],
        "baseline_frames_per_cpu_s": bare["frames_per_cpu_s"],
        "ratio_to_baseline": ours["frames_per_s"] / max(bare["frames_per_s"], 1e-9),
        "messages": MESSAGES,
        "signals_per_frame": SIGNALS,
        "duration_s": args.duration,
        "machine": machine_description(),
    }
    emit(table(result), result, args.json)
    return 0 if ours["world_has_last_values"] else 1


if __name__ == "__main__":
    sys.exit(main())
