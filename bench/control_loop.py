"""Control-loop latency benchmark: our loop's wake-up lateness next to cyclictest's.

How late does the control loop wake for its deadlines, and how does that compare with
what the kernel can do at best on this machine? Both are measured in one run, under the
same load, at the same period and SCHED_FIFO priority, on the same core:

- **cyclictest** (rt-tests): a C thread in ``clock_nanosleep(TIMER_ABSTIME)``, the
  reference for the scheduler's own wake-up latency.
- **edgeloop**: the runtime's control process itself: ``control_process.main``, run
  unchanged in a child of this script (``--child control``), with the real io process
  at the other end of its channel and the demo plant as its work: pinned, SCHED_FIFO,
  mlockall, gc frozen, ``spin_us``. The child keeps the ControlLoop main builds, stops
  it after as many ticks as cyclictest makes wake-ups and writes its
  ``LoopStats.summary()`` as JSON (the control process itself logs only p99 at exit).
  Its CPU % is the process's utime + stime from its first to its last tick.

The two run one after the other, cyclictest first, each for ``--duration`` seconds
(the same number of wake-ups; our loop's first tick, start-up, is reported apart),
under a load started before and stopped after both: on the same core at the same
priority, concurrently, each would measure the other. The whole run takes about
2 x duration + a few seconds of start-up.

Loads (``--load``):

- ``idle``: nothing but the io process (idle) on the other cores.
- ``cpu``: one busy-looping process at normal priority pinned to every core, the control
  core included: SCHED_FIFO must win over them.
- ``io``: the real io process sending synthetic records (IO_RECORDS_PER_S) over the real
  channel, which our loop reads while it waits, as in production; plus a 127.0.0.1 TCP
  flood (TCP_MSGS_PER_S msgpack frames over TCP_CONNECTIONS connections, client and
  server in one asyncio process) standing for robot/PLC traffic. Both on the non-control
  cores. While cyclictest runs, this script drains the channel (on the other cores).

Usage::

    python bench/control_loop.py --duration 20 --load cpu [--json OUT] [--spin-us 200]

A readable table goes to stdout, and the JSON to ``--json`` or, without it, after the
table. Needs ``cyclictest`` (``apt-get install rt-tests``) and root or CAP_SYS_NICE +
CAP_IPC_LOCK, like the appliance itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import IO, Any

import msgpack
import yaml
from report import emit, machine_description

from edgeloop.config import ConfigError, RuntimeConfig, load_config
from edgeloop.realtime import child_args, control_process
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.realtime.heartbeat import Heartbeats, IoSlot
from edgeloop.realtime.io_link import IoLink
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.realtime.loop_stats import Histogram, LoopStats
from edgeloop.realtime.rt_setup import (
    CpuPlan,
    RtReport,
    cpu_list,
    die_with_parent,
    pin_to,
    plan_cpus,
)

SCRIPT = Path(__file__).resolve()
LOADS = ("idle", "cpu", "io")
IO_RECORDS_PER_S = 50_000  # the io process's synthetic telemetry (`edgeloop run --synthetic-io`)
TCP_MSGS_PER_S = 20_000
TCP_CONNECTIONS = 8
TCP_BURST_S = 0.01  # the flood sends in bursts, as peers polled at 100 Hz do
SETTLE_S = 0.5  # after the load is up, before the first measurement
START_TIMEOUT_S = 10.0  # a child's imports, config and start-up
STOP_TIMEOUT_S = 2.0  # after SIGTERM, before SIGKILL
HISTOGRAM_PERIODS = 2  # cyclictest's histogram reaches 2 periods; beyond, only the max
RT_WATCH_PERIOD_S = 1.0  # how often /proc is scanned for other real-time processes
PF_KTHREAD = 0x00200000  # in the flags of /proc/PID/stat: a kernel thread
RT_POLICIES = (os.SCHED_FIFO, os.SCHED_RR)


# -- setup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    config_path: Path
    runtime: RuntimeConfig
    plan: CpuPlan
    ticks: int  # wake-ups measured per side
    workdir: Path
    cpus: frozenset[int]  # this process's CPUs before it keeps off the control core

    @property
    def period_us(self) -> int:
        return round(1e6 / self.runtime.rate_hz)


def write_config(workdir: Path, rate_hz: float, spin_us: int) -> Path:
    """The demo's runtime and plant with ``rate_hz`` and ``spin_us`` set.

    Only ``runtime`` and ``tank_plant`` are kept: the demo's other sections open fixed
    TCP ports (which a running demo or a test would hold) and the io load here brings
    its own traffic. The plant is the control work the demo does every tick.
    """
    demo = yaml.safe_load((files("edgeloop.examples") / "demo.yaml").read_text(encoding="utf-8"))
    runtime = dict(demo.get("runtime") or {})
    runtime.update(rate_hz=float(rate_hz), spin_us=spin_us)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump({"runtime": runtime, "tank_plant": demo["tank_plant"]}))
    return path


def make_setup(workdir: Path, rate_hz: float, spin_us: int, duration_s: float) -> Setup:
    path = write_config(workdir, rate_hz, spin_us)
    config = load_config(path)
    # As the supervisor does: decided once, from this process's affinity, then passed on.
    plan, notes = plan_cpus(config.runtime.cpu)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    ticks = max(2, round(duration_s * config.runtime.rate_hz))  # CPU % needs two ticks
    return Setup(path, config.runtime, plan, ticks, workdir, frozenset(os.sched_getaffinity(0)))


def find_cyclictest() -> str:
    exe = shutil.which("cyclictest")
    if exe is None:
        raise SystemExit(
            "cyclictest not found: install it with `apt-get install rt-tests` "
            "(.ci/run installs it), then run this benchmark again"
        )
    return exe


# -- child processes --------------------------------------------------------------------


class Children:
    """Every process the bench starts; ``close`` ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # Own session: a terminal's Ctrl-C reaches only the bench, whose finally stops them.
        proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def child_command(role: str, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--child", role, *args]


def log_file(setup: Setup, name: str) -> IO[bytes]:
    return (setup.workdir / f"{name}.log").open("ab")


def log_tail(setup: Setup, name: str, lines: int = 20) -> str:
    path = setup.workdir / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def start_io_process(
    children: Children, setup: Setup, heartbeats: Heartbeats, io_end: socket.socket, rate: float
) -> subprocess.Popen[bytes]:
    """The runtime's own io process, as the supervisor starts it (on the other cores)."""
    common = child_args.common_args(
        setup.config_path, heartbeats.fd, [io_end.fileno()], setup.plan, "INFO"
    )
    argv = [sys.executable, "-m", "edgeloop.realtime.io_process", *common]
    argv += ["--synthetic-records-per-s", str(rate)]
    with log_file(setup, "io") as log:
        return children.start(
            argv,
            pass_fds=(heartbeats.fd, io_end.fileno()),
            stderr=log,
        )


def wait_for_io_beat(setup: Setup, heartbeats: Heartbeats, proc: subprocess.Popen[bytes]) -> None:
    """Until the io process's event loop runs: its load must be on before measuring."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while heartbeats.io(0, IoSlot.BEATS) == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the io process did not start:\n{log_tail(setup, 'io')}")
        time.sleep(0.02)


def start_spinners(children: Children, cpus: Sequence[int]) -> None:
    for cpu in cpus:
        children.start(
            child_command("spin", "--cpu", str(cpu), "--parent", str(os.getpid())),
            stdin=subprocess.DEVNULL,
        )


def start_tcp_flood(children: Children, plan: CpuPlan) -> subprocess.Popen[bytes]:
    args = ["--rate", str(TCP_MSGS_PER_S), "--cpus", cpu_list(plan.others)]
    proc = children.start(
        child_command("flood", *args, "--parent", str(os.getpid())), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    if not ready or proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("the TCP flood did not start")
    return proc


def stop_tcp_flood(proc: subprocess.Popen[bytes]) -> float:
    """Messages per second the flood's server received."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 0.0
    with contextlib.suppress(ValueError, KeyError):
        figures = json.loads(out.decode().strip().splitlines()[-1])
        return float(figures["received"]) / max(float(figures["seconds"]), 1e-9)
    return 0.0


class ChannelDrain:
    """Reads the control end of the io channel while our loop is not running (during
    cyclictest), so the io process sends as fast as when the loop reads it."""

    def __init__(self, sock: socket.socket) -> None:
        self._channel = Channel(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="channel-drain", daemon=True)

    def __enter__(self) -> ChannelDrain:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        fd = self._channel.fileno()
        while not self._stop.is_set() and not self._channel.closed:
            readable, _, _ = select.select([fd], [], [], 0.05)
            if readable:
                self._channel.receive()  # decoded, as the control side does


@dataclass
class Load:
    name: str
    description: str
    tcp_flood: subprocess.Popen[bytes] | None = None
    tcp_msgs_per_s: float | None = None  # achieved, known once stopped


def describe_load(name: str, setup: Setup) -> str:
    others = cpu_list(setup.plan.others) or "all"
    if name == "cpu":
        return f"{len(setup.cpus)} busy-loop processes at normal priority, one per core"
    if name == "io":
        return (
            f"io process: {IO_RECORDS_PER_S} synthetic records/s over the channel; "
            f"TCP 127.0.0.1: {TCP_MSGS_PER_S} msgpack frames/s on {TCP_CONNECTIONS} "
            f"connections (cpus {others})"
        )
    return f"io process idle (cpus {others})"


@contextlib.contextmanager
def running_load(
    children: Children, setup: Setup, name: str, heartbeats: Heartbeats, io_end: socket.socket
) -> Iterator[Load]:
    """The io process (always, as on the appliance) plus the chosen load, settled."""
    load = Load(name, describe_load(name, setup))
    rate = IO_RECORDS_PER_S if name == "io" else 0
    io_proc = start_io_process(children, setup, heartbeats, io_end, rate)
    io_end.close()  # the io process has its copy; ours would keep the channel open
    if name == "cpu":
        start_spinners(children, sorted(setup.cpus))
    if name == "io":
        load.tcp_flood = start_tcp_flood(children, setup.plan)
    wait_for_io_beat(setup, heartbeats, io_proc)
    time.sleep(SETTLE_S)
    try:
        yield load
    finally:
        if load.tcp_flood is not None:
            load.tcp_msgs_per_s = stop_tcp_flood(load.tcp_flood)


# -- cyclictest -------------------------------------------------------------------------


@dataclass
class LatencyHistogram:
    counts: dict[int, int] = field(default_factory=dict)  # µs -> wake-ups
    overflows: int = 0  # wake-ups past the histogram's range
    max_us: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.overflows

    def percentile(self, fraction: float) -> int:
        """Same rule as ``edgeloop.realtime.loop_stats.Histogram.percentile``."""
        if self.total == 0:
            return 0
        target, seen = fraction * self.total, 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= target:
                return value
        return self.max_us  # the fraction falls among the overflows

    def at_least(self, us: int) -> int:
        return sum(n for value, n in self.counts.items() if value >= us) + self.overflows


def parse_cyclictest(text: str) -> LatencyHistogram:
    """``cyclictest -h`` output of one thread: ``value count`` rows, then ``# Key: n``."""
    hist = LatencyHistogram()
    found_max = False
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            numbers = value.split()
            if key.strip() == "Max Latencies" and numbers:
                hist.max_us, found_max = int(numbers[0]), True
            elif key.strip() == "Histogram Overflows" and numbers:
                hist.overflows = int(numbers[0])
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[1]):
            hist.counts[int(parts[0])] = int(parts[1])
    if not found_max:
        raise RuntimeError(f"unexpected cyclictest output:\n{text[-2000:]}")
    return hist


