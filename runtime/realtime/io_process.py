"""The io process: an asyncio loop (uvloop when installed) for everything that waits on I/O.

Drivers and providers plug in here; it never holds World state, only turns wire bytes
into records for the control process and back. Its heartbeat is advanced by a task of
the event loop itself, so a blocked loop stops the heartbeat and the supervisor restarts
the process.

There may be several (``runtime.io_workers``), each with its own channel and heartbeat
slots: worker 0 runs every io part, the others only the parts that share their work out
(``ConfigSection.io_in_every_worker``: the network listeners, with ``SO_REUSEPORT``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgeloop.config import (
    DEFAULT_STATE_DIR,
    Config,
    ConfigError,
    ConfigSection,
    RuntimeConfig,
    config_digest,
    installed_sections,
    load_config,
)
from edgeloop.data.config import data_log_of
from edgeloop.logs import every_power_of_ten, setup_logging
from edgeloop.net.connection_ids import ConnectionIds
from edgeloop.net.registry import Registry, registry_of
from edgeloop.priority import Priority
from edgeloop.realtime import child_args
from edgeloop.realtime.heartbeat import Heartbeats, IoSlot
from edgeloop.realtime.io_part import IoContext, IoPart
from edgeloop.realtime.ipc import Batch, Channel, Record
from edgeloop.realtime.rt_setup import (
    apply_io_priority,
    apply_io_settings,
    die_with_parent,
    set_process_name,
)

log = logging.getLogger("edgeloop.io")

PROCESS_NAME = "edgeloop-io"
BEAT_PERIOD_S = 0.05
SYNTHETIC_TOPIC = "io.synthetic"
SYNTHETIC_KEYS = 64  # distinct keys, so NORMAL conflation has something to do
# CRITICAL/HIGH records waiting for the control process: past the high water mark
# providers stop reading from their peers, below the low one they read again.
COALESCE_S = 0.002  # how long non-CRITICAL records gather before going to control
URGENT_HIGH_WATER = 1000
URGENT_LOW_WATER = 100


class IoService:
    """The io side of the channel plus the event-loop heartbeat; the ``IoContext`` of
    the parts plugins run here (see ``edgeloop.realtime.io_part``)."""

    def __init__(
        self,
        channel: Channel,
        heartbeats: Heartbeats,
        registry: Registry | None = None,
        *,
        server_name: str = "edgeloop",
        budget_bytes: int = 64 << 20,
        worker: int = 0,
        workers: int = 1,
        network_workers: int | None = None,
        state_dir: Path = DEFAULT_STATE_DIR,
        control_timeout_s: float = RuntimeConfig().control_timeout_s,
        data_log: Path | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.data_log = data_log
        self.state_dir = state_dir
        self.control_timeout_s = control_timeout_s
        self.worker = worker
        self.workers = workers
        self.network_workers = workers if network_workers is None else network_workers
        self.connection_ids: Iterator[int] = ConnectionIds(worker, heartbeats)
        self.channel = channel
        self.heartbeats = heartbeats
        self.registry = Registry() if registry is None else registry
        self.server_name = server_name
        self.connections: dict[str, int] = {}
        self.stopped = asyncio.Event()
        self.batches_from_control = 0
        self.handler_errors = 0
        self._handlers: dict[str, list[Callable[[Record], None]]] = {}
        self._room_callbacks: list[Callable[[], None]] = []
        self._flush_callbacks: list[Callable[[], None]] = []
        self._flush_scheduled = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._writer_armed = False
        self._refused = False  # a sender was told to pause: tell it when there is room
        self._degraded: dict[str, str] = {}  # source -> why, for the supervisor's status

    # -- IoContext ------------------------------------------------------------------------

    def send(self, record: Record) -> bool:
        outbox = self.channel.outbox
        outbox.put(record)
        if record.priority == Priority.CRITICAL:
            # At once: the control loop wakes for it (e-stop, safety).
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        elif not self._flush_scheduled and self._flush_timer is None:
            # Everything else is consumed at the next tick anyway: gathering it for a
            # couple of ms sends one batch instead of a message (and a control-process
            # wake-up) per record.
            self._flush_timer = asyncio.get_running_loop().call_later(COALESCE_S, self._flush)
        over_budget = outbox.bytes > self.budget_bytes
        if over_budget:
            # Memory is bounded: LOW goes first; if that is not enough, peers pause.
            outbox.shed_low(self.budget_bytes)
            over_budget = outbox.bytes > self.budget_bytes
        if over_budget or outbox.urgent_backlog >= URGENT_HIGH_WATER:
            self._refused = True
            return False
        return True

    def on_topic(self, topic: str, handler: Callable[[Record], None]) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def on_room(self, callback: Callable[[], None]) -> None:
        self._room_callbacks.append(callback)

    def on_flush(self, callback: Callable[[], None]) -> None:
        self._flush_callbacks.append(callback)

    def degraded(self, source: str, reason: str | None) -> None:
        if reason is None:
            self._degraded.pop(source, None)
        else:
            self._degraded[source] = reason
        self.heartbeats.set_io_fault(self.worker, "; ".join(self._degraded.values()))

    def flush_soon(self) -> bool:
        if not self._flush_scheduled and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(COALESCE_S, self._flush)
        return not self._refused

    # -- running --------------------------------------------------------------------------

    async def run(
        self, parts: Sequence[IoPart] = (), synthetic_per_s: float = 0.0, rt_priority: int = 0
    ) -> None:
        """Start ``parts``, then run under SCHED_FIFO ``rt_priority`` (0: not) until stopped."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.channel.fileno(), self._readable)
        started = []
        for part in parts:
            try:
                await part.start()
                started.append(part)
            except Exception:  # one broken part (a port in use) must not stop the others
                log.exception("io part %s failed to start", type(part).__name__)
        refused = len(apply_io_priority(rt_priority).degraded) if rt_priority else 0
        if refused:
            degraded = self.heartbeats.io(self.worker, IoSlot.DEGRADED)
            self.heartbeats.set_io(self.worker, IoSlot.DEGRADED, degraded + refused)
        tasks = [asyncio.create_task(self._beat())]
        if synthetic_per_s > 0:
            tasks.append(asyncio.create_task(self._synthetic(synthetic_per_s)))
        try:
            await self.stopped.wait()
        finally:
            for part in started:
                try:
                    await part.stop()
                except Exception:
                    log.exception("io part %s failed to stop", type(part).__name__)
            loop.remove_reader(self.channel.fileno())
            if self._writer_armed:
                loop.remove_writer(self.channel.fileno())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _flush(self) -> None:
        # What the parts held back joins this flush: their sends schedule no other.
        self._flush_scheduled = True
        try:
            for hand_over in self._flush_callbacks:
                hand_over()
        finally:
            self._flush_scheduled = False
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        sent_all = self.channel.send(0, [])
        # While the socket refuses, retry as soon as it is writable, not at the next beat.
        loop = asyncio.get_running_loop()
        if sent_all or self.channel.closed:
            if self._writer_armed:
                loop.remove_writer(self.channel.fileno())
                self._writer_armed = False
        elif not self._writer_armed:
            loop.add_writer(self.channel.fileno(), self._flush)
            self._writer_armed = True
        outbox = self.channel.outbox
        if (
            self._refused
            and outbox.urgent_backlog <= URGENT_LOW_WATER
            and outbox.bytes <= self.budget_bytes // 2
        ):
            self._refused = False
            for callback in self._room_callbacks:
                callback()

    def _readable(self) -> None:
        # A batch is handled as soon as it is read: the first (an e-stop's field writes)
        # does not wait for the decoding of those behind it (the fleet's stops).
        while batches := self.channel.receive(max_batches=1):
            self.handle(batches[0])
        if self.channel.closed and not self.stopped.is_set():
            log.info("control process closed the io channel; stopping")
            self.stopped.set()

    def handle(self, batch: Batch) -> None:
        """Records from the control process, to the parts that asked for their topic."""
        self.batches_from_control += 1
        for record in batch.records:
            for handler in self._handlers.get(record.topic, ()):
                try:
                    handler(record)
                except Exception:
                    # A part's bug must not cost the other records of the batch, nor
                    # the event loop: it is logged (rarely) and counted.
                    self.handler_errors += 1
                    if every_power_of_ten(self.handler_errors):
                        log.exception(
                            "io part failed on a %r record (%d so far)",
                            record.topic,
                            self.handler_errors,
                        )

    async def _beat(self) -> None:
        slots = self.heartbeats.slots
        beats = self.heartbeats.io_slot(self.worker, IoSlot.BEATS)
        connections = self.heartbeats.io_slot(self.worker, IoSlot.CONNECTIONS)
        conflated = self.heartbeats.io_slot(self.worker, IoSlot.TO_CONTROL_CONFLATED)
        dropped_low = self.heartbeats.io_slot(self.worker, IoSlot.TO_CONTROL_DROPPED_LOW)
        dropped_urgent = self.heartbeats.io_slot(self.worker, IoSlot.TO_CONTROL_DROPPED_URGENT)
        while True:
            slots[beats] += 1
            slots[connections] = sum(self.connections.values())
            outbox = self.channel.outbox
            slots[conflated] = outbox.conflated
            slots[dropped_low] = outbox.dropped_low
            slots[dropped_urgent] = outbox.dropped_urgent
            if len(self.channel.outbox):
                self._flush()  # retry what the socket refused earlier
            await asyncio.sleep(BEAT_PERIOD_S)

    async def _synthetic(self, per_s: float) -> None:
        """Telemetry-like records for benchmarks: the io side busy as real traffic makes it."""
        interval = 0.01
        per_burst = max(1, round(per_s * interval))
        sent = 0
        while True:
            records = [
                Record(SYNTHETIC_TOPIC, str((sent + i) % SYNTHETIC_KEYS), Priority.NORMAL, sent + i)
                for i in range(per_burst)
            ]
            sent += per_burst
            self.channel.send(0, records)
            await asyncio.sleep(interval)


