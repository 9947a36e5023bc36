"""Control side of ``edgeloop.realtime.loop_figures``: the figures into the heartbeat block.

``FigureWriter.write`` runs from the heartbeat writer once every ``FIGURES_EVERY_TICKS``
and copies what the ``LoopStats``, the schedules' timings, the alarms, the e-stop and
the io link's outboxes already count: nothing is counted twice, nothing is logged, and
no tick but that one does any of it.
"""

from __future__ import annotations

import json
import logging

from edgeloop.alarms import Alarms
from edgeloop.app import App
from edgeloop.realtime.heartbeat import FIGURE_NAMES_BYTES, Heartbeats
from edgeloop.realtime.io_link import IoLink
from edgeloop.realtime.loop_figures import (
    ALARM_STATES,
    HISTOGRAM_EDGES_US,
    LATENESS,
    MAX_TIMED,
    TICK_WORK,
    TIMINGS,
    Figure,
    Timed,
)
from edgeloop.realtime.loop_stats import Histogram, LoopStats
from edgeloop.safety.estop import EStop
from edgeloop.schedule import FixedUpdate, Timing, Update

log = logging.getLogger("edgeloop.control")

FIGURES_EVERY_TICKS = 100  # once a second at 100 Hz: ~0.1 ms of CPU (the p99 scan: ~0.16)
FIGURES_AT_TICK = 50  # between the p99 scans (at multiples of 100): no tick does both


class FigureWriter:
    """Control side: the figures of ``app`` (driven by a loop with ``stats``) and
    ``link`` into ``heartbeats``."""

    def __init__(self, heartbeats: Heartbeats, app: App, stats: LoopStats, link: IoLink) -> None:
        self.figures = heartbeats.figures
        self.world = app.world
        self.stats = stats
        self.link = link
        timed = _timed(app)
        if len(timed) > MAX_TIMED:
            log.warning(
                "/metrics: the timings of %d sets and systems left out", len(timed) - MAX_TIMED
            )
            timed = timed[:MAX_TIMED]
        self._timings = [(TIMINGS + 3 * i, timing) for i, (_, timing) in enumerate(timed)]
        names = json.dumps([[t.schedule, t.set, t.system] for t, _ in timed]).encode()
        if len(names) > FIGURE_NAMES_BYTES:
            log.warning("/metrics: the names of the timed systems are too long; no timings")
            names, self._timings = b"[]", []
        heartbeats.figure_names[: len(names)] = names
        self.figures[Figure.TIMED] = len(self._timings)
        self.figures[Figure.NAMES_BYTES] = len(names)

    def write(self) -> None:
        figures, stats = self.figures, self.stats
        figures[Figure.SKIPPED_TICKS] = stats.skipped_ticks
        figures[Figure.UPDATE_PASSES] = stats.update_passes
        figures[Figure.UPDATE_DEFERRED] = stats.update_deferred
        _write_histogram(figures, LATENESS, stats.lateness)
        _write_histogram(figures, TICK_WORK, stats.tick_work)
        for base, timing in self._timings:
            figures[base] = timing.runs
            figures[base + 1] = timing.total_ns
            figures[base + 2] = timing.max_ns
        outboxes = self.link.outboxes
        figures[Figure.TO_IO_CONFLATED] = sum(o.conflated for o in outboxes)
        figures[Figure.TO_IO_DROPPED_LOW] = sum(o.dropped_low for o in outboxes)
        figures[Figure.TO_IO_DROPPED_URGENT] = sum(o.dropped_urgent for o in outboxes)
        estop = self.world.get_resource(EStop)
        if estop is not None:
            figures[Figure.ESTOP] = 2 if estop.pressed else 1
            figures[Figure.ESTOP_PRESSES] = estop.presses
        alarms = self.world.get_resource(Alarms)
        if alarms is not None:
            counts = dict.fromkeys(ALARM_STATES, 0)
            for alarm in alarms:
                counts[alarm.state] += 1
            for index, state in enumerate(ALARM_STATES):
                figures[Figure.ALARMS + index] = counts[state]


def _write_histogram(figures: memoryview, base: int, histogram: Histogram) -> None:
    for offset, below in enumerate(histogram.counts_below(HISTOGRAM_EDGES_US)):
        figures[base + offset] = below
    figures[base + len(HISTOGRAM_EDGES_US)] = histogram.count
    figures[base + len(HISTOGRAM_EDGES_US) + 1] = histogram.total_us


def _timed(app: App) -> list[tuple[Timed, Timing]]:
    """Every set and system of FixedUpdate and Update, in run order; a name used twice
    in a set gets ``#2``, ``#3`` (each must be a series of its own)."""
    found: list[tuple[Timed, Timing]] = []
    for label in (FixedUpdate, Update):
        schedule = app.schedule(label)
        for set_ in schedule.order():
            found.append((Timed(label.value, set_.name, None), schedule.set_timings[set_]))
            seen: dict[str, int] = {}
            for system in schedule.systems_in(set_):
                seen[system.name] = seen.get(system.name, 0) + 1
                name = (
                    system.name if seen[system.name] == 1 else f"{system.name}#{seen[system.name]}"
                )
                found.append((Timed(label.value, set_.name, name), system.timing))
    return found
