"""The control process: owns the World and runs the App's ticks on its own core.

Started by the supervisor with inherited file descriptors: a channel per io worker, the
supervisor channel (over which a restarted io worker's channel arrives), and the
shared heartbeat block. Exit status: 0 after a clean stop, 1 after a failure (a system
under the ``stop`` policy, an overrun under ``safe_stop``).
"""

from __future__ import annotations

import argparse
import logging
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from edgeloop.app import App, SystemFailure
from edgeloop.config import Config, load_config
from edgeloop.data.recorder import add_recorder
from edgeloop.data.recording import RecordingWriter
from edgeloop.logs import setup_logging
from edgeloop.realtime import child_args
from edgeloop.realtime.control_loop import ControlLoop, OverrunStop
from edgeloop.realtime.figure_writer import FIGURES_AT_TICK, FIGURES_EVERY_TICKS, FigureWriter
from edgeloop.realtime.heartbeat import Heartbeats, Slot
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel
from edgeloop.realtime.loop_stats import OverrunPolicy
from edgeloop.realtime.rt_setup import apply_control_settings, die_with_parent, set_process_name
from edgeloop.safety.audit import AuditLog
from edgeloop.safety.audit_chain import AuditError
from edgeloop.safety.safe_state import SafeState

log = logging.getLogger("edgeloop.control")

PROCESS_NAME = "edgeloop-ctl"
AUDIT_CLOSE_S = 2.0  # what was audited up to the stop reaches the disk, or is reported
FINAL_FLUSH_S = 0.2  # how long Shutdown's last records may wait for a busy io process
P99_EVERY_TICKS = 100  # the percentile scan costs ~50 µs: once a second at 100 Hz


def build_loop(
    config: Config, link: IoLink, heartbeats: Heartbeats | None
) -> tuple[ControlLoop, IoChannelWatch]:
    """The App from ``config`` with the io link, driven by a ControlLoop per its settings."""
    runtime = config.runtime
    app = App.from_config(config)
    app.add_plugin(IoLinkPlugin(link))
    loop = ControlLoop(
        app,
        policy=OverrunPolicy(runtime.overrun_policy),
        spin_s=runtime.spin_us / 1e6,
        update_budget_s=runtime.update_budget_ms / 1e3,
        gc_frozen=runtime.gc == "freeze",
    )
    watch = IoChannelWatch(loop, link)
    if heartbeats is not None:
        loop.after_tick(_heartbeat_writer(loop, link, heartbeats))
    return loop, watch


class IoChannelWatch:
    """Reads each io worker's channel as soon as it is readable.

    A readable socket that is not read would turn the loop's wait into a spin, so a
    channel is not watched while closed (its io worker is gone), and none is while the
    link's inbox is full (watched again once a tick has made room).
    """

    def __init__(self, loop: ControlLoop, link: IoLink) -> None:
        self.loop = loop
        self.link = link
        self.fds: list[int | None] = [None] * link.workers
        self._first = 0  # who reads first when room is made: turns, so no worker starves
        loop.after_tick(self._make_room)
        for worker in range(link.workers):
            self.watch(worker)

    def watch(self, worker: int) -> None:
        """Watch a worker's current channel (after start, or after it was replaced)."""
        self.unwatch(worker)
        channel = self.link.channels[worker]
        if channel is not None and not channel.closed:
            fd = self.fds[worker] = channel.fileno()
            self.loop.add_wake_source(fd, lambda: self._on_readable(worker))

    def unwatch(self, worker: int) -> None:
        fd = self.fds[worker]
        if fd is not None:
            self.loop.remove_wake_source(fd)
            self.fds[worker] = None

    def _on_readable(self, worker: int) -> None:
        self.link.read_available(worker)
        if self.link.full:
            for each in range(self.link.workers):
                self.unwatch(each)
        elif not self.link.worker_up(worker):
            self.unwatch(worker)

    def _make_room(self) -> None:
        link = self.link
        workers = link.workers
        self._first = (self._first + 1) % workers
        for offset in range(workers):
            worker = (self._first + offset) % workers
            if self.fds[worker] is None and link.worker_up(worker) and not link.full:
                link.read_available(worker)
                self.watch(worker)


def _heartbeat_writer(
    loop: ControlLoop, link: IoLink, heartbeats: Heartbeats
) -> Callable[[], None]:
    slots = heartbeats.slots
    stats = loop.stats
    time_ = loop.app.time
    clock_ns = time.monotonic_ns
    safe = loop.app.world.get_resource(SafeState) or SafeState()
    shown = -1  # the safe-state generation in the slot
    figures = FigureWriter(heartbeats, loop.app, stats, link)

    def beat() -> None:
        nonlocal shown
        if safe.generation != shown:
            shown = safe.generation
            slots[Slot.SAFE_STATE] = safe.kinds_mask()
        slots[Slot.CONTROL_TICKS] = time_.tick
        slots[Slot.CONTROL_TICK_NS] = clock_ns()
        slots[Slot.CONTROL_OVERRUNS] = stats.overruns
        slots[Slot.IO_LINKS_UP] = link.links_up
        if time_.tick % P99_EVERY_TICKS == 0:
            slots[Slot.CONTROL_P99_LATENESS_NS] = stats.lateness.percentile(0.99) * 1000
        elif time_.tick % FIGURES_EVERY_TICKS == FIGURES_AT_TICK:
            figures.write()

    return beat