def cyclictest_command(exe: str, setup: Setup) -> list[str]:
    priority = setup.runtime.rt_priority
    command = [
        exe,
        "--mlockall",
        f"--priority={priority}",
        f"--interval={setup.period_us}",
        "--threads=1",
        # The same number of wake-ups as our loop, rather than --duration's whole seconds.
        f"--loops={setup.ticks}",
        f"--histogram={HISTOGRAM_PERIODS * setup.period_us}",
        "--quiet",
        # Leave /dev/cpu_dma_latency (C-states) alone: our loop does not set it either.
        "--default-system",
    ]
    if priority == 0:
        command.append("--policy=other")  # rt_priority 0: the loop stays SCHED_OTHER too
    if setup.plan.control is not None:
        command.append(f"--affinity={setup.plan.control}")
    return command


@dataclass
class CyclictestRun:
    hist: LatencyHistogram
    cpu_pct: float


def run_cyclictest(exe: str, setup: Setup) -> CyclictestRun:
    timeout = setup.ticks / setup.runtime.rate_hz + START_TIMEOUT_S
    # Only cyclictest is reaped in this window, so the children's rusage delta is its CPU.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        cyclictest_command(exe, setup), check=False, capture_output=True, text=True, timeout=timeout
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"cyclictest failed ({result.returncode}):\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return CyclictestRun(parse_cyclictest(result.stdout), 100 * cpu / wall)


