"""The control loop: drives an App's fixed ticks against the monotonic clock.

Deadlines are absolute (tick k is due at ``start + k * period``), so a late wake-up does
not push every later tick back. The wait is a ``select`` on a wake-up pipe, so a stop
request (a signal handler, another thread) ends the wait at once, not at the next tick.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import time
from collections.abc import Callable

from edgeloop.app import App


class ControlLoop:
    """Runs ``app`` at its ``Time`` rate: FixedUpdate at each deadline, Update after it."""

    def __init__(self, app: App, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.overruns = 0  # ticks whose work ended past the following deadline
        self.skipped_ticks = 0  # deadlines dropped after an overrun instead of bursting
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def request_stop(self) -> None:
        """Ask the loop to finish its current tick and run Shutdown. Signal-handler safe."""
        self._stop = True
        # A full pipe holds earlier requests already: the loop wakes anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def run(self, max_ticks: int | None = None) -> None:
        """Start the App, tick until stopped (or ``max_ticks``), then run Shutdown."""
        app = self.app
        period = app.time.delta
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        app.startup()
        try:
            start = self.clock()
            k = 0
            while not self._stop and (max_ticks is None or k < max_ticks):
                app.tick()
                app.update()
                k += 1
                now = self.clock()
                deadline = start + k * period
                if now > deadline:
                    self.overruns += 1
                    # Late by a period or more: drop the missed deadlines rather than
                    # running a burst of ticks that would each be late too.
                    behind = math.floor((now - deadline) / period)
                    k += behind
                    self.skipped_ticks += behind
                    continue
                if selector.select(deadline - now):
                    os.read(self._wake_r, 64)
        finally:
            selector.close()
            app.shutdown()

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