def _receive_io_channel(supervisor: socket.socket, watch: IoChannelWatch) -> None:
    """A restarted io worker's channel, passed by the supervisor with SCM_RIGHTS after
    ``b"io <worker>"``."""
    try:
        message, fds, _, _ = socket.recv_fds(supervisor, 16, 1)
    except BlockingIOError:
        return
    if not fds:  # the supervisor is gone: nothing will restart io any more
        watch.loop.remove_wake_source(supervisor.fileno())
        return
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(False)
    worker = _worker_of(message, watch.link.workers)
    if worker is None:  # the supervisor and we disagree: a bug, not a reason to stop
        log.error(
            "io channel for %r ignored: not one of %d io workers", message, watch.link.workers
        )
        sock.close()
        return
    watch.unwatch(worker)  # before the old socket is closed
    watch.link.replace(sock, worker)
    watch.watch(worker)
    log.info("io channel %d replaced: the io worker was restarted", worker)


def _worker_of(message: bytes, workers: int) -> int | None:
    name, _, number = message.partition(b" ")
    if name != b"io" or not number.isdigit() or int(number) >= workers:
        return None
    return int(number)


def _final_flush(link: IoLink, tick: int) -> None:
    """Send what Shutdown set (the safe values), waiting a little if io is behind."""
    deadline = time.monotonic() + FINAL_FLUSH_S
    while not link.flush(tick) and (left := deadline - time.monotonic()) > 0:
        busy = [
            channel.fileno()
            for channel, outbox in zip(link.channels, link.outboxes, strict=True)
            if channel is not None and not channel.closed and len(outbox)
        ]
        if not busy:
            break
        select.select([], busy, [], left)
    unsent = sum(len(outbox) for outbox in link.outboxes)
    if unsent:
        log.error("%d records for the io process not sent at shutdown", unsent)


def _open_audit(state_dir: Path) -> AuditLog | None:
    """The audit log, or None (logged) when the state directory cannot hold it: the
    appliance runs, and says so, rather than refusing to keep its outputs safe."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        return AuditLog.open(state_dir)
    except (OSError, AuditError) as error:
        log.critical("audit log in %s cannot be opened: %s; running without it", state_dir, error)
        return None


def main(argv: list[str] | None = None) -> int:
    # A stop asked for during start-up is kept and honoured once the loop exists, so
    # Shutdown still runs (the default action would just kill the process).
    early_stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: early_stop.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: early_stop.append(signum))
    args = _parser().parse_args(argv)
    set_process_name(PROCESS_NAME)
    die_with_parent(parent=args.supervisor_pid)
    # A slow journal must not stall the tick: lines are written from a thread.
    setup_logging(args.log_level, background=True)
    config = load_config(args.config)
    heartbeats = Heartbeats(args.heartbeat_fd)
    plan = child_args.cpu_plan(args)
    runtime = config.runtime
    # Before the real-time settings: its writer thread keeps the process's CPUs and
    # normal scheduling, off the control core.
    audit = _open_audit(runtime.state_dir)
    report = apply_control_settings(plan, runtime.rt_priority, runtime.lock_memory)
    heartbeats[Slot.CONTROL_DEGRADED] = len(report.degraded)
    channels = []
    for fd in args.io_fd:
        io_sock = socket.socket(fileno=fd)
        io_sock.setblocking(False)
        channels.append(Channel(io_sock))
    link = IoLink(
        *channels,
        records_per_tick=runtime.io_records_per_tick,
        broadcast_from=runtime.network_workers.start,
    )
    loop, watch = build_loop(config, link, heartbeats)
    if audit is not None:
        loop.app.insert_resource(audit)
    record = args.record or runtime.record
    if record is not None:
        try:
            add_recorder(loop.app, RecordingWriter(record, config))
            log.info("recording the control process's inputs to %s", record)
        except OSError as error:  # run the machine; say the recording is missing
            log.critical("cannot record to %s: %s; running without a recording", record, error)
    supervisor = socket.socket(fileno=args.supervisor_fd)
    supervisor.setblocking(False)
    loop.add_wake_source(supervisor.fileno(), lambda: _receive_io_channel(supervisor, watch))

    def stop(signum: int, _frame: FrameType | None) -> None:
        loop.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if early_stop:
        loop.request_stop()
    try:
        loop.run()
    except (SystemFailure, OverrunStop) as failure:
        log.critical("control loop stopped: %s", failure)
        return 1
    finally:
        _final_flush(link, loop.app.time.tick)
        loop.close()
        if audit is not None and not audit.close(AUDIT_CLOSE_S):
            log.error("audit log: entries not on disk at shutdown (%s)", audit.last_error)
    stats = loop.stats
    log.info(
        "control loop stopped after %d ticks: lateness p99 %d µs, %d overruns",
        loop.app.time.tick,
        stats.lateness.percentile(0.99),
        stats.overruns,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = child_args.parser(PROCESS_NAME)
    parser.add_argument("--supervisor-fd", type=int, required=True)
    parser.add_argument("--record", type=Path, default=None, help="runtime.record's path")
    return parser


if __name__ == "__main__":
    sys.exit(main())
