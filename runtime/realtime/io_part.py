"""The contract between the io process and the parts plugins run in it (drivers, providers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgeloop.net.registry import Registry
    from edgeloop.realtime.heartbeat import Heartbeats
    from edgeloop.realtime.ipc import Record


class IoContext(Protocol):
    """What an io part gets: the way to the control process and back."""

    registry: Registry  # the wire message types of every configured plugin
    server_name: str
    connections: dict[str, int]  # peers connected, per provider (for the status line)
    worker: int  # which io worker this is, 0 to ``workers`` - 1 (runtime.io_workers)
    workers: int
    network_workers: int  # how many of them run the network listeners
    connection_ids: Iterator[int]  # for network peers: unique appliance-wide, never reused
    state_dir: Path  # runtime.state_dir: what must outlive a restart and a power cut
    heartbeats: Heartbeats  # the shared block: the control loop's ticks, the safe state
    control_timeout_s: float  # runtime.control_timeout_s: a loop silent longer is stalled
    data_log: Path | None  # the data log's database, for the trends (None: none configured)

    def send(self, record: Record) -> bool:
        """Queue a record for the control process; False when CRITICAL/HIGH records are
        backed up and the sender should pause reading from its peer."""
        ...

    def on_topic(self, topic: str, handler: Callable[[Record], None]) -> None:
        """Call ``handler`` for each record with this topic from the control process."""
        ...

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a backlog that made ``send`` return False has drained."""
        ...

    def on_flush(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` first thing in every flush to the control process: a part
        that holds NORMAL records back (conflating them until then) sends them there."""
        ...

    def degraded(self, source: str, reason: str | None) -> None:
        """Say that ``source`` (``"network.tcp"``) does not work, and why (None: it works
        again): the supervisor's status line shows it until then."""
        ...

    def flush_soon(self) -> bool:
        """Make sure a flush (and so the ``on_flush`` callbacks) comes within a couple
        of ms; False while senders are told to pause, as ``send`` answers."""
        ...


class IoPart(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...