# -- our control loop -------------------------------------------------------------------


def run_our_loop(
    setup: Setup, heartbeats: Heartbeats, control_end: socket.socket
) -> dict[str, Any]:
    """Start the control child on the io channel's control end; its summary when done."""
    out = setup.workdir / "control.json"
    # The supervisor's channel, as control_process.main takes one; nothing is sent on it.
    supervisor, control_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = (heartbeats.fd, control_end.fileno(), control_side.fileno())
    common = child_args.common_args(
        setup.config_path, heartbeats.fd, [control_end.fileno()], setup.plan, "INFO"
    )
    argv = child_command("control", "--ticks", str(setup.ticks), "--out", str(out), *common)
    argv += ["--supervisor-fd", str(control_side.fileno())]
    timeout = setup.ticks / setup.runtime.rate_hz + START_TIMEOUT_S
    try:
        with log_file(setup, "control") as log:
            proc = subprocess.Popen(argv, pass_fds=fds, stderr=log, start_new_session=True)
        control_side.close()
        try:
            status = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        control_side.close()
        supervisor.close()
    if status != 0 or not out.exists():
        raise RuntimeError(
            f"the control loop child failed ({status}):\n{log_tail(setup, 'control')}"
        )
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


class LoopProbe:
    """The seams through which the control child watches the real control process.

    ``control_process.main`` is run as it is; ``build_loop`` and
    ``apply_control_settings`` are wrapped to keep what they return (the ControlLoop,
    the RtReport). The loop gets one more ``after_tick`` hook, which counts ticks and
    asks the loop to stop after ``ticks`` + 1 (as SIGTERM would: Shutdown runs, main
    returns).

    The first tick is reported apart: its wake-up includes reading whatever the io
    process queued while the control process started (the loop always reads its fds
    before a tick, even a late one), which is start-up, not the steady state that
    cyclictest is compared with. So after it the lateness and work histograms start
    afresh, and the CPU time is taken from there to the last tick.
    """

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.loop: ControlLoop | None = None
        self.report: RtReport | None = None
        self.count = 0
        self.first_tick: dict[str, int] = {}
        self.first = (0.0, 0.0)  # (CPU s, wall s) after the first tick
        self.last = (0.0, 0.0)  # ... and after the last

    def wrap_build(self, build: Callable[..., Any]) -> Callable[..., Any]:
        def build_and_probe(*args: Any, **kwargs: Any) -> Any:
            built = build(*args, **kwargs)
            # The loop itself, or the first ControlLoop of a tuple (loop, helpers...).
            parts = built if isinstance(built, tuple) else (built,)
            self.loop = next(part for part in parts if isinstance(part, ControlLoop))
            self.loop.after_tick(self._after_tick)
            return built

        return build_and_probe

    def wrap_settings(self, apply: Callable[..., RtReport]) -> Callable[..., RtReport]:
        def apply_and_keep(*args: Any, **kwargs: Any) -> RtReport:
            self.report = apply(*args, **kwargs)
            return self.report

        return apply_and_keep

    def _after_tick(self) -> None:
        assert self.loop is not None
        self.count += 1
        if self.count == 1:
            self._restart_stats(self.loop.stats)
            self.first = (time.process_time(), time.monotonic())
        elif self.count == self.ticks + 1:
            # process_time: this process's utime + stime (as /proc/PID/stat), to the ns.
            self.last = (time.process_time(), time.monotonic())
            self.loop.request_stop()

    def _restart_stats(self, stats: LoopStats) -> None:
        # One sample each so far: its max is the first tick's figure.
        self.first_tick = {"late_us": stats.lateness.max_us, "work_us": stats.tick_work.max_us}
        stats.lateness = Histogram()
        stats.tick_work = Histogram()

    def summary(self) -> dict[str, Any]:
        loop, report = self.loop, self.report
        assert loop is not None and report is not None, "control_process.main changed its seams"
        channels = loop.app.world.resource(IoLink).channels
        summary = loop.stats.summary()
        summary.update(
            ticks=loop.app.time.tick,
            first_tick=self.first_tick,
            cpu_s=self.last[0] - self.first[0],
            wall_s=self.last[1] - self.first[1],
            records_received=sum(c.received for c in channels if c is not None),
            rt_applied=list(report.applied),
            rt_degraded=list(report.degraded),
        )
        return summary


