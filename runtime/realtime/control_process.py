"""The control process: owns the World and runs the App's ticks on its own core.

Started by the supervisor with inherited file descriptors: the io channel, the
supervisor channel (over which a restarted io process's channel arrives), and the
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
from types import FrameType

from edgeloop.app import App, SystemFailure
from edgeloop.config import Config, load_config
from edgeloop.logs import setup_logging
from edgeloop.realtime import child_args
from edgeloop.realtime.control_loop import ControlLoop, OverrunStop
from edgeloop.realtime.heartbeat import Heartbeats, Slot
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel
from edgeloop.realtime.loop_stats import OverrunPolicy
from edgeloop.realtime.rt_setup import apply_control_settings, die_with_parent, set_process_name

log = logging.getLogger("edgeloop.control")

PROCESS_NAME = "edgeloop-ctl"
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
    """Reads the io channel as soon as it is readable.

    A readable socket that is not read would turn the loop's wait into a spin, so the
    channel is not watched while closed (the io process is gone) or while the link's
    inbox is full (watched again once a tick has made room).
    """

    def __init__(self, loop: ControlLoop, link: IoLink) -> None:
        self.loop = loop
        self.link = link
        self.fd: int | None = None
        loop.after_tick(self._make_room)
        self.watch()

    def watch(self) -> None:
        """Watch the link's current channel (after start, or after it was replaced)."""
        self.unwatch()
        channel = self.link.channel
        if channel is not None and not channel.closed:
            self.fd = channel.fileno()
            self.loop.add_wake_source(self.fd, self._on_readable)

    def unwatch(self) -> None:
        if self.fd is not None:
            self.loop.remove_wake_source(self.fd)
            self.fd = None

    def _on_readable(self) -> None:
        self.link.read_available()
        if not self.link.up or self.link.full:
            self.unwatch()

    def _make_room(self) -> None:
        if self.fd is None and self.link.up and not self.link.full:
            self.link.read_available()
            self.watch()


def _heartbeat_writer(
    loop: ControlLoop, link: IoLink, heartbeats: Heartbeats
) -> Callable[[], None]:
    slots = heartbeats.slots
    stats = loop.stats
    time_ = loop.app.time
    clock_ns = time.monotonic_ns

    def beat() -> None:
        slots[Slot.CONTROL_TICKS] = time_.tick
        slots[Slot.CONTROL_TICK_NS] = clock_ns()
        slots[Slot.CONTROL_OVERRUNS] = stats.overruns
        slots[Slot.IO_LINK_UP] = link.up
        if time_.tick % P99_EVERY_TICKS == 0:
            slots[Slot.CONTROL_P99_LATENESS_NS] = stats.lateness.percentile(0.99) * 1000

    return beat


def _receive_io_channel(supervisor: socket.socket, watch: IoChannelWatch) -> None:
    """A restarted io process's channel, passed by the supervisor with SCM_RIGHTS."""
    try:
        _, fds, _, _ = socket.recv_fds(supervisor, 16, 1)
    except BlockingIOError:
        return
    if not fds:  # the supervisor is gone: nothing will restart io any more
        watch.loop.remove_wake_source(supervisor.fileno())
        return
    watch.unwatch()  # before the old socket is closed
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(False)
    watch.link.replace(sock)
    watch.watch()
    log.info("io channel replaced: the io process was restarted")


def _final_flush(link: IoLink, tick: int) -> None:
    """Send what Shutdown set (the safe values), waiting a little if io is behind."""
    deadline = time.monotonic() + FINAL_FLUSH_S
    while not link.flush(tick) and link.up and (left := deadline - time.monotonic()) > 0:
        assert link.channel is not None
        select.select([], [link.channel.fileno()], [], left)
    if len(link.outbox):
        log.error("%d records for the io process not sent at shutdown", len(link.outbox))


def main(argv: list[str] | None = None) -> int:
    # A stop asked for during start-up is kept and honoured once the loop exists, so
    # Shutdown still runs (the default action would just kill the process).
    early_stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: early_stop.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: early_stop.append(signum))
    args = _parser().parse_args(argv)
    set_process_name(PROCESS_NAME)
    die_with_parent(parent=args.supervisor_pid)
    setup_logging(args.log_level)
    config = load_config(args.config)
    heartbeats = Heartbeats(args.heartbeat_fd)
    plan = child_args.cpu_plan(args)
    runtime = config.runtime
    report = apply_control_settings(plan, runtime.rt_priority, runtime.lock_memory)
    heartbeats[Slot.CONTROL_DEGRADED] = len(report.degraded)
    io_sock = socket.socket(fileno=args.io_fd)
    io_sock.setblocking(False)
    link = IoLink(Channel(io_sock), records_per_tick=runtime.io_records_per_tick)
    loop, watch = build_loop(config, link, heartbeats)
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
    return parser


if __name__ == "__main__":
    sys.exit(main())
