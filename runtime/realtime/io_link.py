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
from typing import Any

from edgeloop.alarms import Alarms, Severity
from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.priority import Priority
from edgeloop.realtime.ipc import Channel, Outbox, Record
from edgeloop.schedule import ActuatorOutput, FixedUpdate, SensorInput, SystemSet
from edgeloop.world import World

log = logging.getLogger("edgeloop.io_link")

IoReceive = SystemSet("IoReceive")  # runs before SensorInput
IoSend = SystemSet("IoSend")  # runs after ActuatorOutput
ALARM_SOURCE = "io-link"


@dataclass(frozen=True, slots=True)
class IoInput:
    """Message: one record from the io process, stamped with the tick that consumed it."""

    topic: str
    key: str
    payload: Any
    tick: int


INBOX_TICKS = 4  # how many ticks' worth of records are read ahead of the ticks


class IoLink:
    """Resource: the channel to the io process (which may be down, or replaced).

    At most ``records_per_tick`` records become IoInput messages per tick, and at most a
    few ticks' worth are read from the socket ahead: a flood then backs up into the
    socket and the io process, which pauses the flooding peer (CRITICAL/HIGH) or
    conflates (NORMAL), instead of stretching the control tick.
    """

    def __init__(self, channel: Channel | None = None, records_per_tick: int = 1000) -> None:
        self.channel = channel
        self.outbox = Outbox() if channel is None else channel.outbox
        self.records_per_tick = records_per_tick
        self.inbox: deque[Record] = deque()
        self.reported_up: bool | None = None  # what the alarm last said

    @property
    def up(self) -> bool:
        return self.channel is not None and not self.channel.closed

    def send(
        self, topic: str, key: str, payload: Any, priority: Priority = Priority.NORMAL
    ) -> None:
        """Queue a record for the end of this tick; ``TypeError`` here, in the system that
        sends it, if the payload cannot be encoded."""
        self.outbox.put(Record(topic, key, int(priority), payload))

    @property
    def full(self) -> bool:
        return len(self.inbox) >= self.records_per_tick * INBOX_TICKS

    def read_available(self) -> None:
        """Called by the loop when the channel is readable, between or during waits.

        Reads about one tick's worth per call, so a backlog (at start, after an io
        restart) is decoded a slice per wake-up instead of all at once just before a
        deadline."""
        goal = min(len(self.inbox) + self.records_per_tick, self.records_per_tick * INBOX_TICKS)
        while self.channel is not None and len(self.inbox) < goal:
            batches = self.channel.receive(max_batches=1)
            if not batches:
                return
            for batch in batches:
                self.inbox.extend(batch.records)

    def replace(self, sock: socket.socket) -> None:
        """Take the channel to a restarted io process, keeping what waits to be sent."""
        old = self.channel
        self.channel = Channel(sock, outbox=self.outbox)
        if old is not None:
            old.close()

    def flush(self, tick: int) -> bool:
        """Send what the socket takes now; True when nothing is left waiting."""
        return self.channel is not None and self.channel.send(tick, [])


class IoLinkPlugin:
    def __init__(self, link: IoLink) -> None:
        self.link = link

    def build(self, app: App) -> None:
        app.insert_resource(self.link)
        app.configure_sets(FixedUpdate, IoReceive, SensorInput)
        app.configure_sets(FixedUpdate, ActuatorOutput, IoSend)
        app.add_systems(FixedUpdate, receive_io_inputs, in_set=IoReceive)
        app.add_systems(FixedUpdate, send_io_outputs, in_set=IoSend)


def receive_io_inputs(world: World) -> None:
    """IoReceive: what the io process sent since the last tick, as IoInput messages."""
    link = world.resource(IoLink)
    tick = world.resource(Time).tick
    if link.up != link.reported_up:
        link.reported_up = link.up
        alarms = world.resource(Alarms)
        if link.up:
            alarms.clear(ALARM_SOURCE, tick)
        else:
            alarms.activate(ALARM_SOURCE, "io process not connected", Severity.FAULT, tick)
            log.warning("io link down at tick %d: outputs wait until the io process is back", tick)
    inbox = link.inbox
    for _ in range(min(len(inbox), link.records_per_tick)):
        record = inbox.popleft()
        world.send(IoInput(record.topic, record.key, record.payload, tick))


def send_io_outputs(world: World) -> None:
    """IoSend: this tick's records to the io process, one batch."""
    world.resource(IoLink).flush(world.resource(Time).tick)