def control_child(argv: Sequence[str]) -> int:
    """The runtime's control process (``control_process.main``, unchanged) for ``--ticks``
    ticks, then its LoopStats as JSON in ``--out``; every other argument goes to main."""
    parser = argparse.ArgumentParser(prog="control")
    parser.add_argument("--ticks", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args, rest = parser.parse_known_args(argv)
    probe = LoopProbe(args.ticks)
    # main looks both names up in its module's namespace when it runs, so what is put
    # there is what it calls (the functions themselves are left untouched).
    namespace = vars(control_process)
    namespace["build_loop"] = probe.wrap_build(namespace["build_loop"])
    namespace["apply_control_settings"] = probe.wrap_settings(namespace["apply_control_settings"])
    status = control_process.main(rest)
    if status == 0:
        args.out.write_text(json.dumps(probe.summary()))
    return status


# -- load children ----------------------------------------------------------------------


def spin_child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="spin")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(parent=args.parent)  # never outlive a killed bench
    note = pin_to([args.cpu])
    if note is not None:
        print(f"spinner: {note}", file=sys.stderr)
    while True:
        pass


def flood_child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="flood")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--cpus", default="")
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(parent=args.parent)
    cpus = [int(c) for part in args.cpus.split(",") if part for c in _cpu_range(part)]
    if cpus:
        pin_to(cpus)
    asyncio.run(_flood(args.rate))
    return 0


