"""Recording the control process's inputs (``runtime.record``; format in
``edgeloop.data.recording``): what ``edgeloop replay`` feeds the same App again.

``add_recorder`` puts an ``InputTape`` in the App (lines and wake handlers that are not
io records) and three systems: at the start of each tick, the state hash of the tick
before (every ``record_hash_every``) and then the io records this tick consumed with
the link's state; in Update, that the pass ran.
"""

from __future__ import annotations

from typing import Any

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.data.recording import RecordingWriter
from edgeloop.data.tape import InputTape
from edgeloop.realtime.io_link import IoInput, IoLink
from edgeloop.schedule import FixedUpdate, HealthMonitoring, IoReceive, Shutdown, Update
from edgeloop.world import World


class Recorder:
    """Resource: the writer, and what was last written of the link's state."""

    def __init__(self, writer: RecordingWriter, hash_every: int) -> None:
        self.writer = writer
        self.hash_every = hash_every
        self.link_state: list[Any] | None = None


def add_recorder(app: App, writer: RecordingWriter) -> None:
    """Record ``app``'s inputs to ``writer``; after the IoLinkPlugin (its IoReceive
    system hands over the records this one writes)."""
    app.insert_resource(InputTape(app.world, writer.put))
    app.insert_resource(Recorder(writer, writer.config.runtime.record_hash_every))
    app.add_systems(FixedUpdate, record_hash, record_tick, in_set=IoReceive)
    app.add_systems(Update, record_update, in_set=HealthMonitoring)
    app.add_systems(Shutdown, close_recording)


def record_hash(world: World) -> None:
    """IoReceive, first: the World as the previous tick (and its Update) left it."""
    recorder = world.resource(Recorder)
    done = world.resource(Time).tick - 1
    if done > 0 and done % recorder.hash_every == 0:
        recorder.writer.put(["hash", done, world.state_hash(), world.component_hashes()])


def record_tick(world: World) -> None:
    """IoReceive: the records this tick consumed, after the link's state if it moved."""
    recorder = world.resource(Recorder)
    tick = world.resource(Time).tick
    link = world.get_resource(IoLink)
    if link is not None:
        state = [[link.worker_up(w) for w in range(link.workers)], list(link.generations)]
        if state != recorder.link_state:
            recorder.link_state = state
            recorder.writer.put(["link", tick, *state])
    records = [[r.topic, r.key, r.payload] for r in world.read(IoInput)]
    recorder.writer.put(["tick", tick, records])


def record_update(world: World) -> None:
    world.resource(Recorder).writer.put(["update", world.resource(Time).tick])


def close_recording(world: World) -> None:
    world.resource(Recorder).writer.close(world.resource(Time).tick)
