"""The control loop: drives an App's fixed ticks against the monotonic clock.

- Deadlines are absolute: tick k is due at ``start + k * period``, so a late wake-up
  does not push every later tick back (no drift).
- The wait is a ``select`` on file descriptors (a stop pipe, the io channel, the e-stop
  GPIO lines) so an urgent event is handled at once, not at the next tick. An urgent
  source (an e-stop line) is polled between the system sets of a tick too: a press
  during a tick waits for the set under way, not for the whole tick (Python cannot
  interrupt a system; a poll is a syscall of about a microsecond per set). The
  last ``spin_s`` before a deadline is a busy-wait: the kernel's wake-up from select is
  late by tens of µs (more on a VM), spinning the final stretch removes most of it at a
  CPU cost of ``spin_s / period`` (200 µs at 100 Hz = 2 % of the control core).
- After each tick, the Update schedule runs in the slack if at least ``update_budget_s``
  is left before the next deadline; otherwise it is put off (and counted).
- With the garbage collector frozen, young objects are collected in the slack, so a
  collection never lands inside a tick.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import select
import selectors
import time
from collections.abc import Callable

from edgeloop.app import App
from edgeloop.logs import every_power_of_ten
from edgeloop.realtime.loop_stats import LoopStats, OverrunPolicy
from edgeloop.realtime.rt_setup import collect_young, freeze_gc
from edgeloop.safety.safe_state import SafeState
from edgeloop.safety.systems import WakeSources
from edgeloop.schedule import FixedUpdate

log = logging.getLogger("edgeloop.loop")

MAX_CATCH_UP_TICKS = 10  # under "warn", a longer stall re-aligns instead of bursting
GC_YOUNG_EVERY_TICKS = 10
GC_FULL_EVERY_TICKS = 1000
OVERRUN_CAUSE = "overrun"


class OverrunStop(RuntimeError):
    """The overrun policy is ``safe_stop`` and a tick overran; Shutdown has run."""


class ControlLoop:
    """Runs ``app`` at its ``Time`` rate; see the module docstring."""

    def __init__(
        self,
        app: App,
        *,
        policy: OverrunPolicy = OverrunPolicy.WARN,
        spin_s: float = 0.0,
        update_budget_s: float = 0.001,
        gc_frozen: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.clock = clock
        self.spin_s = spin_s
        self.update_budget_s = update_budget_s
        self.gc_frozen = gc_frozen
        self.stats = LoopStats(
            period_s=app.time.delta, policy=policy, work=app.schedule(FixedUpdate)
        )
        app.insert_resource(self.stats)
        self._before_tick: list[Callable[[], None]] = []
        self._after_tick: list[Callable[[], None]] = []
        self._stop = False
        # select(2) takes µs timeouts; epoll and poll round up to whole ms, which alone
        # would make every wake-up up to 1 ms late.
        self._selector = selectors.SelectSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake_pipe)
        self._urgent = select.poll()
        self._urgent_handlers: dict[int, Callable[[], None]] = {}
        self._wake = WakeSources(self.add_wake_source, self.add_urgent_wake_source)
        app.insert_resource(self._wake)

    # -- wiring ---------------------------------------------------------------------------

    def add_wake_source(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` as soon as ``fd`` is readable while the loop waits."""
        self._selector.register(fd, selectors.EVENT_READ, on_readable)

    def add_urgent_wake_source(self, fd: int, on_readable: Callable[[], None]) -> None:
        """As ``add_wake_source``, and also between the system sets of a tick."""
        self.add_wake_source(fd, on_readable)
        self._urgent.register(fd, select.POLLIN)
        self._urgent_handlers[fd] = on_readable
        self.app.schedule(FixedUpdate).between_sets = self._between_sets

    def remove_wake_source(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        if self._urgent_handlers.pop(fd, None) is not None:
            self._urgent.unregister(fd)
            if not self._urgent_handlers:
                self.app.schedule(FixedUpdate).between_sets = None

    def _between_sets(self, set_name: str) -> None:
        ready = self._urgent.poll(0)
        if not ready:
            return
        wake = self._wake
        wake.position = set_name
        try:
            for fd, _ in ready:
                self._urgent_handlers[fd]()
        finally:
            wake.position = None

    def wake_sources(self) -> set[int]:
        """The file descriptors the loop wakes for (its own stop pipe excluded)."""
        return {key.fd for key in self._selector.get_map().values()} - {self._wake_r}

    def before_tick(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` right before each FixedUpdate (e.g. hand over io inputs)."""
        self._before_tick.append(hook)

    def after_tick(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` right after each FixedUpdate (e.g. flush outputs, heartbeat)."""
        self._after_tick.append(hook)

    def request_stop(self) -> None:
        """Finish the current tick, then run Shutdown. Safe from a signal handler."""
        self._stop = True
        # A full pipe holds earlier requests already: the loop wakes anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    # -- running --------------------------------------------------------------------------

    def run(self, max_ticks: int | None = None) -> None:
        """Start the App, tick until stopped (or ``max_ticks``), then run Shutdown."""
        app = self.app
        app.startup()
        if self.gc_frozen:
            freeze_gc()
        try:
            self._run_ticks(max_ticks)
        finally:
            if self.gc_frozen:
                gc.enable()
            app.shutdown()

    def _run_ticks(self, max_ticks: int | None) -> None:
        app, stats, clock = self.app, self.stats, self.clock
        period = stats.period_s
        start = clock()
        # Once, at the first deadline (its lateness includes this line, out of the hot
        # path): ties ticks to the clock for logs, recordings and outside measurements,
        # as tick n is due at start + (n - first) * period while no deadline is skipped.
        log.info(
            "control loop: tick %d at monotonic %.6f s, period %.9g ms",
            app.time.tick + 1,
            start,
            period * 1e3,
        )
        done = 0  # ticks run, counting skipped deadlines as run
        while not self._stop and (max_ticks is None or done < max_ticks):
            deadline = start + done * period
            self._wait_until(deadline)
            if self._stop:
                break
            woke = clock()
            stats.lateness.record(int((woke - deadline) * 1e6))
            for hook in self._before_tick:
                hook()
            app.tick()
            for hook in self._after_tick:
                hook()
            finished = clock()
            stats.tick_work.record(int((finished - woke) * 1e6))
            done += 1
            next_deadline = start + done * period
            if finished > next_deadline:
                done += self._overrun(finished - next_deadline)
            else:
                self._use_slack(next_deadline, done)

    def _overrun(self, late_s: float) -> int:
        """Apply the overrun policy; returns how many deadlines to drop."""
        stats = self.stats
        stats.overruns += 1
        if every_power_of_ten(stats.overruns):
            log.warning(
                "control tick %d overran by %.1f ms (%d overruns so far, policy %s)",
                self.app.time.tick,
                late_s * 1e3,
                stats.overruns,
                stats.policy.value,
            )
        if stats.policy is OverrunPolicy.SAFE_STOP:
            detail = f"tick {self.app.time.tick} overran by {late_s * 1e3:.1f} ms"
            safe = self.app.world.get_resource(SafeState)
            if safe is not None:  # the cause Shutdown reports, next to its own
                safe.trip(OVERRUN_CAUSE, detail, self.app.time.tick)
            raise OverrunStop(detail)
        missed = math.floor(late_s / stats.period_s)
        if stats.policy is OverrunPolicy.SKIP or missed > MAX_CATCH_UP_TICKS:
            stats.skipped_ticks += missed
            return missed
        return 0

    def _use_slack(self, next_deadline: float, ticks: int) -> None:
        stats = self.stats
        if next_deadline - self.clock() < self.update_budget_s:
            stats.update_deferred += 1
            return
        self.app.update()
        stats.update_passes += 1
        # Half the period left is plenty for a young collection of a frozen heap.
        if (
            self.gc_frozen
            and ticks % GC_YOUNG_EVERY_TICKS == 0
            and next_deadline - self.clock() > stats.period_s / 2
        ):
            if ticks % GC_FULL_EVERY_TICKS == 0:
                gc.collect()  # cycles that outlived a young collection; frozen objects skipped
            else:
                collect_young()

    def _wait_until(self, deadline: float) -> None:
        clock = self.clock
        # Only while there is time left: reading io input when already late would make
        # the tick later still (a catch-up run is at most MAX_CATCH_UP_TICKS long, and
        # a stop request is a flag, seen anyway).
        while not self._stop:
            remaining = deadline - self.spin_s - clock()
            if remaining <= 0:
                break
            for key, _ in self._selector.select(remaining):
                key.data()
        while clock() < deadline and not self._stop:
            pass  # the spin tail: see the module docstring

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 64)

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