def _cpu_range(part: str) -> range:
    first, _, last = part.partition("-")
    return range(int(first), int(last or first) + 1)


async def _flood(rate: float) -> None:
    """Telemetry frames from TCP_CONNECTIONS clients to one server, on 127.0.0.1 only."""
    received = 0
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        current = asyncio.current_task()
        assert current is not None
        handlers.add(current)
        unpacker = msgpack.Unpacker()
        while data := await reader.read(65536):
            unpacker.feed(data)
            received += sum(1 for _ in unpacker)  # decoded, as a provider would
        writer.close()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    per_burst = max(1, round(rate * TCP_BURST_S / TCP_CONNECTIONS))
    clients = [
        asyncio.create_task(_flood_client(port, i, per_burst)) for i in range(TCP_CONNECTIONS)
    ]
    print("ready", flush=True)
    started = time.monotonic()
    await stop.wait()
    seconds = time.monotonic() - started
    for client in clients:
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    # The clients closed their connections: the handlers see EOF and end by themselves.
    if handlers:
        await asyncio.wait(handlers, timeout=STOP_TIMEOUT_S / 2)
    server.close()
    print(json.dumps({"received": received, "seconds": seconds}), flush=True)


async def _flood_client(port: int, robot: int, per_burst: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seq = 0
    next_burst = time.monotonic()
    try:
        while True:
            for _ in range(per_burst):
                # One write per frame: each is its own segment, as from a real peer.
                frame = ["robot.Telemetry", 0, {"robot": robot, "seq": seq, "joints": [0.1] * 6}]
                writer.write(msgpack.packb(frame))
                seq += 1
            await writer.drain()
            next_burst += TCP_BURST_S
            await asyncio.sleep(max(0.0, next_burst - time.monotonic()))
    finally:
        writer.close()


# -- other real-time processes ----------------------------------------------------------


def other_rt_processes(cpu: int | None) -> set[str]:
    """User processes under SCHED_FIFO/RR, not started by the bench, that may run on the
    control core.

    One (another edgeloop, a test suite's control process) preempts or round-robins with
    what is measured there, so the figures would not be this machine's: they say so.
    """
    found: set[str] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text()
            allowed = os.sched_getaffinity(int(entry.name))
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 of proc(5)
        ppid, flags = int(fields[1]), int(fields[6])
        rt_priority, policy = int(fields[37]), int(fields[38])
        if ppid == me or flags & PF_KTHREAD or policy not in RT_POLICIES:
            continue
        if cpu is None or cpu in allowed:
            found.add(f"{entry.name} {comm} (rt priority {rt_priority})")
    return found


class RtWatch:
    """Looks for other real-time processes on the control core all along the run (they
    come and go: a test suite starts one for a few seconds), from the other cores."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.found: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rt-watch", daemon=True)

    def __enter__(self) -> RtWatch:
        self.found |= other_rt_processes(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.found |= other_rt_processes(self.cpu)

    def _run(self) -> None:
        while not self._stop.wait(RT_WATCH_PERIOD_S):
            self.found |= other_rt_processes(self.cpu)


# -- running and reporting --------------------------------------------------------------


def measure(setup: Setup, load_name: str, cyclictest: str) -> dict[str, Any]:
    """Start the load, run cyclictest then our loop under it, stop everything."""
    children = Children()
    heartbeats = Heartbeats()
    control_end, io_end = socketpair()
    # The bench keeps off the control core, as the supervisor does: its drain thread and
    # waits must not disturb what is measured there.
    if setup.plan.others:
        pin_to(setup.plan.others)
    try:
        with (
            RtWatch(setup.plan.control) as watch,
            running_load(children, setup, load_name, heartbeats, io_end) as load,
        ):
            with ChannelDrain(control_end):
                reference = run_cyclictest(cyclictest, setup)
            ours = run_our_loop(setup, heartbeats, control_end)
    finally:
        children.close()
        control_end.close()
        heartbeats.close()
    return result_of(setup, load, ours, reference, sorted(watch.found))


def result_of(
    setup: Setup,
    load: Load,
    ours: dict[str, Any],
    reference: CyclictestRun,
    others_rt: list[str],
) -> dict[str, Any]:
    lateness, hist = ours["lateness"], reference.hist
    ct_p99 = hist.percentile(0.99)
    return {
        "load": load.name,
        "load_description": load.description,
        "rate_hz": setup.runtime.rate_hz,
        "period_us": setup.period_us,
        "spin_us": setup.runtime.spin_us,
        "rt_priority": setup.runtime.rt_priority,
        "control_cpu": setup.plan.control,
        "ticks": lateness["samples"],
        "p50_us": lateness["p50_us"],
        "p99_us": lateness["p99_us"],
        "p999_us": lateness["p999_us"],
        "max_us": lateness["max_us"],
        "overruns": ours["overruns"],
        "tick_work_p99_us": ours["tick_work"]["p99_us"],
        "first_tick_late_us": ours["first_tick"]["late_us"],
        "cpu_pct": round(100 * ours["cpu_s"] / ours["wall_s"], 2),
        "io_records_per_s": round(ours["records_received"] / ours["wall_s"]),
        "tcp_msgs_per_s": None if load.tcp_msgs_per_s is None else round(load.tcp_msgs_per_s),
        "cyclictest_ticks": hist.total,
        "cyclictest_p50_us": hist.percentile(0.50),
        "cyclictest_p99_us": ct_p99,
        "cyclictest_p999_us": hist.percentile(0.999),
        "cyclictest_max_us": hist.max_us,
        "cyclictest_over_period": hist.at_least(setup.period_us),
        "cyclictest_cpu_pct": round(reference.cpu_pct, 2),
        "ratio_p99": round(lateness["p99_us"] / ct_p99, 2) if ct_p99 > 0 else None,
        "rt_applied": ours["rt_applied"],
        "rt_degraded": ours["rt_degraded"],
        "other_rt_processes": others_rt,
        "duration_s": round(setup.ticks / setup.runtime.rate_hz, 3),
        "order": "cyclictest, then edgeloop; same load, same number of wake-ups",
        "python": platform.python_version(),
        "machine": machine_description(),
    }


def format_table(r: dict[str, Any]) -> str:
    cpu = "unpinned" if r["control_cpu"] is None else f"cpu {r['control_cpu']}"
    lines = [
        f"control loop wake-up lateness: python {r['python']}, {r['machine']}",
        f"{r['rate_hz']:g} Hz, SCHED_FIFO {r['rt_priority']}, {cpu}, spin {r['spin_us']} µs, "
        f"{r['ticks']} wake-ups each (cyclictest first, then ours)",
        f"load {r['load']}: {r['load_description']}",
        "",
        f"{'':<11} {'p50 µs':>7} {'p99 µs':>7} {'p99.9 µs':>9} {'max µs':>7} "
        f"{'>period':>8} {'overruns':>8} {'cpu %':>6}",
        f"{'edgeloop':<11} {r['p50_us']:>7} {r['p99_us']:>7} {r['p999_us']:>9} "
        f"{r['max_us']:>7} {'':>8} {r['overruns']:>8} {r['cpu_pct']:>6.1f}",
        f"{'cyclictest':<11} {r['cyclictest_p50_us']:>7} {r['cyclictest_p99_us']:>7} "
        f"{r['cyclictest_p999_us']:>9} {r['cyclictest_max_us']:>7} "
        f"{r['cyclictest_over_period']:>8} {'':>8} {r['cyclictest_cpu_pct']:>6.1f}",
        "",
        f"p99 ratio (edgeloop / cyclictest): {_ratio(r['ratio_p99'])}; "
        f"tick work p99 {r['tick_work_p99_us']} µs; "
        f"first tick (start-up, not in the figures) {r['first_tick_late_us']} µs late",
    ]
    if r["load"] == "io":
        lines.append(
            f"io achieved: {r['io_records_per_s']} records/s reached the loop (NORMAL "
            f"records conflate per key), {r['tcp_msgs_per_s']} TCP frames/s"
        )
    lines += [f"DEGRADED: {note}" for note in r["rt_degraded"]]
    if r["other_rt_processes"]:
        lines.append(
            "WARNING: other real-time processes could run on the control core during the "
            f"run, the figures are not this machine's alone: {', '.join(r['other_rt_processes'])}"
        )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "n/a (cyclictest p99 is 0)" if value is None else f"{value:.2f}x"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per side (default 10)"
    )
    parser.add_argument("--load", choices=LOADS, default="idle", help="default idle")
    parser.add_argument("--rate-hz", type=float, default=100.0, help="default 100")
    parser.add_argument(
        "--spin-us",
        type=int,
        default=RuntimeConfig().spin_us,
        help="runtime.spin_us (default: the config default, %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if not args.duration > 0 or not math.isfinite(args.duration):
        parser.error("--duration must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return run_child(argv[1:])
    args = parse_args(argv)
    cyclictest = find_cyclictest()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        try:
            setup = make_setup(Path(tmp), args.rate_hz, args.spin_us, args.duration)
        except ConfigError as error:
            raise SystemExit("\n".join(map(str, error.problems))) from None
        result = measure(setup, args.load, cyclictest)
    emit(format_table(result), result, args.json)
    return 0


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # As an exception, so the finally blocks stop every process the bench started.
    raise SystemExit(128 + signum)


def run_child(argv: Sequence[str]) -> int:
    roles = {"control": control_child, "spin": spin_child, "flood": flood_child}
    if not argv or argv[0] not in roles:
        raise SystemExit(f"--child needs one of: {', '.join(roles)}")
    return roles[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