def io_parts(config: Config, sections: Sequence[ConfigSection], context: IoContext) -> list[IoPart]:
    """The io-process part of every configured plugin that has one and runs in this
    worker: worker 0 runs those that must run once (drivers), and a network worker
    those ``io_in_every_worker`` (worker 0 is one unless ``runtime.io_drivers_alone``)."""
    networked = context.worker >= context.workers - context.network_workers
    factories = {
        s.name: s.io
        for s in sections
        if s.io is not None and (networked if s.io_in_every_worker else context.worker == 0)
    }
    return [
        factories[name](model, context)
        for name, model in config.sections.items()
        if name in factories
    ]


def io_priority(config: Config, worker: int) -> int:
    """``runtime.io_rt_priority``; with the drivers alone, their worker's, and one less
    for the network workers: a busy network worker must not hold a safe value back."""
    priority = config.runtime.io_rt_priority
    if config.runtime.io_drivers_alone and worker != 0:
        return max(priority - 1, 0)
    return priority


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional: faster where installed
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    # A stop asked for during start-up is kept and honoured once the event loop runs,
    # so the parts that started are stopped (the default action would just kill it).
    early_stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda got, _frame: early_stop.append(got))
    args = _parser().parse_args(argv)
    set_process_name(f"{PROCESS_NAME}{args.io_worker or ''}")
    die_with_parent(parent=args.supervisor_pid)
    setup_logging(args.log_level)
    heartbeats = Heartbeats(args.heartbeat_fd)
    if not 0 <= args.io_worker < heartbeats.io_workers:
        log.critical("io worker %d of %d does not exist", args.io_worker, heartbeats.io_workers)
        return 2
    config, changed = _load_config(args.config, args.config_digest)
    if changed:
        # Its drivers would map points by the new file while control maps them by the
        # old one (values on the wrong fields): running nothing is the safe side.
        log.critical(
            "%s: io worker %d runs nothing (no drivers, no network) until the appliance "
            "is restarted to apply it (systemctl restart edgeloop)",
            changed,
            args.io_worker,
        )
    heartbeats.set_io(args.io_worker, IoSlot.CONFIG_CHANGED, bool(changed))
    heartbeats.set_io_fault(args.io_worker, "")  # what a previous process of it said
    sections = installed_sections(config.sections)
    report = apply_io_settings(child_args.cpu_plan(args))
    heartbeats.set_io(args.io_worker, IoSlot.DEGRADED, len(report.degraded))
    if len(args.io_fd) != 1:
        log.critical("an io worker takes one channel, not %d", len(args.io_fd))
        return 2
    sock = socket.socket(fileno=args.io_fd[0])
    sock.setblocking(False)
    registry = registry_of(sections, config.sections)
    service = IoService(
        Channel(sock),
        heartbeats,
        registry,
        server_name=config.runtime.name,
        budget_bytes=config.runtime.io_buffer_mb << 20,
        worker=args.io_worker,
        workers=heartbeats.io_workers,
        network_workers=len(config.runtime.network_workers),
        state_dir=config.runtime.state_dir,
        control_timeout_s=config.runtime.control_timeout_s,
        data_log=data_log_of(config),
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stopped.set)
        if early_stop:
            service.stopped.set()
        parts = io_parts(config, sections, service)
        await service.run(
            parts, args.synthetic_records_per_s, rt_priority=io_priority(config, args.io_worker)
        )
        # Stopping already: a late SIGTERM from the supervisor (its drain time is up
        # while this worker still closes its peers) must not turn it into a kill. Here,
        # not after the loop: closing it would put the default action back.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)

    factory = _event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())
    with contextlib.suppress(OSError):
        sock.close()
    log.info("io process stopped")
    return 0


def _load_config(path: Path, digest: str | None) -> tuple[Config, str | None]:
    """The config to run, and why it is empty: the file on disk is not (or no longer)
    the one the appliance started with, whose ``config_digest`` the supervisor passed.
    A restarted io process reads the file again; someone may have edited it since."""
    try:
        config = load_config(path)
    except ConfigError as error:
        if digest is None:
            raise
        return _empty_config(path), f"{path} no longer loads ({error.problems[0]})"
    if digest is not None and config_digest(config) != digest:
        return _empty_config(path), f"{path} was edited since the appliance started"
    return config, None


def _empty_config(path: Path) -> Config:
    return Config(path, RuntimeConfig(), {}, [])


def _parser() -> argparse.ArgumentParser:
    parser = child_args.parser(PROCESS_NAME)
    parser.add_argument("--synthetic-records-per-s", type=float, default=0.0)
    parser.add_argument("--io-worker", type=int, default=0)
    # What the supervisor loaded; without it the file is taken as it is.
    parser.add_argument("--config-digest", default=None)
    return parser


if __name__ == "__main__":
    sys.exit(main())
