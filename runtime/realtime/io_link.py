"""The control process's side of the io channel, as seen by systems.

Records from the io process are read whenever the channel is readable (the control loop
waits on its fd) and held until the next tick, whose first set hands them to systems as
``IoInput`` messages stamped with that tick: the tick that consumed them, which is what
recording and replay need. Systems send records to the io process with ``IoLink.send``;
they leave at the end of the tick, batched into one message.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.alarms import Alarms, Severity
from edgeloop.clock import Time
from edgeloop.priority import Priority
from edgeloop.realtime.ipc import Channel, Outbox, Record, encode_record
from edgeloop.schedule import ActuatorOutput, FixedUpdate, IoReceive, IoSend, SensorInput
from edgeloop.world import World

if TYPE_CHECKING:
    from edgeloop.app import App

log = logging.getLogger("edgeloop.io_link")

ALARM_SOURCE = "io-link"


@dataclass(frozen=True, slots=True)
class IoInput:
    """Message: one record from the io process, stamped with the tick that consumed it."""

    topic: str
    key: str
    payload: Any
    tick: int


INBOX_TICKS = 4  # how many ticks' worth of records are read ahead of the ticks
# The io worker that runs the parts that must exist once: field drivers, the Modbus
# server. The others (runtime.io_workers > 1) share the network listeners with it.
HOME_WORKER = 0
# Put in the inbox, after the last record read from it, when a worker's channel ends:
# systems learn in order that nothing more comes from that process (its peers are gone).
IO_LOST = "io.lost"  # key: the worker's number as text, payload: the number


class IoLink:
    """Resource: the channels to the io workers (each may be down, or replaced).

    One channel per io worker (``runtime.io_workers``, usually one). Records from all of
    them join one inbox. At most ``records_per_tick`` records become IoInput messages
    per tick, and at most a few ticks' worth are read from the sockets ahead: a flood
    then backs up into the sockets and the io workers, which pause the flooding peer
    (CRITICAL/HIGH) or conflate (NORMAL), instead of stretching the control tick.

    When a channel ends (EOF read, or replaced before that), an ``IO_LOST`` record
    follows the worker's last records in the inbox.
    """

    def __init__(
        self, *channels: Channel | None, records_per_tick: int = 1000, broadcast_from: int = 0
    ) -> None:
        self.channels: list[Channel | None] = list(channels) or [None]
        self.outboxes = [Outbox() if c is None else c.outbox for c in self.channels]
        # A broadcast (the world feed, the network's) goes to the network workers only:
        # with ``runtime.io_drivers_alone`` the drivers' worker never decodes it.
        self.broadcast_from = broadcast_from
        self.records_per_tick = records_per_tick
        self.inbox: deque[Record] = deque()
        # Per worker, channels replaced so far: a restarted worker knows nothing.
        self.generations = [0] * len(self.channels)
        self.changes = 0  # channels lost or replaced: the alarm looks again when it moves
        self.reported_changes = -1  # as the alarm last saw
        self._lost_told = [False] * len(self.channels)  # IO_LOST queued for this channel

    @property
    def workers(self) -> int:
        return len(self.channels)

    def worker_up(self, worker: int) -> bool:
        channel = self.channels[worker]
        return channel is not None and not channel.closed

    @property
    def links_up(self) -> int:
        up = 0
        for channel in self.channels:
            if channel is not None and not channel.closed:
                up += 1
        return up

    @property
    def up(self) -> bool:
        """Every io worker is connected."""
        return self.links_up == len(self.channels)

    def send(
        self,
        topic: str,
        key: str,
        payload: Any,
        priority: Priority = Priority.NORMAL,
        worker: int | None = None,
    ) -> None:
        """Queue a record for the end of this tick, to one io worker or (``None``) to
        every network worker, whose parts ignore topics they have no handler for. ``TypeError``
        here, in the system that sends it, if the payload cannot be encoded;
        ``IndexError`` for a worker that does not exist."""
        record = Record(topic, key, int(priority), payload)
        if worker is not None:
            self.outboxes[worker].put(record)
            return
        data = encode_record(record)
        for outbox in self.outboxes[self.broadcast_from :]:
            outbox.put_encoded(record, data)

    @property
    def full(self) -> bool:
        return len(self.inbox) >= self.records_per_tick * INBOX_TICKS

    def read_available(self, worker: int = HOME_WORKER) -> None:
        """Called by the loop when a worker's channel is readable, between or during waits.

        Reads about one tick's worth per call, so a backlog (at start, after an io
        restart) is decoded a slice per wake-up instead of all at once just before a
        deadline."""
        channel = self.channels[worker]
        goal = min(len(self.inbox) + self.records_per_tick, self.records_per_tick * INBOX_TICKS)
        while channel is not None and len(self.inbox) < goal:
            batches = channel.receive(max_batches=1)
            if not batches:
                if channel.closed:
                    self._lost(worker)
                return
            for batch in batches:
                self.inbox.extend(batch.records)

    def _lost(self, worker: int) -> None:
        if not self._lost_told[worker]:
            self._lost_told[worker] = True
            self.changes += 1
            self.inbox.append(Record(IO_LOST, str(worker), int(Priority.CRITICAL), worker))

    def replace(self, sock: socket.socket, worker: int = HOME_WORKER) -> None:
        """Take the channel to a restarted io worker, keeping what waits to be sent."""
        old = self.channels[worker]
        if old is not None:
            self._lost(worker)  # what it did not send by now is gone with it
            old.close()
        self.channels[worker] = Channel(sock, outbox=self.outboxes[worker])
        self._lost_told[worker] = False
        self.generations[worker] += 1
        self.changes += 1

    def flush(self, tick: int) -> bool:
        """Send what the sockets take now; True when nothing is left waiting for any."""
        sent_all = True
        for channel in self.channels:
            # Every channel is tried: one busy worker must not hold the others' records.
            sent_all = channel is not None and channel.send(tick, []) and sent_all
        return sent_all


class IoLinkPlugin:
    def __init__(self, link: IoLink) -> None:
        self.link = link

    def build(self, app: App) -> None:
        app.world.insert_resource(self.link, as_type=IoLink)  # a subclass too (replay)
        app.configure_sets(FixedUpdate, IoReceive, SensorInput)
        app.configure_sets(FixedUpdate, ActuatorOutput, IoSend)
        app.add_systems(FixedUpdate, receive_io_inputs, in_set=IoReceive)
        app.add_systems(FixedUpdate, send_io_outputs, in_set=IoSend)


def receive_io_inputs(world: World) -> None:
    """IoReceive: what the io workers sent since the last tick, as IoInput messages."""
    link = world.resource(IoLink)
    tick = world.resource(Time).tick
    if link.changes != link.reported_changes:
        link.reported_changes = link.changes
        _report_links(world.resource(Alarms), link, tick)
    inbox = link.inbox
    for _ in range(min(len(inbox), link.records_per_tick)):
        record = inbox.popleft()
        world.send(IoInput(record.topic, record.key, record.payload, tick))


def _report_links(alarms: Alarms, link: IoLink, tick: int) -> None:
    down = [str(w) for w in range(link.workers) if not link.worker_up(w)]
    if not down:
        alarms.clear(ALARM_SOURCE, tick)
        return
    detail = "io process not connected"
    if link.workers > 1:
        detail = f"io worker {', '.join(down)} of {link.workers} not connected"
    alarm = alarms.get(ALARM_SOURCE)
    if alarm is None or not alarm.active or alarm.text != detail:
        alarms.activate(ALARM_SOURCE, detail, Severity.FAULT, tick)
        log.warning("%s at tick %d: its outputs wait until it is back", detail, tick)


def send_io_outputs(world: World) -> None:
    """IoSend: this tick's records to the io process, one batch."""
    world.resource(IoLink).flush(world.resource(Time).tick)
