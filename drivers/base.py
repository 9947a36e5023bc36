"""The shape every driver's io side has: links with one lifecycle, run by one io part.

A driver's io part (``DriverIo``) runs ``Link`` s, one per connection it keeps (a CAN
bus, a serial port, a Modbus TCP connection or RTU line), each serving its devices'
``DeviceChannel`` s. A link's life is the same in every driver:

    configure (__init__) -> start -> running: session, down, backoff, session ... -> stop

- ``start`` sends every device's health (``connecting``), then runs sessions until
  stopped. A session (``session()``, the driver's own) opens the connection and serves it
  until it fails, and says why; the devices are then told (a ``disconnect`` in their
  health, values STALE), the fault is logged, and the next session waits out the
  backoff. An open that fails is a session that fails at once, so a device that cannot
  be reached at start shows in its health just like one lost later.
- A surprise from a library (an exception the driver did not expect) is logged with its
  traceback, counted as a ``bus`` error of every device, and the link goes on.
- Stopping cannot be swallowed. Python 3.11's ``asyncio.wait_for`` returns the result
  instead of raising when a cancel meets a wait that is just completing, and libraries
  (pymodbus) use it; so ``stop`` sets a flag every loop of a link checks (``running``),
  cancels, and cancels again (``finish``) while the task lives, within a bound.
- Faults are logged at most once per kind per ``every_s`` (``FaultLog``): a device
  failing every poll must not fill the journal, nor hide its first report.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from edgeloop.drivers.field_link import DeviceChannel
from edgeloop.drivers.health import Backoff

log = logging.getLogger("edgeloop.drivers")

RECANCEL_S = 1.0  # a task not ended this long after a cancel is cancelled again
STOP_BOUND_S = 10.0  # stop gives up waiting for a task that will not end after this


class FaultLog:
    """Log lines rate-limited per kind: at most one per ``every_s``."""

    def __init__(self, logger: logging.Logger, every_s: float) -> None:
        self.logger = logger
        self.every_s = every_s
        self._logged: dict[str, float] = {}

    def due(self, kind: str) -> bool:
        """Whether a line of ``kind`` may be logged now (and, if so, that it is)."""
        now = time.monotonic()
        if now - self._logged.get(kind, -math.inf) < self.every_s:
            return False
        self._logged[kind] = now
        return True

    def log(self, kind: str, text: str, *args: object, level: int = logging.WARNING) -> None:
        if self.due(kind):
            self.logger.log(level, text, *args)


async def finish(*tasks: asyncio.Task[None], bound_s: float = STOP_BOUND_S) -> bool:
    """Cancel ``tasks`` and wait until they end, cancelling again any that swallowed the
    cancel; False if one outlived ``bound_s`` (it is logged and left)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    for task in tasks:
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.error("task %s does not end: left running", task.get_name())
                return False
            task.cancel()
            await asyncio.wait({task}, timeout=min(RECANCEL_S, remaining))
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task %s failed: %r", task.get_name(), error)
    return True


class Link:
    """One connection and the devices it serves; a driver overrides ``session``."""

    def __init__(
        self,
        name: str,
        channels: Sequence[DeviceChannel],
        backoff: Backoff,
        faults: FaultLog,
    ) -> None:
        self.name = name
        self.channels = channels
        self.backoff = backoff
        self.faults = faults
        self.sessions = 0  # started, the first included
        self.failures = 0  # sessions that ended with a reason
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """False once stop() was called: every loop of a link checks it."""
        return not self._stopping

    def start(self) -> None:
        for channel in self.channels:
            channel.publish_health()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._task is not None:
            await finish(self._task)
            self._task = None
        self.close()

    async def session(self) -> str | None:
        """Open the connection and serve it until it fails: why it failed, or None when
        there is nothing to report (the next session starts at once)."""
        raise NotImplementedError

    def down(self, reason: str) -> None:
        """A session failed: the devices are told, and it is logged."""
        self.faults.log("down", "%s: %s; reconnecting with backoff", self.name, reason)
        for channel in self.channels:
            channel.error("disconnect", reason)

    def wake(self) -> None:
        """Stopping: a link that sleeps on an event of its own sets it here."""

    def close(self) -> None:
        """After the last session: what a link keeps open across sessions, closed."""

    async def _run(self) -> None:
        while self.running:
            self.sessions += 1
            try:
                reason = await self.session()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("%s: unexpected error", self.name)
                for channel in self.channels:
                    channel.error("bus", f"unexpected: {err!r}")
            else:
                if reason is None:
                    continue
                self.failures += 1
                self.down(reason)
            if self.running:
                await asyncio.sleep(self.backoff.next_delay())


class DriverIo:
    """A driver's io part: starts and stops its links."""

    def __init__(self, links: Sequence[Link]) -> None:
        self._links = list(links)

    async def start(self) -> None:
        for link in self._links:
            link.start()

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self._links))
